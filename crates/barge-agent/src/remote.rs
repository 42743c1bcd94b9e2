//! A remote agent (`barge agent --server URL --compute-environment NAME`): the same agent loop
//! as `barge up`'s, fed by polls over HTTP instead of an in-process channel.
//!
//! Three tasks: the poller registers and then polls (the poll is the heartbeat; its answer is
//! what to launch and stop), the fence watches the time since the last poll that got an answer
//! and stops everything once it passes `fence_after_ms` (by then the server may declare the host
//! lost and run its jobs elsewhere: no attempt may run twice at once, even across a partition),
//! and the agent loop runs attempts and sends reports through [`HttpControlPlane`].

mod http;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use barge_core::agent::{AgentInstruction, AgentReport, RunnerKind};
use tokio::sync::mpsc;

pub use self::http::{CallError, Client};
use crate::agent::HeldAttempts;
use crate::control::{ControlPlane, ReportError};
use crate::limits::{
    AGENT_CALL_TIMEOUT_MS, AGENT_FENCE_CHECK_MS, AGENT_POLL_SLACK_MS, AGENT_RETRY_DELAY_INITIAL_MS,
    AGENT_RETRY_DELAY_MAX_MS,
};
use crate::protocol::*;
use crate::runner::Runner;
use crate::AgentConfig;

/// Settings of `barge agent`.
pub struct RemoteConfig {
    /// `http://HOST:PORT` of a Barge server.
    pub server: String,
    pub token: Option<String>,
    /// The instance id, stable across restarts.
    pub agent_id: String,
    pub compute_environment: String,
    pub vcpus: u64,
    pub memory_mib: u64,
    pub gpus: u32,
    /// The address other nodes of a multi-node job reach this host at.
    pub private_ipv4: Option<String>,
    /// The agent's data directory (ledger, Docker home id).
    pub state_dir: PathBuf,
    pub runner: Arc<Runner>,
    pub runner_kind: RunnerKind,
}

/// Why the agent stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Config(String),
    /// The server refused the agent for a reason retrying will not fix (wrong token, unknown
    /// compute environment, another protocol version).
    #[error("the server refused this agent: {0}")]
    Refused(String),
}

/// Reports go to the server's `reports` operation.
struct HttpControlPlane {
    client: Client,
    agent_id: String,
}

impl ControlPlane for HttpControlPlane {
    fn report(
        &self,
        reports: Vec<AgentReport>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReportError>> + Send + '_>> {
        Box::pin(async move {
            let request = ReportsRequest {
                agent_id: self.agent_id.clone(),
                reports,
            };
            let timeout = Duration::from_millis(AGENT_CALL_TIMEOUT_MS);
            match self
                .client
                .call::<_, ReportsResponse>("reports", &request, timeout)
                .await
            {
                Ok(answer) => {
                    if answer.refused > 0 {
                        tracing::info!(refused = answer.refused, "stale reports refused");
                    }
                    Ok(())
                }
                Err(CallError::Unavailable(e)) => Err(ReportError::Unavailable(e)),
                Err(e @ CallError::Refused { .. }) => Err(ReportError::Rejected(e.to_string())),
            }
        })
    }
}

/// When the agent last heard from the server (the send time of the last call that got an
/// answer: the server saw the agent no earlier than that).
struct Contact {
    last_ok_sent: Mutex<Instant>,
    fence_after_ms: Mutex<u64>,
}

/// Runs the agent until `shutdown` resolves, then stops its attempts, reports their ends and
/// leaves the compute environment.
pub async fn run(
    config: RemoteConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RemoteError> {
    let client = Client::new(&config.server, config.token.clone()).map_err(RemoteError::Config)?;
    let held = Arc::new(HeldAttempts::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let recovered = Arc::new(tokio::sync::Notify::new());
    let control: Arc<dyn ControlPlane> = Arc::new(HttpControlPlane {
        client: client.clone(),
        agent_id: config.agent_id.clone(),
    });
    let agent = tokio::spawn(crate::run(
        AgentConfig {
            agent_id: config.agent_id.clone(),
            state_dir: Some(config.state_dir.clone()),
            runner: config.runner.clone(),
            held: held.clone(),
            adopt: true,
            recovered: Some(recovered.clone()),
        },
        control,
        rx,
    ));
    let contact = Arc::new(Contact {
        last_ok_sent: Mutex::new(Instant::now()),
        // Until the server says otherwise: nothing runs before the first registration.
        fence_after_ms: Mutex::new(u64::MAX),
    });
    let fence = tokio::spawn(fence(contact.clone(), held.clone(), tx.clone()));
    let outcome = tokio::select! {
        r = async {
            // Register only once `held` lists the containers of an earlier run that were
            // adopted: what is not in it, the server fails.
            recovered.notified().await;
            poll_forever(&client, &config, &held, &contact, tx).await
        } => r,
        _ = shutdown => Ok(()),
    };
    fence.abort();
    let _ = fence.await;
    // Every sender is gone now: the loop stops what runs and sends the last reports.
    let _ = agent.await;
    let leave = DeregisterRequest {
        agent_id: config.agent_id.clone(),
    };
    let timeout = Duration::from_millis(AGENT_CALL_TIMEOUT_MS);
    if let Err(e) = client
        .call::<_, serde_json::Value>("deregister", &leave, timeout)
        .await
    {
        tracing::warn!(%e, "could not leave the compute environment; the server will declare this host lost");
    }
    outcome
}

/// Registers, then polls until an error retrying cannot fix.
async fn poll_forever(
    client: &Client,
    config: &RemoteConfig,
    held: &HeldAttempts,
    contact: &Contact,
    tx: mpsc::UnboundedSender<AgentInstruction>,
) -> Result<(), RemoteError> {
    let mut timing = register(client, config, held, contact).await?;
    let mut delay_ms = AGENT_RETRY_DELAY_INITIAL_MS;
    loop {
        let request = PollRequest {
            agent_id: config.agent_id.clone(),
            held: held.list(),
        };
        let sent = Instant::now();
        let timeout = Duration::from_millis(timing.poll_wait_ms + AGENT_POLL_SLACK_MS);
        match client
            .call::<_, PollResponse>("poll", &request, timeout)
            .await
        {
            Ok(answer) => {
                *contact.last_ok_sent.lock().expect("contact") = sent;
                delay_ms = AGENT_RETRY_DELAY_INITIAL_MS;
                for instruction in answer.instructions {
                    let _ = tx.send(instruction);
                }
            }
            Err(CallError::Refused {
                status: 410,
                message,
                ..
            }) => {
                tracing::warn!(%message, "the server no longer knows this agent; registering again");
                timing = register(client, config, held, contact).await?;
            }
            Err(CallError::Refused { code, message, .. }) => {
                return Err(RemoteError::Refused(format!("{code}: {message}")));
            }
            Err(CallError::Unavailable(e)) => {
                tracing::warn!(%e, retry_in_ms = delay_ms, "poll failed");
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                delay_ms = (delay_ms * 2).min(AGENT_RETRY_DELAY_MAX_MS);
            }
        }
    }
}

/// Registers (again), retrying while the server cannot be reached.
async fn register(
    client: &Client,
    config: &RemoteConfig,
    held: &HeldAttempts,
    contact: &Contact,
) -> Result<RegisterResponse, RemoteError> {
    let mut delay_ms = AGENT_RETRY_DELAY_INITIAL_MS;
    loop {
        let request = RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            agent_id: config.agent_id.clone(),
            compute_environment: config.compute_environment.clone(),
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            gpus: config.gpus,
            runner: config.runner_kind,
            private_ipv4: config.private_ipv4.clone(),
            held: held.list(),
        };
        let sent = Instant::now();
        let timeout = Duration::from_millis(AGENT_CALL_TIMEOUT_MS);
        match client
            .call::<_, RegisterResponse>("register", &request, timeout)
            .await
        {
            Ok(answer) => {
                *contact.last_ok_sent.lock().expect("contact") = sent;
                *contact.fence_after_ms.lock().expect("contact") = answer.fence_after_ms;
                tracing::info!(
                    agent_id = %answer.agent_id,
                    compute_environment = %config.compute_environment,
                    heartbeat_timeout_ms = answer.heartbeat_timeout_ms,
                    "registered"
                );
                return Ok(answer);
            }
            Err(CallError::Refused { code, message, .. }) => {
                return Err(RemoteError::Refused(format!("{code}: {message}")));
            }
            Err(CallError::Unavailable(e)) => {
                tracing::warn!(%e, retry_in_ms = delay_ms, "cannot register yet");
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                delay_ms = (delay_ms * 2).min(AGENT_RETRY_DELAY_MAX_MS);
            }
        }
    }
}

/// Stops every held attempt once the server has been silent for `fence_after_ms`, and again
/// for any attempt still held at each later check while the silence lasts.
async fn fence(
    contact: Arc<Contact>,
    held: Arc<HeldAttempts>,
    tx: mpsc::UnboundedSender<AgentInstruction>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(AGENT_FENCE_CHECK_MS));
    let mut stopped: Vec<String> = Vec::new();
    loop {
        tick.tick().await;
        let silent_ms = contact
            .last_ok_sent
            .lock()
            .expect("contact")
            .elapsed()
            .as_millis() as u64;
        let limit = *contact.fence_after_ms.lock().expect("contact");
        if silent_ms <= limit {
            stopped.clear();
            continue;
        }
        for h in held.list() {
            if stopped.contains(&h.attempt_id) {
                continue;
            }
            tracing::error!(
                job_id = %h.job_id,
                attempt_id = %h.attempt_id,
                silent_ms,
                "no answer from the server for too long: stopping the attempt, which the server will run elsewhere"
            );
            stopped.push(h.attempt_id.clone());
            let _ = tx.send(AgentInstruction::Stop {
                job_id: h.job_id,
                attempt_id: h.attempt_id,
                grace_ms: 0,
            });
        }
    }
}
