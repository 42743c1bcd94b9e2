//! Trivial jobs per second end to end: `true` through the process runner, from the first
//! SubmitJob to the last job seen SUCCEEDED, on a fresh server whose agent offers
//! `--agent-vcpus`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{
    describe_jobs, list_jobs, register_definition, status_histogram, Ctx, JobTimes, DEFAULT_QUEUE,
    DESCRIBE_JOBS_BATCH_MAX,
};
use crate::http::Api;
use crate::load::{per_second, submit_jobs, LoadResult};
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
        let addr = server.addr;
        let run = run_trivial_jobs(ctx, addr, &mut api, DEFAULT_QUEUE, jobs, || {
            server.ensure_running()
        })
        .await?;

        figures.push(
            ctx.figure(
                "e2e_submit_rps",
                format!("SubmitJob requests/s while the jobs run, {clients} clients"),
                run.load.ok_per_s(),
                "req/s",
            )
            .note(format!("{} jobs", run.load.ok)),
        );
        figures.push(
            ctx.figure(
                "e2e_jobs_per_s_wall",
                "trivial jobs/s end to end, first submit to last SUCCEEDED (wall clock)",
                run.jobs_per_s(),
                "jobs/s",
            )
            .target(Target::at_least(E2E_JOBS_PER_S_TARGET))
            .note(run.wall_note()),
        );

        // The jobs' own clock: from the first createdAt to the last stoppedAt, read back after
        // the run so that reading them costs the run nothing.
        let details = describe_jobs(&mut api, &run.load.job_ids).await?;
        match job_clock_span_ms(&details) {
            Some((span_ms, counted)) => figures.push(
                ctx.figure(
                    "e2e_jobs_per_s_job_clock",
                    "trivial jobs/s end to end, min createdAt to max stoppedAt (DescribeJobs)",
                    per_second(counted, Duration::from_millis(span_ms)),
                    "jobs/s",
                )
                .note(format!(
                    "{counted} jobs in {:.3} s",
                    span_ms as f64 / 1000.0
                )),
            ),
            None => ctx.progress(
                "no SUCCEEDED job carries both createdAt and stoppedAt; no job-clock figure",
            ),
        }

        figures.push(run.failed_figure(ctx, "e2e_failed", "trivial jobs FAILED or not accepted"));
        Ok(())
    })
    .await
}

/// What one run of trivial jobs saw, from the first SubmitJob to the poll that saw the last
/// job finished.
pub(super) struct TrivialRun {
    pub load: LoadResult,
    /// From the first SubmitJob to the last answer.
    pub submitted_in: Duration,
    pub finished: Finished,
    /// From the first SubmitJob to the poll that saw every job finished.
    pub wall: Duration,
}

impl TrivialRun {
    pub fn succeeded(&self) -> u64 {
        self.finished.succeeded as u64
    }

    /// SUCCEEDED jobs per second of `wall`.
    pub fn jobs_per_s(&self) -> f64 {
        per_second(self.succeeded(), self.wall)
    }

    /// The note of a wall-clock figure: how many, how long, and how the end is seen.
    pub fn wall_note(&self) -> String {
        format!(
            "{} jobs in {:.2} s, of which submitting took {:.2} s; the end is seen by polling \
             every {} ms",
            self.succeeded(),
            self.wall.as_secs_f64(),
            self.submitted_in.as_secs_f64(),
            POLL_INTERVAL.as_millis()
        )
    }

    /// Jobs that FAILED plus submissions that were not accepted (target 0), with the statuses
    /// and first reason of the failed ones, or else the first refused submission, as its note.
    pub fn failed_figure(
        &self,
        ctx: &Ctx<'_>,
        key: impl Into<Cow<'static, str>>,
        label: &str,
    ) -> Figure {
        let failed = &self.finished.failed;
        let figure = ctx
            .figure(
                key,
                label,
                (failed.len() as u64 + self.load.failed()) as f64,
                "jobs",
            )
            .target(Target::at_most(0.0));
        if !failed.is_empty() {
            let histogram = status_histogram(failed);
            ctx.progress(format!("failed jobs: {histogram}"));
            figure.note(histogram)
        } else if let Some(first) = &self.load.first_error {
            figure.note(format!("first failed SubmitJob: {first}"))
        } else {
            figure
        }
    }
}

/// Submits `jobs` trivial jobs into `queue` with the clients of `--clients` and waits until
/// every accepted one has finished; `alive` fails when a process the run needs has exited.
/// Fails when no submission was accepted.
pub(super) async fn run_trivial_jobs(
    ctx: &Ctx<'_>,
    addr: SocketAddr,
    api: &mut Api,
    queue: &str,
    jobs: u64,
    alive: impl FnMut() -> Result<()>,
) -> Result<TrivialRun> {
    let first_submit = Instant::now();
    let load = submit_jobs(addr, &ctx.plan(queue, jobs)).await?;
    let submitted_in = first_submit.elapsed();
    ctx.progress(format!(
        "{} submitted in {:.2} s; {} submissions failed",
        load.ok,
        submitted_in.as_secs_f64(),
        load.failed()
    ));
    if load.ok == 0 {
        bail!(
            "no SubmitJob was accepted; the first answer: {}",
            load.first_error.unwrap_or_default()
        );
    }
    let finished = wait_until_finished(ctx, alive, api, queue, &load.job_ids).await?;
    let wall = finished.at.duration_since(first_submit);
    ctx.progress(format!(
        "{} SUCCEEDED and {} FAILED after {:.2} s",
        finished.succeeded,
        finished.failed.len(),
        wall.as_secs_f64()
    ));
    Ok(TrivialRun {
        load,
        submitted_in,
        finished,
        wall,
    })
}

pub(super) struct Finished {
    /// When the poll that saw every job finished came back.
    pub at: Instant,
    pub succeeded: usize,
    pub failed: Vec<JobTimes>,
}

/// Polls ListJobs (SUCCEEDED and FAILED, on `queue`) until every submitted job is in one of
/// them, calling `alive` before each poll so that a process that exited ends the wait at once.
/// ListJobs pages hold 1,000 jobs, where DescribeJobs holds 100: five calls a poll for 5,000
/// jobs instead of fifty.
pub(super) async fn wait_until_finished(
    ctx: &Ctx<'_>,
    mut alive: impl FnMut() -> Result<()>,
    api: &mut Api,
    queue: &str,
    job_ids: &[String],
) -> Result<Finished> {
    let expected = job_ids.len();
    // ListJobs may answer smaller pages than asked; 100 a page is the least it may give.
    let pages_max = expected / 100 + 10;
    let mut last_finished = 0;
    let mut last_change = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        alive()?;
        let succeeded = list_jobs(api, queue, "SUCCEEDED", pages_max).await?;
        let failed = list_jobs(api, queue, "FAILED", pages_max).await?;
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
