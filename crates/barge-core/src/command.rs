//! Typed commands: every change to Barge's state is one of these, applied by `apply::apply`.
//! Inputs arrive already well-formed (the API crate checks shapes and ranges); the core checks
//! everything that depends on state (names taken, references that exist, AWS's state rules).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::agent::{AgentInstruction, AgentReport};
use crate::model::*;

#[derive(Clone, Debug)]
pub enum Command {
    CreateComputeEnvironment(ComputeEnvironment),
    UpdateComputeEnvironment(ComputeEnvironmentUpdate),
    DeleteComputeEnvironment {
        reference: String,
    },
    CreateJobQueue(JobQueue),
    UpdateJobQueue(JobQueueUpdate),
    DeleteJobQueue {
        reference: String,
    },
    /// The revision in the value is ignored: the core assigns the next one.
    RegisterJobDefinition(JobDefinition),
    DeregisterJobDefinition {
        reference: String,
    },
    SubmitJob(Box<SubmitJob>),
    CancelJob {
        job_id: String,
        reason: String,
    },
    TerminateJob {
        job_id: String,
        reason: String,
    },
    TagResource {
        arn: String,
        tags: Tags,
    },
    UntagResource {
        arn: String,
        keys: Vec<String>,
    },
    RegisterAgent {
        id: String,
        vcpus_milli: u64,
        memory_mib: u64,
        scope: AgentScope,
        /// The host's private IPv4 address (multi-node jobs give it to their other nodes).
        private_ipv4: Option<String>,
        /// GPUs the host offers.
        gpus: u32,
        /// The runner the agent uses for attempts that do not ask for one (shown to people).
        runner: Option<crate::agent::RunnerKind>,
        /// The attempts the agent says it is running. On a registration of an id already
        /// known (an agent that restarted or was partitioned), a RUNNING attempt of that agent
        /// missing here died with the agent's previous run: it fails with the host-terminated
        /// reason. STARTING ones are launched again (the agent never ran them, or killed them
        /// before they were reported).
        running: Vec<String>,
    },
    /// The agent is gone: its attempts fail with the host-terminated reason (and are retried
    /// when attempts remain).
    AgentLost {
        id: String,
    },
    /// Fails every live attempt whose agent is not registered (after a restart).
    FailOrphans,
    /// The scaler is about to terminate this instance: no new attempts may go to it. Refused
    /// while it holds any attempt (the scale-in is then called off).
    DrainAgent {
        id: String,
    },
    /// The scaler reports the vCPUs it is working towards (computeResources.desiredvCpus).
    /// Unlike UpdateComputeEnvironment it may lower the value; it is kept in [min, max].
    SetDesiredVcpus {
        compute_environment: String,
        desired_vcpus: i64,
    },
    AgentReports {
        agent_id: String,
        reports: Vec<AgentReport>,
    },
    SchedulerPass(Plan),
    /// Stops every RUNNING attempt whose timeout.attemptDurationSeconds has passed.
    EnforceTimeouts,
    /// Takes the job queues' jobStateTimeLimitActions that have come due.
    EnforceStateTimeLimits,
    CreateSchedulingPolicy(SchedulingPolicy),
    /// Replaces the policy's fairsharePolicy when one is given.
    UpdateSchedulingPolicy {
        reference: String,
        fairshare_policy: Option<FairsharePolicy>,
    },
    DeleteSchedulingPolicy {
        reference: String,
    },
    /// A new schedule; its next fire time is computed from `clock_ms`, the schedules' clock.
    CreateSchedule {
        schedule: Box<crate::schedule::Schedule>,
        clock_ms: i64,
    },
    UpdateSchedule {
        update: Box<ScheduleUpdate>,
        clock_ms: i64,
    },
    DeleteSchedule {
        name: String,
    },
    /// Fires the named schedules that are still due at `clock_ms`, each once, the job it
    /// submits taking the id given beside it (see `apply/schedules.rs`).
    FireSchedules {
        clock_ms: i64,
        fires: Vec<(String, String)>,
    },
}

/// What UpdateSchedule changes; None keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct ScheduleUpdate {
    pub name: String,
    pub description: Option<String>,
    pub expression: Option<String>,
    pub time_zone: Option<String>,
    pub state: Option<ResourceState>,
    pub overlap_policy: Option<crate::schedule::OverlapPolicy>,
    pub template: Option<crate::schedule::JobTemplate>,
    pub tags: Option<Tags>,
}

impl Command {
    /// The command's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateComputeEnvironment(_) => "CreateComputeEnvironment",
            Command::UpdateComputeEnvironment(_) => "UpdateComputeEnvironment",
            Command::DeleteComputeEnvironment { .. } => "DeleteComputeEnvironment",
            Command::CreateJobQueue(_) => "CreateJobQueue",
            Command::UpdateJobQueue(_) => "UpdateJobQueue",
            Command::DeleteJobQueue { .. } => "DeleteJobQueue",
            Command::RegisterJobDefinition(_) => "RegisterJobDefinition",
            Command::DeregisterJobDefinition { .. } => "DeregisterJobDefinition",
            Command::SubmitJob(_) => "SubmitJob",
            Command::CancelJob { .. } => "CancelJob",
            Command::TerminateJob { .. } => "TerminateJob",
            Command::TagResource { .. } => "TagResource",
            Command::UntagResource { .. } => "UntagResource",
            Command::RegisterAgent { .. } => "RegisterAgent",
            Command::AgentLost { .. } => "AgentLost",
            Command::FailOrphans => "FailOrphans",
            Command::DrainAgent { .. } => "DrainAgent",
            Command::SetDesiredVcpus { .. } => "SetDesiredVcpus",
            Command::AgentReports { .. } => "AgentReports",
            Command::SchedulerPass(_) => "SchedulerPass",
            Command::EnforceTimeouts => "EnforceTimeouts",
            Command::EnforceStateTimeLimits => "EnforceStateTimeLimits",
            Command::CreateSchedulingPolicy(_) => "CreateSchedulingPolicy",
            Command::UpdateSchedulingPolicy { .. } => "UpdateSchedulingPolicy",
            Command::DeleteSchedulingPolicy { .. } => "DeleteSchedulingPolicy",
            Command::CreateSchedule { .. } => "CreateSchedule",
            Command::UpdateSchedule { .. } => "UpdateSchedule",
            Command::DeleteSchedule { .. } => "DeleteSchedule",
            Command::FireSchedules { .. } => "FireSchedules",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ComputeEnvironmentUpdate {
    pub reference: String,
    pub state: Option<ResourceState>,
    pub min_vcpus: Option<i64>,
    pub max_vcpus: Option<i64>,
    pub desired_vcpus: Option<i64>,
    /// Other computeResources members to record (instanceTypes, subnets, …).
    pub compute_resources_other: Map<String, Value>,
    pub unmanaged_vcpus: Option<i64>,
    pub service_role: Option<String>,
    pub update_policy: Option<Value>,
}

#[derive(Clone, Debug, Default)]
pub struct JobQueueUpdate {
    pub reference: String,
    pub state: Option<ResourceState>,
    pub priority: Option<i64>,
    pub compute_environment_order: Option<Vec<ComputeEnvironmentOrder>>,
    pub scheduling_policy_arn: Option<String>,
    pub job_state_time_limit_actions: Option<Vec<JobStateTimeLimitAction>>,
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default)]
pub struct SubmitJob {
    /// Chosen by the caller (a UUID in the server, a counter in the simulator).
    pub job_id: String,
    pub name: String,
    pub queue: String,
    pub definition: String,
    pub parameters: BTreeMap<String, String>,
    pub container_overrides: Option<ContainerOverrides>,
    /// Multi-node parallel jobs only.
    pub node_overrides: Option<crate::multinode::NodeOverrides>,
    pub retry_strategy: Option<RetryStrategy>,
    pub timeout: Option<JobTimeout>,
    pub propagate_tags: Option<bool>,
    pub tags: Tags,
    pub depends_on: Vec<JobDependency>,
    pub share_identifier: Option<String>,
    pub scheduling_priority_override: Option<i64>,
    /// arrayProperties.size: Some for an array job.
    pub array_size: Option<u32>,
}

/// What a scheduling pass proposes. The applier re-checks each entry against the state at
/// commit time and skips the ones that no longer hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// SUBMITTED jobs to admit (→ RUNNABLE).
    pub admit: Vec<String>,
    pub placements: Vec<Placement>,
    /// Multi-node jobs, each placed whole (all nodes) or not at all.
    pub gangs: Vec<crate::multinode::GangPlacement>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.admit.is_empty() && self.placements.is_empty() && self.gangs.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub job_id: String,
    pub compute_environment: String,
    pub agent_id: String,
    pub attempt_id: String,
}

/// What a successful command answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Done,
    ComputeEnvironment {
        name: String,
    },
    JobQueue {
        name: String,
    },
    JobDefinition {
        name: String,
        revision: u32,
    },
    Job {
        id: String,
        name: String,
    },
    SchedulingPolicy {
        name: String,
    },
    Schedule {
        name: String,
    },
    /// How many placements of a scheduler pass were committed (a whole gang counts as one).
    Placed {
        placed: usize,
    },
    /// How many agent reports were refused as stale (their attempt is no longer current).
    Reports {
        refused: usize,
    },
}

/// The keys of what a command changed, so the store writes only those.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    ComputeEnvironment(String),
    JobQueue(String),
    JobDefinition(String, u32),
    Job(String),
    LogStream(String),
    SchedulingPolicy(String),
    /// A fair-share queue's usage record (`fairshare::ShareUsage`), by queue name.
    ShareUsage(String),
    /// A registered agent (host), by id: stored so that remote agents keep their work when
    /// the control plane restarts or another server takes over.
    Agent(String),
    /// A schedule (`schedule::Schedule`), by name.
    Schedule(String),
}

/// A log event to store, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLogEvent {
    pub stream_number: u64,
    pub seq: u64,
    pub timestamp_ms: i64,
    pub ingestion_ms: i64,
    pub message: String,
}

/// A side effect to run once the change is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Agent {
        agent_id: String,
        instruction: AgentInstruction,
    },
}

/// Everything a batch of commands changed, beyond the new state itself.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub dirty: Vec<Key>,
    pub log_events: Vec<NewLogEvent>,
    pub effects: Vec<Effect>,
    /// Something changed that a scheduling pass could act on.
    pub schedule: bool,
}

impl Changes {
    /// Length marks, so a failed command's partial changes can be undone.
    pub fn mark(&self) -> (usize, usize, usize) {
        (self.dirty.len(), self.log_events.len(), self.effects.len())
    }
    pub fn rollback(&mut self, mark: (usize, usize, usize)) {
        self.dirty.truncate(mark.0);
        self.log_events.truncate(mark.1);
        self.effects.truncate(mark.2);
    }
}

/// A command the state refuses. Every variant is the client's to fix; the API answers 400
/// ClientException with the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    LimitExceeded(String),
}
