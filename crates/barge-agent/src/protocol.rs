//! The agent protocol, version 1: what a remote agent and the control plane say over HTTP.
//! Documented for people in docs/agent-protocol.md; both sides use these types, so they cannot
//! drift apart.
//!
//! Every request is `POST {server}/barge/agent/v1/{operation}` with a JSON body and, when the
//! server has an agent token, `Authorization: Bearer <token>`. Instructions are level-triggered:
//! each poll carries the attempts the agent holds and the answer says what to launch and stop,
//! so a lost message, a partition or a restart is repaired by the next poll.

use barge_core::agent::{AgentInstruction, AgentReport, RunnerKind};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; a server refuses agents that speak another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every operation lives under this path.
pub const PATH_PREFIX: &str = "/barge/agent/v1/";

/// An attempt the agent holds: its task has not finished (the process or container may still
/// exist).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub job_id: String,
    pub attempt_id: String,
}

/// `register`: the host joins a compute environment (or joins again after a restart or after
/// being declared lost; `held` then says what it still runs).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub protocol_version: u32,
    /// The instance id; stable across the agent's restarts (kept in its data directory).
    pub agent_id: String,
    pub compute_environment: String,
    pub vcpus: u64,
    pub memory_mib: u64,
    #[serde(default)]
    pub gpus: u32,
    pub runner: RunnerKind,
    /// The address other nodes of a multi-node job reach this host at.
    #[serde(default)]
    pub private_ipv4: Option<String>,
    #[serde(default)]
    pub held: Vec<Held>,
}

/// The timings the agent must keep, decided by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    pub agent_id: String,
    /// An agent not heard from for this long is declared lost.
    pub heartbeat_timeout_ms: u64,
    /// The longest a poll waits for instructions before answering with none.
    pub poll_wait_ms: u64,
    /// An agent that has not completed a poll for this long stops everything it runs: by then
    /// the server may be about to declare it lost and run its jobs elsewhere. Shorter than the
    /// heartbeat timeout, so that no attempt ever runs twice at once, even across a partition.
    pub fence_after_ms: u64,
}

/// `poll`: the heartbeat, and the way instructions reach the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollRequest {
    pub agent_id: String,
    pub held: Vec<Held>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse {
    pub instructions: Vec<AgentInstruction>,
}

/// `reports`: what happened to attempts, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportsRequest {
    pub agent_id: String,
    pub reports: Vec<AgentReport>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportsResponse {
    /// Reports about attempts that are no longer this agent's live ones.
    pub refused: usize,
}

/// `deregister`: the agent leaves (after stopping its attempts and reporting their ends).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeregisterRequest {
    pub agent_id: String,
}

/// The body of every error answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Error codes, each with its HTTP status.
pub mod codes {
    /// 400: the request is malformed or names something that does not exist.
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    /// 401: the token is missing or wrong.
    pub const UNAUTHORIZED: &str = "Unauthorized";
    /// 410: the agent is not registered (never was, or was declared lost): register again.
    pub const NOT_REGISTERED: &str = "AgentNotRegistered";
}
