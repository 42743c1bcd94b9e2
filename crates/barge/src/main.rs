//! The `barge` binary: parses the command line and hands over to the server crate (`up`,
//! `server`, `agent`) or to the commands for people (`cli`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use barge_core::arn::Identity;
use clap::{Parser, Subcommand, ValueEnum};

mod cli;
mod client;

#[derive(Parser)]
#[command(name = "barge", version, about = "AWS Batch that you run yourself")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Start the control plane and a local agent, with state in a data directory.
    Up(UpArgs),
    /// Start the control plane alone: its capacity is the agents that join it.
    Server(ServerCmdArgs),
    /// Run jobs on this host for a Barge server, as one instance of a compute environment.
    Agent(AgentArgs),
    #[command(flatten)]
    People(cli::Command),
}

#[derive(clap::Args)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// vCPUs the local agent offers (default: the host's cores). More than the host has
    /// oversubscribes it, which suits short jobs.
    #[arg(long, env = "BARGE_AGENT_VCPUS")]
    agent_vcpus: Option<u64>,
    /// Memory the local agent offers, in MiB (default: the host's memory).
    #[arg(long, env = "BARGE_AGENT_MEMORY_MIB")]
    agent_memory_mib: Option<u64>,
    /// GPUs the local agent offers (default: the NVIDIA devices /dev/nvidia<N> of the host).
    #[arg(long, env = "BARGE_AGENT_GPUS")]
    agent_gpus: Option<u32>,
    /// How the local agent runs jobs: docker (a container of the job's image), process (a host
    /// process), or auto (docker when the Docker socket answers, else process).
    #[arg(long, env = "BARGE_RUNNER", value_enum, default_value = "auto")]
    runner: RunnerArg,
}

/// What `barge up` and `barge server` share.
#[derive(clap::Args)]
struct ServerArgs {
    /// Address to serve the AWS Batch and CloudWatch Logs APIs (and the agent protocol) on.
    #[arg(long, env = "BARGE_LISTEN", default_value = "127.0.0.1:8433")]
    listen: SocketAddr,
    /// Where Barge keeps its database.
    #[arg(long, env = "BARGE_DATA_DIR", default_value = "./barge-data")]
    data_dir: PathBuf,
    /// Region that appears in ARNs.
    #[arg(long, env = "BARGE_REGION", default_value = "us-east-1")]
    region: String,
    /// Account id that appears in ARNs.
    #[arg(long, env = "BARGE_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// Largest arrayProperties.size accepted (AWS: 10,000).
    #[arg(long, env = "BARGE_ARRAY_SIZE_MAX", default_value_t = barge_core::limits::ARRAY_SIZE_MAX_DEFAULT)]
    array_size_max: u32,
    /// Most dependsOn entries per job (AWS: 20).
    #[arg(long, env = "BARGE_DEPENDS_ON_MAX", default_value_t = barge_core::limits::DEPENDS_ON_MAX_DEFAULT)]
    depends_on_max: usize,
    /// The token remote agents must present. Required when listening beyond loopback.
    #[arg(long, env = "BARGE_AGENT_TOKEN", hide_env_values = true)]
    agent_token: Option<String>,
    /// A file holding the agent token (its first line).
    #[arg(long, env = "BARGE_AGENT_TOKEN_FILE", conflicts_with = "agent_token")]
    agent_token_file: Option<PathBuf>,
    /// Seconds without a heartbeat after which a remote agent is declared lost and its jobs'
    /// attempts fail with "Host EC2 (instance <id>) terminated."
    #[arg(
        long,
        env = "BARGE_AGENT_HEARTBEAT_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    agent_heartbeat_timeout_seconds: u64,
    /// A TOML configuration file: instance types and the providers that scale MANAGED compute
    /// environments tagged barge:provider=NAME (see README, "Scaling"), and the job state change
    /// events' history and webhooks (docs/events.md).
    #[arg(long, env = "BARGE_CONFIG")]
    config: Option<PathBuf>,
    /// Access keys whose SigV4 signatures Barge accepts, in the aws CLI's credentials format
    /// (`[profile]` sections with aws_access_key_id and aws_secret_access_key). With keys (here
    /// or in BARGE_ACCESS_KEY_ID and BARGE_SECRET_ACCESS_KEY) every request must be signed;
    /// without, Barge listens on loopback only.
    #[arg(long, env = "BARGE_CREDENTIALS_FILE")]
    credentials_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first).
    #[arg(long, env = "BARGE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "BARGE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A bearer token that GET /metrics accepts instead of a SigV4 signature, for Prometheus
    /// (which cannot sign) when access keys are on. Prefer --metrics-token-file.
    #[arg(long, env = "BARGE_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// A file holding the metrics token (its first line).
    #[arg(
        long,
        env = "BARGE_METRICS_TOKEN_FILE",
        conflicts_with = "metrics_token"
    )]
    metrics_token_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServerCmdArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Keep the state in PostgreSQL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE) instead
    /// of SQLite in --data-dir, so that several servers can run on it: one leads, the others
    /// forward requests to it and take over when it stops.
    #[arg(long, env = "BARGE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The URL the other servers reach this one at when it leads (default: http://<--listen>).
    #[arg(long, env = "BARGE_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// The leader lease's time to live: a leader that dies is replaced within about this long.
    #[arg(long, env = "BARGE_LEASE_TTL_SECONDS", default_value_t = 5)]
    lease_ttl_seconds: u64,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The Barge server to join (http://HOST:PORT), or several separated by commas (servers
    /// sharing one PostgreSQL database): calls move on to the next when one cannot be reached.
    #[arg(long, env = "BARGE_SERVER")]
    server: String,
    /// The compute environment this host is an instance of.
    #[arg(long, env = "BARGE_COMPUTE_ENVIRONMENT")]
    compute_environment: String,
    /// The server's agent token.
    #[arg(long, env = "BARGE_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the agent token (its first line).
    #[arg(long, env = "BARGE_AGENT_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Where the agent keeps its id, its ledger of running attempts and its Docker home id.
    #[arg(
        long,
        env = "BARGE_AGENT_DATA_DIR",
        default_value = "./barge-agent-data"
    )]
    data_dir: PathBuf,
    /// The instance id (default: one made up on the first start and kept in the data
    /// directory, so that a restarted agent is the same instance).
    #[arg(long, env = "BARGE_AGENT_ID")]
    agent_id: Option<String>,
    /// vCPUs this host offers (default: its cores).
    #[arg(long, env = "BARGE_AGENT_VCPUS")]
    vcpus: Option<u64>,
    /// Memory this host offers, in MiB (default: its memory).
    #[arg(long, env = "BARGE_AGENT_MEMORY_MIB")]
    memory_mib: Option<u64>,
    /// GPUs this host offers (default: its NVIDIA devices).
    #[arg(long, env = "BARGE_AGENT_GPUS")]
    gpus: Option<u32>,
    /// How jobs run here (as for `barge up`).
    #[arg(long, env = "BARGE_RUNNER", value_enum, default_value = "auto")]
    runner: RunnerArg,
    /// The CA bundle (PEM) that verifies an https:// server's certificate (default: the
    /// system's CAs). A self-signed certificate may be given as its own bundle.
    #[arg(long, env = "BARGE_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// The address the other nodes of a multi-node job reach this host at (default: the
    /// address this host uses to reach the server).
    #[arg(long, env = "BARGE_PRIVATE_IPV4")]
    private_ipv4: Option<std::net::Ipv4Addr>,
}

#[derive(Clone, Copy, ValueEnum)]
enum RunnerArg {
    Auto,
    Docker,
    Process,
}

impl From<RunnerArg> for barge_server::RunnerChoice {
    fn from(arg: RunnerArg) -> Self {
        match arg {
            RunnerArg::Auto => barge_server::RunnerChoice::Auto,
            RunnerArg::Docker => barge_server::RunnerChoice::Docker,
            RunnerArg::Process => barge_server::RunnerChoice::Process,
        }
    }
}

/// The host's NVIDIA GPUs: its /dev/nvidia<N> devices (the driver makes one per GPU, beside
/// nvidiactl and nvidia-uvm, which are not GPUs).
fn host_gpus() -> u32 {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("nvidia"))
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u32
}

/// The host's memory in MiB, from /proc/meminfo.
fn host_memory_mib() -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let kib = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("/proc/meminfo has no MemTotal line; pass --agent-memory-mib")?;
    Ok(kib / 1024)
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    // A job being started by an agent of this binary (see barge_agent::launcher): before
    // anything else, so that nothing of Barge runs in the job's process.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|a| a == barge_agent::launcher::LAUNCHER_ARG)
    {
        barge_agent::launcher::exec_limited(&argv[2..]);
    }
    if let Ok(exe) = std::env::current_exe() {
        barge_agent::launcher::set_launcher(exe);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BARGE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Commands::Up(args) => {
            let agent_vcpus = match args.agent_vcpus {
                Some(0) => anyhow::bail!("--agent-vcpus must be at least 1"),
                Some(v) => v,
                None => host_vcpus(),
            };
            let agent_memory_mib = match args.agent_memory_mib {
                Some(0) => anyhow::bail!("--agent-memory-mib must be at least 1"),
                Some(v) => v,
                None => host_memory_mib()?,
            };
            let local = barge_server::LocalAgentConfig {
                vcpus: agent_vcpus,
                memory_mib: agent_memory_mib,
                gpus: args.agent_gpus.unwrap_or_else(host_gpus),
                runner: args.runner.into(),
            };
            serve(server_config(args.server, Some(local))?)
        }
        Commands::Server(args) => {
            let mut config = server_config(args.server, None)?;
            if let Some(url) = args.database_url {
                if args.lease_ttl_seconds == 0 || args.lease_ttl_seconds > 600 {
                    anyhow::bail!("--lease-ttl-seconds must be between 1 and 600");
                }
                let advertise = match args.advertise_url {
                    Some(a) => a,
                    None if config.listen.ip().is_unspecified() => anyhow::bail!(
                        "--listen {} is every address: pass --advertise-url http://HOST:PORT, the address the other servers reach this one at",
                        config.listen
                    ),
                    None => format!("http://{}", config.listen),
                };
                if !advertise.starts_with("http://") {
                    anyhow::bail!("--advertise-url must be an http://HOST:PORT URL");
                }
                config.database_url = Some(url);
                config.advertise_url = Some(advertise);
                config.lease_ttl_ms = args.lease_ttl_seconds * 1000;
            }
            serve(config)
        }
        Commands::Agent(args) => agent(args),
        Commands::People(command) => Ok(cli::run(command)),
    }
}

fn host_vcpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

fn serve(config: barge_server::UpConfig) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(barge_server::run_up(config))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// A token from its flag or its file (first line, trimmed); an empty one is refused.
fn read_token(
    value: Option<String>,
    file: Option<PathBuf>,
    flag: &str,
) -> anyhow::Result<Option<String>> {
    let token = match (value, file) {
        (Some(v), _) => v,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading the token file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        (None, None) => return Ok(None),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("{flag}: the token is empty");
    }
    Ok(Some(token))
}

fn server_config(
    args: ServerArgs,
    local_agent: Option<barge_server::LocalAgentConfig>,
) -> anyhow::Result<barge_server::UpConfig> {
    use barge_core::limits::{ARRAY_SIZE_MAX_CEILING, ARRAY_SIZE_MIN};
    use barge_server::limits::HEARTBEAT_TIMEOUT_MS_MIN;
    if !(ARRAY_SIZE_MIN..=ARRAY_SIZE_MAX_CEILING).contains(&args.array_size_max) {
        anyhow::bail!(
            "--array-size-max must be between {ARRAY_SIZE_MIN} and {ARRAY_SIZE_MAX_CEILING}"
        );
    }
    if args.depends_on_max == 0 {
        anyhow::bail!("--depends-on-max must be at least 1");
    }
    let heartbeat_timeout_ms = args.agent_heartbeat_timeout_seconds.saturating_mul(1000);
    if heartbeat_timeout_ms < HEARTBEAT_TIMEOUT_MS_MIN {
        anyhow::bail!(
            "--agent-heartbeat-timeout-seconds must be at least {}",
            HEARTBEAT_TIMEOUT_MS_MIN / 1000
        );
    }
    let agent_token = read_token(args.agent_token, args.agent_token_file, "--agent-token")?;
    // Secrets come from the environment, never from flags that `ps` would show.
    let security = barge_server::SecurityConfig::load(
        args.credentials_file.as_deref(),
        std::env::var("BARGE_ACCESS_KEY_ID").ok(),
        std::env::var("BARGE_SECRET_ACCESS_KEY").ok(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    )?
    .with_metrics_token(read_token(
        args.metrics_token,
        args.metrics_token_file,
        "--metrics-token",
    )?);
    // Without access keys, listening beyond loopback is refused anyway (with how to add
    // keys); with them, agents need a token too, or anyone could join and receive jobs.
    if !args.listen.ip().is_loopback() && security.requires_signatures() && agent_token.is_none() {
        anyhow::bail!(
            "listening on {} needs an agent token too, so that only your agents can join and receive jobs: pass --agent-token-file FILE (or BARGE_AGENT_TOKEN), and give the agents the same token",
            args.listen
        );
    }
    Ok(barge_server::UpConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        local_agent,
        agent_token,
        heartbeat_timeout_ms,
        identity: Identity {
            region: args.region,
            account_id: args.account_id,
        },
        core: barge_core::state::CoreConfig {
            array_size_max: args.array_size_max,
            depends_on_max: args.depends_on_max,
            ..Default::default()
        },
        database_url: None,
        advertise_url: None,
        lease_ttl_ms: barge_server::limits::LEASE_TTL_MS_DEFAULT,
        scaling: args
            .config
            .as_deref()
            .map(barge_server::config_file::ScalingConfig::load)
            .transpose()?,
        security,
    })
}

/// The agent's instance id: given, or made up once and kept in the data directory.
fn agent_id(given: Option<String>, data_dir: &std::path::Path) -> anyhow::Result<String> {
    if let Some(id) = given {
        return Ok(id);
    }
    let path = data_dir.join("agent-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let hex = format!("{:032x}", random_u128());
    let id = format!("i-{}", &hex[..17]);
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// 128 random bits from the kernel.
fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u128::from_le_bytes(bytes)
}

/// The address this host uses to reach `server` (a UDP socket's local address after a
/// connect, which sends nothing).
fn address_towards(server: &str) -> Option<String> {
    let authority = server.split_once("://")?.1.trim_end_matches('/');
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let target = std::net::ToSocketAddrs::to_socket_addrs(&authority)
        .ok()?
        .find(|a| a.is_ipv4())?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

/// `barge agent`: runs until Ctrl-C or SIGTERM; exits 1 if the server refuses it.
fn agent(args: AgentArgs) -> anyhow::Result<std::process::ExitCode> {
    let token = read_token(args.token, args.token_file, "--token")?;
    let agent_id = agent_id(args.agent_id, &args.data_dir)?;
    let vcpus = match args.vcpus {
        Some(0) => anyhow::bail!("--vcpus must be at least 1"),
        Some(v) => v,
        None => host_vcpus(),
    };
    let memory_mib = match args.memory_mib {
        Some(0) => anyhow::bail!("--memory-mib must be at least 1"),
        Some(v) => v,
        None => host_memory_mib()?,
    };
    let private_ipv4 = args
        .private_ipv4
        .map(|ip| ip.to_string())
        .or_else(|| address_towards(args.server.split(',').next().unwrap_or("").trim()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let runner = barge_agent::Runner::choose(args.runner.into(), &agent_id, Some(&args.data_dir)).await?;
        println!(
            "barge agent {agent_id}: joining compute environment {} at {} with {vcpus} vCPUs, {memory_mib} MiB, runner {}",
            args.compute_environment,
            args.server,
            runner.description()
        );
        let config = barge_agent::remote::RemoteConfig {
            server: args.server,
            ca_bundle: args.ca_bundle,
            token,
            agent_id,
            compute_environment: args.compute_environment,
            vcpus,
            memory_mib,
            gpus: args.gpus.unwrap_or_else(host_gpus),
            private_ipv4,
            state_dir: args.data_dir,
            runner_kind: runner.kind(),
            runner: std::sync::Arc::new(runner),
        };
        match barge_agent::remote::run(config, barge_server::shutdown_signal()).await {
            Ok(()) => Ok(std::process::ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("barge agent: {e}");
                Ok(std::process::ExitCode::from(1))
            }
        }
    })
}
