//! The Docker runner: an attempt is a container on the local Docker Engine, created from the
//! job's image with its command, environment, user and resource limits, followed until it exits
//! and always removed afterwards.
//!
//! Containers carry labels naming the job, the attempt, this run's agent id and the agent's
//! *home*: a stable id kept in the agent's state directory. Agent ids are new on every start, the
//! home is not, so an agent started again on the same data directory finds the containers its
//! earlier runs left behind (after a crash or SIGKILL) and removes them before it runs anything.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use barge_core::agent::{AgentReport, AttemptSpec};
use barge_core::container::ContainerHost;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, Mount, MountType,
    ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::limits::{
    DOCKER_CONNECT_TIMEOUT_MS, DOCKER_LOG_PIPE_BYTES, DOCKER_PULL_TIMEOUT_MS,
    DOCKER_REQUEST_TIMEOUT_S, LOG_DRAIN_AFTER_EXIT_MS,
};
use crate::{epoch_ms, logs};

use super::registry_auth;

/// Label names; `docker ps --filter label=barge.attempt-id` lists every container of Barge.
/// A container of an earlier run of this agent, still labelled with its attempt.
#[derive(Clone, Debug)]
pub struct Adopted {
    pub container_id: String,
    pub job_id: String,
    pub attempt_id: String,
}

pub(crate) const LABEL_JOB_ID: &str = "barge.job-id";
pub(crate) const LABEL_ATTEMPT_ID: &str = "barge.attempt-id";
pub(crate) const LABEL_AGENT_ID: &str = "barge.agent-id";
pub(crate) const LABEL_AGENT_HOME: &str = "barge.agent-home";

/// The reason AWS Batch reports for a container the kernel killed for exceeding its memory
/// limit; evaluateOnExit rules match it with onReason "OutOfMemoryError*".
pub(crate) const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";

/// Exit code of a container killed by SIGKILL, as Docker and AWS report an OOM kill.
pub(crate) const OOM_EXIT_CODE: i32 = 137;

/// The file in the agent's state directory that keeps its home id.
const HOME_ID_FILE: &str = "home-id";

/// The timeout of requests that follow a container (logs, wait): their answer starts only when
/// the container writes or exits, which may be days away. Ten years stands for "never" without
/// overflowing a deadline.
const FOLLOW_TIMEOUT_S: u64 = 10 * 365 * 24 * 3600;

/// The agent's home id: read from `<state_dir>/home-id`, created there on first use. Without a
/// state directory (or when it cannot be written) a fresh id is used, and containers left by a
/// crash of this run will not be found by the next one; that is logged.
pub(crate) fn home_id(state_dir: Option<&Path>) -> String {
    let fresh = || uuid::Uuid::new_v4().simple().to_string();
    let Some(dir) = state_dir else {
        return fresh();
    };
    let path = dir.join(HOME_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return id.to_owned();
        }
    }
    let id = fresh();
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &id));
    if let Err(err) = written {
        tracing::warn!(%err, path = %path.display(), "cannot keep the agent's home id; containers left by a crash will not be removed by the next start");
    }
    id
}

pub(crate) struct DockerRunner {
    /// For requests that answer at once; each is bounded by `DOCKER_REQUEST_TIMEOUT_S`.
    docker: Docker,
    /// The same connection settings for the requests that follow a container.
    follow: Docker,
    engine: String,
    agent_id: String,
    home: String,
}

/// How an attempt ended, as reported in `Exited`.
struct Exit {
    exit_code: Option<i32>,
    reason: Option<String>,
}

impl Exit {
    fn failed(reason: String) -> Exit {
        Exit {
            exit_code: None,
            reason: Some(reason),
        }
    }
}

impl DockerRunner {
    /// Connects to the local Docker socket (DOCKER_HOST when it names a unix socket) and
    /// negotiates the API version. Err says why Docker cannot be used, for `barge up` to print.
    pub(crate) async fn connect(agent_id: &str, home: &str) -> Result<DockerRunner, String> {
        let connect = async {
            let docker = Docker::connect_with_local_defaults()
                .map_err(|err| format!("cannot open the Docker socket: {err}"))?
                .with_timeout(Duration::from_secs(DOCKER_REQUEST_TIMEOUT_S));
            let docker = docker
                .negotiate_version()
                .await
                .map_err(|err| format!("the Docker socket does not answer: {err}"))?;
            let version = docker
                .version()
                .await
                .map_err(|err| format!("the Docker socket does not answer: {err}"))?;
            Ok::<_, String>((docker, version))
        };
        let (docker, version) =
            tokio::time::timeout(Duration::from_millis(DOCKER_CONNECT_TIMEOUT_MS), connect)
                .await
                .map_err(|_| {
                    format!(
                        "the Docker socket did not answer within {DOCKER_CONNECT_TIMEOUT_MS} ms"
                    )
                })??;
        let engine = format!(
            "Docker {}, API {}",
            version.version.as_deref().unwrap_or("(unknown version)"),
            docker.client_version()
        );
        let follow = docker
            .clone()
            .with_timeout(Duration::from_secs(FOLLOW_TIMEOUT_S));
        Ok(DockerRunner {
            docker,
            follow,
            engine,
            agent_id: agent_id.to_owned(),
            home: home.to_owned(),
        })
    }

    /// "Docker 20.10.24, API 1.41".
    pub(crate) fn engine(&self) -> &str {
        &self.engine
    }

    /// The containers of this agent's home that an earlier run left. Without `adopt` every one
    /// is removed (killed first), running or not: the control plane has already failed their
    /// attempts. With `adopt`, those labelled with their job and attempt are kept and returned
    /// for the agent to follow to their end (a remote agent that restarts keeps its work).
    /// Returns the removed containers' attempt ids and the adopted ones.
    pub(crate) async fn leftovers(&self, adopt: bool) -> (Vec<String>, Vec<Adopted>) {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_AGENT_HOME}={}", self.home)],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = match self.docker.list_containers(Some(options)).await {
            Ok(containers) => containers,
            Err(err) => {
                tracing::error!(%err, "cannot list the containers of an earlier run; any left running stay");
                return (Vec::new(), Vec::new());
            }
        };
        let mut removed = Vec::new();
        let mut adopted = Vec::new();
        for container in containers {
            let Some(id) = container.id else { continue };
            let labels = container.labels.unwrap_or_default();
            let ids = (labels.get(LABEL_JOB_ID), labels.get(LABEL_ATTEMPT_ID));
            if let (true, (Some(job_id), Some(attempt_id))) = (adopt, ids) {
                adopted.push(Adopted {
                    container_id: id,
                    job_id: job_id.clone(),
                    attempt_id: attempt_id.clone(),
                });
                continue;
            }
            if self.remove(&id).await {
                removed.push(labels.get(LABEL_ATTEMPT_ID).cloned().unwrap_or(id));
            }
        }
        (removed, adopted)
    }

    /// Follows an adopted container to its end and reports it as `run` does: `Running` (the
    /// control plane ignores it if it knew), output written from now on, and `Exited` with the
    /// container's own exit code, then removes it. Output written while no agent followed the
    /// container is not shipped again (the earlier run shipped what it read; `docker logs`
    /// still has the rest until the container is removed).
    pub(crate) async fn follow_adopted(
        &self,
        adopted: Adopted,
        reports: mpsc::Sender<AgentReport>,
        mut stop: watch::Receiver<Option<u64>>,
        live: mpsc::Sender<()>,
    ) {
        let since_s = (epoch_ms() / 1000) as i32;
        let running = AgentReport::Running {
            job_id: adopted.job_id.clone(),
            attempt_id: adopted.attempt_id.clone(),
            at_ms: epoch_ms(),
        };
        let _ = reports.send(running).await;
        let (exited_tx, exited_rx) = watch::channel(false);
        let (exit, ()) = tokio::join!(
            self.supervise(&adopted.container_id, &mut stop, exited_tx),
            self.ship_logs(
                &adopted.job_id,
                &adopted.attempt_id,
                &adopted.container_id,
                Some(since_s),
                &reports,
                exited_rx
            )
        );
        self.remove(&adopted.container_id).await;
        drop(live);
        let exited = AgentReport::Exited {
            job_id: adopted.job_id,
            attempt_id: adopted.attempt_id,
            at_ms: epoch_ms(),
            exit_code: exit.exit_code,
            reason: exit.reason,
        };
        let _ = reports.send(exited).await;
        drop(stop);
    }

    /// Force-removes a container (SIGKILL if it still runs). Returns whether it is gone.
    async fn remove(&self, id: &str) -> bool {
        // v: anonymous volumes (mountPoints of a volume without host.sourcePath) go with it.
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => true,
            // Already gone: what we wanted.
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => true,
            Err(err) => {
                tracing::error!(%err, container = id, "cannot remove the container; remove it with docker rm -f");
                false
            }
        }
    }

    /// Runs one attempt to its end and reports it: `Running` once the container started, its
    /// output as `Logs`, then `Exited` once the container is removed.
    pub(crate) async fn run(
        &self,
        spec: AttemptSpec,
        reports: mpsc::Sender<AgentReport>,
        mut stop: watch::Receiver<Option<u64>>,
        live: mpsc::Sender<()>,
    ) {
        let exit = self.run_attempt(&spec, &reports, &mut stop).await;
        // Nothing of the attempt exists any more.
        drop(live);
        let exited = AgentReport::Exited {
            job_id: spec.job_id.clone(),
            attempt_id: spec.attempt_id.clone(),
            at_ms: epoch_ms(),
            exit_code: exit.exit_code,
            reason: exit.reason,
        };
        let _ = reports.send(exited).await;
        // `stop` lives until here so that a Stop arriving while the output drains is not taken
        // by the agent for a Stop of an attempt it does not know.
        drop(stop);
    }

    async fn run_attempt(
        &self,
        spec: &AttemptSpec,
        reports: &mpsc::Sender<AgentReport>,
        stop: &mut watch::Receiver<Option<u64>>,
    ) -> Exit {
        let Some(image) = spec.image.as_deref().filter(|image| !image.is_empty()) else {
            return Exit::failed(
                "CannotStartContainerError: the job has no image; the Docker runner runs \
                 containers only (give the job definition an image, or run barge up with \
                 --runner process)"
                    .to_owned(),
            );
        };
        if let Some(refused) = &spec.host.refused {
            return Exit::failed(format!("CannotCreateContainerError: {refused}"));
        }
        tokio::select! {
            ready = self.ensure_image(image) => {
                if let Err(reason) = ready {
                    return Exit::failed(reason);
                }
            }
            // Stopped while the image was being pulled: no container exists yet.
            Ok(_) = stop.wait_for(Option::is_some) => return Exit { exit_code: None, reason: None },
        }
        let id = match self.create(spec, image).await {
            Ok(id) => id,
            Err(err) => return Exit::failed(format!("CannotCreateContainerError: {err}")),
        };
        let exit = self.start_and_follow(spec, &id, reports, stop).await;
        // Always, whatever happened: no container outlives its attempt.
        self.remove(&id).await;
        exit
    }

    /// Uses the local image when present; pulls it otherwise, bounded by
    /// `DOCKER_PULL_TIMEOUT_MS`. Err is the attempt's CannotPullContainerError reason.
    async fn ensure_image(&self, image: &str) -> Result<(), String> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(err) => {
                return Err(format!(
                    "CannotPullContainerError: cannot look up image {image} on the local Docker \
                     engine: {err}"
                ))
            }
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let pull = async {
            // The agent host's `docker login` for the image's registry, when it has one.
            let credentials = registry_auth::credentials_for(image);
            let mut progress = self.docker.create_image(Some(options), None, credentials);
            while let Some(step) = progress.next().await {
                step.map_err(|err| message_of(&err))?;
            }
            Ok::<(), String>(())
        };
        let failure =
            match tokio::time::timeout(Duration::from_millis(DOCKER_PULL_TIMEOUT_MS), pull).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(err)) => err,
                Err(_) => format!("no answer within {DOCKER_PULL_TIMEOUT_MS} ms"),
            };
        // AWS keeps 255 characters of a container reason: what was tried and what to do come
        // first, the daemon's words last.
        Err(format!(
            "CannotPullContainerError: image {image} is not on the agent's host and pulling it \
             failed; load it there (docker load/import/build) or make its registry reachable: \
             {failure}"
        ))
    }

    async fn create(&self, spec: &AttemptSpec, image: &str) -> Result<String, DockerError> {
        let labels = HashMap::from([
            (LABEL_JOB_ID.to_owned(), spec.job_id.clone()),
            (LABEL_ATTEMPT_ID.to_owned(), spec.attempt_id.clone()),
            (LABEL_AGENT_ID.to_owned(), self.agent_id.clone()),
            (LABEL_AGENT_HOME.to_owned(), self.home.clone()),
        ]);
        let host_config = host_config(spec);
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            // Empty: the image's own command.
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(
                spec.environment
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect(),
            ),
            user: spec.user.clone(),
            labels: Some(labels),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        };
        let name = container_name(&spec.attempt_id);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self.docker.create_container(Some(options), body).await?;
        Ok(created.id)
    }

    async fn start_and_follow(
        &self,
        spec: &AttemptSpec,
        id: &str,
        reports: &mpsc::Sender<AgentReport>,
        stop: &mut watch::Receiver<Option<u64>>,
    ) -> Exit {
        if let Err(err) = self.docker.start_container(id, None).await {
            return Exit::failed(format!("CannotStartContainerError: {}", message_of(&err)));
        }
        let running_at_ms = epoch_ms();
        let (exited_tx, exited_rx) = watch::channel(false);
        // The supervisor runs beside the log pump, so a stop is acted on even while reports
        // wait on backpressure.
        let (exit, ()) = tokio::join!(self.supervise(id, stop, exited_tx), async {
            let running = AgentReport::Running {
                job_id: spec.job_id.clone(),
                attempt_id: spec.attempt_id.clone(),
                at_ms: running_at_ms,
            };
            let _ = reports.send(running).await;
            self.ship_logs(&spec.job_id, &spec.attempt_id, id, None, reports, exited_rx)
                .await;
        });
        exit
    }

    /// Follows the container's output from its start and hands it to the same line reader and
    /// batcher as the process runner's pipes, through one bounded pipe per stream.
    async fn ship_logs(
        &self,
        job_id: &str,
        attempt_id: &str,
        id: &str,
        since_s: Option<i32>,
        reports: &mpsc::Sender<AgentReport>,
        exited: watch::Receiver<bool>,
    ) {
        let (mut out_tx, out_rx) = tokio::io::duplex(DOCKER_LOG_PIPE_BYTES);
        let (mut err_tx, err_rx) = tokio::io::duplex(DOCKER_LOG_PIPE_BYTES);
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .since(since_s.unwrap_or(0))
            .build();
        let mut stream = self.follow.logs(id, Some(options));
        let mut exited_pump = exited.clone();
        // The readers give up `LOG_DRAIN_AFTER_EXIT_MS` after the exit; so does the pump, for a
        // log stream that the daemon never ends.
        let drain_deadline = async move {
            let _ = exited_pump.wait_for(|exited| *exited).await;
            tokio::time::sleep(Duration::from_millis(LOG_DRAIN_AFTER_EXIT_MS)).await;
        };
        let pump = async move {
            // The stream ends once the container has stopped and its output is all sent.
            while let Some(chunk) = stream.next().await {
                let written = match chunk {
                    Ok(LogOutput::StdOut { message }) => out_tx.write_all(&message).await,
                    Ok(LogOutput::StdErr { message }) => err_tx.write_all(&message).await,
                    Ok(_) => Ok(()),
                    Err(err) => {
                        tracing::warn!(%err, "following the container's output failed; the rest is lost");
                        break;
                    }
                };
                if written.is_err() {
                    // The reader gave up (drain deadline): nothing more is wanted.
                    break;
                }
            }
            // Dropping the writers is the readers' EOF.
        };
        tokio::join!(
            async {
                tokio::select! {
                    () = pump => {}
                    () = drain_deadline => {}
                }
            },
            logs::ship(
                Some(out_rx),
                Some(err_rx),
                job_id,
                attempt_id,
                reports,
                exited,
            )
        );
    }

    /// Waits for the container to exit, acting on stop requests: SIGTERM, then SIGKILL once the
    /// earliest grace requested has passed. Then reads the exit code and whether the kernel
    /// killed it for memory.
    async fn supervise(
        &self,
        id: &str,
        stop: &mut watch::Receiver<Option<u64>>,
        exited: watch::Sender<bool>,
    ) -> Exit {
        let mut term_sent = false;
        let mut kill_at: Option<Instant> = None;
        let mut stop_open = true;
        // A stop may have been requested before the container started.
        let mut request = *stop.borrow_and_update();
        let mut wait = self.follow.wait_container(id, None);
        let waited = loop {
            if let Some(grace_ms) = request.take() {
                if !term_sent {
                    self.signal(id, "SIGTERM").await;
                    term_sent = true;
                }
                let at = Instant::now() + Duration::from_millis(grace_ms);
                kill_at = Some(kill_at.map_or(at, |earlier| earlier.min(at)));
            }
            let deadline = kill_at;
            tokio::select! {
                waited = wait.next() => break waited,
                changed = stop.changed(), if stop_open => match changed {
                    Ok(()) => request = *stop.borrow_and_update(),
                    Err(_) => stop_open = false,
                },
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.signal(id, "SIGKILL").await;
                    kill_at = None;
                }
            }
        };
        let _ = exited.send(true);
        // bollard reports a non-zero exit as an error; the container's state is the one
        // source of truth for the code and the OOM flag either way.
        if let Some(Err(err)) = &waited {
            if !matches!(err, DockerError::DockerContainerWaitError { .. }) {
                tracing::warn!(%err, "waiting for the container failed; reading its state");
            }
        }
        match self.docker.inspect_container(id, None).await {
            Ok(inspected) => {
                let state = inspected.state.unwrap_or_default();
                let exit_code = state.exit_code.and_then(|code| i32::try_from(code).ok());
                if state.oom_killed == Some(true) {
                    Exit {
                        exit_code: Some(exit_code.unwrap_or(OOM_EXIT_CODE)),
                        reason: Some(OOM_REASON.to_owned()),
                    }
                } else {
                    Exit {
                        exit_code,
                        reason: None,
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "cannot read the container's exit");
                Exit::failed(format!("agent lost the container: {}", message_of(&err)))
            }
        }
    }

    async fn signal(&self, id: &str, signal: &str) {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => {}
            // 409: not running any more, which is what we wanted.
            Err(DockerError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => {}
            Err(err) => {
                tracing::warn!(%err, container = id, signal, "signalling the container failed")
            }
        }
    }
}

/// None for an empty list: the member is left out of the request, as Docker's default.
fn some_vec<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn mib_to_bytes(mib: u64) -> i64 {
    i64::try_from(mib.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
}

/// The container's resource limits and the job's host settings, as Docker's HostConfig.
fn host_config(spec: &AttemptSpec) -> HostConfig {
    let host: &ContainerHost = &spec.host;
    let memory_bytes = mib_to_bytes(spec.memory_mib);
    // Host directories are binds, which Docker creates when missing (as ECS does for a
    // sourcePath); a volume without sourcePath is an anonymous volume, removed with the
    // container. Paths hold no ':' (checked at registration).
    let binds: Vec<String> = host
        .mounts
        .iter()
        .filter_map(|m| {
            let source = m.host_path.as_ref()?;
            let mode = if m.read_only { "ro" } else { "rw" };
            Some(format!("{source}:{}:{mode}", m.container_path))
        })
        .collect();
    let volumes: Vec<Mount> = host
        .mounts
        .iter()
        .filter(|m| m.host_path.is_none())
        .map(|m| Mount {
            target: Some(m.container_path.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(m.read_only),
            ..Mount::default()
        })
        .collect();
    let tmpfs: HashMap<String, String> = host
        .tmpfs
        .iter()
        .map(|t| {
            let mut options = vec![format!("size={}m", t.size_mib)];
            options.extend(t.mount_options.iter().cloned());
            (t.container_path.clone(), options.join(","))
        })
        .collect();
    HostConfig {
        // One vCPU is 10^9 nano-CPUs: Docker turns this into a CFS quota over its period.
        nano_cpus: Some(i64::from(spec.vcpus_milli) * 1_000_000),
        memory: Some(memory_bytes),
        // Docker's MemorySwap is memory plus swap. maxSwap 0 or absent: no swap beyond the
        // limit, so exceeding it is an OOM kill, as on AWS.
        memory_swap: Some(memory_bytes.saturating_add(mib_to_bytes(host.max_swap_mib))),
        memory_swappiness: host.swappiness.map(i64::from),
        binds: some_vec(binds),
        mounts: some_vec(volumes),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        ulimits: some_vec(
            host.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect(),
        ),
        devices: some_vec(
            host.devices
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.host_path.clone()),
                    path_in_container: Some(d.container_path.clone()),
                    cgroup_permissions: Some(d.permissions.clone()),
                })
                .collect(),
        ),
        // GPUs from the nvidia driver (the NVIDIA container toolkit on the host); without it
        // the start fails with the daemon's message as CannotStartContainerError.
        device_requests: (host.gpus > 0).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".to_owned()),
                count: Some(i64::from(host.gpus)),
                capabilities: Some(vec![vec!["gpu".to_owned()]]),
                ..DeviceRequest::default()
            }]
        }),
        privileged: host.privileged.then_some(true),
        readonly_rootfs: host.readonly_root_filesystem.then_some(true),
        init: host.init.then_some(true),
        shm_size: host.shm_size_mib.map(mib_to_bytes),
        ..HostConfig::default()
    }
}

/// The daemon's own message where there is one, without bollard's wrapping.
fn message_of(err: &DockerError) -> String {
    match err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `barge-<attempt id>`, with characters Docker does not allow in names replaced by `-`, so
/// that `docker ps` shows which attempt a container runs.
fn container_name(attempt_id: &str) -> String {
    let safe: String = attempt_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("barge-{safe}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_valid_docker_names() {
        assert_eq!(container_name("abc-1.x_y"), "barge-abc-1.x_y");
        assert_eq!(container_name("a:b/c#0"), "barge-a-b-c-0");
    }

    fn spec_with(host: ContainerHost) -> AttemptSpec {
        AttemptSpec {
            job_id: "j".into(),
            attempt_id: "a".into(),
            attempt_number: 1,
            image: Some("busybox".into()),
            command: Vec::new(),
            environment: Vec::new(),
            vcpus_milli: 1500,
            memory_mib: 64,
            log_stream_name: "s".into(),
            user: None,
            host: Box::new(host),
            runner: None,
        }
    }

    #[test]
    fn a_spec_without_host_settings_is_limits_only() {
        let config = host_config(&spec_with(ContainerHost::default()));
        assert_eq!(config.nano_cpus, Some(1_500_000_000));
        assert_eq!(config.memory, Some(64 << 20));
        assert_eq!(config.memory_swap, Some(64 << 20), "no swap");
        assert_eq!(config.memory_swappiness, None);
        assert_eq!(config.binds, None);
        assert_eq!(config.mounts, None);
        assert_eq!(config.tmpfs, None);
        assert_eq!(config.ulimits, None);
        assert_eq!(config.devices, None);
        assert_eq!(config.device_requests, None);
        assert_eq!(config.privileged, None);
        assert_eq!(config.readonly_rootfs, None);
        assert_eq!(config.init, None);
        assert_eq!(config.shm_size, None);
    }

    #[test]
    fn host_settings_become_the_host_config() {
        use barge_core::container::{Device, Mount as HostMount, Tmpfs, Ulimit};
        let host = ContainerHost {
            mounts: vec![
                HostMount {
                    host_path: Some("/srv/in".into()),
                    container_path: "/in".into(),
                    read_only: true,
                },
                HostMount {
                    host_path: Some("/srv/out".into()),
                    container_path: "/out".into(),
                    read_only: false,
                },
                HostMount {
                    host_path: None,
                    container_path: "/scratch".into(),
                    read_only: false,
                },
            ],
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 100,
                hard: 200,
            }],
            privileged: true,
            readonly_root_filesystem: true,
            devices: vec![Device {
                host_path: "/dev/null".into(),
                container_path: "/dev/n".into(),
                permissions: "r".into(),
            }],
            init: true,
            shm_size_mib: Some(128),
            tmpfs: vec![Tmpfs {
                container_path: "/t".into(),
                size_mib: 16,
                mount_options: vec!["noexec".into()],
            }],
            max_swap_mib: 32,
            swappiness: Some(10),
            gpus: 2,
            refused: None,
        };
        let config = host_config(&spec_with(host));
        assert_eq!(
            config.binds,
            Some(vec!["/srv/in:/in:ro".into(), "/srv/out:/out:rw".into()])
        );
        let volumes = config.mounts.unwrap();
        assert_eq!(volumes.len(), 1);
        assert_eq!(volumes[0].target.as_deref(), Some("/scratch"));
        assert_eq!(volumes[0].source, None, "anonymous");
        assert_eq!(volumes[0].typ, Some(MountType::VOLUME));
        assert_eq!(
            config.tmpfs,
            Some(HashMap::from([("/t".into(), "size=16m,noexec".into())]))
        );
        let ulimit = &config.ulimits.unwrap()[0];
        assert_eq!(
            (ulimit.name.as_deref(), ulimit.soft, ulimit.hard),
            (Some("nofile"), Some(100), Some(200))
        );
        let device = &config.devices.unwrap()[0];
        assert_eq!(device.path_in_container.as_deref(), Some("/dev/n"));
        assert_eq!(device.cgroup_permissions.as_deref(), Some("r"));
        let gpus = &config.device_requests.unwrap()[0];
        assert_eq!(
            (gpus.driver.as_deref(), gpus.count),
            (Some("nvidia"), Some(2))
        );
        assert_eq!(config.memory_swap, Some((64 + 32) << 20));
        assert_eq!(config.memory_swappiness, Some(10));
        assert_eq!(config.privileged, Some(true));
        assert_eq!(config.readonly_rootfs, Some(true));
        assert_eq!(config.init, Some(true));
        assert_eq!(config.shm_size, Some(128 << 20));
    }

    #[test]
    fn the_home_id_is_kept_across_starts() {
        let dir = std::env::temp_dir().join(format!("barge-home-id-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = home_id(Some(&dir));
        assert_eq!(home_id(Some(&dir)), first);
        assert_ne!(home_id(None), first);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
