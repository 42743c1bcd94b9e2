//! The scaler: once a second (and whenever a provider action ends) it plans from the published
//! snapshot and the instances it knows (`barge_core::scaling::plan`, pure), then runs what the
//! plan asks: provider launches and terminations as tasks (at most
//! `PROVIDER_ACTIONS_CONCURRENT_MAX` at once, never blocking the writer or the scheduler),
//! desiredvCpus through the writer. Failed launches back off per environment (in the plan),
//! failed terminations are retried with backoff.
//!
//! An instance is launched by its provider; its agent joins under the instance's id and is
//! counted live; when terminated (or found gone by its provider: a SPOT-style reclaim), the
//! server declares its agent lost at once if it is still registered, so its attempts fail with
//! "Host EC2 (instance <id>) terminated." and are retried per their retry strategy.
//!
//! Each instance has a record, `<data-dir>/instances/<id>/instance.json`, written when it is
//! launched and removed when it is gone, so a restarted server takes its instances back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use barge_core::scaling::{self, Fleet, Instance, InstancePhase, TerminationCause};
use barge_core::Command;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::config_file::ScalingConfig;
use crate::limits::{
    PROVIDER_ACTIONS_CONCURRENT_MAX, PROVIDER_CHECK_MS, SCALER_TICK_MS, TERMINATE_RETRY_MS_INITIAL,
    TERMINATE_RETRY_MS_MAX,
};
use crate::providers::{Launched, Provider, ProviderContext};
use crate::shared::Shared;
use crate::writer::now_ms;

/// What is kept on disk per instance.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    instance: Instance,
    /// The `barge agent` process of a local instance.
    #[serde(default)]
    pid: Option<u32>,
}

/// The end of a provider action, sent back to the loop.
enum Outcome {
    Launched {
        id: String,
        result: Result<Launched, String>,
    },
    Terminated {
        id: String,
        result: Result<(), String>,
    },
    /// The scale-in was called off: the instance took an attempt before it was drained.
    Kept { id: String },
    Checked {
        provider: String,
        result: Result<Vec<String>, String>,
    },
}

pub struct Scaler {
    shared: Shared,
    config: ScalingConfig,
    providers: BTreeMap<String, Arc<Provider>>,
    dir: PathBuf,
    fleet: Fleet,
    /// Instances with a provider action under way.
    busy: BTreeSet<String>,
    /// Providers being asked which instances are gone.
    checking: BTreeSet<String>,
    /// Failed terminations: failures in a row and when to try again.
    retry: BTreeMap<String, (u32, i64)>,
    next_check_ms: i64,
    permits: Arc<Semaphore>,
    outcomes_tx: mpsc::Sender<Outcome>,
    outcomes_rx: mpsc::Receiver<Outcome>,
}

/// An EC2-looking instance id: `i-` and 17 hex digits.
fn new_instance_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("i-{}", &hex[..17])
}

/// This server's id for its Docker labels, made once and kept in the data directory.
fn server_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("server-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(&path, format!("{id}\n"))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(id)
}

impl Scaler {
    /// Sets up the providers (a Docker provider needs a daemon that answers) and takes back the
    /// instances of an earlier run.
    pub async fn start(
        shared: Shared,
        config: ScalingConfig,
        data_dir: &Path,
        local_server_url: String,
        agent_token: Option<String>,
    ) -> anyhow::Result<Scaler> {
        let dir = data_dir.join("instances");
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let ctx = ProviderContext {
            server_id: server_id(&dir)?,
            instances_dir: dir.clone(),
            local_server_url,
            agent_token,
        };
        let mut providers = BTreeMap::new();
        for (name, p) in &config.providers {
            let provider = Provider::new(name, p, &ctx).await.map_err(|e| {
                anyhow::anyhow!("configuration file {}: {e}", config.path.display())
            })?;
            providers.insert(name.clone(), Arc::new(provider));
        }
        let (outcomes_tx, outcomes_rx) = mpsc::channel(PROVIDER_ACTIONS_CONCURRENT_MAX * 4);
        let mut scaler = Scaler {
            shared,
            config,
            providers,
            dir,
            fleet: Fleet::default(),
            busy: BTreeSet::new(),
            checking: BTreeSet::new(),
            retry: BTreeMap::new(),
            next_check_ms: 0,
            permits: Arc::new(Semaphore::new(PROVIDER_ACTIONS_CONCURRENT_MAX)),
            outcomes_tx,
            outcomes_rx,
        };
        scaler.take_back().await;
        Ok(scaler)
    }

    /// The instances an earlier run left: from their records, and for Docker from their
    /// containers' labels. Each gets a whole register timeout from now to (re)join.
    async fn take_back(&mut self) {
        let now = now_ms();
        let entries = std::fs::read_dir(&self.dir).into_iter().flatten().flatten();
        for entry in entries {
            let path = entry.path().join("instance.json");
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let record: Record = match serde_json::from_slice(&text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("ignoring {}: {e}", path.display());
                    continue;
                }
            };
            let mut instance = record.instance;
            let Some(provider) = self.providers.get(&instance.provider) else {
                tracing::warn!(instance_id = %instance.id, provider = %instance.provider, "instance of a provider no longer configured: forgotten (stop it yourself)");
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            };
            provider.adopt(&instance, record.pid);
            if instance.phase != InstancePhase::Terminating {
                instance.phase = InstancePhase::Launching;
            }
            instance.registered = false;
            instance.idle_since_ms = None;
            instance.launched_at_ms = now;
            tracing::info!(instance_id = %instance.id, compute_environment = %instance.compute_environment, "instance of an earlier run taken back");
            self.fleet.instances.insert(instance.id.clone(), instance);
        }
        for provider in self.providers.values() {
            for instance in provider.discover(now).await {
                if !self.fleet.instances.contains_key(&instance.id) {
                    tracing::info!(instance_id = %instance.id, compute_environment = %instance.compute_environment, "container of an earlier run adopted");
                    self.save(&instance, None);
                    self.fleet.instances.insert(instance.id.clone(), instance);
                }
            }
        }
    }

    fn save(&self, instance: &Instance, pid: Option<u32>) {
        let dir = self.dir.join(&instance.id);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join("instance.json.tmp");
            let record = Record {
                instance: instance.clone(),
                pid,
            };
            std::fs::write(
                &tmp,
                serde_json::to_vec_pretty(&record).expect("records serialize"),
            )?;
            std::fs::rename(&tmp, dir.join("instance.json"))
        };
        if let Err(e) = write() {
            tracing::warn!(instance_id = %instance.id, "cannot write the instance's record in {}: {e}; a restarted server will not know it", dir.display());
        }
    }

    /// Keeps a record's pid while changing its phase.
    fn save_phase(&self, id: &str) {
        let Some(instance) = self.fleet.instances.get(id) else {
            return;
        };
        let pid = std::fs::read(self.dir.join(id).join("instance.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<Record>(&t).ok())
            .and_then(|r| r.pid);
        self.save(instance, pid);
    }

    /// Runs until `shutdown`; then stops the local provider's instances.
    pub async fn run(mut self, shutdown: Arc<Notify>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(SCALER_TICK_MS)) => {}
                outcome = self.outcomes_rx.recv() => {
                    if let Some(o) = outcome {
                        self.handle(o).await;
                    }
                }
                _ = shutdown.notified() => break,
            }
            while let Ok(o) = self.outcomes_rx.try_recv() {
                self.handle(o).await;
            }
            self.tick().await;
        }
        let providers: Vec<Arc<Provider>> = self.providers.values().cloned().collect();
        for provider in providers {
            for id in provider.shutdown().await {
                self.forget(&id).await;
            }
        }
    }

    async fn tick(&mut self) {
        let now = now_ms();
        let state = self.shared.published.load_full();
        self.fleet.observe(&state, now);

        if now >= self.next_check_ms {
            self.next_check_ms = now + PROVIDER_CHECK_MS as i64;
            self.check_providers();
        }
        // Terminations to try again (and those an earlier run left half done).
        let due: Vec<String> = self
            .fleet
            .instances
            .values()
            .filter(|i| i.phase == InstancePhase::Terminating && !self.busy.contains(&i.id))
            .filter(|i| self.retry.get(&i.id).is_none_or(|(_, at)| *at <= now))
            .map(|i| i.id.clone())
            .collect();
        for id in due {
            self.spawn_terminate(&id, false);
        }

        let plan = scaling::plan(
            &state,
            &self.fleet,
            &self.config.settings,
            now,
            &mut new_instance_id,
        );
        for t in plan.terminations {
            let Some(instance) = self.fleet.instances.get(&t.instance_id) else {
                continue;
            };
            if self.busy.contains(&t.instance_id) {
                // Its launch is still under way (a slow launch program): decided again once
                // it has ended, so two actions never run on one instance.
                continue;
            }
            tracing::info!(
                instance_id = %t.instance_id,
                compute_environment = %instance.compute_environment,
                "terminating instance: {}",
                t.cause.as_str()
            );
            self.fleet.terminating(&t.instance_id);
            self.save_phase(&t.instance_id);
            let drain = matches!(t.cause, TerminationCause::Idle | TerminationCause::Orphaned);
            self.spawn_terminate(&t.instance_id, drain);
        }
        for launch in plan.launches {
            tracing::info!(
                instance_id = %launch.instance_id,
                compute_environment = %launch.compute_environment,
                provider = %launch.provider,
                instance_type = %launch.instance_type.name,
                "launching instance"
            );
            self.fleet.launching(&launch, now);
            let Some(instance) = self.fleet.instances.get(&launch.instance_id).cloned() else {
                continue;
            };
            self.save(&instance, None);
            self.spawn_launch(instance);
        }
        for d in plan.desired {
            let command = Command::SetDesiredVcpus {
                compute_environment: d.compute_environment.clone(),
                desired_vcpus: d.desired_vcpus,
            };
            if let Err(e) = self.shared.execute(command).await {
                tracing::warn!(compute_environment = %d.compute_environment, "desiredvCpus not updated this round: {e}");
            }
        }
    }

    fn provider_of(&self, id: &str) -> Option<(Arc<Provider>, Instance)> {
        let instance = self.fleet.instances.get(id)?;
        let provider = self.providers.get(&instance.provider)?;
        Some((provider.clone(), instance.clone()))
    }

    fn spawn_launch(&mut self, instance: Instance) {
        let Some(provider) = self.providers.get(&instance.provider).cloned() else {
            return;
        };
        self.busy.insert(instance.id.clone());
        let (permits, tx) = (self.permits.clone(), self.outcomes_tx.clone());
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = provider.launch(&instance).await;
            let _ = tx
                .send(Outcome::Launched {
                    id: instance.id,
                    result,
                })
                .await;
        });
    }

    /// Terminates an instance; a drain first (no new attempts) when it is idle and joined, so
    /// that a scale-in never kills a job that started since the plan.
    fn spawn_terminate(&mut self, id: &str, drain: bool) {
        let Some((provider, instance)) = self.provider_of(id) else {
            // Its provider left the configuration: nothing can stop it any more.
            tracing::warn!(instance_id = %id, "instance of a provider no longer configured: forgotten (stop it yourself)");
            self.fleet.terminated(id);
            let _ = std::fs::remove_dir_all(self.dir.join(id));
            return;
        };
        self.busy.insert(id.to_string());
        let (permits, tx, shared) = (
            self.permits.clone(),
            self.outcomes_tx.clone(),
            self.shared.clone(),
        );
        tokio::spawn(async move {
            let id = instance.id.clone();
            let joined = |shared: &Shared| shared.published.load().agents.contains_key(&id);
            if drain && joined(&shared) {
                let drained = shared.execute(Command::DrainAgent { id: id.clone() }).await;
                if drained.is_err() && joined(&shared) {
                    let _ = tx.send(Outcome::Kept { id }).await;
                    return;
                }
            }
            let _permit = permits.acquire_owned().await;
            let result = provider.terminate(&instance).await;
            let _ = tx.send(Outcome::Terminated { id, result }).await;
        });
    }

    /// Asks the providers that can tell which of their instances are gone.
    fn check_providers(&mut self) {
        for (name, provider) in &self.providers {
            if matches!(**provider, Provider::Command(_)) || self.checking.contains(name) {
                continue;
            }
            let instances: Vec<Instance> = self
                .fleet
                .instances
                .values()
                .filter(|i| {
                    i.provider == *name
                        && i.phase != InstancePhase::Terminating
                        && !self.busy.contains(&i.id)
                })
                .cloned()
                .collect();
            if instances.is_empty() {
                continue;
            }
            self.checking.insert(name.clone());
            let (provider, permits, tx, name) = (
                provider.clone(),
                self.permits.clone(),
                self.outcomes_tx.clone(),
                name.clone(),
            );
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = provider.gone(&instances).await;
                let _ = tx
                    .send(Outcome::Checked {
                        provider: name,
                        result,
                    })
                    .await;
            });
        }
    }

    async fn handle(&mut self, outcome: Outcome) {
        let now = now_ms();
        match outcome {
            Outcome::Launched { id, result } => {
                self.busy.remove(&id);
                match result {
                    Ok(launched) => {
                        self.fleet.launch_succeeded(&id);
                        if launched.pid.is_some() {
                            if let Some(instance) = self.fleet.instances.get(&id) {
                                self.save(instance, launched.pid);
                            }
                        }
                    }
                    Err(e) => {
                        let Some(ce) = self
                            .fleet
                            .instances
                            .get(&id)
                            .map(|i| i.compute_environment.clone())
                        else {
                            return;
                        };
                        tracing::warn!(instance_id = %id, compute_environment = %ce, "launch failed (launches of this environment back off): {e}");
                        self.fleet.launch_failed(&id, now);
                        self.save_phase(&id);
                        // Whatever part of it the provider did start is cleaned up.
                        self.spawn_terminate(&id, false);
                    }
                }
            }
            Outcome::Kept { id } => {
                self.busy.remove(&id);
                tracing::info!(instance_id = %id, "scale-in called off: the instance took work");
                self.fleet.keep(&id);
                self.save_phase(&id);
            }
            Outcome::Terminated { id, result } => {
                self.busy.remove(&id);
                match result {
                    Ok(()) => {
                        tracing::info!(instance_id = %id, "instance terminated");
                        self.forget(&id).await;
                    }
                    Err(e) => {
                        let failures = self.retry.get(&id).map_or(0, |(f, _)| *f);
                        let delay = TERMINATE_RETRY_MS_INITIAL
                            .saturating_mul(1 << failures.min(20))
                            .min(TERMINATE_RETRY_MS_MAX);
                        tracing::warn!(instance_id = %id, "terminate failed; trying again in {} s: {e}", delay / 1000);
                        self.retry.insert(id, (failures + 1, now + delay));
                    }
                }
            }
            Outcome::Checked { provider, result } => {
                self.checking.remove(&provider);
                match result {
                    Ok(gone) => {
                        for id in gone {
                            self.gone(&id, now).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%provider, "cannot tell which instances are gone: {e}")
                    }
                }
            }
        }
    }

    /// The provider no longer runs the instance (its process exited, its container stopped):
    /// a reclaim. Its agent is declared lost at once, and what is left of it cleaned up.
    async fn gone(&mut self, id: &str, now: i64) {
        let Some(instance) = self.fleet.instances.get(id) else {
            return;
        };
        if instance.phase == InstancePhase::Terminating || self.busy.contains(id) {
            return;
        }
        let joined = self.shared.published.load().agents.contains_key(id);
        tracing::warn!(instance_id = %id, compute_environment = %instance.compute_environment, "instance gone: its provider no longer runs it");
        if !instance.registered && !joined {
            // It never joined: as a failed launch, so a broken image or program is retried
            // with backoff rather than in a tight loop.
            self.fleet.launch_failed(id, now);
        } else {
            if joined {
                if let Err(e) = self
                    .shared
                    .execute(Command::AgentLost { id: id.to_string() })
                    .await
                {
                    tracing::warn!(instance_id = %id, "agent of a gone instance not declared lost yet: {e}");
                }
            }
            self.fleet.terminating(id);
        }
        self.save_phase(id);
        self.spawn_terminate(id, false);
    }

    /// The instance is gone for good: its agent (if still registered) is lost, its record
    /// removed.
    async fn forget(&mut self, id: &str) {
        if self.shared.published.load().agents.contains_key(id) {
            if let Err(e) = self
                .shared
                .execute(Command::AgentLost { id: id.to_string() })
                .await
            {
                tracing::warn!(instance_id = %id, "agent of a terminated instance not declared lost yet: {e}");
            }
        }
        self.fleet.terminated(id);
        self.retry.remove(id);
        let _ = std::fs::remove_dir_all(self.dir.join(id));
    }
}
