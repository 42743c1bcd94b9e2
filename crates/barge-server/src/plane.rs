//! The leader's half of the server: everything that decides. The writer thread over the store,
//! the scheduler, the timers, the heartbeat watch over remote agents and, for `barge up`, the
//! local agent. Started once by a single server, or by a clustered server when it takes the
//! leader lease; stopped in the reverse order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use barge_agent::{AgentConfig, ControlPlane, ReportError, Runner};
use barge_core::agent::AgentReport;
use barge_core::model::*;
use barge_core::Command;
use barge_store::Store;
use serde_json::Map;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::{
    agents, events, limits, scheduler, schedules, timers, writer, LocalAgentConfig, Shared,
    UpConfig,
};

/// The local agent's link to the control plane: reports become writer commands.
struct LocalControlPlane {
    shared: Shared,
    agent_id: String,
}

impl ControlPlane for LocalControlPlane {
    fn report(
        &self,
        reports: Vec<AgentReport>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ReportError>> + Send + '_>>
    {
        Box::pin(async move {
            self.shared
                .execute(Command::AgentReports {
                    agent_id: self.agent_id.clone(),
                    reports,
                })
                .await
                .map(|_| ())
                .map_err(|e| ReportError::Unavailable(e.message))
        })
    }
}

/// An EC2-looking instance id for an agent, so statusReasons read as AWS's do.
fn new_agent_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("i-{}", &hex[..17])
}

fn default_compute_environment(vcpus: u64, uuid: String) -> ComputeEnvironment {
    let mut other = Map::new();
    other.insert("instanceTypes".into(), serde_json::json!(["optimal"]));
    ComputeEnvironment {
        name: "default".into(),
        uuid,
        kind: ComputeEnvironmentType::Managed,
        state: ResourceState::Enabled,
        compute_resources: Some(ComputeResources {
            kind: Some("EC2".into()),
            min_vcpus: Some(0),
            max_vcpus: Some(vcpus as i64),
            desired_vcpus: Some(0),
            other,
        }),
        unmanaged_vcpus: None,
        service_role: None,
        update_policy: None,
        tags: Tags::new(),
        other: Map::new(),
    }
}

fn default_job_queue() -> JobQueue {
    JobQueue {
        name: "default".into(),
        state: ResourceState::Enabled,
        priority: 1,
        compute_environment_order: vec![ComputeEnvironmentOrder {
            order: 1,
            compute_environment: "default".into(),
        }],
        scheduling_policy_arn: None,
        job_state_time_limit_actions: Vec::new(),
        tags: Tags::new(),
        other: Map::new(),
    }
}

/// A running local agent: its id, task and runner.
pub(crate) struct LocalAgent {
    pub id: String,
    task: JoinHandle<()>,
    pub runner: Arc<Runner>,
}

/// A running leader.
pub(crate) struct Leader {
    pub shared: Shared,
    router: Arc<writer::AgentRouter>,
    writer_thread: std::thread::JoinHandle<()>,
    /// Background loops, each with what stops it, stopped in this order.
    loops: Vec<(Arc<Notify>, JoinHandle<()>)>,
    pub local: Option<LocalAgent>,
}

impl Leader {
    /// Loads the state from `store` and starts everything that acts on it.
    pub async fn start(store: Store, config: &UpConfig) -> anyhow::Result<Leader> {
        let first_start = store.is_new();
        // On the blocking pool: PostgreSQL's client may not be called from an async task.
        let identity = config.identity.clone();
        let (store, mut state, logs) = tokio::task::spawn_blocking(move || {
            let state = store.load(identity).context("loading the stored state")?;
            let logs = store.reader()?;
            Ok::<_, anyhow::Error>((store, state, logs))
        })
        .await
        .context("loading the stored state panicked")??;
        state.config = config.core.clone();
        if let Some(scaling) = &config.scaling {
            state.config.scaling = Arc::new(scaling.catalog());
        }
        let published = Arc::new(ArcSwap::from_pointee(state));
        let (writer_tx, writer_rx) = mpsc::channel(limits::WRITER_QUEUE_COMMANDS_MAX);
        let router = Arc::new(writer::AgentRouter::default());
        let wake_scheduler = Arc::new(Notify::new());
        let (event_bus, event_sink, webhooks) = start_events(config)?;
        let writer_thread = {
            let (published, router, wake) =
                (published.clone(), router.clone(), wake_scheduler.clone());
            std::thread::Builder::new()
                .name("barge-writer".into())
                .spawn(move || {
                    writer::run_writer(store, published, writer_rx, router, wake, event_sink)
                })?
        };
        let remote_agents = Arc::new(agents::RemoteAgents::new(
            router.clone(),
            config.agent_token.clone(),
            config.heartbeat_timeout_ms,
        ));
        let shared = Shared {
            published,
            writer: writer_tx,
            logs,
            agents: remote_agents.clone(),
            events: event_bus,
        };

        // `barge up`'s local agent gets a new id on every start, so the one stored by the last
        // run is gone for good, and with it the attempts that were live on it: fail them (and
        // retry where attempts remain) before anything else happens. Remote agents stay: they
        // carry on with their work and have a whole heartbeat timeout to poll this server.
        let local_agents: Vec<String> = shared
            .published
            .load()
            .agents
            .values()
            .filter(|a| a.scope == AgentScope::AllManaged)
            .map(|a| a.id.clone())
            .collect();
        for id in local_agents {
            shared
                .execute(Command::AgentLost { id })
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        shared
            .execute(Command::FailOrphans)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        let local = match &config.local_agent {
            Some(agent) => {
                Some(start_local_agent(&shared, &router, config, agent, first_start).await?)
            }
            None => None,
        };

        let mut loops = Vec::new();
        for hook in webhooks {
            let stop = Arc::new(Notify::new());
            loops.push((stop.clone(), tokio::spawn(hook.run(stop))));
        }
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(scheduler::run(shared.clone(), wake_scheduler, stop.clone()));
        loops.push((stop, task));
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(timers::run(shared.clone(), stop.clone()));
        loops.push((stop, task));
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(schedules::run(shared.clone(), stop.clone()));
        loops.push((stop, task));
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(agents::watch_heartbeats(
            shared.clone(),
            remote_agents,
            stop.clone(),
        ));
        loops.push((stop, task));
        // Only the leader scales. Stopped last of the loops: it stops the local provider's
        // instances (containers and command instances keep running).
        if let Some(scaling) = config.scaling.as_ref().filter(|s| !s.providers.is_empty()) {
            if config.security.tls.is_some() {
                // Agents speak plain HTTP: one on this host cannot join an HTTPS port.
                if let Some(name) = scaling.local_instances() {
                    anyhow::bail!(
                        "configuration file {}: provider {name} runs its agents on this host and they speak plain HTTP, but this server serves HTTPS (--tls-cert); use a docker or command provider with a server_url the agents can reach over HTTP, or serve without TLS",
                        scaling.path.display()
                    );
                }
            }
            let scaler = crate::scaling::Scaler::start(
                shared.clone(),
                scaling.clone(),
                &config.data_dir,
                crate::local_url(config.listen),
                config.agent_token.clone(),
            )
            .await?;
            let stop = Arc::new(Notify::new());
            loops.push((stop.clone(), tokio::spawn(scaler.run(stop))));
        }
        Ok(Leader {
            shared,
            router,
            writer_thread,
            loops,
            local,
        })
    }

    /// Stops the loops, then the local agent (its attempts end and are reported), then the
    /// writer once every command is applied.
    pub async fn stop(self) {
        for (stop, task) in self.loops {
            stop.notify_one();
            let _ = task.await;
        }
        if let Some(local) = self.local {
            // Dropping the agent's channel asks it to stop its attempts and report their ends.
            self.router.unregister(&local.id);
            if tokio::time::timeout(
                Duration::from_millis(limits::SHUTDOWN_AGENT_WAIT_MS),
                local.task,
            )
            .await
            .is_err()
            {
                eprintln!("barge: the local agent did not stop in time");
            }
        }
        drop(self.shared);
        let writer = self.writer_thread;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }
}

/// The event bus (its renderer thread started), the writer's end of it, and the webhooks to
/// deliver to (their tasks are the caller's to start).
#[allow(clippy::type_complexity)]
fn start_events(
    config: &UpConfig,
) -> anyhow::Result<(
    Arc<events::EventBus>,
    events::Sink,
    Vec<Arc<events::webhooks::Queue>>,
)> {
    let (hooks, history) = match &config.scaling {
        Some(file) => (file.webhooks.clone(), file.events_history),
        None => (Vec::new(), limits::EVENTS_HISTORY_EVENTS_DEFAULT),
    };
    let webhooks = hooks
        .into_iter()
        .map(|hook| {
            let url = hook.url.clone();
            events::webhooks::Queue::new(hook).map_err(|e| anyhow::anyhow!("webhook {url}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The boot id: a resumed stream can tell this start's events from an earlier one's.
    let boot = writer::now_ms().max(0) as u64;
    let (bus, sink, rx) = events::EventBus::new(boot, history, webhooks.clone());
    let renderer = bus.clone();
    std::thread::Builder::new()
        .name("barge-events".into())
        .spawn(move || events::run_renderer(renderer, rx))?;
    Ok((bus, sink, webhooks))
}

/// Registers and starts `barge up`'s agent, and on the first start creates the `default`
/// compute environment and job queue it backs.
async fn start_local_agent(
    shared: &Shared,
    router: &writer::AgentRouter,
    config: &UpConfig,
    agent: &LocalAgentConfig,
    first_start: bool,
) -> anyhow::Result<LocalAgent> {
    let agent_id = new_agent_id();
    let agent_dir = config.data_dir.join("agent");
    // Chosen before the agent registers, so that `--runner docker` without Docker stops here
    // with its reason instead of after the server is up.
    let runner = Arc::new(Runner::choose(agent.runner, &agent_id, Some(&agent_dir)).await?);
    let (agent_tx, agent_rx) = mpsc::unbounded_channel();
    router.register(&agent_id, agent_tx.clone());
    shared
        .execute(Command::RegisterAgent {
            id: agent_id.clone(),
            vcpus_milli: agent.vcpus * 1000,
            memory_mib: agent.memory_mib,
            scope: AgentScope::AllManaged,
            // The local agent runs jobs on this host, which its nodes reach on loopback.
            private_ipv4: Some("127.0.0.1".into()),
            gpus: agent.gpus,
            runner: None,
            running: Vec::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if first_start {
        let ce = default_compute_environment(agent.vcpus, uuid::Uuid::new_v4().to_string());
        shared
            .execute(Command::CreateComputeEnvironment(ce))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        shared
            .execute(Command::CreateJobQueue(default_job_queue()))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let control: Arc<dyn ControlPlane> = Arc::new(LocalControlPlane {
        shared: shared.clone(),
        agent_id: agent_id.clone(),
    });
    let task = tokio::spawn(barge_agent::run(
        AgentConfig {
            agent_id: agent_id.clone(),
            state_dir: Some(agent_dir),
            runner: runner.clone(),
            held: Default::default(),
            adopt: false,
            recovered: None,
        },
        control,
        agent_rx,
    ));
    drop(agent_tx);
    if let Some(note) = runner.limits_note() {
        tracing::info!("process runner {note}");
    }
    Ok(LocalAgent {
        id: agent_id,
        task,
        runner,
    })
}
