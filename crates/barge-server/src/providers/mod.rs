//! Instance providers: the effects behind scaling. A provider launches an instance (something
//! that runs `barge agent --agent-id <instance id> --compute-environment <ce>`, which then joins
//! over the agent protocol), terminates it, and, where it can tell, says which of its instances
//! are gone (a process that exited, a container that stopped: a SPOT-style reclaim, acted on at
//! once instead of after the heartbeat timeout).
//!
//! An enum rather than a trait, as the runners are: three kinds, each in its own file, and a
//! `match` says plainly which does what.

use std::path::PathBuf;

use barge_core::scaling::Instance;

use crate::config_file::ProviderConfig;

mod command;
mod docker;
mod local;

/// What every provider of one server shares.
#[derive(Clone, Debug)]
pub struct ProviderContext {
    /// Identifies this server's instances among others' (Docker labels); kept in the data
    /// directory.
    pub server_id: String,
    /// `<data-dir>/instances`: one directory per instance.
    pub instances_dir: PathBuf,
    /// How an instance on this host reaches the server (`http://127.0.0.1:PORT`).
    pub local_server_url: String,
    /// The token agents present, if the server wants one.
    pub agent_token: Option<String>,
}

pub enum Provider {
    Local(local::LocalProvider),
    Docker(docker::DockerProvider),
    Command(command::CommandProvider),
}

/// What a launch leaves to remember (in the instance's record, for a restarted server).
#[derive(Clone, Debug, Default)]
pub struct Launched {
    /// The `barge agent` process of a local instance.
    pub pid: Option<u32>,
}

impl Provider {
    /// Sets a provider up; a Docker provider without a Docker daemon is an error at start.
    pub async fn new(
        name: &str,
        config: &ProviderConfig,
        ctx: &ProviderContext,
    ) -> anyhow::Result<Provider> {
        Ok(match config {
            ProviderConfig::Local { runner } => {
                Provider::Local(local::LocalProvider::new(*runner, ctx)?)
            }
            ProviderConfig::Docker {
                image,
                network,
                server_url,
                runner,
                binary,
            } => {
                let settings = docker::DockerSettings {
                    image: image.clone(),
                    network: network.clone(),
                    server_url: server_url.clone(),
                    runner: *runner,
                    binary: binary.clone(),
                };
                Provider::Docker(docker::DockerProvider::connect(name, settings, ctx).await?)
            }
            ProviderConfig::Command {
                launch,
                terminate,
                server_url,
                timeout_ms,
            } => Provider::Command(command::CommandProvider::new(
                name,
                launch,
                terminate,
                server_url.as_deref(),
                *timeout_ms,
                ctx,
            )),
        })
    }

    pub async fn launch(&self, instance: &Instance) -> Result<Launched, String> {
        match self {
            Provider::Local(p) => p.launch(instance).await,
            Provider::Docker(p) => p.launch(instance).await.map(|()| Launched::default()),
            Provider::Command(p) => p.launch(instance).await.map(|()| Launched::default()),
        }
    }

    /// Stops the instance; Ok also when it was already gone.
    pub async fn terminate(&self, instance: &Instance) -> Result<(), String> {
        match self {
            Provider::Local(p) => p.terminate(instance).await,
            Provider::Docker(p) => p.terminate(instance).await,
            Provider::Command(p) => p.terminate(instance).await,
        }
    }

    /// Which of `instances` (launched, not being terminated) are gone. The command provider
    /// cannot tell: its instances are lost by the heartbeat timeout.
    pub async fn gone(&self, instances: &[Instance]) -> Result<Vec<String>, String> {
        match self {
            Provider::Local(p) => Ok(p.gone(instances)),
            Provider::Docker(p) => p.gone(instances).await,
            Provider::Command(_) => Ok(Vec::new()),
        }
    }

    /// Instances this provider runs for this server, found without a record (Docker labels).
    pub async fn discover(&self, now_ms: i64) -> Vec<Instance> {
        match self {
            Provider::Docker(p) => p.discover(now_ms).await,
            Provider::Local(_) | Provider::Command(_) => Vec::new(),
        }
    }

    /// Takes back an instance a previous run of the server launched.
    pub fn adopt(&self, instance: &Instance, pid: Option<u32>) {
        if let Provider::Local(p) = self {
            p.adopt(instance, pid);
        }
    }

    /// At server shutdown: the local provider stops its children (they are part of this
    /// server); Docker containers and the command provider's instances keep running and are
    /// found again by the next start. Returns the ids stopped.
    pub async fn shutdown(&self) -> Vec<String> {
        match self {
            Provider::Local(p) => p.shutdown().await,
            Provider::Docker(_) | Provider::Command(_) => Vec::new(),
        }
    }
}

/// The environment of a program Barge starts: the server's own, without its BARGE_ settings
/// (a `barge agent` child would read BARGE_AGENT_TOKEN_FILE or BARGE_DATA_DIR meant for the
/// server), except BARGE_LOG.
fn clean_env(command: &mut tokio::process::Command) {
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        if k.starts_with("BARGE_") && k != "BARGE_LOG" {
            command.env_remove(k);
        }
    }
}

/// The `barge agent` arguments of an instance.
fn agent_args(instance: &Instance, server_url: &str, runner: &str, data_dir: &str) -> Vec<String> {
    let t = &instance.instance_type;
    [
        "agent",
        "--server",
        server_url,
        "--compute-environment",
        &instance.compute_environment,
        "--agent-id",
        &instance.id,
        "--vcpus",
        &t.vcpus.to_string(),
        "--memory-mib",
        &t.memory_mib.to_string(),
        "--gpus",
        &t.gpus.to_string(),
        "--runner",
        runner,
        "--data-dir",
        data_dir,
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}
