//! Prometheus metrics at `GET /metrics` (docs/metrics.md lists every family).
//!
//! Two kinds of numbers. Gauges of what exists (jobs per queue and status, compute
//! environments' vCPUs, agents) are read from the published snapshot at scrape time, from the
//! indexes the state already keeps, so a scrape costs the same at a million jobs as at ten.
//! Histograms and counters of what happened (scheduling, commits) are observed where it
//! happens, into process-wide atomics: the writer and the scheduler loop each add one call.
//! They live as long as the process, as Prometheus expects of counters: a restart resets them.

pub mod exposition;
mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use barge_core::model::JobStatus;
use barge_core::Plan;
use barge_core::State;

use exposition::{Histogram, Kind, Text};

/// The path Prometheus scrapes.
pub const PATH: &str = "/metrics";

/// Milliseconds a job waited RUNNABLE: from a queue that places at once (a few ms) to one
/// that waits for capacity for a day.
const WAIT_BOUNDS_MS: [u64; 19] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
    3_600_000, 14_400_000, 86_400_000,
];
/// Microseconds for a scheduling pass or a commit: an fsync on a fast disk is ~0.2 ms, a busy
/// pass over a deep queue or a slow disk's commit tens of ms; seconds mean trouble.
const DURATION_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Jobs placed by one pass: powers of two up to SCHEDULER_PLACEMENTS_PER_PASS_MAX (4,096).
const PLACED_BOUNDS: [u64; 14] = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/// Commands in one commit: powers of two up to WRITER_BATCH_COMMANDS_MAX (2,048).
const COMMANDS_BOUNDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048];
/// Row changes in one commit (a pass placing 4,096 jobs changes more than 4,096 rows).
const CHANGES_BOUNDS: [u64; 10] = [1, 4, 16, 64, 256, 1024, 4096, 16_384, 65_536, 262_144];

const MS: f64 = 1e-3;
const US: f64 = 1e-6;

/// What the process has observed since it started.
struct Observed {
    scheduling_wait: Histogram<19>,
    pass_placed: Histogram<14>,
    pass_duration: Histogram<17>,
    passes: AtomicU64,
    passes_failed: AtomicU64,
    jobs_placed: AtomicU64,
    commit_duration: Histogram<17>,
    commit_commands: Histogram<12>,
    commit_changes: Histogram<10>,
    commits_failed: AtomicU64,
}

static OBSERVED: Observed = Observed {
    scheduling_wait: Histogram::new(WAIT_BOUNDS_MS, MS),
    pass_placed: Histogram::new(PLACED_BOUNDS, 1.0),
    pass_duration: Histogram::new(DURATION_BOUNDS_US, US),
    passes: AtomicU64::new(0),
    passes_failed: AtomicU64::new(0),
    jobs_placed: AtomicU64::new(0),
    commit_duration: Histogram::new(DURATION_BOUNDS_US, US),
    commit_commands: Histogram::new(COMMANDS_BOUNDS, 1.0),
    commit_changes: Histogram::new(CHANGES_BOUNDS, 1.0),
    commits_failed: AtomicU64::new(0),
};

static STARTED: OnceLock<(Instant, SystemTime)> = OnceLock::new();

/// Marks the process's start (for uptime); the first call wins.
pub fn mark_start() {
    STARTED.get_or_init(|| (Instant::now(), SystemTime::now()));
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The writer's hook: one commit of `commands` commands with `changes` row changes took
/// `took`.
pub fn observe_commit(took: Duration, commands: usize, changes: usize, ok: bool) {
    if !ok {
        OBSERVED.commits_failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    OBSERVED.commit_duration.observe(micros(took));
    OBSERVED.commit_commands.observe(commands as u64);
    OBSERVED.commit_changes.observe(changes as u64);
}

/// What a proposed plan would place, kept to look up once the pass is committed: (job id,
/// attempt id) per placement, and a gang by its first node.
pub struct Proposed(Vec<(String, String)>);

impl Proposed {
    pub fn of(plan: &Plan) -> Proposed {
        let singles = plan
            .placements
            .iter()
            .map(|p| (p.job_id.clone(), p.attempt_id.clone()));
        let gangs = plan.gangs.iter().filter_map(|g| {
            let first = g.nodes.first()?;
            Some((
                barge_core::multinode::node_id(&g.job_id, first.index),
                first.attempt_id.clone(),
            ))
        });
        Proposed(singles.chain(gangs).collect())
    }
}

/// The scheduler's hook, after a pass that proposed something: how long planning and
/// committing took, what it placed (None: the writer refused the pass), and the state after
/// it, where each placed job's wait is read.
pub fn observe_pass(took: Duration, proposed: &Proposed, placed: Option<usize>, after: &State) {
    OBSERVED.passes.fetch_add(1, Ordering::Relaxed);
    let Some(placed) = placed else {
        OBSERVED.passes_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    OBSERVED.pass_duration.observe(micros(took));
    OBSERVED.pass_placed.observe(placed as u64);
    OBSERVED
        .jobs_placed
        .fetch_add(placed as u64, Ordering::Relaxed);
    for (job_id, attempt_id) in &proposed.0 {
        if let Some(wait_ms) = runnable_wait_ms(after, job_id, attempt_id) {
            OBSERVED.scheduling_wait.observe(wait_ms);
        }
    }
}

/// How long the job waited RUNNABLE before the attempt `attempt_id` was placed; None when the
/// applier did not place it (no such attempt).
fn runnable_wait_ms(state: &State, job_id: &str, attempt_id: &str) -> Option<u64> {
    let job = state.job(job_id)?;
    let attempt = job
        .current
        .iter()
        .chain(job.attempts.iter().rev())
        .find(|a| a.id == attempt_id)?;
    // A multi-node job waits as one: its parent's RUNNABLE time. An array child born by its
    // placement became RUNNABLE with no row of its own when its array was released.
    let since = if let Some(node) = &job.node {
        state.job(&node.parent_id).and_then(|p| p.runnable_at)
    } else if let Some(child) = job
        .array_child
        .as_ref()
        .filter(|_| job.runnable_at == Some(attempt.placed_at))
    {
        state
            .job(&child.parent)
            .and_then(|p| p.array.as_ref()?.released_at)
            .or(job.runnable_at)
    } else {
        job.runnable_at
    }?;
    Some(u64::try_from(attempt.placed_at.saturating_sub(since)).unwrap_or(0))
}

/// The whole scrape. `state` is None on a follower, which serves only its process metrics
/// (everything else is the leader's to say).
pub fn render(state: Option<&State>) -> String {
    let mut t = Text::default();
    process(&mut t, state.is_some());
    if let Some(state) = state {
        snapshot::render(&mut t, state);
        observed(&mut t);
    }
    t.finish()
}

fn process(t: &mut Text, serving: bool) {
    t.family(
        "barge_build_info",
        Kind::Gauge,
        "Always 1; the version of the barge binary is the label.",
    );
    t.sample(
        "barge_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    let (started, started_at) = *STARTED.get_or_init(|| (Instant::now(), SystemTime::now()));
    t.family(
        "barge_process_start_time_seconds",
        Kind::Gauge,
        "When this server process started, in seconds since the Unix epoch.",
    );
    let epoch = started_at
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    t.sample("barge_process_start_time_seconds", &[], epoch);
    t.family(
        "barge_uptime_seconds",
        Kind::Gauge,
        "Seconds since this server process started.",
    );
    t.sample("barge_uptime_seconds", &[], started.elapsed().as_secs_f64());
    t.family(
        "barge_leader",
        Kind::Gauge,
        "1 when this server runs the control plane (a single server, or the leader of several on one PostgreSQL database); 0 while it follows and forwards requests to the leader.",
    );
    t.sample("barge_leader", &[], if serving { 1.0 } else { 0.0 });
}

fn observed(t: &mut Text) {
    let o = &OBSERVED;
    t.histogram(
        "barge_scheduling_wait_seconds",
        "Time each placed job had waited RUNNABLE (an array child: since its array was released; a multi-node job: once, for the whole gang), observed when it was placed.",
        &[],
        &o.scheduling_wait.snapshot(),
    );
    t.histogram(
        "barge_scheduling_pass_placed_jobs",
        "Jobs placed by each committed scheduling pass that proposed something (a multi-node job counts once).",
        &[],
        &o.pass_placed.snapshot(),
    );
    t.histogram(
        "barge_scheduling_pass_duration_seconds",
        "Time of each committed scheduling pass that proposed something: planning from the snapshot plus the writer's re-check and commit.",
        &[],
        &o.pass_duration.snapshot(),
    );
    counter(
        t,
        "barge_scheduling_passes_total",
        "Scheduling passes that proposed something and were handed to the writer (idle passes are not counted).",
        o.passes.load(Ordering::Relaxed),
    );
    counter(
        t,
        "barge_scheduling_passes_failed_total",
        "Scheduling passes the writer could not commit.",
        o.passes_failed.load(Ordering::Relaxed),
    );
    counter(
        t,
        "barge_jobs_placed_total",
        "Jobs placed on an agent (one per attempt; a multi-node job counts once per gang).",
        o.jobs_placed.load(Ordering::Relaxed),
    );
    t.histogram(
        "barge_store_commit_duration_seconds",
        "Time of each store commit (one transaction, one fsync) of the writer's batches that changed something.",
        &[],
        &o.commit_duration.snapshot(),
    );
    t.histogram(
        "barge_store_commit_commands",
        "Commands per store commit: how much group commit is batching.",
        &[],
        &o.commit_commands.snapshot(),
    );
    t.histogram(
        "barge_store_commit_changes",
        "Row changes (jobs, queues, agents, log streams…) per store commit, before the store writes each changed row once: a job changed by two commands of the batch counts twice. Log events are not counted.",
        &[],
        &o.commit_changes.snapshot(),
    );
    counter(
        t,
        "barge_store_commit_failures_total",
        "Store commits that failed; every command of the batch was answered with a ServerException.",
        o.commits_failed.load(Ordering::Relaxed),
    );
}

fn counter(t: &mut Text, name: &str, help: &str, value: u64) {
    t.family(name, Kind::Counter, help);
    t.sample(name, &[], value as f64);
}

/// The answer to a scrape.
pub fn respond(state: Option<&State>) -> Response {
    let mut resp = Response::new(Body::from(render(state)));
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(exposition::CONTENT_TYPE),
    );
    resp
}

/// The token Prometheus presents (`authorization: Bearer …`) when Barge requires signatures,
/// which Prometheus cannot make. Debug never shows it.
#[derive(Clone)]
pub struct MetricsToken(std::sync::Arc<str>);

impl MetricsToken {
    pub fn new(token: &str) -> MetricsToken {
        MetricsToken(std::sync::Arc::from(token))
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(…)")
    }
}

/// How a scrape with a bearer token fares: None when it carries none (SigV4 decides).
pub fn bearer_verdict(headers: &HeaderMap, token: Option<&MetricsToken>) -> Option<bool> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())?
        .strip_prefix("Bearer ")?;
    Some(token.is_some_and(|t| crate::agents::constant_time_eq(given.as_bytes(), t.0.as_bytes())))
}

/// 401 for a wrong or unexpected bearer token.
pub fn unauthorized(configured: bool) -> Response {
    let message = if configured {
        "the metrics token is wrong; give Prometheus the token of the server's --metrics-token-file (authorization: credentials_file in its scrape config)\n"
    } else {
        "this server has no metrics token (--metrics-token-file); sign the request with SigV4 or start the server with a token\n"
    };
    let mut resp = Response::new(Body::from(message));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    resp.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Bearer realm=\"barge metrics\""),
    );
    resp
}

/// The job statuses under the names AWS Batch users know from its job queue metrics.
const STATUS_NAMES: [(JobStatus, &str); 7] = [
    (JobStatus::Submitted, "SubmittedJobs"),
    (JobStatus::Pending, "PendingJobs"),
    (JobStatus::Runnable, "RunnableJobs"),
    (JobStatus::Starting, "StartingJobs"),
    (JobStatus::Running, "RunningJobs"),
    (JobStatus::Succeeded, "SucceededJobs"),
    (JobStatus::Failed, "FailedJobs"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_serves_only_its_process() {
        let text = render(None);
        assert!(text.contains("barge_leader 0\n"));
        assert!(text.contains("barge_build_info{version=\""));
        assert!(!text.contains("barge_job_queue_"));
        assert!(!text.contains("barge_store_commit"));
    }

    #[test]
    fn bearer_tokens_are_checked_only_when_given() {
        let token = MetricsToken::new("s3cret");
        let mut h = HeaderMap::new();
        assert_eq!(bearer_verdict(&h, Some(&token)), None);
        h.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=x"),
        );
        assert_eq!(bearer_verdict(&h, Some(&token)), None);
        h.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        assert_eq!(bearer_verdict(&h, Some(&token)), Some(true));
        assert_eq!(bearer_verdict(&h, None), Some(false));
        h.insert("authorization", HeaderValue::from_static("Bearer s3cre"));
        assert_eq!(bearer_verdict(&h, Some(&token)), Some(false));
        assert_eq!(format!("{token:?}"), "MetricsToken(…)");
    }
}
