//! Runners start an attempt, report it, and stop it on request. Two exist: the process runner
//! (a host process group per attempt) and the Docker runner (a container per attempt). The agent
//! loop sees only [`Runner`]: `run` one attempt to its end, and `recover` what a previous run
//! of the agent left behind. An enum rather than a trait: there are two runners, both known
//! here, and a match says plainly which one does what.

pub(crate) mod docker;
pub(crate) mod process;
pub(crate) mod registry_auth;

pub(crate) use docker::Adopted;

use std::path::Path;
use std::sync::Arc;

use barge_core::agent::{AgentReport, AttemptSpec, RunnerKind};
use tokio::sync::{mpsc, watch};

use crate::cgroup::Limits;
use crate::ledger::Ledger;

/// The reason of an attempt whose compute environment asks for the Docker runner (tag
/// `barge:runner=docker`) on an agent without Docker. AWS keeps 255 characters of a reason.
pub const NO_DOCKER_REASON: &str = "CannotStartContainerError: the compute environment asks for the Docker runner (tag barge:runner=docker) and this agent's host has no Docker that answers; start Docker there, or remove the tag";

/// Which runner to use, as `barge up --runner` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerChoice {
    /// Docker when its socket answers, else the process runner.
    Auto,
    Docker,
    Process,
}

/// Why the asked-for runner cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(
        "--runner docker: {0}. Start the Docker daemon (or point DOCKER_HOST at its socket), \
         or run jobs as host processes with --runner process"
    )]
    DockerUnavailable(String),
}

/// The runner an agent uses for every attempt, chosen once when it starts.
pub struct Runner {
    kind: Kind,
    description: String,
    /// How the process runner limits an attempt's memory and CPU. Found for the Docker runner
    /// too: an earlier run with the process runner may have left cgroups to remove.
    limits: Arc<Limits>,
}

enum Kind {
    /// `docker` is kept, when the socket answers, only to remove containers that an earlier
    /// run with the Docker runner left behind: a change of runner must not leave orphans.
    Process {
        docker: Option<Arc<docker::DockerRunner>>,
    },
    Docker(Arc<docker::DockerRunner>),
}

impl Runner {
    /// Chooses the runner. `agent_id` labels containers for people reading `docker ps`;
    /// `state_dir` keeps the agent's stable home id (see [`docker::home_id`]), with which an
    /// agent started again on the same data directory finds the containers of its earlier runs.
    pub async fn choose(
        choice: RunnerChoice,
        agent_id: &str,
        state_dir: Option<&Path>,
    ) -> Result<Runner, RunnerError> {
        let home = docker::home_id(state_dir);
        let limits = Arc::new(Limits::detect(&home));
        let connected = docker::DockerRunner::connect(agent_id, &home).await;
        match (choice, connected) {
            (RunnerChoice::Docker | RunnerChoice::Auto, Ok(runner)) => Ok(Runner {
                description: format!("docker ({})", runner.engine()),
                kind: Kind::Docker(Arc::new(runner)),
                limits,
            }),
            (RunnerChoice::Docker, Err(why)) => Err(RunnerError::DockerUnavailable(why)),
            (RunnerChoice::Auto, Err(why)) => Ok(Runner {
                description: format!("process (Docker not available: {why})"),
                kind: Kind::Process { docker: None },
                limits,
            }),
            (RunnerChoice::Process, connected) => Ok(Runner {
                description: "process (as asked by --runner process)".to_owned(),
                kind: Kind::Process {
                    docker: connected.ok().map(Arc::new),
                },
                limits,
            }),
        }
    }

    /// The process runner alone, without looking for Docker (tests, and callers that never
    /// want containers). Without a state directory its cgroups are named by a fresh home id,
    /// so it never touches those of another agent.
    pub fn process() -> Runner {
        Runner {
            kind: Kind::Process { docker: None },
            description: "process".to_owned(),
            limits: Arc::new(Limits::detect(&docker::home_id(None))),
        }
    }

    /// What `barge up` prints: the runner, and the engine or why Docker is not used.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Which runner this is, as an agent registers it.
    pub fn kind(&self) -> barge_core::agent::RunnerKind {
        match self.kind {
            Kind::Process { .. } => barge_core::agent::RunnerKind::Process,
            Kind::Docker(_) => barge_core::agent::RunnerKind::Docker,
        }
    }

    /// What `barge up` prints about limits: for the process runner, which of memory and CPU are
    /// enforced and how (`limits: cgroup v1 (memory, cpu)`, or `limits: rlimits only (memory);
    /// CPU not enforced: <why>`); None for the Docker runner, which always enforces both.
    pub fn limits_note(&self) -> Option<String> {
        match self.kind {
            Kind::Process { .. } => Some(self.limits.note()),
            Kind::Docker(_) => None,
        }
    }

    /// Stops and removes what a previous run of this agent left running (process groups in
    /// the ledger, cgroups of this agent's home with whatever is still in them, containers with
    /// this agent's home label), before anything new runs. Returns their attempt ids, and with
    /// `adopt` the containers kept to be followed instead (see [`Runner::follow_adopted`]).
    ///
    /// `barge up`'s agent never adopts: it has a new id on every start and the control plane
    /// has already failed its earlier attempts. A remote agent keeps its id and adopts its
    /// containers, whose attempts are still live. Process groups are never adopted: they are
    /// not this process's children, so their exit status cannot be had.
    pub(crate) async fn recover(
        &self,
        ledger: Arc<Ledger>,
        adopt: bool,
    ) -> (Vec<String>, Vec<docker::Adopted>) {
        let limits = self.limits.clone();
        let mut stopped = tokio::task::spawn_blocking(move || {
            let mut stopped = ledger.kill_leftovers();
            // After the groups: this also reaches processes that left their group (setsid).
            for attempt_id in limits.remove_leftovers() {
                if !stopped.contains(&attempt_id) {
                    stopped.push(attempt_id);
                }
            }
            stopped
        })
        .await
        .unwrap_or_default();
        let docker = match &self.kind {
            Kind::Process { docker } => docker.as_ref(),
            Kind::Docker(docker) => Some(docker),
        };
        let mut adopted = Vec::new();
        if let Some(docker) = docker {
            let (removed, kept) = docker.leftovers(adopt).await;
            stopped.extend(removed);
            adopted = kept;
        }
        (stopped, adopted)
    }

    /// Follows a container adopted by `recover` to its end, reporting as `run` does.
    pub(crate) async fn follow_adopted(
        &self,
        adopted: docker::Adopted,
        reports: mpsc::Sender<AgentReport>,
        stop: watch::Receiver<Option<u64>>,
        live: mpsc::Sender<()>,
    ) {
        let docker = match &self.kind {
            Kind::Process { docker } => docker.as_ref(),
            Kind::Docker(docker) => Some(docker),
        };
        match docker {
            Some(docker) => docker.follow_adopted(adopted, reports, stop, live).await,
            // Adopted containers come from this Docker; without it there are none.
            None => drop(live),
        }
    }

    /// Runs one attempt to its end and reports it (`Running`, `Logs`, then `Exited`). `stop`
    /// carries the grace in ms of a requested stop; `live` is held while anything of the
    /// attempt may exist, so that shutdown can wait for it.
    pub(crate) async fn run(
        &self,
        spec: AttemptSpec,
        reports: mpsc::Sender<AgentReport>,
        stop: watch::Receiver<Option<u64>>,
        live: mpsc::Sender<()>,
        ledger: Arc<Ledger>,
    ) {
        // The compute environment's `barge:runner` tag wins over the agent's own choice.
        let docker = match (&self.kind, spec.runner) {
            (_, Some(RunnerKind::Process)) | (Kind::Process { .. }, None) => None,
            (Kind::Docker(docker), _) => Some(Ok(docker)),
            (
                Kind::Process {
                    docker: Some(docker),
                },
                Some(RunnerKind::Docker),
            ) => Some(Ok(docker)),
            (Kind::Process { docker: None }, Some(RunnerKind::Docker)) => Some(Err(())),
        };
        match docker {
            None => process::run(spec, reports, stop, live, ledger, self.limits.clone()).await,
            Some(Ok(docker)) => docker.run(spec, reports, stop, live).await,
            Some(Err(())) => {
                // Nothing started: the attempt fails at once, saying why and what to do.
                let exited = AgentReport::Exited {
                    job_id: spec.job_id,
                    attempt_id: spec.attempt_id,
                    at_ms: crate::epoch_ms(),
                    exit_code: None,
                    reason: Some(NO_DOCKER_REASON.to_owned()),
                };
                let _ = reports.send(exited).await;
            }
        }
    }
}
