//! The Barge agent: the loop that runs attempts on one host. It owns the agent loop (launch and
//! stop attempts on instruction, stop everything on shutdown), the runners that turn an
//! [`AttemptSpec`](barge_core::agent::AttemptSpec) into running work (the process runner: one
//! process group and, where the host allows, one cgroup with its limits per attempt, whole-tree
//! kill, no zombies; the Docker runner: one labelled
//! container per attempt, always removed), log shipping, and the one
//! reporter that sends [`AgentReport`](barge_core::agent::AgentReport)s in batches. It talks to
//! the control plane only through [`ControlPlane`]; it must never know the store, HTTP routes,
//! the job state machine or scheduling: it runs what it is told and reports what happened.

mod agent;
mod cgroup;
mod control;
pub mod launcher;
mod ledger;
pub mod limits;
mod logs;
pub mod protocol;
pub mod remote;
mod reporter;
mod runner;
pub mod tls;

pub use agent::{run, AgentConfig, HeldAttempts};
pub use control::{ControlPlane, ReportError};
pub use runner::{Runner, RunnerChoice, RunnerError, NO_DOCKER_REASON};

/// Wall-clock time in ms since the Unix epoch, as reports carry it. A clock before 1970 reads
/// as 0 rather than failing a report.
fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}
