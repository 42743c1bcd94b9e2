//! The agent's one way to talk to the control plane.

use std::future::Future;
use std::pin::Pin;

use barge_core::agent::AgentReport;

/// Where the agent sends its reports. The in-process agent of `barge up` hands them to the
/// server's writer; a remote agent sends them over HTTP. The agent never knows which.
pub trait ControlPlane: Send + Sync + 'static {
    /// Returns once `reports` are durable. Reports of one attempt arrive in the order they
    /// happened, across calls too: a call is made only after the previous one returned `Ok`.
    /// On `Err(ReportError::Unavailable)` the same reports are sent again, after a backoff.
    fn report(
        &self,
        reports: Vec<AgentReport>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReportError>> + Send + '_>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The reports are not durable; sending them again may work.
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// The control plane will never take reports again (it is shutting down). The agent stops
    /// sending and drops what it has.
    #[error("control plane closed")]
    Closed,
    /// The control plane will never take these reports (the agent was declared lost, so its
    /// attempts have ended already): they are dropped, and later ones are sent as usual.
    #[error("reports rejected: {0}")]
    Rejected(String),
}
