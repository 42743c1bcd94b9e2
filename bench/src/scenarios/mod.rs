//! The scenarios and what they share: a fresh server per measurement, the scenario's hard
//! deadline, and the few API calls that set the stage.

pub mod agents;
pub mod array_e2e;
pub mod array_submit;
pub mod container;
pub mod dag;
pub mod e2e;
pub mod memory;
pub mod submit;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cli::{Args, Scenario};
use crate::http::Api;
use crate::load::SubmitPlan;
use crate::report::Figure;
use crate::server::{Server, ServerConfig};

/// The job definition every scenario submits: `true`, 1 vCPU and 16 MiB on paper.
pub const DEFINITION: &str = "bench";
/// What a job of `DEFINITION` asks for.
pub const DEFINITION_VCPUS: u64 = 1;
pub const DEFINITION_MEMORY_MIB: u64 = 16;
/// A compute environment that is DISABLED, so jobs in its queue wait forever.
pub const HELD_ENVIRONMENT: &str = "bench-off";
/// The queue on `HELD_ENVIRONMENT`.
pub const HELD_QUEUE: &str = "bench-q";
/// The queue `barge up` creates on first start, on the local agent.
pub const DEFAULT_QUEUE: &str = "default";

/// Jobs one DescribeJobs call may name (the API's own limit).
pub const DESCRIBE_JOBS_BATCH_MAX: usize = 100;
/// Page size asked of ListJobs with a `jobStatus` (the API's own limit).
pub const LIST_JOBS_PAGE_MAX: u64 = 1000;

/// Everything a scenario needs: the arguments, how to start a server, and its deadline.
pub struct Ctx<'a> {
    pub args: &'a Args,
    pub scenario: Scenario,
    pub server: ServerConfig,
    pub limit: Duration,
    pub deadline: Instant,
}

impl<'a> Ctx<'a> {
    /// The same scenario, arguments and deadline, with servers started from `server`.
    pub fn with_config(&self, server: ServerConfig) -> Ctx<'a> {
        Ctx {
            args: self.args,
            scenario: self.scenario,
            server,
            limit: self.limit,
            deadline: self.deadline,
        }
    }

    /// Starts a fresh server, runs `body` against it within the scenario's deadline, and stops
    /// the server whatever happened. A failure carries the end of the server's log.
    pub async fn with_server<T>(
        &self,
        body: impl AsyncFnOnce(&mut Server) -> Result<T>,
    ) -> Result<T> {
        if Instant::now() >= self.deadline {
            bail!("{}", self.past_deadline());
        }
        let mut server = Server::start(&self.server).await?;
        self.progress(format!(
            "{} ready on {} (pid {})",
            self.server.command_name(),
            server.addr,
            server.pid()
        ));
        let outcome = tokio::time::timeout_at(self.deadline.into(), body(&mut server))
            .await
            .unwrap_or_else(|_| Err(anyhow!("{}", self.past_deadline())));
        let outcome = outcome.map_err(|e| {
            anyhow!(
                "{e:#}\n--- the last lines of the server's log ---\n{}",
                server.log_tail()
            )
        });
        server.stop().await;
        outcome
    }

    fn past_deadline(&self) -> String {
        format!(
            "the {} scenario ran past its limit of {} s (--scenario-timeout-s)",
            self.scenario.name(),
            self.limit.as_secs()
        )
    }

    /// A progress line on stderr; stdout carries only the report.
    pub fn progress(&self, line: impl AsRef<str>) {
        eprintln!("barge-bench: {}: {}", self.scenario.name(), line.as_ref());
    }

    pub fn plan(&self, job_queue: &str, jobs: u64) -> SubmitPlan {
        SubmitPlan {
            job_queue: job_queue.to_string(),
            job_definition: DEFINITION.to_string(),
            jobs,
            clients: self.args.clients,
        }
    }

    pub fn figure(
        &self,
        key: impl Into<Cow<'static, str>>,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Figure {
        Figure::new(self.scenario.name(), key, label, value, unit)
    }
}

pub async fn register_definition(api: &mut Api) -> Result<()> {
    api.call(
        "RegisterJobDefinition",
        &json!({
            "jobDefinitionName": DEFINITION,
            "type": "container",
            "containerProperties": {
                "image": "busybox",
                "command": ["true"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": DEFINITION_VCPUS.to_string()},
                    {"type": "MEMORY", "value": DEFINITION_MEMORY_MIB.to_string()}
                ]
            }
        }),
    )
    .await?;
    Ok(())
}

/// A queue whose jobs can never start: its only compute environment is DISABLED.
pub async fn create_held_queue(api: &mut Api) -> Result<()> {
    create_held_queue_named(api, HELD_ENVIRONMENT, HELD_QUEUE).await
}

/// `create_held_queue` under other names: a database that outlives the server may hold the
/// usual ones from an earlier run.
pub async fn create_held_queue_named(api: &mut Api, environment: &str, queue: &str) -> Result<()> {
    api.call(
        "CreateComputeEnvironment",
        &json!({
            "computeEnvironmentName": environment,
            "type": "MANAGED",
            "state": "DISABLED",
            "computeResources": {
                "type": "EC2",
                "maxvCpus": 4,
                "minvCpus": 0,
                "subnets": [],
                "instanceRole": "x"
            }
        }),
    )
    .await?;
    api.call(
        "CreateJobQueue",
        &json!({
            "jobQueueName": queue,
            "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": environment}]
        }),
    )
    .await?;
    Ok(())
}

/// The members of a JobSummary or JobDetail the benchmark reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTimes {
    pub job_id: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: Option<i64>,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListJobsOutput {
    job_summary_list: Vec<JobTimes>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
struct DescribeJobsOutput {
    jobs: Vec<JobTimes>,
}

/// Every job of `queue` in `status`, following nextToken for at most `pages_max` pages.
pub async fn list_jobs(
    api: &mut Api,
    queue: &str,
    status: &str,
    pages_max: usize,
) -> Result<Vec<JobTimes>> {
    let mut jobs = Vec::new();
    let mut next_token: Option<String> = None;
    for _ in 0..pages_max {
        let mut input =
            json!({"jobQueue": queue, "jobStatus": status, "maxResults": LIST_JOBS_PAGE_MAX});
        if let Some(token) = &next_token {
            input["nextToken"] = Value::String(token.clone());
        }
        let page: ListJobsOutput = serde_json::from_value(api.call("ListJobs", &input).await?)
            .map_err(|e| anyhow!("ListJobs answered a shape without jobSummaryList: {e}"))?;
        jobs.extend(page.job_summary_list);
        match page.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => return Ok(jobs),
        }
    }
    bail!("ListJobs {queue} {status} still had a nextToken after {pages_max} pages")
}

/// DescribeJobs for every id, in batches of 100.
pub async fn describe_jobs(api: &mut Api, ids: &[String]) -> Result<Vec<JobTimes>> {
    let mut jobs = Vec::with_capacity(ids.len());
    for batch in ids.chunks(DESCRIBE_JOBS_BATCH_MAX) {
        let answer = api.call("DescribeJobs", &json!({ "jobs": batch })).await?;
        let out: DescribeJobsOutput = serde_json::from_value(answer)
            .map_err(|e| anyhow!("DescribeJobs answered a shape without jobs: {e}"))?;
        jobs.extend(out.jobs);
    }
    Ok(jobs)
}

/// Job statuses in the order of a job's life, as statusSummary names them.
pub const JOB_STATUSES: [&str; 7] = [
    "SUBMITTED",
    "PENDING",
    "RUNNABLE",
    "STARTING",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
];

/// An array job's parent as DescribeJobs shows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArrayParent {
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub array_properties: ArrayProperties,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArrayProperties {
    pub size: u64,
    #[serde(default)]
    pub status_summary: BTreeMap<String, u64>,
}

impl ArrayParent {
    /// Children in `status`, per statusSummary.
    pub fn children(&self, status: &str) -> u64 {
        self.array_properties
            .status_summary
            .get(status)
            .copied()
            .unwrap_or(0)
    }

    /// The parent's status and its non-zero counts, e.g. `PENDING (RUNNABLE 90, RUNNING 10)`.
    pub fn summary(&self) -> String {
        let counts = JOB_STATUSES
            .iter()
            .map(|s| (s, self.children(s)))
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{} ({counts})", self.status)
    }

    /// `summary` and the parent's statusReason, for error messages.
    pub fn describe(&self) -> String {
        let mut text = self.summary();
        if let Some(reason) = &self.status_reason {
            text.push_str(&format!("; statusReason: {reason}"));
        }
        text
    }
}

/// SubmitJob of an array of `size` children of the benchmark definition; the parent's id.
pub async fn submit_array(api: &mut Api, queue: &str, name: &str, size: u64) -> Result<String> {
    let answer = api
        .call(
            "SubmitJob",
            &json!({
                "jobName": name,
                "jobQueue": queue,
                "jobDefinition": DEFINITION,
                "arrayProperties": {"size": size}
            }),
        )
        .await?;
    answer["jobId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("SubmitJob of an array answered without a jobId: {answer}"))
}

/// DescribeJobs of one array parent.
pub async fn describe_array(api: &mut Api, parent: &str) -> Result<ArrayParent> {
    let answer = api
        .call("DescribeJobs", &json!({ "jobs": [parent] }))
        .await?;
    let job = answer["jobs"]
        .get(0)
        .ok_or_else(|| anyhow!("DescribeJobs does not know the array job {parent}"))?;
    serde_json::from_value(job.clone()).map_err(|e| {
        anyhow!("DescribeJobs of {parent} answered without arrayProperties.size ({e}): {job}")
    })
}

/// The id of child `index` of an array job.
pub fn child_id(parent: &str, index: u64) -> String {
    format!("{parent}:{index}")
}

/// How many jobs are in each status, e.g. `RUNNABLE 80, RUNNING 20`, and the first reason
/// given, for error messages.
pub fn status_histogram(jobs: &[JobTimes]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for job in jobs {
        *counts.entry(job.status.as_str()).or_default() += 1;
    }
    let mut text = counts
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(reason) = jobs.iter().find_map(|j| j.status_reason.as_deref()) {
        text.push_str(&format!("; first statusReason: {reason}"));
    }
    text
}

/// A token unique to this run of the benchmark: names that must not meet those of an earlier
/// run (Docker labels, resources in a database that outlives the server).
pub fn run_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// The median of a few timings, in milliseconds.
pub fn median_ms(timings: &mut [Duration]) -> f64 {
    if timings.is_empty() {
        return 0.0;
    }
    timings.sort_unstable();
    timings[timings.len() / 2].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_summaries_parse_with_and_without_times() {
        let page: ListJobsOutput = serde_json::from_value(json!({
            "jobSummaryList": [
                {"jobId": "a", "jobName": "b0", "status": "SUCCEEDED", "createdAt": 10, "stoppedAt": 20, "container": {"exitCode": 0}},
                {"jobId": "b", "jobName": "b1", "status": "RUNNABLE", "statusReason": "waiting"}
            ],
            "nextToken": "t"
        }))
        .unwrap();
        assert_eq!(page.next_token.as_deref(), Some("t"));
        assert_eq!(page.job_summary_list[0].stopped_at, Some(20));
        assert_eq!(page.job_summary_list[1].created_at, None);
        assert_eq!(
            status_histogram(&page.job_summary_list),
            "RUNNABLE 1, SUCCEEDED 1; first statusReason: waiting"
        );
    }

    #[test]
    fn array_parents_parse_and_summarize() {
        let parent: ArrayParent = serde_json::from_value(json!({
            "jobId": "p", "jobName": "a", "status": "PENDING", "createdAt": 5,
            "statusReason": "Array job: 3 of 10 children done",
            "arrayProperties": {"size": 10, "statusSummaryLastUpdatedAt": 9, "statusSummary": {
                "SUBMITTED": 0, "PENDING": 0, "RUNNABLE": 7, "STARTING": 0, "RUNNING": 0,
                "SUCCEEDED": 3, "FAILED": 0
            }}
        }))
        .unwrap();
        assert_eq!(parent.array_properties.size, 10);
        assert_eq!(parent.children("RUNNABLE"), 7);
        assert_eq!(parent.children("nonsense"), 0);
        assert_eq!(parent.summary(), "PENDING (RUNNABLE 7, SUCCEEDED 3)");
        assert_eq!(
            parent.describe(),
            "PENDING (RUNNABLE 7, SUCCEEDED 3); statusReason: Array job: 3 of 10 children done"
        );
        assert_eq!(child_id("p", 42), "p:42");
        let plain =
            serde_json::from_value::<ArrayParent>(json!({"jobId": "j", "status": "RUNNING"}));
        assert!(
            plain.is_err(),
            "a job without arrayProperties is no array parent"
        );
    }

    #[test]
    fn run_tokens_differ() {
        assert_ne!(run_token(), run_token());
    }

    #[test]
    fn medians_are_in_milliseconds() {
        let mut t = vec![
            Duration::from_millis(9),
            Duration::from_millis(1),
            Duration::from_millis(3),
        ];
        assert_eq!(median_ms(&mut t), 3.0);
        assert_eq!(median_ms(&mut []), 0.0);
    }
}
