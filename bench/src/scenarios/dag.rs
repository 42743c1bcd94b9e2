//! A dependency graph end to end: `--dag-jobs` trivial jobs in layers of `DAG_LAYER_WIDTH`,
//! each job after the first layer depending on `DAG_DEPENDENCIES` jobs of the layer before,
//! submitted into `default` layer by layer (a layer needs the job ids of the one before; the
//! jobs of one layer go out concurrently over `--clients` kept-alive connections). Measured:
//! SubmitJob requests/s, and jobs/s from the first SubmitJob to the last job SUCCEEDED.
//! Afterwards, DescribeJobs of every job checks that each started no earlier than each of its
//! dependencies stopped.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use bytes::Bytes;
use serde_json::json;

use super::e2e::{job_clock_span_ms, wait_until_finished, POLL_INTERVAL};
use super::{
    describe_jobs, register_definition, status_histogram, Ctx, JobTimes, DEFAULT_QUEUE, DEFINITION,
};
use crate::http::Api;
use crate::load::{per_second, BodyFn, ClientPool, LoadResult};
use crate::report::{thousands, Figure, Target};
use crate::server::Server;

/// Jobs per layer (the last one may be smaller).
pub const DAG_LAYER_WIDTH: u64 = 100;
/// Dependencies of each job after the first layer, all in the layer before.
pub const DAG_DEPENDENCIES: u64 = 3;
/// Dependency-order violations named in the error.
pub const VIOLATIONS_SHOWN_MAX: usize = 5;

pub async fn run(ctx: &Ctx<'_>, figures: &mut Vec<Figure>) -> Result<()> {
    let jobs = ctx.args.dag_jobs;
    let widths = layer_widths(jobs, DAG_LAYER_WIDTH);
    let clients = ctx.args.clients.min(DAG_LAYER_WIDTH);
    ctx.progress(format!(
        "{} jobs in {} layers of up to {DAG_LAYER_WIDTH}, {DAG_DEPENDENCIES} dependencies each \
         after the first, into {DEFAULT_QUEUE} with {clients} clients, agent with {} vCPUs",
        thousands(jobs),
        widths.len(),
        ctx.args.agent_vcpus
    ));
    ctx.with_server(async |server: &mut Server| {
        let mut api = Api::connect(server.addr).await?;
        register_definition(&mut api).await?;
        let mut pool = ClientPool::connect(server.addr, clients).await?;

        // Submission: layer by layer, each layer's bodies naming the ids of the one before.
        let first_submit = std::time::Instant::now();
        let mut total = LoadResult::default();
        let mut layers: Vec<Vec<String>> = Vec::with_capacity(widths.len());
        for (layer, &width) in widths.iter().enumerate() {
            let before = Arc::new(layers.last().cloned().unwrap_or_default());
            let body: BodyFn = Arc::new(move |i| dag_body(layer, i, &before));
            let round = pool.submit(width, body).await?;
            if round.failed() > 0 {
                bail!(
                    "layer {layer}: {} of {width} SubmitJob failed; the first: {}",
                    round.failed(),
                    round.first_error.unwrap_or_default()
                );
            }
            layers.push(round.job_ids.clone());
            total.absorb(round);
        }
        total.elapsed = first_submit.elapsed();
        let submitted_in = total.elapsed;
        let edges = dependency_edges(&widths);
        ctx.progress(format!(
            "{} submitted in {:.2} s ({} dependency edges)",
            total.ok,
            submitted_in.as_secs_f64(),
            thousands(edges)
        ));
        figures.push(
            ctx.figure(
                "dag_submit_rps",
                format!("SubmitJob requests/s with dependsOn, layer by layer, {clients} clients"),
                total.ok_per_s(),
                "req/s",
            )
            .note(format!(
                "{} jobs in {} layers of up to {DAG_LAYER_WIDTH}, {} with {DAG_DEPENDENCIES} \
                 dependencies on the layer before; jobs run meanwhile",
                thousands(total.ok),
                widths.len(),
                thousands(jobs - widths[0])
            )),
        );

        let ids: Vec<String> = layers.concat();
        let finished = wait_until_finished(
            ctx,
            || server.ensure_running(),
            &mut api,
            DEFAULT_QUEUE,
            &ids,
        )
        .await?;
        let wall = finished.at.duration_since(first_submit);
        ctx.progress(format!(
            "{} SUCCEEDED and {} FAILED after {:.2} s",
            finished.succeeded,
            finished.failed.len(),
            wall.as_secs_f64()
        ));
        if !finished.failed.is_empty() {
            bail!(
                "{} of {} jobs FAILED: {}",
                finished.failed.len(),
                ids.len(),
                status_histogram(&finished.failed)
            );
        }
        figures.push(
            ctx.figure(
                "dag_jobs_per_s_wall",
                "dependent jobs/s end to end, first submit to last SUCCEEDED (wall clock)",
                per_second(finished.succeeded as u64, wall),
                "jobs/s",
            )
            .note(format!(
                "{} jobs in {:.2} s, of which submitting took {:.2} s; a chain {} jobs deep; \
                 the end is seen by polling every {} ms",
                thousands(finished.succeeded as u64),
                wall.as_secs_f64(),
                submitted_in.as_secs_f64(),
                widths.len(),
                POLL_INTERVAL.as_millis()
            )),
        );

        let details = describe_jobs(&mut api, &ids).await?;
        if let Some((span_ms, counted)) = job_clock_span_ms(&details) {
            figures.push(
                ctx.figure(
                    "dag_jobs_per_s_job_clock",
                    "dependent jobs/s end to end, min createdAt to max stoppedAt (DescribeJobs)",
                    per_second(counted, std::time::Duration::from_millis(span_ms)),
                    "jobs/s",
                )
                .note(format!(
                    "{} jobs in {:.3} s",
                    thousands(counted),
                    span_ms as f64 / 1000.0
                )),
            );
        }

        let violations = order_violations(&layers, &details);
        ctx.progress(format!(
            "{} dependency edges checked, {} out of order",
            thousands(edges),
            violations.len()
        ));
        let mut order = ctx
            .figure(
                "dag_order_violations",
                "jobs that started before a dependency stopped (startedAt < its stoppedAt)",
                violations.len() as f64,
                "jobs",
            )
            .target(Target::at_most(0.0))
            .note(format!(
                "{} dependency edges checked by DescribeJobs",
                thousands(edges)
            ));
        if !violations.is_empty() {
            order = order.note(format!(
                "{} dependency edges checked; the first: {}",
                thousands(edges),
                violations[0]
            ));
        }
        figures.push(order);
        if !violations.is_empty() {
            let shown: Vec<&str> = violations
                .iter()
                .take(VIOLATIONS_SHOWN_MAX)
                .map(String::as_str)
                .collect();
            bail!(
                "dependency order not respected for {} of {} edges: {}",
                violations.len(),
                edges,
                shown.join("; ")
            );
        }
        Ok(())
    })
    .await
}

/// The sizes of the layers of `jobs` jobs, `width` a layer, the last one what is left.
fn layer_widths(jobs: u64, width: u64) -> Vec<u64> {
    let mut widths = vec![width; (jobs / width) as usize];
    if !jobs.is_multiple_of(width) {
        widths.push(jobs % width);
    }
    widths
}

/// The jobs of the layer before (of `before` jobs) that job `i` of a layer depends on: the
/// same position and positions spread evenly from it, wrapping around; distinct, and all of
/// them when there are fewer than `DAG_DEPENDENCIES`.
fn dependencies_of(i: u64, before: u64) -> Vec<u64> {
    if before <= DAG_DEPENDENCIES {
        return (0..before).collect();
    }
    (0..DAG_DEPENDENCIES)
        .map(|k| (i + k * before / DAG_DEPENDENCIES) % before)
        .collect()
}

/// Dependency edges in the whole graph.
fn dependency_edges(widths: &[u64]) -> u64 {
    widths
        .windows(2)
        .map(|pair| pair[1] * (pair[0].min(DAG_DEPENDENCIES)))
        .sum()
}

/// SubmitJob of job `i` of `layer`, depending on jobs of the layer before (ids `before`).
fn dag_body(layer: usize, i: u64, before: &[String]) -> Bytes {
    let depends_on: Vec<_> = dependencies_of(i, before.len() as u64)
        .into_iter()
        .map(|d| json!({"jobId": before[d as usize]}))
        .collect();
    let mut body = json!({
        "jobName": format!("dag-{layer}-{i}"),
        "jobQueue": DEFAULT_QUEUE,
        "jobDefinition": DEFINITION,
    });
    if !depends_on.is_empty() {
        body["dependsOn"] = json!(depends_on);
    }
    Bytes::from(body.to_string())
}

/// For every edge, whether the job started no earlier than its dependency stopped; a line for
/// each edge where it did not (or where a time is missing).
fn order_violations(layers: &[Vec<String>], details: &[JobTimes]) -> Vec<String> {
    let by_id: HashMap<&str, &JobTimes> = details.iter().map(|j| (j.job_id.as_str(), j)).collect();
    let mut violations = Vec::new();
    for pair in layers.windows(2) {
        let (before, layer) = (&pair[0], &pair[1]);
        for (i, id) in layer.iter().enumerate() {
            let started = by_id.get(id.as_str()).and_then(|j| j.started_at);
            for d in dependencies_of(i as u64, before.len() as u64) {
                let dep = &before[d as usize];
                let stopped = by_id.get(dep.as_str()).and_then(|j| j.stopped_at);
                match (started, stopped) {
                    (Some(started), Some(stopped)) if started >= stopped => {}
                    (Some(started), Some(stopped)) => violations.push(format!(
                        "{id} started at {started}, {} ms before its dependency {dep} stopped",
                        stopped - started
                    )),
                    (started, stopped) => violations.push(format!(
                        "{id} (startedAt {started:?}) after {dep} (stoppedAt {stopped:?})"
                    )),
                }
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_full_but_the_last() {
        assert_eq!(layer_widths(10_000, 100).len(), 100);
        assert_eq!(layer_widths(250, 100), vec![100, 100, 50]);
        assert_eq!(layer_widths(7, 100), vec![7]);
        assert_eq!(layer_widths(1, 100), vec![1]);
    }

    #[test]
    fn dependencies_are_distinct_spread_and_deterministic() {
        assert_eq!(dependencies_of(0, 100), vec![0, 33, 66]);
        assert_eq!(dependencies_of(99, 100), vec![99, 32, 65]);
        assert_eq!(dependencies_of(5, 2), vec![0, 1]);
        assert_eq!(dependencies_of(5, 3), vec![0, 1, 2]);
        for before in 1..=120 {
            for i in 0..before {
                let deps = dependencies_of(i, before);
                assert_eq!(deps.len() as u64, before.min(DAG_DEPENDENCIES));
                let distinct: std::collections::HashSet<_> = deps.iter().collect();
                assert_eq!(distinct.len(), deps.len(), "{i} of {before}: {deps:?}");
                assert!(deps.iter().all(|d| *d < before));
                assert_eq!(deps, dependencies_of(i, before));
            }
        }
        assert_eq!(dependency_edges(&layer_widths(10_000, 100)), 99 * 100 * 3);
        assert_eq!(dependency_edges(&[100, 2, 5]), 2 * 3 + 5 * 2);
    }

    #[test]
    fn bodies_name_the_dependencies() {
        let before: Vec<String> = (0..100).map(|n| format!("id{n}")).collect();
        let v: serde_json::Value = serde_json::from_slice(&dag_body(2, 1, &before)).unwrap();
        assert_eq!(
            v,
            json!({
                "jobName": "dag-2-1", "jobQueue": "default", "jobDefinition": "bench",
                "dependsOn": [{"jobId": "id1"}, {"jobId": "id34"}, {"jobId": "id67"}]
            })
        );
        let first: serde_json::Value = serde_json::from_slice(&dag_body(0, 0, &[])).unwrap();
        assert!(first.get("dependsOn").is_none());
    }

    fn times(id: &str, started_at: Option<i64>, stopped_at: Option<i64>) -> JobTimes {
        JobTimes {
            job_id: id.into(),
            status: "SUCCEEDED".into(),
            status_reason: None,
            created_at: Some(0),
            started_at,
            stopped_at,
        }
    }

    #[test]
    fn violations_are_jobs_that_started_too_early() {
        let layers = vec![vec!["a".to_string()], vec!["b".to_string()]];
        let ok = [times("a", Some(1), Some(5)), times("b", Some(5), Some(6))];
        assert!(order_violations(&layers, &ok).is_empty());
        let early = [times("a", Some(1), Some(5)), times("b", Some(4), Some(6))];
        assert_eq!(
            order_violations(&layers, &early),
            vec!["b started at 4, 1 ms before its dependency a stopped"]
        );
        let missing = [times("a", Some(1), None), times("b", Some(4), Some(6))];
        assert_eq!(order_violations(&layers, &missing).len(), 1);
    }
}
