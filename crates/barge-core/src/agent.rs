//! What the control plane and an agent say to each other. These are plain data so that the
//! in-process agent of `barge up`, a remote agent (later, over HTTP) and the simulator all speak
//! the same protocol.

use serde::{Deserialize, Serialize};

/// Everything an agent needs to run one attempt of a job. Built by the core when the attempt is
/// placed; the agent never looks anything up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSpec {
    pub job_id: String,
    /// Unique per attempt; reports for an attempt that is no longer current are refused.
    pub attempt_id: String,
    /// 1-based, exported as AWS_BATCH_JOB_ATTEMPT.
    pub attempt_number: u32,
    pub image: Option<String>,
    /// The command after parameter substitution. Empty means "the image's default command".
    pub command: Vec<String>,
    /// The job's environment merged with the AWS_BATCH_* variables, in a stable order.
    pub environment: Vec<(String, String)>,
    pub vcpus_milli: u32,
    pub memory_mib: u64,
    pub log_stream_name: String,
    /// containerProperties `user`: the user (name or uid[:gid]) the container runs as; None is
    /// the image's default. Only the Docker runner honours it: the process runner runs jobs as
    /// the agent's own user. Defaults to None so that specs written before it existed still
    /// read.
    #[serde(default)]
    pub user: Option<String>,
    /// The container's host settings (mounts, ulimits, privileged, read-only root, devices,
    /// init, /dev/shm, tmpfs, swap, GPUs), checked when the definition was registered. Only
    /// the Docker runner honours them. Defaults to none so that older specs still read. Boxed:
    /// it is most of a spec's size, and Stop instructions need not carry that much.
    #[serde(default)]
    pub host: Box<crate::container::ContainerHost>,
    /// The runner the attempt's compute environment asks for (its `barge:runner` tag); None
    /// leaves it to the agent's own choice (`barge up --runner`).
    #[serde(default)]
    pub runner: Option<RunnerKind>,
}

/// A runner a compute environment may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    /// Each attempt a container of the job's image.
    Docker,
    /// Each attempt a process group on the agent's host.
    Process,
}

impl RunnerKind {
    /// The tag value (`docker` or `process`).
    pub fn parse(value: &str) -> Option<RunnerKind> {
        match value {
            "docker" => Some(RunnerKind::Docker),
            "process" => Some(RunnerKind::Process),
            _ => None,
        }
    }
}

/// Instructions from the control plane to one agent. Sent only after the change that caused
/// them is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentInstruction {
    Launch(AttemptSpec),
    /// Stop the attempt: SIGTERM to its process tree, then SIGKILL after `grace_ms`.
    Stop {
        job_id: String,
        attempt_id: String,
        grace_ms: u64,
    },
}

/// One line of a job's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub timestamp_ms: i64,
    pub message: String,
}

/// Reports from an agent about its attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentReport {
    /// The attempt's process exists: STARTING → RUNNING.
    Running {
        job_id: String,
        attempt_id: String,
        at_ms: i64,
    },
    /// Output lines, in order, for the attempt's log stream.
    Logs {
        job_id: String,
        attempt_id: String,
        lines: Vec<LogLine>,
    },
    /// The attempt is over. `exit_code` is None when the process never started; a death by
    /// signal N reports 128 + N, as Docker does (137 for SIGKILL). `reason` is the container
    /// reason AWS reports (e.g. "CannotStartContainerError: …") and is None for an ordinary exit.
    Exited {
        job_id: String,
        attempt_id: String,
        at_ms: i64,
        exit_code: Option<i32>,
        reason: Option<String>,
    },
}

impl AgentReport {
    /// The (job id, attempt id) the report is about.
    pub fn ids(&self) -> (&str, &str) {
        match self {
            AgentReport::Running {
                job_id, attempt_id, ..
            }
            | AgentReport::Logs {
                job_id, attempt_id, ..
            }
            | AgentReport::Exited {
                job_id, attempt_id, ..
            } => (job_id, attempt_id),
        }
    }
}
