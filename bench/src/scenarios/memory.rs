//! The server's resident memory idle and with many jobs queued (in a queue whose compute
//! environment is DISABLED, so that they wait), and how long DescribeJobs and ListJobs, the
//! console's pages and a /metrics scrape take with that many jobs stored.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::{
    create_held_queue, describe_jobs, median_ms, register_definition, Ctx, DESCRIBE_JOBS_BATCH_MAX,
    HELD_QUEUE,
};
use crate::http::{body_excerpt, Api, Conn};
use crate::load::submit_jobs;
use crate::report::{Figure, Target};
use crate::server::{kib_to_mib, Server};

/// The targets for resident memory, in MiB.
pub const IDLE_RSS_MIB_TARGET: f64 = 64.0;
pub const QUEUED_RSS_MIB_TARGET: f64 = 512.0;
/// Memory is read when two readings this far apart differ by at most 1 %…
pub const SETTLE_INTERVAL: Duration = Duration::from_secs(1);
/// …or when this much time has passed since startup or the last submission.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How long the queued jobs may take to leave SUBMITTED and PENDING before memory is read.
pub const QUEUED_SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// Each timed read call is made this many times; the report gives the median.
pub const TIMED_CALLS: usize = 5;

pub async fn run(ctx: &Ctx<'_>, figures: &mut Vec<Figure>) -> Result<()> {
    let queued = ctx.args.queued_jobs;
    ctx.with_server(async |server: &mut Server| {
        let idle = server.settled_memory(SETTLE_INTERVAL, SETTLE_LIMIT).await?;
        ctx.progress(format!("idle: VmRSS {:.1} MiB", kib_to_mib(idle.rss_kib)));
        figures.push(
            ctx.figure(
                "idle_rss_mib",
                "server resident memory (VmRSS), idle after startup",
                kib_to_mib(idle.rss_kib),
                "MiB",
            )
            .target(Target::at_most(IDLE_RSS_MIB_TARGET)),
        );

        let mut api = Api::connect(server.addr).await?;
        create_held_queue(&mut api).await?;
        register_definition(&mut api).await?;
        ctx.progress(format!(
            "submitting {queued} jobs into {HELD_QUEUE} with {} clients",
            ctx.args.clients
        ));
        let load = submit_jobs(server.addr, &ctx.plan(HELD_QUEUE, queued)).await?;
        ctx.progress(format!(
            "{} accepted in {:.1} s; {} failed",
            load.ok,
            load.elapsed.as_secs_f64(),
            load.failed()
        ));
        if load.failed() > 0 {
            bail!(
                "{} of {queued} SubmitJob failed; the first: {}",
                load.failed(),
                load.first_error.unwrap_or_default()
            );
        }
        figures.push(ctx.figure(
            "fill_submit_rps",
            format!("SubmitJob requests/s while filling {HELD_QUEUE}"),
            load.ok_per_s(),
            "req/s",
        ));

        let settled = wait_until_queued(&mut api, QUEUED_SETTLE_LIMIT).await?;
        if !settled {
            ctx.progress(format!(
                "jobs still SUBMITTED or PENDING after {} s; reading memory anyway",
                QUEUED_SETTLE_LIMIT.as_secs()
            ));
        }
        let full = server.settled_memory(SETTLE_INTERVAL, SETTLE_LIMIT).await?;
        ctx.progress(format!(
            "{queued} queued: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            kib_to_mib(full.rss_kib),
            kib_to_mib(full.hwm_kib)
        ));
        let mut rss = ctx
            .figure(
                "queued_rss_mib",
                format!("server resident memory (VmRSS), {queued} jobs queued"),
                kib_to_mib(full.rss_kib),
                "MiB",
            )
            .target(Target::at_most(QUEUED_RSS_MIB_TARGET));
        if !settled {
            rss = rss.note("some jobs were still SUBMITTED or PENDING");
        }
        figures.push(rss);
        figures.push(ctx.figure(
            "queued_hwm_mib",
            format!("server peak resident memory (VmHWM), after queueing {queued} jobs"),
            kib_to_mib(full.hwm_kib),
            "MiB",
        ));

        time_reads(ctx, &mut api, &load.job_ids, figures).await?;
        time_operator_reads(ctx, server.addr, &load.job_ids, figures).await
    })
    .await
}

/// Waits until no job in the held queue is SUBMITTED or PENDING (each is RUNNABLE, waiting
/// for capacity that never comes), at most `limit`. Whether it got there.
async fn wait_until_queued(api: &mut Api, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let mut moving = 0;
        for status in ["SUBMITTED", "PENDING"] {
            let page = api
                .call(
                    "ListJobs",
                    &json!({"jobQueue": HELD_QUEUE, "jobStatus": status, "maxResults": 1}),
                )
                .await?;
            moving += page["jobSummaryList"].as_array().map_or(0, Vec::len);
        }
        if moving == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Times DescribeJobs of 100 jobs spread over the queue and ListJobs RUNNABLE (100 a page).
async fn time_reads(
    ctx: &Ctx<'_>,
    api: &mut Api,
    job_ids: &[String],
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let step = (job_ids.len() / DESCRIBE_JOBS_BATCH_MAX).max(1);
    let sample: Vec<String> = job_ids
        .iter()
        .step_by(step)
        .take(DESCRIBE_JOBS_BATCH_MAX)
        .cloned()
        .collect();
    let queued = job_ids.len();

    let mut describe_timings = Vec::with_capacity(TIMED_CALLS);
    let mut described = 0;
    for _ in 0..TIMED_CALLS {
        let started = Instant::now();
        described = describe_jobs(api, &sample).await?.len();
        describe_timings.push(started.elapsed());
    }
    if described != sample.len() {
        bail!(
            "DescribeJobs of {} submitted job ids returned {described} jobs",
            sample.len()
        );
    }
    figures.push(
        ctx.figure(
            "describe_jobs_ms",
            format!(
                "DescribeJobs of {} jobs, {queued} jobs stored",
                sample.len()
            ),
            median_ms(&mut describe_timings),
            "ms",
        )
        .note(format!("median of {TIMED_CALLS}")),
    );

    let mut list_timings = Vec::with_capacity(TIMED_CALLS);
    let mut listed = 0;
    for _ in 0..TIMED_CALLS {
        let input = json!({"jobQueue": HELD_QUEUE, "jobStatus": "RUNNABLE", "maxResults": 100});
        let started = Instant::now();
        let page = api.call("ListJobs", &input).await?;
        list_timings.push(started.elapsed());
        listed = page["jobSummaryList"].as_array().map_or(0, Vec::len);
    }
    let mut list = ctx
        .figure(
            "list_jobs_runnable_ms",
            format!("ListJobs RUNNABLE, maxResults 100, {queued} jobs queued"),
            median_ms(&mut list_timings),
            "ms",
        )
        .note(format!("median of {TIMED_CALLS}; {listed} jobs returned"));
    if listed == 0 {
        // Say so rather than pass off the time of an empty answer as that of a full page.
        list = list.note(format!(
            "median of {TIMED_CALLS}; it returned no job: are the queued jobs RUNNABLE?"
        ));
    }
    figures.push(list);
    Ok(())
}

/// Times what the operator's view reads with that many jobs stored: the console's job list
/// (its newest page and a page from the middle of the queue, through the opaque cursor the
/// console makes), a job's console page, and a Prometheus scrape of /metrics.
async fn time_operator_reads(
    ctx: &Ctx<'_>,
    addr: std::net::SocketAddr,
    job_ids: &[String],
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let queued = job_ids.len();
    let mut conn = Conn::connect(addr).await?;
    let newest = format!("/console/queues/{HELD_QUEUE}?status=RUNNABLE");
    let first = get_text(&mut conn, &newest).await?;
    // The "Older" link of the first page carries the key of its last job: `o` + hex("SEQ ID").
    // A page from the middle starts below half that sequence number.
    let seq = older_cursor_seq(&first).ok_or_else(|| {
        anyhow::anyhow!("the console's first page of {HELD_QUEUE} has no Older link")
    })?;
    let middle_cursor: String = format!("o{}", hex_of(&format!("{} ", seq / 2)));
    let middle = format!("{newest}&cursor={middle_cursor}");
    let job_page = format!("/console/jobs/{}", job_ids[queued / 2]);
    let reads = [
        (
            "console_queue_page_ms",
            format!("console: a job queue's newest page of RUNNABLE jobs, {queued} jobs queued"),
            newest,
        ),
        (
            "console_middle_page_ms",
            format!("console: a page from the middle of the queue, {queued} jobs queued"),
            middle,
        ),
        (
            "console_job_page_ms",
            format!("console: one job's page, {queued} jobs queued"),
            job_page,
        ),
        (
            "metrics_scrape_ms",
            format!("GET /metrics, {queued} jobs queued"),
            "/metrics".to_string(),
        ),
    ];
    for (name, what, path) in reads {
        let mut timings = Vec::with_capacity(TIMED_CALLS);
        let mut bytes = 0;
        for _ in 0..TIMED_CALLS {
            let started = Instant::now();
            bytes = get_text(&mut conn, &path).await?.len();
            timings.push(started.elapsed());
        }
        figures.push(
            ctx.figure(name, what, median_ms(&mut timings), "ms")
                .note(format!("median of {TIMED_CALLS}; {bytes} bytes")),
        );
    }
    Ok(())
}

/// GETs a path; anything but 200 is an error.
async fn get_text(conn: &mut Conn, path: &str) -> Result<String> {
    let (status, body) = conn.get(path).await?;
    if status != hyper::StatusCode::OK {
        bail!("GET {path} answered {status}: {}", body_excerpt(&body, 300));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The sequence number in the first `cursor=o…` link of a console page.
fn older_cursor_seq(html: &str) -> Option<u64> {
    let start = html.find("cursor=o")? + "cursor=o".len();
    let hex: String = html[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.split_once(' ')?.0.parse().ok()
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}
