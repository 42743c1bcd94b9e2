//! The agent loop: turns instructions into running attempts and stops them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use barge_core::agent::{AgentInstruction, AgentReport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::control::ControlPlane;
use crate::ledger::Ledger;
use crate::limits::{
    FINISHED_ATTEMPTS_REMEMBERED_MAX, REPORT_QUEUE_MAX, SHUTDOWN_GRACE_MS, SHUTDOWN_REPORT_FLUSH_MS,
};
use crate::protocol::Held;
use crate::runner::Runner;
use crate::{epoch_ms, reporter};

#[derive(Clone)]
pub struct AgentConfig {
    /// Names this agent in its logs (and its containers' labels).
    pub agent_id: String,
    /// Where the agent keeps its ledger of running process groups (`attempts/`), so that after
    /// a crash it stops what the previous run left behind. None keeps no ledger. The Docker
    /// runner keeps its home id here too (see [`Runner::choose`]).
    pub state_dir: Option<std::path::PathBuf>,
    /// Runs every attempt; chosen once, before the agent starts.
    pub runner: Arc<Runner>,
    /// The attempts whose task has not finished, kept up to date by the loop for whoever
    /// tells the control plane what this agent holds (a remote agent's polls).
    pub held: Arc<HeldAttempts>,
    /// Keep and follow the containers an earlier run of this agent left (a remote agent, whose
    /// id is stable, so its attempts are still live); false removes them (`barge up`).
    pub adopt: bool,
    /// Notified once recovery is over and `held` lists what was adopted: a remote agent
    /// registers only then, so that the control plane sees what still runs.
    pub recovered: Option<Arc<tokio::sync::Notify>>,
}

/// The attempts an agent holds, by attempt id (with their job ids).
#[derive(Debug, Default)]
pub struct HeldAttempts(Mutex<BTreeMap<String, String>>);

impl HeldAttempts {
    pub fn list(&self) -> Vec<Held> {
        self.0
            .lock()
            .expect("held attempts")
            .iter()
            .map(|(attempt_id, job_id)| Held {
                job_id: job_id.clone(),
                attempt_id: attempt_id.clone(),
            })
            .collect()
    }
    fn insert(&self, job_id: &str, attempt_id: &str) {
        self.0
            .lock()
            .expect("held attempts")
            .insert(attempt_id.to_string(), job_id.to_string());
    }
    fn remove(&self, attempt_id: &str) {
        self.0.lock().expect("held attempts").remove(attempt_id);
    }
}

/// Attempts whose task has finished, remembered so that a launch of one of them (a remote
/// agent's poll can cross its own report of the end) is ignored: an attempt never runs twice.
#[derive(Default)]
struct Finished {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Finished {
    fn contains(&self, attempt_id: &str) -> bool {
        self.ids.contains(attempt_id)
    }
    fn insert(&mut self, attempt_id: String) {
        if self.order.len() >= FINISHED_ATTEMPTS_REMEMBERED_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.ids.insert(attempt_id.clone());
        self.order.push_back(attempt_id);
    }
}

/// Runs the agent until `instructions` closes, then stops every attempt still running (SIGTERM,
/// then SIGKILL after `SHUTDOWN_GRACE_MS`) and returns once all of their processes are reaped
/// and their last reports are durable (or `SHUTDOWN_REPORT_FLUSH_MS` has passed).
///
/// On Linux this makes the whole process a child subreaper, so that the processes a job leaves
/// behind are reaped by the agent instead of being left to PID 1.
pub async fn run(
    config: AgentConfig,
    control: Arc<dyn ControlPlane>,
    instructions: mpsc::UnboundedReceiver<AgentInstruction>,
) {
    let span = tracing::info_span!("agent", agent_id = %config.agent_id);
    async {
        become_subreaper();
        let ledger_dir = config.state_dir.as_ref().map(|dir| dir.join("attempts"));
        let ledger = Arc::new(Ledger::new(ledger_dir.as_deref()));
        // Before anything new starts: a previous run that died may have left attempts running
        // (process groups, containers) that the control plane has already failed and may retry.
        let (stopped, adopted) = config.runner.recover(ledger.clone(), config.adopt).await;
        if !stopped.is_empty() {
            tracing::warn!(attempts = ?stopped, "stopped attempts left running by a previous run");
        }
        if !adopted.is_empty() {
            let ids: Vec<&str> = adopted.iter().map(|a| a.attempt_id.as_str()).collect();
            tracing::info!(attempts = ?ids, "following the containers of an earlier run");
        }
        let recovered = config.recovered.clone();
        run_loop(
            control,
            instructions,
            ledger,
            config.runner,
            config.held,
            adopted,
            recovered,
        )
        .await;
    }
    .instrument(span)
    .await;
}

/// Makes processes orphaned by a job (its background processes, once the job's main process
/// exits) children of this process rather than of PID 1, so that the runner can reap them: PID 1
/// does not reap orphans on every host (it does not on ours), and unreaped they stay zombies.
/// Process-wide; orphans from outside a job's process group are then ours too, and are not reaped.
pub(crate) fn become_subreaper() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            tracing::warn!(%err, "cannot become a child subreaper; orphaned job processes may stay zombies");
        }
    }
}

async fn run_loop(
    control: Arc<dyn ControlPlane>,
    mut instructions: mpsc::UnboundedReceiver<AgentInstruction>,
    ledger: Arc<Ledger>,
    runner: Arc<Runner>,
    held: Arc<HeldAttempts>,
    adopted: Vec<crate::runner::Adopted>,
    recovered: Option<Arc<tokio::sync::Notify>>,
) {
    let mut ended = Finished::default();
    let (report_tx, report_rx) = mpsc::channel(REPORT_QUEUE_MAX);
    let reporter = tokio::spawn(reporter::run(control, report_rx).in_current_span());
    // Each attempt holds a clone while a process of it may exist; `recv` returns None once all
    // are dropped, which is how shutdown knows every child is reaped.
    let (live_tx, mut live_rx) = mpsc::channel::<()>(1);
    // Stop requests (grace in ms) of the attempts whose task has not finished, by attempt id.
    let mut stops: HashMap<String, watch::Sender<Option<u64>>> = HashMap::new();
    let mut attempts: JoinSet<String> = JoinSet::new();

    for adopted in adopted {
        let (stop_tx, stop_rx) = watch::channel(None);
        stops.insert(adopted.attempt_id.clone(), stop_tx);
        held.insert(&adopted.job_id, &adopted.attempt_id);
        let span = tracing::info_span!(
            "attempt", job_id = %adopted.job_id, attempt_id = %adopted.attempt_id
        );
        let attempt_id = adopted.attempt_id.clone();
        let (runner, reports, live) = (runner.clone(), report_tx.clone(), live_tx.clone());
        attempts.spawn(
            async move {
                runner.follow_adopted(adopted, reports, stop_rx, live).await;
                attempt_id
            }
            .instrument(span),
        );
    }
    if let Some(recovered) = recovered {
        recovered.notify_one();
    }

    loop {
        tokio::select! {
            instruction = instructions.recv() => match instruction {
                Some(AgentInstruction::Launch(spec)) => {
                    if stops.contains_key(&spec.attempt_id) || ended.contains(&spec.attempt_id) {
                        // A resent instruction: an attempt never runs twice.
                        tracing::debug!(attempt_id = %spec.attempt_id, "duplicate launch ignored");
                        continue;
                    }
                    held.insert(&spec.job_id, &spec.attempt_id);
                    let (stop_tx, stop_rx) = watch::channel(None);
                    stops.insert(spec.attempt_id.clone(), stop_tx);
                    let span = tracing::info_span!(
                        "attempt", job_id = %spec.job_id, attempt_id = %spec.attempt_id
                    );
                    let attempt_id = spec.attempt_id.clone();
                    let (runner, reports, live, ledger) =
                        (runner.clone(), report_tx.clone(), live_tx.clone(), ledger.clone());
                    attempts.spawn(
                        async move {
                            runner.run(spec, reports, stop_rx, live, ledger).await;
                            attempt_id
                        }
                        .instrument(span),
                    );
                }
                Some(AgentInstruction::Stop { job_id, attempt_id, grace_ms }) => {
                    let known = stops
                        .get(&attempt_id)
                        .is_some_and(|stop| stop.send(Some(grace_ms)).is_ok());
                    if !known && !ended.contains(&attempt_id) {
                        // Nothing of it runs here (never launched, or lost in a restart): say it
                        // is over, so the control plane does not wait for it.
                        let exited = AgentReport::Exited {
                            job_id,
                            attempt_id,
                            at_ms: epoch_ms(),
                            exit_code: None,
                            reason: None,
                        };
                        let _ = report_tx.send(exited).await;
                    }
                }
                None => break,
            },
            Some(finished) = attempts.join_next() => match finished {
                Ok(attempt_id) => {
                    stops.remove(&attempt_id);
                    held.remove(&attempt_id);
                    ended.insert(attempt_id);
                }
                // Its stop sender stays behind; a later Stop finds no receiver and is reported
                // as unknown.
                Err(err) => tracing::error!(%err, "attempt task failed"),
            },
        }
    }

    tracing::info!(
        running = stops.len(),
        "instructions closed; stopping attempts"
    );
    for stop in stops.values() {
        // An earlier, shorter grace still wins: the runner keeps the earliest deadline.
        let _ = stop.send(Some(SHUTDOWN_GRACE_MS));
    }
    drop(live_tx);
    while live_rx.recv().await.is_some() {}

    let reporter_abort = reporter.abort_handle();
    let flushed = tokio::time::timeout(Duration::from_millis(SHUTDOWN_REPORT_FLUSH_MS), async {
        while attempts.join_next().await.is_some() {}
        drop(report_tx);
        let _ = reporter.await;
    })
    .await;
    if flushed.is_err() {
        // Every process is already reaped; only reports are lost.
        tracing::warn!("control plane too slow at shutdown; last reports dropped");
        attempts.abort_all();
        reporter_abort.abort();
    }
}
