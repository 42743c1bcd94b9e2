//! Scheduled jobs: a schedule submits a job from its template whenever its expression fires
//! (docs/schedules.md). The expressions and their next fire times are in `expr`; the commands
//! that create, change, delete and fire schedules are in `apply/schedules.rs`. Time is always
//! an argument: the firing loop in the server reads a clock and says which schedules are due.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::SubmitJob;
use crate::limits::SCHEDULE_TAG;
use crate::model::*;
use crate::multinode::NodeOverrides;
use crate::State;

pub mod expr;

pub use expr::{parse_expression, parse_time_zone, Expression};

/// The time zone of a schedule that names none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OverlapPolicy {
    /// Submit whatever the previous runs are doing.
    Allow,
    /// Do not submit while a previous run has not finished (the fire is counted as skipped).
    Skip,
    /// Terminate the unfinished previous runs, then submit.
    CancelPrevious,
}

impl OverlapPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Allow => "ALLOW",
            OverlapPolicy::Skip => "SKIP",
            OverlapPolicy::CancelPrevious => "CANCEL_PREVIOUS",
        }
    }
    pub fn parse(s: &str) -> Option<OverlapPolicy> {
        match s {
            "ALLOW" => Some(OverlapPolicy::Allow),
            "SKIP" => Some(OverlapPolicy::Skip),
            "CANCEL_PREVIOUS" => Some(OverlapPolicy::CancelPrevious),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayPropertiesTemplate {
    pub size: u32,
}

/// The SubmitJob request a schedule sends, in AWS's member names (it is stored and shown as
/// such). Checked like a SubmitJob when the schedule is created or changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplate {
    pub job_name: String,
    pub job_queue: String,
    pub job_definition: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_overrides: Option<ContainerOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_overrides: Option<NodeOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<JobTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_priority_override: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_properties: Option<ArrayPropertiesTemplate>,
}

impl JobTemplate {
    /// The template of a checked SubmitJob (its id and dependencies are not part of it).
    pub fn from_submit(s: &SubmitJob) -> JobTemplate {
        JobTemplate {
            job_name: s.name.clone(),
            job_queue: s.queue.clone(),
            job_definition: s.definition.clone(),
            parameters: s.parameters.clone(),
            container_overrides: s.container_overrides.clone(),
            node_overrides: s.node_overrides.clone(),
            retry_strategy: s.retry_strategy.clone(),
            timeout: s.timeout.clone(),
            propagate_tags: s.propagate_tags,
            tags: s.tags.clone(),
            share_identifier: s.share_identifier.clone(),
            scheduling_priority_override: s.scheduling_priority_override,
            array_properties: s.array_size.map(|size| ArrayPropertiesTemplate { size }),
        }
    }

    /// The SubmitJob one fire sends: the template, with the tag naming the schedule.
    pub fn to_submit(&self, job_id: String, schedule: &str) -> SubmitJob {
        let mut tags = self.tags.clone();
        tags.insert(SCHEDULE_TAG.to_string(), schedule.to_string());
        SubmitJob {
            job_id,
            name: self.job_name.clone(),
            queue: self.job_queue.clone(),
            definition: self.job_definition.clone(),
            parameters: self.parameters.clone(),
            container_overrides: self.container_overrides.clone(),
            node_overrides: self.node_overrides.clone(),
            retry_strategy: self.retry_strategy.clone(),
            timeout: self.timeout.clone(),
            propagate_tags: self.propagate_tags,
            tags,
            depends_on: Vec::new(),
            share_identifier: self.share_identifier.clone(),
            scheduling_priority_override: self.scheduling_priority_override,
            array_size: self.array_properties.as_ref().map(|a| a.size),
        }
    }
}

/// A schedule, as stored (one row of kind `schedule`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub arn: String,
    #[serde(default)]
    pub description: Option<String>,
    pub expression: String,
    pub time_zone: String,
    pub state: ResourceState,
    pub overlap_policy: OverlapPolicy,
    pub template: JobTemplate,
    #[serde(default)]
    pub tags: Tags,
    pub created_at: i64,
    pub updated_at: i64,
    /// Where rate() counts from: when the schedule was created, or when its expression,
    /// time zone or state last changed.
    pub anchor_ms: i64,
    /// The next time it fires; None while DISABLED or once nothing is left (a past at()).
    pub next_fire_at: Option<i64>,
    pub last_fired_at: Option<i64>,
    /// The job the latest fire submitted.
    pub last_job_id: Option<String>,
    /// Jobs of this schedule not yet seen finished, oldest first (for the overlap policy).
    #[serde(default)]
    pub active_job_ids: Vec<String>,
    /// Fires that submitted a job.
    #[serde(default)]
    pub fired: u64,
    /// Fires skipped by the SKIP policy.
    #[serde(default)]
    pub skipped: u64,
    /// Fires whose submit was refused (the queue was deleted meanwhile…); the latest reason.
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Schedule {
    /// The fire time after `after_ms`, under the schedule's own expression and time zone.
    /// None when DISABLED, or when the stored expression no longer parses (it was checked
    /// when stored, so only a newer build's syntax could do that).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        if self.state != ResourceState::Enabled {
            return None;
        }
        let e = parse_expression(&self.expression).ok()?;
        let tz = parse_time_zone(&self.time_zone).ok()?;
        e.next_after(&tz, self.anchor_ms, after_ms)
    }
}

/// The schedules due at `clock_ms` (ENABLED, with a fire time at or before it), by name.
pub fn due_schedules(state: &State, clock_ms: i64) -> Vec<String> {
    state
        .schedules
        .values()
        .filter(|s| {
            s.state == ResourceState::Enabled && s.next_fire_at.is_some_and(|t| t <= clock_ms)
        })
        .map(|s| s.name.clone())
        .collect()
}
