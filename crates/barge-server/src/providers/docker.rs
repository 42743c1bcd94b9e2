//! The `docker` provider: each instance is a container of the configured image (which holds the
//! `barge` binary) running `barge agent`, on the configured network, joining at `server_url`.
//! Containers carry `barge.instance-id`, `barge.compute-environment`, `barge.server` (this
//! server's id), `barge.provider` and `barge.instance-type` labels, so a restarted server finds
//! and adopts its instances, and a container that stopped on its own is a lost instance.
//! Terminate is stop (SIGTERM, grace, SIGKILL) and remove.

use std::collections::HashMap;
use std::time::Duration;

use barge_core::scaling::{Instance, InstancePhase, InstanceType};
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;

use super::{agent_args, ProviderContext};
use crate::config_file::AgentRunner;
use crate::limits::INSTANCE_STOP_GRACE_MS;

const LABEL_INSTANCE_ID: &str = "barge.instance-id";
const LABEL_COMPUTE_ENVIRONMENT: &str = "barge.compute-environment";
const LABEL_SERVER: &str = "barge.server";
const LABEL_PROVIDER: &str = "barge.provider";
const LABEL_INSTANCE_TYPE: &str = "barge.instance-type";
/// Each Docker request (not a stop, which waits for the grace) is bounded by this, so a hung
/// daemon delays a provider action, never the scaler forever.
const DOCKER_REQUEST_TIMEOUT_S: u64 = 60;
/// Where the agent keeps its state inside the container (present in any image).
const AGENT_DATA_DIR: &str = "/tmp/barge-agent";

pub struct DockerProvider {
    docker: Docker,
    name: String,
    image: String,
    network: Option<String>,
    server_url: String,
    runner: AgentRunner,
    binary: String,
    ctx: ProviderContext,
}

/// The docker provider's part of the configuration file.
pub struct DockerSettings {
    pub image: String,
    pub network: Option<String>,
    pub server_url: String,
    pub runner: AgentRunner,
    pub binary: String,
}

fn container_name(instance_id: &str) -> String {
    format!("barge-{instance_id}")
}

fn message(err: &DockerError) -> String {
    match err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn not_found(err: &DockerError) -> bool {
    matches!(
        err,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerProvider {
    pub async fn connect(
        name: &str,
        settings: DockerSettings,
        ctx: &ProviderContext,
    ) -> anyhow::Result<DockerProvider> {
        let DockerSettings {
            image,
            network,
            server_url,
            runner,
            binary,
        } = settings;
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| anyhow::anyhow!("provider {name} (docker): cannot open the Docker socket: {e}; start Docker, or remove the provider from the configuration file"))?
            .with_timeout(Duration::from_secs(DOCKER_REQUEST_TIMEOUT_S));
        let docker = tokio::time::timeout(Duration::from_secs(DOCKER_REQUEST_TIMEOUT_S), docker.negotiate_version())
            .await
            .map_err(|_| anyhow::anyhow!("provider {name} (docker): the Docker socket did not answer; start Docker, or remove the provider from the configuration file"))?
            .map_err(|e| anyhow::anyhow!("provider {name} (docker): the Docker socket does not answer: {e}; start Docker, or remove the provider from the configuration file"))?;
        Ok(DockerProvider {
            docker,
            name: name.to_string(),
            image,
            network,
            server_url,
            runner,
            binary,
            ctx: ctx.clone(),
        })
    }

    pub async fn launch(&self, instance: &Instance) -> Result<(), String> {
        let labels = HashMap::from([
            (LABEL_INSTANCE_ID.to_string(), instance.id.clone()),
            (
                LABEL_COMPUTE_ENVIRONMENT.to_string(),
                instance.compute_environment.clone(),
            ),
            (LABEL_SERVER.to_string(), self.ctx.server_id.clone()),
            (LABEL_PROVIDER.to_string(), self.name.clone()),
            (
                LABEL_INSTANCE_TYPE.to_string(),
                serde_json::to_string(&instance.instance_type).expect("types serialize"),
            ),
        ]);
        let mut env = vec!["BARGE_LOG=info".to_string()];
        if let Some(token) = &self.ctx.agent_token {
            env.push(format!("BARGE_AGENT_TOKEN={token}"));
        }
        let mut cmd = vec![self.binary.clone()];
        cmd.extend(agent_args(
            instance,
            &self.server_url,
            self.runner.as_str(),
            AGENT_DATA_DIR,
        ));
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(cmd),
            env: Some(env),
            labels: Some(labels),
            hostname: Some(instance.id.clone()),
            host_config: Some(HostConfig {
                network_mode: self.network.clone(),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let name = container_name(&instance.id);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        if let Err(e) = self.docker.create_container(Some(options), body).await {
            return Err(if not_found(&e) {
                format!(
                    "image {} is not on this Docker host ({}); load or pull it there",
                    self.image,
                    message(&e)
                )
            } else {
                format!("cannot create container {name}: {}", message(&e))
            });
        }
        if let Err(e) = self.docker.start_container(&name, None).await {
            let _ = self.remove(&name).await;
            return Err(format!("cannot start container {name}: {}", message(&e)));
        }
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), String> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(format!("cannot remove container {name}: {}", message(&e))),
        }
    }

    pub async fn terminate(&self, instance: &Instance) -> Result<(), String> {
        let name = container_name(&instance.id);
        let grace_s = (INSTANCE_STOP_GRACE_MS / 1000) as i32;
        let options = StopContainerOptionsBuilder::default().t(grace_s).build();
        // The stop waits for the grace: a client whose timeout outlasts it.
        let stopper = self.docker.clone().with_timeout(Duration::from_secs(
            DOCKER_REQUEST_TIMEOUT_S + grace_s as u64,
        ));
        match stopper.stop_container(&name, Some(options)).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(()),
            // 304: already stopped. Anything else: the remove (force) below still kills it.
            Err(e) => tracing::debug!(container = %name, "stop: {}", message(&e)),
        }
        self.remove(&name).await
    }

    /// This server's containers of this provider, with their state, by instance id.
    async fn containers(&self) -> Result<Vec<(String, bool, HashMap<String, String>)>, String> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_SERVER}={}", self.ctx.server_id),
                format!("{LABEL_PROVIDER}={}", self.name),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("cannot list containers: {}", message(&e)))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels?;
                let id = labels.get(LABEL_INSTANCE_ID)?.clone();
                let running = matches!(
                    c.state,
                    Some(
                        ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING
                    )
                );
                Some((id, running, labels))
            })
            .collect())
    }

    /// An instance whose container is missing or no longer running is gone.
    pub async fn gone(&self, instances: &[Instance]) -> Result<Vec<String>, String> {
        let running: Vec<String> = self
            .containers()
            .await?
            .into_iter()
            .filter(|(_, running, _)| *running)
            .map(|(id, _, _)| id)
            .collect();
        Ok(instances
            .iter()
            .filter(|i| !running.contains(&i.id))
            .map(|i| i.id.clone())
            .collect())
    }

    /// This server's containers, as instances to adopt (the caller keeps those it has no
    /// record of).
    pub async fn discover(&self, now_ms: i64) -> Vec<Instance> {
        let containers = match self.containers().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(provider = %self.name, "cannot look for instances of an earlier run: {e}");
                return Vec::new();
            }
        };
        containers
            .into_iter()
            .filter_map(|(id, _, labels)| {
                let instance_type: InstanceType =
                    serde_json::from_str(labels.get(LABEL_INSTANCE_TYPE)?).ok()?;
                Some(Instance {
                    id,
                    compute_environment: labels.get(LABEL_COMPUTE_ENVIRONMENT)?.clone(),
                    provider: self.name.clone(),
                    instance_type,
                    launched_at_ms: now_ms,
                    phase: InstancePhase::Launching,
                    registered: false,
                    idle_since_ms: None,
                })
            })
            .collect()
    }
}
