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

mod http;
pub mod limits;
mod scheduler;
pub mod security;
mod shared;
mod timers;
mod tls;
mod writer;

pub use security::SecurityConfig;
pub use shared::Shared;

/// Settings of `barge up`.
#[derive(Clone, Debug)]
pub struct UpConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub agent_vcpus: u64,
    pub agent_memory_mib: u64,
    /// GPUs the local agent offers (jobs asking for GPUs run only where some are).
    pub agent_gpus: u32,
    pub identity: Identity,
    /// Bounds Barge lifts above AWS's (array size, dependsOn entries).
    pub core: barge_core::state::CoreConfig,
    /// How the local agent runs jobs.
    pub runner: RunnerChoice,
    /// Access keys (SigV4) and TLS; the default is neither, on loopback only.
    pub security: SecurityConfig,
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

/// Runs `barge up` until Ctrl-C or SIGTERM: control plane, local agent, scheduler, HTTP.
pub async fn run_up(config: UpConfig) -> anyhow::Result<()> {
    // Before anything is opened or bound.
    config.security.check_listen(config.listen)?;
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let first_start = store.is_new();
    let mut state = store
        .load(config.identity.clone())
        .context("loading the stored state")?;
    state.config = config.core;
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
    let shared = Shared {
        published,
        writer: writer_tx,
        logs,
    };

    // `barge up`'s local agent gets a new id on every start, so the one stored by the last
    // run is gone for good, and with it the attempts that were live on it: fail them (and
    // retry where attempts remain) before anything else happens.
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

    let agent_id = new_agent_id();
    let agent_dir = config.data_dir.join("agent");
    // Chosen before the agent registers, so that `--runner docker` without Docker stops here
    // with its reason instead of after the server is up.
    let runner = Arc::new(Runner::choose(config.runner, &agent_id, Some(&agent_dir)).await?);
    let (agent_tx, agent_rx) = mpsc::unbounded_channel();
    router.register(&agent_id, agent_tx.clone());
    shared
        .execute(Command::RegisterAgent {
            id: agent_id.clone(),
            vcpus_milli: config.agent_vcpus * 1000,
            memory_mib: config.agent_memory_mib,
            scope: AgentScope::AllManaged,
            // The local agent runs jobs on this host, which its nodes reach on loopback.
            private_ipv4: Some("127.0.0.1".into()),
            gpus: config.agent_gpus,
            runner: None,
            running: Vec::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if first_start {
        let ce = default_compute_environment(config.agent_vcpus, uuid::Uuid::new_v4().to_string());
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
    let agent = tokio::spawn(barge_agent::run(
        AgentConfig {
            agent_id: agent_id.clone(),
            state_dir: Some(agent_dir),
            runner: runner.clone(),
        },
        control,
        agent_rx,
    ));
    drop(agent_tx);

    let stop_timers = Arc::new(Notify::new());
    let timers = tokio::spawn(timers::run(shared.clone(), stop_timers.clone()));
    let stop_scheduler = Arc::new(Notify::new());
    let scheduler = tokio::spawn(scheduler::run(
        shared.clone(),
        wake_scheduler,
        stop_scheduler.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let endpoint = format!("{}://{}", config.security.scheme(), listener.local_addr()?);
    let limits = runner.limits_note();
    if let Some(note) = &limits {
        tracing::info!("process runner {note}");
    }
    print_banner(
        &endpoint,
        &config,
        &agent_id,
        runner.description(),
        limits.as_deref(),
    );

    let app = security::protect(
        http::router(shared.clone()),
        &config.security,
        &config.identity.region,
    );
    tls::serve(
        listener,
        app,
        config.security.tls.as_ref(),
        shutdown_signal(),
    )
    .await?;

    eprintln!("barge: shutting down: stopping running jobs");
    stop_scheduler.notify_one();
    let _ = scheduler.await;
    stop_timers.notify_one();
    let _ = timers.await;
    // Dropping the agent's channel asks it to stop its attempts and report their ends.
    router.unregister(&agent_id);
    if tokio::time::timeout(Duration::from_millis(limits::SHUTDOWN_AGENT_WAIT_MS), agent)
        .await
        .is_err()
    {
        eprintln!("barge: the local agent did not stop in time");
    }
    drop(shared);
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    eprintln!("barge: stopped");
    Ok(())
}

fn print_banner(
    endpoint: &str,
    config: &UpConfig,
    agent_id: &str,
    runner: &str,
    limits: Option<&str>,
) {
    println!("Barge is up: AWS Batch and CloudWatch Logs at {endpoint}");
    println!(
        "  data directory {}, local agent {agent_id} with {} vCPUs, {} MiB and {} GPUs",
        config.data_dir.display(),
        config.agent_vcpus,
        config.agent_memory_mib,
        config.agent_gpus
    );
    println!("  runner: {runner}");
    if let Some(limits) = limits {
        println!("  {limits}");
    }
    security::print_banner_lines(&config.security, &config.identity.region);
    println!(
        "  aws batch register-job-definition --job-definition-name hello --type container --container-properties '{{\"image\":\"busybox\",\"command\":[\"echo\",\"hello from barge\"]}}' --endpoint-url {endpoint}"
    );
    println!("  aws batch submit-job --job-name hello --job-queue default --job-definition hello --endpoint-url {endpoint}");
    println!("Press Ctrl-C to stop.");
}

async fn shutdown_signal() {
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
