//! Many concurrent SubmitJob clients, each with its own keep-alive connection, sharing one
//! bounded count of requests. All connections are open before the clock starts, so the rate
//! measures requests, not TCP handshakes; a `ClientPool` keeps them open across rounds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::http::{body_excerpt, Conn, ERROR_BODY_CHARS_MAX};

/// Requests failing in a row, on one client, without any HTTP answer, before that client gives up:
/// the server is gone or wedged, and retrying forever would hide it.
pub const TRANSPORT_FAILURES_IN_A_ROW_MAX: u32 = 3;

/// What to submit: the queue and job definition, names are numbered `b<i>`.
#[derive(Debug, Clone)]
pub struct SubmitPlan {
    pub job_queue: String,
    pub job_definition: String,
    pub jobs: u64,
    pub clients: u64,
}

#[derive(Debug, Default)]
pub struct LoadResult {
    /// Answers with status 200.
    pub ok: u64,
    /// HTTP answers with any other status.
    pub non_ok: u64,
    /// Requests that got no HTTP answer at all.
    pub transport_errors: u64,
    /// The first non-200 answer or transport error, for the report.
    pub first_error: Option<String>,
    /// Latency of every 200 answer, in microseconds.
    pub latencies_us: Vec<u32>,
    /// From the moment all clients were connected to the last answer.
    pub elapsed: Duration,
    /// `jobId` of every accepted submission, in the order of the submissions.
    pub job_ids: Vec<String>,
}

impl LoadResult {
    /// Accepted submissions per second.
    pub fn ok_per_s(&self) -> f64 {
        per_second(self.ok, self.elapsed)
    }

    /// Submissions that did not come back 200, for whatever reason.
    pub fn failed(&self) -> u64 {
        self.non_ok + self.transport_errors
    }

    /// Adds another round's counts, latencies and job ids (not its elapsed time).
    pub fn absorb(&mut self, other: LoadResult) {
        self.ok += other.ok;
        self.non_ok += other.non_ok;
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_us.extend(other.latencies_us);
        self.job_ids.extend(other.job_ids);
    }
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        count as f64 / s
    } else {
        0.0
    }
}

#[derive(Deserialize)]
struct SubmitJobOutput {
    #[serde(rename = "jobId")]
    job_id: String,
}

/// Builds the body of submission `i` of a round.
pub type BodyFn = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

/// Runs the plan; returns when every request has an outcome.
pub async fn submit_jobs(addr: SocketAddr, plan: &SubmitPlan) -> Result<LoadResult> {
    let clients = plan.clients.min(plan.jobs).max(1);
    let mut pool = ClientPool::connect(addr, clients).await?;
    let (queue, definition) = (plan.job_queue.clone(), plan.job_definition.clone());
    pool.submit(
        plan.jobs,
        Arc::new(move |i| submit_body(&queue, &definition, i)),
    )
    .await
}

/// Keep-alive connections that stay open from one round of submissions to the next (the
/// layers of a dependency graph), so that only the first round pays for TCP handshakes, and
/// none of them inside the clock.
pub struct ClientPool {
    conns: Vec<Conn>,
}

impl ClientPool {
    /// Opens `clients` connections at once.
    pub async fn connect(addr: SocketAddr, clients: u64) -> Result<ClientPool> {
        let mut opening = JoinSet::new();
        for _ in 0..clients.max(1) {
            opening.spawn(Conn::connect(addr));
        }
        let mut conns = Vec::with_capacity(clients as usize);
        while let Some(joined) = opening.join_next().await {
            conns.push(joined.context("a connecting client panicked")??);
        }
        Ok(ClientPool { conns })
    }

    /// Sends `jobs` SubmitJob requests, the body of request `i` from `body(i)`, spread over
    /// the pool's connections; returns when every request has an outcome. The clock starts
    /// with the first request; `job_ids` come back in index order (without the refused ones).
    pub async fn submit(&mut self, jobs: u64, body: BodyFn) -> Result<LoadResult> {
        let next = Arc::new(AtomicU64::new(0));
        let per_client = jobs / self.conns.len().max(1) as u64 + 1;
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for conn in self.conns.drain(..) {
            let (next, body) = (next.clone(), body.clone());
            tasks.spawn(client(conn, jobs, per_client, next, body));
        }
        let mut total = LoadResult::default();
        let mut indexed_ids = Vec::with_capacity(jobs as usize);
        while let Some(joined) = tasks.join_next().await {
            let (conn, one, ids) = joined.context("a submit client panicked")??;
            self.conns.push(conn);
            total.absorb(one);
            indexed_ids.extend(ids);
        }
        total.elapsed = started.elapsed();
        indexed_ids.sort_unstable_by_key(|(i, _)| *i);
        total.job_ids = indexed_ids.into_iter().map(|(_, id)| id).collect();
        Ok(total)
    }
}

/// One connection's share of a round: its connection back, what it saw, and the job id of
/// each submission it got accepted, by index.
async fn client(
    mut conn: Conn,
    jobs: u64,
    per_client: u64,
    next: Arc<AtomicU64>,
    body: BodyFn,
) -> Result<(Conn, LoadResult, Vec<(u64, String)>)> {
    let mut result = LoadResult {
        latencies_us: Vec::with_capacity(per_client as usize),
        ..LoadResult::default()
    };
    let mut ids = Vec::with_capacity(per_client as usize);
    let mut failures_in_a_row = 0;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= jobs {
            return Ok((conn, result, ids));
        }
        let sent = Instant::now();
        match conn.post("/v1/submitjob", body(i)).await {
            Ok((StatusCode::OK, answer)) => {
                let latency = sent.elapsed();
                failures_in_a_row = 0;
                match serde_json::from_slice::<SubmitJobOutput>(&answer) {
                    Ok(out) => {
                        result.ok += 1;
                        result
                            .latencies_us
                            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                        ids.push((i, out.job_id));
                    }
                    Err(e) => {
                        result.non_ok += 1;
                        result.first_error.get_or_insert_with(|| {
                            format!(
                                "200 without a jobId ({e}): {}",
                                body_excerpt(&answer, ERROR_BODY_CHARS_MAX)
                            )
                        });
                    }
                }
            }
            Ok((status, answer)) => {
                failures_in_a_row = 0;
                result.non_ok += 1;
                result.first_error.get_or_insert_with(|| {
                    format!("{status}: {}", body_excerpt(&answer, ERROR_BODY_CHARS_MAX))
                });
            }
            Err(e) => {
                result.transport_errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("no answer: {e:#}"));
                failures_in_a_row += 1;
                if failures_in_a_row == TRANSPORT_FAILURES_IN_A_ROW_MAX {
                    return Err(e.context(format!(
                        "{TRANSPORT_FAILURES_IN_A_ROW_MAX} SubmitJob requests in a row got no answer"
                    )));
                }
            }
        }
    }
}

fn submit_body(job_queue: &str, job_definition: &str, i: u64) -> Bytes {
    let body = serde_json::json!({
        "jobName": format!("b{i}"),
        "jobQueue": job_queue,
        "jobDefinition": job_definition,
    });
    Bytes::from(body.to_string())
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples, or None if there are none.
pub fn percentile(samples: &mut [u32], p: f64) -> Option<u32> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut none: Vec<u32> = vec![];
        assert_eq!(percentile(&mut none, 50.0), None);
        let mut xs: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut xs, 50.0), Some(50));
        assert_eq!(percentile(&mut xs, 99.0), Some(99));
        assert_eq!(percentile(&mut xs, 100.0), Some(100));
        assert_eq!(percentile(&mut xs, 0.0), Some(1));
        let mut one = vec![7];
        assert_eq!(percentile(&mut one, 99.0), Some(7));
    }

    #[test]
    fn rates_survive_a_zero_duration() {
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(per_second(3000, Duration::from_millis(1500)), 2000.0);
    }

    #[test]
    fn submit_bodies_are_the_wire_shape() {
        let body = submit_body("bench-q", "bench", 42);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jobName": "b42", "jobQueue": "bench-q", "jobDefinition": "bench"})
        );
    }
}
