//! The `barge` binary: parses the command line and hands over to the server crate.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use barge_core::arn::Identity;
use clap::{Parser, Subcommand, ValueEnum};

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
    /// Say why a job is where it is, and what would move it on.
    Why(WhyArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(clap::Args)]
struct WhyArgs {
    /// The job's id.
    job_id: String,
    /// Where Barge listens.
    #[arg(long, env = "BARGE_ENDPOINT", default_value = "http://127.0.0.1:8433")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Certificates to trust for an https endpoint (PEM), like the aws CLI's --ca-bundle;
    /// default: the system's CAs.
    #[arg(long, env = "AWS_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
}

/// `barge why`: exit 0 with the diagnosis, 1 when the job is unknown or Barge cannot answer.
fn why(args: WhyArgs) -> anyhow::Result<std::process::ExitCode> {
    let path = format!(
        "/barge/v1/jobs/{}/why",
        percent_encode_segment(&args.job_id)
    );
    // Signed when credentials are at hand, as the aws CLI finds them (AWS_ACCESS_KEY_ID…).
    let credentials = client::credentials_from_environment()?;
    let (status, body) = client::get(
        &args.endpoint,
        &path,
        credentials.as_ref(),
        args.ca_bundle.as_deref(),
    )?;
    let value: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("Barge answered {status} with a body that is not JSON: {body}"))?;
    if status != 200 {
        let message = value["message"].as_str().unwrap_or(&body);
        eprintln!("barge why: {message}");
        if status == 403 && credentials.is_none() {
            eprintln!("barge why: this Barge requires signed requests: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to one of its access keys");
        }
        return Ok(std::process::ExitCode::from(1));
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&value)?),
        Output::Table => {
            let text = |k: &str| value[k].as_str().unwrap_or("").to_string();
            println!(
                "job {} ({}) in job queue {}: {}",
                text("jobId"),
                text("jobName"),
                text("jobQueue"),
                text("status")
            );
            if let Some(reason) = value["statusReason"].as_str() {
                println!("why: {reason}");
            }
            if let Some(n) = value["jobsAhead"].as_u64() {
                println!(
                    "ahead of it: {n} RUNNABLE job{}",
                    if n == 1 { "" } else { "s" }
                );
            }
            let steps: Vec<&str> = value["unblock"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            if !steps.is_empty() {
                println!("to move it on:");
                for step in steps {
                    println!("  - {step}");
                }
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Percent-encodes everything but unreserved characters, so any job id is one path segment.
fn percent_encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(clap::Args)]
struct UpArgs {
    /// Address to serve the AWS Batch and CloudWatch Logs APIs on.
    #[arg(long, env = "BARGE_LISTEN", default_value = "127.0.0.1:8433")]
    listen: SocketAddr,
    /// Where Barge keeps its database.
    #[arg(long, env = "BARGE_DATA_DIR", default_value = "./barge-data")]
    data_dir: PathBuf,
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
    /// How the local agent runs jobs: docker (a container of the job's image), process (a host
    /// process), or auto (docker when the Docker socket answers, else process).
    #[arg(long, env = "BARGE_RUNNER", value_enum, default_value = "auto")]
    runner: RunnerArg,
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
                None => std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            };
            let agent_memory_mib = match args.agent_memory_mib {
                Some(0) => anyhow::bail!("--agent-memory-mib must be at least 1"),
                Some(v) => v,
                None => host_memory_mib()?,
            };
            use barge_core::limits::{ARRAY_SIZE_MAX_CEILING, ARRAY_SIZE_MIN};
            if !(ARRAY_SIZE_MIN..=ARRAY_SIZE_MAX_CEILING).contains(&args.array_size_max) {
                anyhow::bail!(
                    "--array-size-max must be between {ARRAY_SIZE_MIN} and {ARRAY_SIZE_MAX_CEILING}"
                );
            }
            if args.depends_on_max == 0 {
                anyhow::bail!("--depends-on-max must be at least 1");
            }
            // Secrets come from the environment, never from flags that `ps` would show.
            let security = barge_server::SecurityConfig::load(
                args.credentials_file.as_deref(),
                std::env::var("BARGE_ACCESS_KEY_ID").ok(),
                std::env::var("BARGE_SECRET_ACCESS_KEY").ok(),
                args.tls_cert.as_deref(),
                args.tls_key.as_deref(),
            )?;
            let config = barge_server::UpConfig {
                listen: args.listen,
                data_dir: args.data_dir,
                agent_vcpus,
                agent_memory_mib,
                agent_gpus: args.agent_gpus.unwrap_or_else(host_gpus),
                identity: Identity {
                    region: args.region,
                    account_id: args.account_id,
                },
                core: barge_core::state::CoreConfig {
                    array_size_max: args.array_size_max,
                    depends_on_max: args.depends_on_max,
                },
                runner: args.runner.into(),
                security,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(barge_server::run_up(config))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Commands::Why(args) => why(args),
    }
}
