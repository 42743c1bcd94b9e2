//! Barge's control plane, wired together: the single store writer, the scheduler loop, the
//! HTTP routes and, for `barge up`, an in-process agent. It owns how the pieces run (threads,
//! tasks, channels, shutdown) and none of the rules: those live in barge-core, the wire in
//! barge-api, the disk in barge-store and process handling in barge-agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwapOption;
pub use barge_agent::RunnerChoice;
use barge_core::arn::Identity;
use barge_store::Store;

mod agents;
mod cluster;
pub mod config_file;
pub mod events;
mod http;
pub mod limits;
pub mod metrics;
mod plane;
mod providers;
mod proxy;
mod scaling;
mod scheduler;
mod schedules;
pub mod security;
mod shared;
mod timers;
mod tls;
mod writer;

/// The exit status of a server that found another one leading (its commit was fenced or its
/// lease lapsed): it stops at once rather than act on a state it may no longer write.
pub const EXIT_DEPOSED: i32 = 3;

pub use security::SecurityConfig;
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
    /// Shared state in PostgreSQL (`barge server --database-url`): several servers run at
    /// once, one leads (holds the lease), the others forward requests to it. None: SQLite in
    /// `data_dir`, one server.
    pub database_url: Option<String>,
    /// Where the other servers reach this one (`http://HOST:PORT`) when it leads.
    pub advertise_url: Option<String>,
    /// The leader lease's time to live.
    pub lease_ttl_ms: u64,
    /// Access keys (SigV4) and TLS; the default is neither, on loopback only.
    pub security: SecurityConfig,
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

/// Runs `barge up` or `barge server` until Ctrl-C or SIGTERM: control plane, the local agent
/// if any, the agent endpoints, scheduler, HTTP.
pub async fn run_up(config: UpConfig) -> anyhow::Result<()> {
    // Before anything is opened or bound.
    config.security.check_listen(config.listen)?;
    metrics::mark_start();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let endpoint = format!("{}://{}", config.security.scheme(), listener.local_addr()?);
    // The address actually bound (port 0 becomes the one chosen): local instances of the
    // scaler join there.
    let config = UpConfig {
        listen: listener.local_addr()?,
        ..config
    };
    if let Some(url) = config.database_url.clone() {
        return cluster::run(listener, endpoint, config, url).await;
    }
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let leader = plane::Leader::start(store, &config).await?;
    print_banner(&endpoint, &config, leader.local.as_ref());
    let app = http::App {
        local: Arc::new(ArcSwapOption::from_pointee(leader.shared.clone())),
        leader_url: Arc::new(ArcSwapOption::empty()),
        console: Arc::new(barge_console::Console::new(
            config.security.access_keys.clone(),
            config.security.tls.is_some(),
        )),
    };
    serve(listener, app, &config, leader.shared.agents.clone()).await?;
    eprintln!("barge: shutting down: stopping running jobs");
    leader.stop().await;
    eprintln!("barge: stopped");
    Ok(())
}

/// Serves HTTP(S) until Ctrl-C or SIGTERM.
async fn serve(
    listener: tokio::net::TcpListener,
    app: http::App,
    config: &UpConfig,
    agents: Arc<agents::RemoteAgents>,
) -> anyhow::Result<()> {
    serve_until(listener, app, config, async move {
        shutdown_signal().await;
        // Waiting polls answer now, so that the server is not held up by them.
        agents.close();
    })
    .await
}

/// Serves HTTP(S), every request verified as `config.security` asks, until `stop` resolves.
async fn serve_until(
    listener: tokio::net::TcpListener,
    app: http::App,
    config: &UpConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = security::protect(http::router(app), &config.security, &config.identity.region);
    // Event streams would otherwise hold the graceful shutdown open forever.
    let stop = async move {
        stop.await;
        events::sse::close_streams();
    };
    tls::serve(listener, router, config.security.tls.as_ref(), stop).await?;
    Ok(())
}

fn print_banner(endpoint: &str, config: &UpConfig, local: Option<&plane::LocalAgent>) {
    println!("Barge is up: AWS Batch and CloudWatch Logs at {endpoint}");
    println!(
        "  web console at {endpoint}{}{}",
        barge_console::PREFIX,
        if config.security.requires_signatures() {
            " (sign in with one of the access keys)"
        } else {
            ""
        }
    );
    match &config.database_url {
        None => println!("  data directory {}", config.data_dir.display()),
        Some(_) => println!("  state in PostgreSQL (--database-url)"),
    }
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
    println!(
        "  Prometheus metrics at {endpoint}{} ({})",
        metrics::PATH,
        match (
            config.security.requires_signatures(),
            config.security.metrics_token.is_some()
        ) {
            (false, _) => "no credentials needed on loopback",
            (true, true) => "bearer token from --metrics-token-file, or signed",
            (true, false) => "signed; give Prometheus a --metrics-token-file token",
        }
    );
    security::print_banner_lines(&config.security, &config.identity.region);
    if local.is_some() {
        println!(
            "  aws batch register-job-definition --job-definition-name hello --type container --container-properties '{{\"image\":\"busybox\",\"command\":[\"echo\",\"hello from barge\"]}}' --endpoint-url {endpoint}"
        );
        println!("  aws batch submit-job --job-name hello --job-queue default --job-definition hello --endpoint-url {endpoint}");
    } else {
        println!("  aws batch create-compute-environment --compute-environment-name fleet --type UNMANAGED --endpoint-url {endpoint}");
    }
    println!("Press Ctrl-C to stop.");
}

/// How a process on this host reaches the server listening at `addr`.
pub(crate) fn local_url(addr: SocketAddr) -> String {
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
