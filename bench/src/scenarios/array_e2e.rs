//! One array job end to end: `--array-children` trivial children (`true` through the process
//! runner) of one SubmitJob into `default`, from that SubmitJob to the parent SUCCEEDED, on a
//! fresh server whose agent offers `--agent-vcpus`. Progress is read from the parent's
//! statusSummary, so the poll costs one DescribeJobs whatever the size of the array.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::e2e::{POLL_INTERVAL, PROGRESS_INTERVAL, STALL_LIMIT};
use super::{describe_array, register_definition, submit_array, ArrayParent, Ctx, DEFAULT_QUEUE};
use crate::http::Api;
use crate::load::per_second;
use crate::report::{thousands, Figure, Target};
use crate::server::Server;

/// The target for array children/s end to end on the 2-core machine.
pub const ARRAY_CHILDREN_PER_S_TARGET: f64 = 300.0;
/// Failed children named in the error when some fail.
pub const FAILED_CHILDREN_SHOWN_MAX: u64 = 5;

pub async fn run(ctx: &Ctx<'_>, figures: &mut Vec<Figure>) -> Result<()> {
    let size = ctx.args.array_children;
    ctx.progress(format!(
        "one array of {} trivial children into {DEFAULT_QUEUE}, agent with {} vCPUs",
        thousands(size),
        ctx.args.agent_vcpus
    ));
    ctx.with_server(async |server: &mut Server| {
        let mut api = Api::connect(server.addr).await?;
        register_definition(&mut api).await?;

        let submitted = Instant::now();
        let parent = submit_array(&mut api, DEFAULT_QUEUE, "array-e2e", size).await?;
        let submit_latency = submitted.elapsed();
        ctx.progress(format!(
            "array {parent} accepted in {:.1} ms",
            submit_latency.as_secs_f64() * 1000.0
        ));

        let (done_at, done) = wait_until_succeeded(ctx, server, &mut api, &parent, size).await?;
        let wall = done_at.duration_since(submitted);
        ctx.progress(format!(
            "parent SUCCEEDED after {:.2} s: {}",
            wall.as_secs_f64(),
            done.summary()
        ));
        figures.push(
            ctx.figure(
                "array_e2e_children_per_s_wall",
                "array children/s end to end, SubmitJob to parent SUCCEEDED (wall clock)",
                per_second(size, wall),
                "jobs/s",
            )
            .target(Target::at_least(ARRAY_CHILDREN_PER_S_TARGET))
            .note(format!(
                "{} children in {:.2} s, the SubmitJob answered in {:.1} ms; the end is seen by \
                 polling the parent every {} ms",
                thousands(size),
                wall.as_secs_f64(),
                submit_latency.as_secs_f64() * 1000.0,
                POLL_INTERVAL.as_millis()
            )),
        );

        // The parent's own clock: createdAt is the submission, stoppedAt the last child's end.
        match (done.created_at, done.stopped_at) {
            (Some(created), Some(stopped)) if stopped > created => {
                let span = Duration::from_millis((stopped - created) as u64);
                figures.push(
                    ctx.figure(
                        "array_e2e_children_per_s_job_clock",
                        "array children/s end to end, parent createdAt to stoppedAt (DescribeJobs)",
                        per_second(size, span),
                        "jobs/s",
                    )
                    .note(format!(
                        "{} children in {:.3} s",
                        thousands(size),
                        span.as_secs_f64()
                    )),
                );
            }
            (created, stopped) => ctx.progress(format!(
                "the parent's createdAt {created:?} and stoppedAt {stopped:?} give no span; \
                 no job-clock figure"
            )),
        }
        Ok(())
    })
    .await
}

/// Polls DescribeJobs of the parent until it is SUCCEEDED with every child SUCCEEDED; when
/// that poll came back, and the parent as it saw it. An error as soon as a child has FAILED,
/// or when no child has finished for `STALL_LIMIT`.
async fn wait_until_succeeded(
    ctx: &Ctx<'_>,
    server: &mut Server,
    api: &mut Api,
    parent: &str,
    size: u64,
) -> Result<(Instant, ArrayParent)> {
    let mut last_succeeded = 0;
    let mut last_change = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        server.ensure_running()?;
        let view = describe_array(api, parent).await?;
        let at = Instant::now();
        if view.children("FAILED") > 0 || view.status == "FAILED" {
            bail!(
                "children FAILED: the parent is {}; {}",
                view.describe(),
                failed_children(api, parent).await?
            );
        }
        let succeeded = view.children("SUCCEEDED");
        if view.status == "SUCCEEDED" {
            if succeeded != size {
                bail!(
                    "the parent is SUCCEEDED with {succeeded} of {size} children SUCCEEDED: {}",
                    view.describe()
                );
            }
            return Ok((at, view));
        }
        if succeeded != last_succeeded {
            last_succeeded = succeeded;
            last_change = at;
        } else if last_change.elapsed() >= STALL_LIMIT {
            bail!(
                "stuck: no child finished for {} s; the parent is {}",
                STALL_LIMIT.as_secs(),
                view.describe()
            );
        }
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            ctx.progress(view.summary());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The first few FAILED children and their statusReason, for the error message.
async fn failed_children(api: &mut Api, parent: &str) -> Result<String> {
    let page = api
        .call(
            "ListJobs",
            &json!({
                "arrayJobId": parent,
                "jobStatus": "FAILED",
                "maxResults": FAILED_CHILDREN_SHOWN_MAX
            }),
        )
        .await?;
    let children: Vec<String> = page["jobSummaryList"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|j| {
            format!(
                "{} ({})",
                j["jobId"].as_str().unwrap_or("?"),
                j["statusReason"].as_str().unwrap_or("no statusReason")
            )
        })
        .collect();
    if children.is_empty() {
        return Ok("ListJobs arrayJobId FAILED lists none of them".to_string());
    }
    Ok(format!(
        "the first FAILED children: {}",
        children.join(", ")
    ))
}
