//! The agent endpoints (`/barge/agent/v1/…`, protocol in `barge_agent::protocol` and
//! docs/agent-protocol.md) and the heartbeat watch that declares silent agents lost.
//!
//! Remote agents are told what to do by `barge_core::apply::reconcile`, computed from the
//! published state on every poll, so nothing here remembers instructions: a poll waits until
//! the writer wakes it (an instruction for this agent became durable) or its wait is over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use barge_agent::protocol::*;
use barge_core::apply::{reconcile, HeldAttempt};
use barge_core::model::AgentScope;
use barge_core::{Command, Reply};
use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::limits::{
    AGENT_BODY_BYTES_MAX, AGENT_ID_CHARS_MAX, HEARTBEAT_CHECK_MS, POLL_WAIT_MAX_MS,
};
use crate::shared::Shared;
use crate::writer::AgentRouter;

/// The server's side of remote agents: who may join, when each was last heard from, and how
/// to wake a waiting poll.
pub struct RemoteAgents {
    router: Arc<AgentRouter>,
    token: Option<String>,
    heartbeat_timeout_ms: u64,
    last_seen: Mutex<HashMap<String, Instant>>,
    /// Set at shutdown, so that waiting polls answer at once instead of holding it up.
    closing: watch::Sender<bool>,
}

impl RemoteAgents {
    pub fn new(
        router: Arc<AgentRouter>,
        token: Option<String>,
        heartbeat_timeout_ms: u64,
    ) -> RemoteAgents {
        RemoteAgents {
            router,
            token,
            heartbeat_timeout_ms,
            last_seen: Mutex::new(HashMap::new()),
            closing: watch::Sender::new(false),
        }
    }

    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn timing(&self, agent_id: &str) -> RegisterResponse {
        RegisterResponse {
            agent_id: agent_id.to_string(),
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            // A quarter of the timeout: a few polls fit in it even when one is slow.
            poll_wait_ms: (self.heartbeat_timeout_ms / 4).clamp(1, POLL_WAIT_MAX_MS),
            // Half: the agent has stopped everything long before the server gives its jobs to
            // another host, whatever the network and the kill take.
            fence_after_ms: self.heartbeat_timeout_ms / 2,
        }
    }

    fn seen(&self, agent_id: &str) {
        self.last_seen
            .lock()
            .expect("last seen")
            .insert(agent_id.to_string(), Instant::now());
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }
}

/// Compares without stopping at the first difference, so timing says nothing about the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn answer<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut resp = Response::new(Body::from(
        serde_json::to_vec(body).expect("protocol types serialize"),
    ));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    answer(
        status,
        &ErrorBody {
            code: code.to_string(),
            message: message.into(),
        },
    )
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
}

fn not_registered(agent_id: &str) -> Response {
    error(
        StatusCode::GONE,
        codes::NOT_REGISTERED,
        format!(
            "agent {agent_id} is not registered (it may have been declared lost); register again"
        ),
    )
}

/// The request, or the message of the InvalidRequest answer.
fn parse<T: serde::de::DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("the {operation} request is not protocol v{PROTOCOL_VERSION}: {e}"))
}

/// Serves `POST /barge/agent/v1/{operation}`.
pub async fn handle(
    shared: &Shared,
    agents: &RemoteAgents,
    operation: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    if !agents.authorized(headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "the agent token is missing or wrong; give the agent the server's token (--token, BARGE_AGENT_TOKEN or --token-file)",
        );
    }
    let body = match to_bytes(body, AGENT_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(_) => {
            return invalid(format!(
                "the request body is larger than {AGENT_BODY_BYTES_MAX} bytes"
            ))
        }
    };
    match operation {
        "register" => match parse::<RegisterRequest>(operation, &body) {
            Ok(r) => register(shared, agents, r).await,
            Err(e) => invalid(e),
        },
        "poll" => match parse::<PollRequest>(operation, &body) {
            Ok(r) => poll(shared, agents, r).await,
            Err(e) => invalid(e),
        },
        "reports" => match parse::<ReportsRequest>(operation, &body) {
            Ok(r) => reports(shared, agents, r).await,
            Err(e) => invalid(e),
        },
        "deregister" => match parse::<DeregisterRequest>(operation, &body) {
            Ok(r) => deregister(shared, agents, r).await,
            Err(e) => invalid(e),
        },
        other => error(
            StatusCode::NOT_FOUND,
            codes::INVALID_REQUEST,
            format!("{other} is not an agent protocol v{PROTOCOL_VERSION} operation"),
        ),
    }
}

/// Ok, or the message of the InvalidRequest answer.
fn check_agent_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= AGENT_ID_CHARS_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "agentId {id:?} must be 1 to {AGENT_ID_CHARS_MAX} letters, digits, '-', '_' or '.'"
        ))
    }
}

async fn register(shared: &Shared, agents: &RemoteAgents, r: RegisterRequest) -> Response {
    if r.protocol_version != PROTOCOL_VERSION {
        return invalid(format!(
            "this server speaks agent protocol v{PROTOCOL_VERSION}, the agent v{}; run the same Barge version on both",
            r.protocol_version
        ));
    }
    if let Err(e) = check_agent_id(&r.agent_id) {
        return invalid(e);
    }
    if r.vcpus == 0 || r.memory_mib == 0 {
        return invalid("vcpus and memoryMib must be at least 1");
    }
    {
        let state = shared.published.load();
        if !state
            .compute_environments
            .contains_key(&r.compute_environment)
        {
            return invalid(format!(
                "compute environment {} does not exist; create it first (aws batch create-compute-environment)",
                r.compute_environment
            ));
        }
        if let Some(a) = state.agents.get(&r.agent_id) {
            if a.scope == AgentScope::AllManaged {
                return invalid(format!(
                    "{} is the id of this server's own local agent",
                    r.agent_id
                ));
            }
        }
    }
    let command = Command::RegisterAgent {
        id: r.agent_id.clone(),
        vcpus_milli: r.vcpus.saturating_mul(1000),
        memory_mib: r.memory_mib,
        scope: AgentScope::ComputeEnvironment(r.compute_environment.clone()),
        private_ipv4: r.private_ipv4,
        gpus: r.gpus,
        runner: Some(r.runner),
        running: r.held.into_iter().map(|h| h.attempt_id).collect(),
    };
    match shared.execute(command).await {
        Ok(_) => {
            agents.seen(&r.agent_id);
            tracing::info!(agent_id = %r.agent_id, compute_environment = %r.compute_environment, "agent registered");
            answer(StatusCode::OK, &agents.timing(&r.agent_id))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e.message),
    }
}

async fn poll(shared: &Shared, agents: &RemoteAgents, r: PollRequest) -> Response {
    if let Err(e) = check_agent_id(&r.agent_id) {
        return invalid(e);
    }
    let held: Vec<HeldAttempt> = r
        .held
        .into_iter()
        .map(|h| HeldAttempt {
            job_id: h.job_id,
            attempt_id: h.attempt_id,
        })
        .collect();
    let wake = agents.router.waker(&r.agent_id);
    let mut closing = agents.closing.subscribe();
    let wait = Duration::from_millis(agents.timing(&r.agent_id).poll_wait_ms);
    let deadline = tokio::time::Instant::now() + wait;
    let mut first = true;
    loop {
        {
            let state = shared.published.load();
            if !state.agents.contains_key(&r.agent_id) {
                return not_registered(&r.agent_id);
            }
            if first {
                agents.seen(&r.agent_id);
                first = false;
            }
            let instructions = reconcile(&state, &r.agent_id, &held);
            if !instructions.is_empty() || *closing.borrow() {
                return answer(StatusCode::OK, &PollResponse { instructions });
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = closing.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return answer(StatusCode::OK, &PollResponse::default());
            }
        }
    }
}

async fn reports(shared: &Shared, agents: &RemoteAgents, r: ReportsRequest) -> Response {
    if !shared.published.load().agents.contains_key(&r.agent_id) {
        return not_registered(&r.agent_id);
    }
    agents.seen(&r.agent_id);
    let command = Command::AgentReports {
        agent_id: r.agent_id,
        reports: r.reports,
    };
    match shared.execute(command).await {
        Ok(Reply::Reports { refused }) => answer(StatusCode::OK, &ReportsResponse { refused }),
        Ok(_) => answer(StatusCode::OK, &ReportsResponse::default()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e.message),
    }
}

async fn deregister(shared: &Shared, agents: &RemoteAgents, r: DeregisterRequest) -> Response {
    let remote = shared
        .published
        .load()
        .agents
        .get(&r.agent_id)
        .is_some_and(|a| a.scope != AgentScope::AllManaged);
    if !remote {
        return not_registered(&r.agent_id);
    }
    match shared
        .execute(Command::AgentLost {
            id: r.agent_id.clone(),
        })
        .await
    {
        Ok(_) => {
            agents
                .last_seen
                .lock()
                .expect("last seen")
                .remove(&r.agent_id);
            agents.router.forget_waker(&r.agent_id);
            tracing::info!(agent_id = %r.agent_id, "agent left");
            answer(StatusCode::OK, &serde_json::json!({}))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e.message),
    }
}

/// Declares lost every remote agent not heard from for the heartbeat timeout. An agent stored
/// before this server started is given a whole timeout from the first check.
pub async fn watch_heartbeats(shared: Shared, agents: Arc<RemoteAgents>, shutdown: Arc<Notify>) {
    let timeout = Duration::from_millis(agents.heartbeat_timeout_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(HEARTBEAT_CHECK_MS)) => {}
            _ = shutdown.notified() => return,
        }
        let remote: Vec<String> = shared
            .published
            .load()
            .agents
            .values()
            // `barge up`'s own agent lives in this process; only agents that joined over
            // the network can go silent.
            .filter(|a| a.scope != AgentScope::AllManaged)
            .map(|a| a.id.clone())
            .collect();
        let silent: Vec<String> = {
            let mut seen = agents.last_seen.lock().expect("last seen");
            seen.retain(|id, _| remote.contains(id));
            let now = Instant::now();
            remote
                .into_iter()
                .filter(|id| now.duration_since(*seen.entry(id.clone()).or_insert(now)) > timeout)
                .collect()
        };
        for id in silent {
            tracing::warn!(agent_id = %id, timeout_ms = agents.heartbeat_timeout_ms, "no heartbeat: agent declared lost");
            match shared.execute(Command::AgentLost { id: id.clone() }).await {
                Ok(_) => {
                    agents.last_seen.lock().expect("last seen").remove(&id);
                }
                Err(e) => tracing::warn!("agent {id} not declared lost this round: {e}"),
            }
        }
    }
}
