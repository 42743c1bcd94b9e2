//! The `barge` binary: parses the command line and hands over to the server crate.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use barge_core::arn::Identity;
use clap::{Parser, Subcommand};

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
    /// Region that appears in ARNs.
    #[arg(long, env = "BARGE_REGION", default_value = "us-east-1")]
    region: String,
    /// Account id that appears in ARNs.
    #[arg(long, env = "BARGE_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
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

fn main() -> anyhow::Result<()> {
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
            if !args.listen.ip().is_loopback() {
                eprintln!(
                    "barge: warning: listening on {} without authentication; anyone who can reach it can run commands on this host",
                    args.listen
                );
            }
            let config = barge_server::UpConfig {
                listen: args.listen,
                data_dir: args.data_dir,
                agent_vcpus,
                agent_memory_mib,
                identity: Identity {
                    region: args.region,
                    account_id: args.account_id,
                },
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(barge_server::run_up(config))
        }
    }
}
