//! Barge's control plane, wired together: the single store writer, the scheduler loop, the
//! HTTP routes and, for `barge up`, an in-process agent. It owns how the pieces run (threads,
//! tasks, channels, shutdown) and none of the rules: those live in barge-core, the wire in
//! barge-api, the disk in barge-store and process handling in barge-agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
pub use barge_agent::RunnerChoice;
use barge_agent::{AgentConfig, ControlPlane, ReportError, Runner};
use barge_core::agent::AgentReport;
use barge_core::arn::Identity;
use barge_core::model::*;
use barge_core::Command;
use barge_store::Store;
use serde_json::Map;
use tokio::sync::{mpsc, Notify};

mod agents;
pub mod config_file;
mod http;
pub mod limits;
mod providers;
mod scaling;
mod scheduler;
mod shared;
mod timers;
mod writer;

pub use shared::Shared;

/// Settings of `barge up` (with a local agent) and `barge server` (without).
#[derive(Clone, Debug)]
pub struct UpConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `barge up`'s agent in this process; None for `barge server`, whose capacity is the
    /// remote agents that join.
    pub local_agent: Option<LocalAgentConfig>,
    /// The token remote agents must present (None: any agent may join; only on loopback).
    pub agent_token: Option<String>,
    /// A remote agent not heard from for this long is declared lost.
    pub heartbeat_timeout_ms: u64,
    pub identity: Identity,
    /// Bounds Barge lifts above AWS's (array size, dependsOn entries).
    pub core: barge_core::state::CoreConfig,
    /// The configuration file's instance types and providers (`--config`), if one was given.
    pub scaling: Option<config_file::ScalingConfig>,
}

/// `barge up`'s local agent.
#[derive(Clone, Debug)]
pub struct LocalAgentConfig {
    pub vcpus: u64,
    pub memory_mib: u64,
    /// GPUs the local agent offers (jobs asking for GPUs run only where some are).
    pub gpus: u32,
    /// How the local agent runs jobs.
    pub runner: RunnerChoice,
}

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
struct LocalAgent {
    id: String,
    task: tokio::task::JoinHandle<()>,
    runner: Arc<Runner>,
}

/// Runs `barge up` or `barge server` until Ctrl-C or SIGTERM: control plane, the local agent
/// if any, the agent endpoints, scheduler, HTTP.
pub async fn run_up(config: UpConfig) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let first_start = store.is_new();
    let mut state = store
        .load(config.identity.clone())
        .context("loading the stored state")?;
    state.config = config.core.clone();
    if let Some(scaling) = &config.scaling {
        state.config.scaling = Arc::new(scaling.catalog());
    }
    let logs = store.reader()?;
    let published = Arc::new(ArcSwap::from_pointee(state));
    let (writer_tx, writer_rx) = mpsc::channel(limits::WRITER_QUEUE_COMMANDS_MAX);
    let router = Arc::new(writer::AgentRouter::default());
    let wake_scheduler = Arc::new(Notify::new());
    let writer_thread = {
        let (published, router, wake) = (published.clone(), router.clone(), wake_scheduler.clone());
        std::thread::Builder::new()
            .name("barge-writer".into())
            .spawn(move || writer::run_writer(store, published, writer_rx, router, wake))?
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
            Some(start_local_agent(&shared, &router, &config, agent, first_start).await?)
        }
        None => None,
    };

    let stop_timers = Arc::new(Notify::new());
    let timers = tokio::spawn(timers::run(shared.clone(), stop_timers.clone()));
    let stop_heartbeats = Arc::new(Notify::new());
    let heartbeats = tokio::spawn(agents::watch_heartbeats(
        shared.clone(),
        remote_agents.clone(),
        stop_heartbeats.clone(),
    ));
    let stop_scheduler = Arc::new(Notify::new());
    let scheduler = tokio::spawn(scheduler::run(
        shared.clone(),
        wake_scheduler,
        stop_scheduler.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    // After the bind: a local instance joins at the port actually listened on.
    let stop_scaler = Arc::new(Notify::new());
    let scaler = match &config.scaling {
        Some(scaling) if !scaling.providers.is_empty() => {
            let scaler = scaling::Scaler::start(
                shared.clone(),
                scaling.clone(),
                &config.data_dir,
                local_url(listener.local_addr()?),
                config.agent_token.clone(),
            )
            .await?;
            Some(tokio::spawn(scaler.run(stop_scaler.clone())))
        }
        _ => None,
    };
    print_banner(&endpoint, &config, local.as_ref());

    let app = http::router(shared.clone());
    let closing = remote_agents.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Waiting polls answer now, so that the server is not held up by them.
            closing.close();
        })
        .await?;

    eprintln!("barge: shutting down: stopping running jobs");
    stop_scheduler.notify_one();
    let _ = scheduler.await;
    stop_timers.notify_one();
    let _ = timers.await;
    stop_heartbeats.notify_one();
    let _ = heartbeats.await;
    if let Some(scaler) = scaler {
        // Local instances are stopped; containers and command instances keep running.
        stop_scaler.notify_one();
        let _ = scaler.await;
    }
    if let Some(local) = local {
        // Dropping the agent's channel asks it to stop its attempts and report their ends.
        router.unregister(&local.id);
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
    drop(shared);
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    eprintln!("barge: stopped");
    Ok(())
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

fn print_banner(endpoint: &str, config: &UpConfig, local: Option<&LocalAgent>) {
    println!("Barge is up: AWS Batch and CloudWatch Logs at {endpoint}");
    println!("  data directory {}", config.data_dir.display());
    match (local, &config.local_agent) {
        (Some(local), Some(agent)) => {
            println!(
                "  local agent {} with {} vCPUs, {} MiB and {} GPUs",
                local.id, agent.vcpus, agent.memory_mib, agent.gpus
            );
            println!("  runner: {}", local.runner.description());
            if let Some(limits) = local.runner.limits_note() {
                println!("  {limits}");
            }
        }
        _ => println!(
            "  no local agent: capacity is the agents that join (barge agent --server {endpoint} --compute-environment NAME)"
        ),
    }
    if let Some(scaling) = &config.scaling {
        println!(
            "  configuration {}: {} instance types; providers: {}",
            scaling.path.display(),
            scaling.instance_types.len(),
            if scaling.providers.is_empty() {
                "none".to_string()
            } else {
                scaling
                    .providers
                    .iter()
                    .map(|(name, p)| format!("{name} ({})", p.kind()))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    println!(
        "  remote agents: {}; lost after {} s without a heartbeat",
        if config.agent_token.is_some() {
            "token required"
        } else {
            "no token required"
        },
        config.heartbeat_timeout_ms / 1000
    );
    println!("Try it (any credentials work on loopback):");
    println!(
        "  export AWS_ACCESS_KEY_ID=barge AWS_SECRET_ACCESS_KEY=barge AWS_DEFAULT_REGION={}",
        config.identity.region
    );
    println!(
        "  aws batch register-job-definition --job-definition-name hello --type container --container-properties '{{\"image\":\"busybox\",\"command\":[\"echo\",\"hello from barge\"]}}' --endpoint-url {endpoint}"
    );
    println!("  aws batch submit-job --job-name hello --job-queue default --job-definition hello --endpoint-url {endpoint}");
    println!("Press Ctrl-C to stop.");
}

/// How a process on this host reaches the server listening at `addr`.
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Resolves at Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
