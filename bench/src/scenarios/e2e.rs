//! Trivial jobs per second end to end: `true` through the process runner, from the first
//! SubmitJob to the last job seen SUCCEEDED, on a fresh server whose agent offers
//! `--agent-vcpus`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{
    describe_jobs, list_jobs, register_definition, status_histogram, Ctx, JobTimes, DEFAULT_QUEUE,
    DESCRIBE_JOBS_BATCH_MAX,
};
use crate::http::Api;
use crate::load::{per_second, submit_jobs};
use crate::report::{Figure, Target};
use crate::server::Server;

/// The target for trivial jobs/s end to end on the 2-core machine.
pub const E2E_JOBS_PER_S_TARGET: f64 = 300.0;
/// Between two looks at how many jobs have finished.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// No job finishing for this long means the run is stuck, not slow.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);
/// Between two progress lines on stderr.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Ctx<'_>, figures: &mut Vec<Figure>) -> Result<()> {
    let jobs = ctx.args.e2e_jobs;
    let clients = ctx.args.clients;
    ctx.progress(format!(
        "{jobs} trivial jobs into {DEFAULT_QUEUE} with {clients} clients, agent with {} vCPUs",
        ctx.args.agent_vcpus
    ));
    ctx.with_server(async |server: &mut Server| {
        let mut api = Api::connect(server.addr).await?;
        register_definition(&mut api).await?;

        let first_submit = Instant::now();
        let load = submit_jobs(server.addr, &ctx.plan(DEFAULT_QUEUE, jobs)).await?;
        let submitted_in = first_submit.elapsed();
        ctx.progress(format!(
            "{} submitted in {:.2} s; {} submissions failed",
            load.ok,
            submitted_in.as_secs_f64(),
            load.failed()
        ));
        figures.push(
            ctx.figure(
                "e2e_submit_rps",
                format!("SubmitJob requests/s while the jobs run, {clients} clients"),
                load.ok_per_s(),
                "req/s",
            )
            .note(format!("{} jobs", load.ok)),
        );
        if load.ok == 0 {
            bail!(
                "no SubmitJob was accepted; the first answer: {}",
                load.first_error.unwrap_or_default()
            );
        }

        let finished = wait_until_finished(ctx, server, &mut api, &load.job_ids).await?;
        let wall = finished.at.duration_since(first_submit);
        let succeeded = finished.succeeded as u64;
        ctx.progress(format!(
            "{succeeded} SUCCEEDED and {} FAILED after {:.2} s",
            finished.failed.len(),
            wall.as_secs_f64()
        ));

        figures.push(
            ctx.figure(
                "e2e_jobs_per_s_wall",
                "trivial jobs/s end to end, first submit to last SUCCEEDED (wall clock)",
                per_second(succeeded, wall),
                "jobs/s",
            )
            .target(Target::at_least(E2E_JOBS_PER_S_TARGET))
            .note(format!(
                "{succeeded} jobs in {:.2} s, of which submitting took {:.2} s; the end is seen by polling every {} ms",
                wall.as_secs_f64(),
                submitted_in.as_secs_f64(),
                POLL_INTERVAL.as_millis()
            )),
        );

        // The jobs' own clock: from the first createdAt to the last stoppedAt, read back after
        // the run so that reading them costs the run nothing.
        let details = describe_jobs(&mut api, &load.job_ids).await?;
        match job_clock_span_ms(&details) {
            Some((span_ms, counted)) => figures.push(
                ctx.figure(
                    "e2e_jobs_per_s_job_clock",
                    "trivial jobs/s end to end, min createdAt to max stoppedAt (DescribeJobs)",
                    per_second(counted, Duration::from_millis(span_ms)),
                    "jobs/s",
                )
                .note(format!("{counted} jobs in {:.3} s", span_ms as f64 / 1000.0)),
            ),
            None => ctx.progress(
                "no SUCCEEDED job carries both createdAt and stoppedAt; no job-clock figure",
            ),
        }

        let mut failed = ctx
            .figure(
                "e2e_failed",
                "trivial jobs FAILED or not accepted",
                (finished.failed.len() as u64 + load.failed()) as f64,
                "jobs",
            )
            .target(Target::at_most(0.0));
        if !finished.failed.is_empty() {
            let histogram = status_histogram(&finished.failed);
            ctx.progress(format!("failed jobs: {histogram}"));
            failed = failed.note(histogram);
        } else if let Some(first) = &load.first_error {
            failed = failed.note(format!("first failed SubmitJob: {first}"));
        }
        figures.push(failed);
        Ok(())
    })
    .await
}

pub(super) struct Finished {
    /// When the poll that saw every job finished came back.
    pub at: Instant,
    pub succeeded: usize,
    pub failed: Vec<JobTimes>,
}

/// Polls ListJobs (SUCCEEDED and FAILED, on `default`) until every submitted job is in one of
/// them. ListJobs pages hold 1,000 jobs, where DescribeJobs holds 100: five calls a poll for
/// 5,000 jobs instead of fifty.
pub(super) async fn wait_until_finished(
    ctx: &Ctx<'_>,
    server: &mut Server,
    api: &mut Api,
    job_ids: &[String],
) -> Result<Finished> {
    let expected = job_ids.len();
    // ListJobs may answer smaller pages than asked; 100 a page is the least it may give.
    let pages_max = expected / 100 + 10;
    let mut last_finished = 0;
    let mut last_change = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        server.ensure_running()?;
        let succeeded = list_jobs(api, DEFAULT_QUEUE, "SUCCEEDED", pages_max).await?;
        let failed = list_jobs(api, DEFAULT_QUEUE, "FAILED", pages_max).await?;
        let finished = succeeded.len() + failed.len();
        if finished >= expected {
            return Ok(Finished {
                at: Instant::now(),
                succeeded: succeeded.len(),
                failed,
            });
        }
        if finished != last_finished {
            last_finished = finished;
            last_change = Instant::now();
        } else if last_change.elapsed() >= STALL_LIMIT {
            let done: HashSet<&str> = succeeded
                .iter()
                .chain(&failed)
                .map(|j| j.job_id.as_str())
                .collect();
            let waiting: Vec<String> = job_ids
                .iter()
                .filter(|id| !done.contains(id.as_str()))
                .take(DESCRIBE_JOBS_BATCH_MAX)
                .cloned()
                .collect();
            let sample = describe_jobs(api, &waiting).await?;
            bail!(
                "stuck: no job finished for {} s; {} SUCCEEDED, {} FAILED of {expected}; \
                 {} unfinished jobs described: {}",
                STALL_LIMIT.as_secs(),
                succeeded.len(),
                failed.len(),
                sample.len(),
                status_histogram(&sample)
            );
        }
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            ctx.progress(format!(
                "{} SUCCEEDED, {} FAILED of {expected}",
                succeeded.len(),
                failed.len()
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// From the earliest createdAt to the latest stoppedAt over the SUCCEEDED jobs that carry both,
/// in milliseconds, and how many jobs that is. None without such a job.
pub(super) fn job_clock_span_ms(jobs: &[JobTimes]) -> Option<(u64, u64)> {
    let timed: Vec<(i64, i64)> = jobs
        .iter()
        .filter(|j| j.status == "SUCCEEDED")
        .filter_map(|j| Some((j.created_at?, j.stopped_at?)))
        .collect();
    let first_created = timed.iter().map(|t| t.0).min()?;
    let last_stopped = timed.iter().map(|t| t.1).max()?;
    let span_ms = u64::try_from(last_stopped - first_created).ok()?;
    Some((span_ms, timed.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: &str, created_at: Option<i64>, stopped_at: Option<i64>) -> JobTimes {
        JobTimes {
            job_id: "j".into(),
            status: status.into(),
            status_reason: None,
            created_at,
            started_at: None,
            stopped_at,
        }
    }

    #[test]
    fn the_job_clock_spans_first_create_to_last_stop() {
        let jobs = [
            job("SUCCEEDED", Some(1_000), Some(1_500)),
            job("SUCCEEDED", Some(1_100), Some(3_000)),
            job("FAILED", Some(0), Some(9_000)),
            job("SUCCEEDED", Some(1_200), None),
        ];
        assert_eq!(job_clock_span_ms(&jobs), Some((2_000, 2)));
        assert_eq!(job_clock_span_ms(&jobs[2..]), None);
        assert_eq!(job_clock_span_ms(&[]), None);
    }
}
