//! Barge's resources as the core keeps them. Types that are also AWS shapes (container
//! properties, retry strategy, compute resources) derive serde in AWS's member names, so they
//! are stored and echoed without a second copy; members Barge does not act on yet are kept in
//! `other` and echoed back unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub type Tags = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    Submitted,
    Pending,
    Runnable,
    Starting,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Submitted,
        JobStatus::Pending,
        JobStatus::Runnable,
        JobStatus::Starting,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Submitted => "SUBMITTED",
            JobStatus::Pending => "PENDING",
            JobStatus::Runnable => "RUNNABLE",
            JobStatus::Starting => "STARTING",
            JobStatus::Running => "RUNNING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
        }
    }
    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }
    /// Waiting to be placed, or not yet admitted: what cancel still stops.
    pub fn is_before_start(self) -> bool {
        matches!(
            self,
            JobStatus::Submitted | JobStatus::Pending | JobStatus::Runnable
        )
    }
    /// The transitions the job lifecycle allows. Checked by the simulator after every step.
    // A table of transitions reads best as one arm per state.
    #[allow(clippy::match_like_matches_macro)]
    pub fn may_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Submitted, Pending | Runnable | Failed)
                | (Pending, Runnable | Failed)
                | (Runnable, Starting | Failed)
                | (Starting, Running | Runnable | Failed | Succeeded)
                | (Running, Succeeded | Failed | Runnable)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ResourceState {
    Enabled,
    Disabled,
}

impl ResourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceState::Enabled => "ENABLED",
            ResourceState::Disabled => "DISABLED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ComputeEnvironmentType {
    Managed,
    Unmanaged,
}

impl ComputeEnvironmentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeEnvironmentType::Managed => "MANAGED",
            ComputeEnvironmentType::Unmanaged => "UNMANAGED",
        }
    }
}

/// AWS's `computeResources`. Barge acts on type and the vCPU bounds; the rest (subnets,
/// instance roles, bid percentages…) means nothing on one host and is kept for echo.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputeResources {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(rename = "minvCpus", skip_serializing_if = "Option::is_none")]
    pub min_vcpus: Option<i64>,
    #[serde(rename = "maxvCpus", skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<i64>,
    #[serde(rename = "desiredvCpus", skip_serializing_if = "Option::is_none")]
    pub desired_vcpus: Option<i64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComputeEnvironment {
    pub name: String,
    pub uuid: String,
    pub kind: ComputeEnvironmentType,
    pub state: ResourceState,
    pub compute_resources: Option<ComputeResources>,
    pub unmanaged_vcpus: Option<i64>,
    pub service_role: Option<String>,
    pub update_policy: Option<Value>,
    pub tags: Tags,
    /// Members Barge records but does not act on (eksConfiguration, context, …).
    pub other: Map<String, Value>,
}

impl ComputeEnvironment {
    /// The vCPU bound of a MANAGED environment, in thousandths. UNMANAGED ones are bounded only
    /// by the agents that join them.
    pub fn max_vcpus_milli(&self) -> Option<u64> {
        match self.kind {
            ComputeEnvironmentType::Managed => self
                .compute_resources
                .as_ref()
                .and_then(|r| r.max_vcpus)
                .map(|v| v.max(0) as u64 * 1000),
            ComputeEnvironmentType::Unmanaged => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeEnvironmentOrder {
    pub order: i64,
    /// The environment's name; ARNs are derived when answering.
    pub compute_environment: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobQueue {
    pub name: String,
    pub state: ResourceState,
    pub priority: i64,
    /// Sorted by `order`, ascending: the order the scheduler tries them in.
    pub compute_environment_order: Vec<ComputeEnvironmentOrder>,
    pub scheduling_policy_arn: Option<String>,
    /// Cancel RUNNABLE jobs stuck for too long on a given reason.
    #[serde(default)]
    pub job_state_time_limit_actions: Vec<JobStateTimeLimitAction>,
    pub tags: Tags,
    /// Members recorded for echo (jobQueueType, …).
    pub other: Map<String, Value>,
}

/// AWS's JobStateTimeLimitAction: when a RUNNABLE job's statusReason has matched `reason`
/// for `max_time_seconds`, take `action` (CANCEL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStateTimeLimitAction {
    pub reason: String,
    pub state: String,
    pub max_time_seconds: i64,
    pub action: String,
}

/// AWS's SchedulingPolicy. Only fair-share policies exist in Barge (quota shares belong to
/// SageMaker service environments). The fair-share rules live in `fairshare.rs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulingPolicy {
    pub name: String,
    /// As given; absent means AWS's defaults (600 s window, no reservation, every weight 1).
    pub fairshare_policy: Option<FairsharePolicy>,
    pub tags: Tags,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FairsharePolicy {
    pub share_decay_seconds: Option<i64>,
    pub compute_reservation: Option<i64>,
    pub share_distribution: Vec<ShareWeight>,
}

/// One shareDistribution entry. The weight is kept in ten-thousandths (AWS's resolution:
/// 0.0001–999.9999), an integer, so it is stored and read back exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareWeight {
    /// An identifier, or a prefix when it ends in `*`.
    pub share_identifier: String,
    pub weight_factor_e4: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValuePair {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequirement {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// AWS's `containerProperties`, also used for a job's effective container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Vec<KeyValuePair>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_requirements: Option<Vec<ResourceRequirement>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// AWS's `containerOverrides` on SubmitJob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Vec<KeyValuePair>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_requirements: Option<Vec<ResourceRequirement>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluateOnExit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_exit_code: Option<String>,
    pub action: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryStrategy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluate_on_exit: Option<Vec<EvaluateOnExit>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTimeout {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_duration_seconds: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DefinitionStatus {
    Active,
    Inactive,
}

impl DefinitionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionStatus::Active => "ACTIVE",
            DefinitionStatus::Inactive => "INACTIVE",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDefinition {
    pub name: String,
    pub revision: u32,
    pub status: DefinitionStatus,
    /// `container` or `multinode`, lowercase as AWS has it.
    pub kind: String,
    pub parameters: BTreeMap<String, String>,
    pub scheduling_priority: Option<i64>,
    pub container_properties: Option<ContainerProperties>,
    #[serde(
        default,
        deserialize_with = "crate::multinode::lenient_node_properties"
    )]
    pub node_properties: Option<crate::multinode::NodeProperties>,
    pub retry_strategy: Option<RetryStrategy>,
    pub timeout: Option<JobTimeout>,
    pub propagate_tags: Option<bool>,
    pub platform_capabilities: Option<Vec<String>>,
    pub tags: Tags,
    /// Members recorded for echo (ecsProperties, eksProperties, consumableResourceProperties).
    pub other: Map<String, Value>,
}

/// What one attempt of a job needs from its host, in the units the scheduler counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub vcpus_milli: u32,
    pub memory_mib: u64,
    pub gpus: u32,
}

/// One try at running a job: AWS's AttemptDetail, plus where Barge placed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unique per attempt; AWS's ECS task id, and the last part of the log stream name.
    pub id: String,
    pub number: u32,
    pub agent_id: String,
    pub compute_environment: String,
    pub log_stream_name: String,
    pub placed_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub status_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDependency {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub name: String,
    /// Submission order; FIFO order within a queue, and the key of every job index.
    pub seq: u64,
    pub queue: String,
    pub definition_name: String,
    pub definition_revision: u32,
    pub status: JobStatus,
    /// Set by transitions that have a reason of their own (cancel, terminate, exit). A waiting
    /// job's reason is derived from the current state instead, see `reason::why_waiting`.
    pub status_reason: Option<String>,
    pub created_at: i64,
    /// When the job last became RUNNABLE: the time it took its place in the queue
    /// (GetJobQueueSnapshot's earliestTimeAtPosition).
    #[serde(default)]
    pub runnable_at: Option<i64>,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub parameters: BTreeMap<String, String>,
    /// The definition's container with the submit-time overrides applied and `Ref::` replaced.
    pub container: ContainerProperties,
    pub resources: Resources,
    pub retry_strategy: Option<RetryStrategy>,
    pub timeout: Option<JobTimeout>,
    pub propagate_tags: Option<bool>,
    pub platform_capabilities: Option<Vec<String>>,
    pub scheduling_priority: Option<i64>,
    pub share_identifier: Option<String>,
    pub depends_on: Vec<JobDependency>,
    pub tags: Tags,
    /// Finished attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// The live attempt, from placement until its exit is reported.
    pub current: Option<Attempt>,
    pub is_cancelled: bool,
    pub is_terminated: bool,
    /// Set when a terminate has asked the live attempt to stop.
    pub stop_reason: Option<String>,
    /// A multi-node parallel job (the parent): its nodes and groups. Its own `current` stays
    /// None; its nodes' attempts are the live ones (see `crate::multinode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multinode: Option<crate::multinode::MultiNodeJob>,
    /// A node `<parent>#<index>` of a multi-node parallel job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<crate::multinode::NodeRef>,
    /// On an array job's parent: its size and how far its children have come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<ArrayJob>,
    /// On an array child: its parent and index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_child: Option<ArrayChild>,
}

/// An array job's parent. Its children `<parent>:<index>` are not stored when it is submitted:
/// a child is born (becomes a job row) when it is placed, when it becomes RUNNABLE through a
/// SEQUENTIAL or N_TO_N dependency, or when something is done to it by id. Until then its
/// status is derived from the parent (see `arrays::unborn_status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayJob {
    pub size: u32,
    /// When the parent's own dependencies were met, so its children could start. None while
    /// the parent is SUBMITTED or PENDING on its dependencies.
    pub released_at: Option<i64>,
    /// Child i waits for child i-1 to succeed (dependsOn type SEQUENTIAL).
    pub sequential: bool,
    /// Arrays whose child i each child i waits for (dependsOn type N_TO_N).
    pub n_to_n: Vec<String>,
    /// Set when the parent is cancelled or terminated, or a dependency failed: children not
    /// born yet, from index `closed_from` on, end FAILED with this reason and never run.
    pub closed: Option<String>,
    /// The first index `closed` applies to: 0 for the whole array; i+1 when SEQUENTIAL child
    /// i failed (the children before it do not depend on it).
    #[serde(default)]
    pub closed_from: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayChild {
    pub parent: String,
    pub index: u32,
    pub size: u32,
}

impl Job {
    pub fn max_attempts(&self) -> u32 {
        self.retry_strategy
            .as_ref()
            .and_then(|r| r.attempts)
            .unwrap_or(1)
    }
    pub fn attempts_made(&self) -> u32 {
        self.attempts.len() as u32 + u32::from(self.current.is_some())
    }
}

/// A host that runs attempts. Agents are registered at run time and are not stored: after a
/// restart, attempts whose agent has not come back are failed (see `Command::FailOrphans`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub vcpus_milli: u64,
    pub memory_mib: u64,
    pub scope: AgentScope,
    /// The host's private IPv4 address, given to the other nodes of a multi-node job whose main
    /// node runs here (AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS).
    #[serde(default)]
    pub private_ipv4: Option<String>,
    /// What live attempts hold: derived from the jobs, so never stored (rebuilt on load).
    #[serde(skip)]
    pub used_vcpus_milli: u64,
    #[serde(skip)]
    pub used_memory_mib: u64,
    /// GPUs the host offers, and those its live attempts hold (0 on a host without GPUs).
    #[serde(default)]
    pub gpus: u32,
    #[serde(skip)]
    pub used_gpus: u32,
    /// The agent's own runner, as it registered (None: not said, e.g. `barge up`'s).
    #[serde(default)]
    pub runner: Option<crate::agent::RunnerKind>,
    /// Set by `Command::DrainAgent` when the scaler is about to terminate this instance: it
    /// gets no new attempts, so a scale-in never kills a job that started meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

impl Agent {
    pub fn free_vcpus_milli(&self) -> u64 {
        self.vcpus_milli.saturating_sub(self.used_vcpus_milli)
    }
    pub fn free_memory_mib(&self) -> u64 {
        self.memory_mib.saturating_sub(self.used_memory_mib)
    }
    pub fn free_gpus(&self) -> u32 {
        self.gpus.saturating_sub(self.used_gpus)
    }
    /// Whether attempts of `ce` may be placed here. `barge up`'s agent leaves the MANAGED
    /// environments that an instance provider scales (tag `barge:provider`) to their instances.
    pub fn serves(&self, ce: &ComputeEnvironment) -> bool {
        !self.draining
            && match &self.scope {
                AgentScope::AllManaged => {
                    ce.kind == ComputeEnvironmentType::Managed
                        && !ce.tags.contains_key(crate::limits::PROVIDER_TAG)
                }
                AgentScope::ComputeEnvironment(name) => *name == ce.name,
            }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentScope {
    /// `barge up`'s local agent backs every MANAGED compute environment, each bounded by its
    /// maxvCpus, except those an instance provider scales.
    AllManaged,
    /// An agent that joined one compute environment.
    ComputeEnvironment(String),
}

/// A CloudWatch log stream. Its events live only in the store; the core keeps the metadata
/// that DescribeLogStreams answers with and the sequence that orders events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStream {
    pub name: String,
    /// Small integer key for the events table and eventIds.
    pub number: u64,
    pub created_at: i64,
    pub first_event_at: Option<i64>,
    pub last_event_at: Option<i64>,
    pub last_ingestion_at: Option<i64>,
    pub next_event_seq: u64,
    pub stored_bytes: u64,
}

/// The one log group Barge writes to.
pub const LOG_GROUP_NAME: &str = "/aws/batch/job";
