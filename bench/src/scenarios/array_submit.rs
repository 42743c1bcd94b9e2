//! Array jobs in a queue whose compute environment is DISABLED, so that their children wait
//! unborn: how long SubmitJob takes for a 10,000-child and a 1,000,000-child array, the
//! server's resident memory with the million queued, and whether the read calls (DescribeJobs
//! of the parent and of children, ListJobs by array and by queue) are as fast with the million
//! queued as with an empty queue. Each read figure is reported next to its empty-queue twin.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::memory::{QUEUED_RSS_MIB_TARGET, SETTLE_INTERVAL, SETTLE_LIMIT, TIMED_CALLS};
use super::{
    child_id, create_held_queue, describe_array, describe_jobs, median_ms, register_definition,
    status_histogram, submit_array, Ctx, DESCRIBE_JOBS_BATCH_MAX, HELD_QUEUE,
};
use crate::http::Api;
use crate::report::{thousands, Figure, Target};
use crate::server::{kib_to_mib, ProcMemory, Server};

/// The array whose reads are timed before anything else is queued.
pub const SMALL_ARRAY_SIZE: u64 = 100;
/// The arrays whose SubmitJob is timed alone, the median of `MEDIUM_ARRAYS` of them.
pub const MEDIUM_ARRAY_SIZE: u64 = 10_000;
pub const MEDIUM_ARRAYS: usize = 3;
/// The array the issue asks Barge to accept quickly and keep cheaply.
pub const LARGE_ARRAY_SIZE: u64 = 1_000_000;
/// The target for the SubmitJob of a 1,000,000-child array, in milliseconds.
pub const LARGE_SUBMIT_MS_TARGET: f64 = 1000.0;
/// How long an array may take to be PENDING with every child RUNNABLE.
pub const RELEASE_LIMIT: Duration = Duration::from_secs(120);
/// Between two DescribeJobs of a parent while waiting for it: short, as the wait is reported
/// and one such call costs about a tenth of a millisecond.
pub const RELEASE_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Page size asked of the timed ListJobs calls.
pub const TIMED_LIST_PAGE: u64 = 100;

pub async fn run(ctx: &Ctx<'_>, figures: &mut Vec<Figure>) -> Result<()> {
    ctx.with_server(async |server: &mut Server| {
        let mut api = Api::connect(server.addr).await?;
        create_held_queue(&mut api).await?;
        register_definition(&mut api).await?;

        let small = submit_array(&mut api, HELD_QUEUE, "array-small", SMALL_ARRAY_SIZE).await?;
        wait_until_released(server, &mut api, &small, SMALL_ARRAY_SIZE, Instant::now()).await?;
        ctx.progress(format!(
            "timing reads with one {SMALL_ARRAY_SIZE}-child array in {HELD_QUEUE}"
        ));
        let empty = time_reads(&mut api, &small, SMALL_ARRAY_SIZE).await?;

        let mut medium_timings = Vec::with_capacity(MEDIUM_ARRAYS);
        for n in 0..MEDIUM_ARRAYS {
            let sent = Instant::now();
            let parent = submit_array(
                &mut api,
                HELD_QUEUE,
                &format!("array-medium-{n}"),
                MEDIUM_ARRAY_SIZE,
            )
            .await?;
            let latency = sent.elapsed();
            medium_timings.push(latency);
            wait_until_released(server, &mut api, &parent, MEDIUM_ARRAY_SIZE, sent).await?;
            ctx.progress(format!(
                "SubmitJob of a {}-child array answered in {:.1} ms",
                thousands(MEDIUM_ARRAY_SIZE),
                latency.as_secs_f64() * 1000.0
            ));
        }
        figures.push(
            ctx.figure(
                "array_submit_10k_ms",
                format!(
                    "SubmitJob of a {}-child array, latency of the call",
                    thousands(MEDIUM_ARRAY_SIZE)
                ),
                median_ms(&mut medium_timings),
                "ms",
            )
            .note(format!(
                "median of {MEDIUM_ARRAYS} arrays, each submitted once the one before was PENDING \
                 with every child RUNNABLE"
            )),
        );

        let before = server.settled_memory(SETTLE_INTERVAL, SETTLE_LIMIT).await?;
        let queued_before = SMALL_ARRAY_SIZE + MEDIUM_ARRAYS as u64 * MEDIUM_ARRAY_SIZE;
        let queued = queued_before + LARGE_ARRAY_SIZE;

        ctx.progress(format!(
            "SubmitJob of a {}-child array",
            thousands(LARGE_ARRAY_SIZE)
        ));
        let sent = Instant::now();
        let large = submit_array(&mut api, HELD_QUEUE, "array-large", LARGE_ARRAY_SIZE).await?;
        let latency = sent.elapsed();
        ctx.progress(format!(
            "answered in {:.1} ms",
            latency.as_secs_f64() * 1000.0
        ));
        figures.push(
            ctx.figure(
                "array_submit_1m_ms",
                format!(
                    "SubmitJob of a {}-child array, latency of the call",
                    thousands(LARGE_ARRAY_SIZE)
                ),
                latency.as_secs_f64() * 1000.0,
                "ms",
            )
            .target(Target::at_most(LARGE_SUBMIT_MS_TARGET))
            .note("one call"),
        );
        let released =
            wait_until_released(server, &mut api, &large, LARGE_ARRAY_SIZE, sent).await?;
        ctx.progress(format!(
            "PENDING with every child RUNNABLE {:.1} ms after the submit",
            released.as_secs_f64() * 1000.0
        ));
        figures.push(
            ctx.figure(
                "array_released_1m_ms",
                format!(
                    "from the SubmitJob of the {}-child array to its parent PENDING with every \
                     child RUNNABLE",
                    thousands(LARGE_ARRAY_SIZE)
                ),
                released.as_secs_f64() * 1000.0,
                "ms",
            )
            .note(format!(
                "seen by DescribeJobs of the parent every {} ms",
                RELEASE_POLL_INTERVAL.as_millis()
            )),
        );

        let full = server.settled_memory(SETTLE_INTERVAL, SETTLE_LIMIT).await?;
        ctx.progress(format!(
            "{} children queued: VmRSS {:.1} MiB (before the large array {:.1} MiB), VmHWM {:.1} MiB",
            thousands(queued),
            kib_to_mib(full.rss_kib),
            kib_to_mib(before.rss_kib),
            kib_to_mib(full.hwm_kib)
        ));
        push_memory(ctx, figures, before, full, queued_before, queued);

        ctx.progress(format!(
            "timing reads with {} children queued",
            thousands(queued)
        ));
        let loaded = time_reads(&mut api, &large, LARGE_ARRAY_SIZE).await?;
        push_reads(ctx, figures, &empty, &loaded, queued);
        Ok(())
    })
    .await
}

/// Waits until the array's parent is PENDING with all `size` children RUNNABLE (waiting for
/// capacity that never comes); how long after `since` that was seen.
async fn wait_until_released(
    server: &mut Server,
    api: &mut Api,
    parent: &str,
    size: u64,
    since: Instant,
) -> Result<Duration> {
    let deadline = Instant::now() + RELEASE_LIMIT;
    loop {
        server.ensure_running()?;
        let view = describe_array(api, parent).await?;
        if view.status == "PENDING" && view.children("RUNNABLE") == size {
            return Ok(since.elapsed());
        }
        if view.array_properties.size != size {
            bail!(
                "the array {parent} was submitted with size {size} and DescribeJobs says {}",
                view.array_properties.size
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the array {parent} of {size} children was not PENDING with every child \
                 RUNNABLE within {} s: {}",
                RELEASE_LIMIT.as_secs(),
                view.describe()
            );
        }
        tokio::time::sleep(RELEASE_POLL_INTERVAL).await;
    }
}

/// One read call, timed `TIMED_CALLS` times.
struct Timed {
    median_ms: f64,
    /// Jobs in the last answer.
    returned: usize,
}

/// The read calls against one array and the held queue.
struct Reads {
    size: u64,
    parent: Timed,
    children: Timed,
    list_array: Timed,
    list_queue: Timed,
}

async fn time_call(api: &mut Api, operation: &str, input: &Value, list: &str) -> Result<Timed> {
    let mut timings = Vec::with_capacity(TIMED_CALLS);
    let mut returned = 0;
    for _ in 0..TIMED_CALLS {
        let started = Instant::now();
        let answer = api.call(operation, input).await?;
        timings.push(started.elapsed());
        returned = answer[list].as_array().map_or(0, Vec::len);
    }
    Ok(Timed {
        median_ms: median_ms(&mut timings),
        returned,
    })
}

/// Times DescribeJobs of the parent and of 100 children spread over the array, ListJobs of
/// the array's RUNNABLE children and of the queue's RUNNABLE jobs (100 a page).
async fn time_reads(api: &mut Api, parent: &str, size: u64) -> Result<Reads> {
    let parent_timed = time_call(api, "DescribeJobs", &json!({ "jobs": [parent] }), "jobs").await?;

    let sampled = (DESCRIBE_JOBS_BATCH_MAX as u64).min(size);
    let sample: Vec<String> = (0..sampled)
        .map(|k| child_id(parent, k * size / sampled))
        .collect();
    let mut timings = Vec::with_capacity(TIMED_CALLS);
    let mut described = Vec::new();
    for _ in 0..TIMED_CALLS {
        let started = Instant::now();
        described = describe_jobs(api, &sample).await?;
        timings.push(started.elapsed());
    }
    if described.len() != sample.len() || described.iter().any(|j| j.status != "RUNNABLE") {
        bail!(
            "DescribeJobs of {} children of {parent} (size {size}) returned {} jobs: {}",
            sample.len(),
            described.len(),
            status_histogram(&described)
        );
    }
    let children = Timed {
        median_ms: median_ms(&mut timings),
        returned: described.len(),
    };

    let list_array = time_call(
        api,
        "ListJobs",
        &json!({"arrayJobId": parent, "jobStatus": "RUNNABLE", "maxResults": TIMED_LIST_PAGE}),
        "jobSummaryList",
    )
    .await?;
    let expected = TIMED_LIST_PAGE.min(size) as usize;
    if list_array.returned != expected {
        bail!(
            "ListJobs arrayJobId {parent} RUNNABLE maxResults {TIMED_LIST_PAGE} returned {} \
             children, not {expected}",
            list_array.returned
        );
    }
    let list_queue = time_call(
        api,
        "ListJobs",
        &json!({"jobQueue": HELD_QUEUE, "jobStatus": "RUNNABLE", "maxResults": TIMED_LIST_PAGE}),
        "jobSummaryList",
    )
    .await?;
    Ok(Reads {
        size,
        parent: parent_timed,
        children,
        list_array,
        list_queue,
    })
}

fn push_memory(
    ctx: &Ctx<'_>,
    figures: &mut Vec<Figure>,
    before: ProcMemory,
    full: ProcMemory,
    queued_before: u64,
    queued: u64,
) {
    figures.push(ctx.figure(
        "array_rss_before_mib",
        format!(
            "server resident memory (VmRSS), {} children queued, before the {}-child array",
            thousands(queued_before),
            thousands(LARGE_ARRAY_SIZE)
        ),
        kib_to_mib(before.rss_kib),
        "MiB",
    ));
    figures.push(
        ctx.figure(
            "array_rss_mib",
            format!(
                "server resident memory (VmRSS), {} children queued",
                thousands(queued)
            ),
            kib_to_mib(full.rss_kib),
            "MiB",
        )
        .target(Target::at_most(QUEUED_RSS_MIB_TARGET))
        .note(format!(
            "{} arrays: 1 of {SMALL_ARRAY_SIZE}, {MEDIUM_ARRAYS} of {}, 1 of {}; settled",
            2 + MEDIUM_ARRAYS,
            thousands(MEDIUM_ARRAY_SIZE),
            thousands(LARGE_ARRAY_SIZE)
        )),
    );
    figures.push(ctx.figure(
        "array_hwm_mib",
        format!(
            "server peak resident memory (VmHWM), after queueing {} children",
            thousands(queued)
        ),
        kib_to_mib(full.hwm_kib),
        "MiB",
    ));
}

/// Figure keys of the read calls, in the order of `Reads::rows`: with an empty queue, then
/// with the million queued.
const READ_KEYS: [(&str, &str); 4] = [
    (
        "array_describe_parent_ms_empty",
        "array_describe_parent_ms_queued",
    ),
    (
        "array_describe_children_ms_empty",
        "array_describe_children_ms_queued",
    ),
    (
        "array_list_children_ms_empty",
        "array_list_children_ms_queued",
    ),
    ("array_list_queue_ms_empty", "array_list_queue_ms_queued"),
];

impl Reads {
    /// Each read call: what it is, its timing, and what the count of jobs returned counts.
    fn rows(&self) -> [(String, &Timed, &'static str); 4] {
        let size = thousands(self.size);
        [
            (
                format!("DescribeJobs of the parent of a {size}-child array (statusSummary)"),
                &self.parent,
                "job returned",
            ),
            (
                format!(
                    "DescribeJobs of {} children spread over a {size}-child array",
                    self.children.returned
                ),
                &self.children,
                "jobs returned",
            ),
            (
                format!(
                    "ListJobs arrayJobId of a {size}-child array, RUNNABLE, maxResults \
                     {TIMED_LIST_PAGE}"
                ),
                &self.list_array,
                "children returned",
            ),
            (
                format!("ListJobs jobQueue {HELD_QUEUE}, RUNNABLE, maxResults {TIMED_LIST_PAGE}"),
                &self.list_queue,
                "jobs returned: the queue lists born jobs, and a child is born when it is placed",
            ),
        ]
    }
}

/// Each read figure with the million queued right after its empty-queue twin.
fn push_reads(ctx: &Ctx<'_>, figures: &mut Vec<Figure>, empty: &Reads, full: &Reads, queued: u64) {
    let empty_where = format!("{HELD_QUEUE} otherwise empty");
    let full_where = format!("{} children queued", thousands(queued));
    let rows = empty.rows().into_iter().zip(full.rows()).zip(READ_KEYS);
    for ((empty_row, full_row), (empty_key, full_key)) in rows {
        for (key, (label, timed, what), place) in [
            (empty_key, empty_row, &empty_where),
            (full_key, full_row, &full_where),
        ] {
            figures.push(
                ctx.figure(key, format!("{label}, {place}"), timed.median_ms, "ms")
                    .note(format!(
                        "median of {TIMED_CALLS}; {} {what}",
                        timed.returned
                    )),
            );
        }
    }
}
