//! SubmitJob requests/s from many concurrent keep-alive clients, twice, each on a fresh server:
//! into a queue that cannot run anything (the server only validates, stores and answers), and
//! into `default`, where the scheduler and the process runner work at the same time. With
//! `--database-url`, a third time: into a held queue of `barge server --database-url URL`, the
//! same measurement as the first with PostgreSQL as the store.

use anyhow::Result;

use super::{
    create_held_queue, create_held_queue_named, register_definition, run_token, Ctx, DEFAULT_QUEUE,
    HELD_ENVIRONMENT, HELD_QUEUE,
};
use crate::database;
use crate::http::{body_excerpt, Api};
use crate::load::{percentile, submit_jobs, LoadResult};
use crate::report::{Figure, Target};
use crate::server::{Plane, Server, ServerConfig};

/// The target for SubmitJob requests/s on the 2-core machine.
pub const SUBMIT_RPS_TARGET: f64 = 2000.0;
/// Characters of the first error kept in the table (the whole of it goes to stderr).
const NOTE_CHARS_MAX: usize = 200;

pub async fn run(ctx: &Ctx<'_>, figures: &mut Vec<Figure>) -> Result<()> {
    let jobs = ctx.args.submit_jobs;
    let clients = ctx.args.clients;

    ctx.progress(format!(
        "{jobs} SubmitJob with {clients} clients into {HELD_QUEUE} (DISABLED compute environment)"
    ));
    let held = ctx
        .with_server(async |server: &mut Server| {
            let mut api = Api::connect(server.addr).await?;
            create_held_queue(&mut api).await?;
            register_definition(&mut api).await?;
            submit_jobs(server.addr, &ctx.plan(HELD_QUEUE, jobs)).await
        })
        .await?;
    report(ctx, figures, held, &Where::Held);

    ctx.progress(format!(
        "{jobs} SubmitJob with {clients} clients into {DEFAULT_QUEUE} (jobs run meanwhile)"
    ));
    let running = ctx
        .with_server(async |server: &mut Server| {
            let mut api = Api::connect(server.addr).await?;
            register_definition(&mut api).await?;
            submit_jobs(server.addr, &ctx.plan(DEFAULT_QUEUE, jobs)).await
        })
        .await?;
    report(ctx, figures, running, &Where::Default);

    // Last, so that a server that cannot take the flag yet costs the other two nothing.
    if let Some(url) = &ctx.args.database_url {
        let host = database::host(url);
        ctx.progress(format!(
            "{jobs} SubmitJob with {clients} clients into a held queue of barge server \
             --database-url (PostgreSQL at {host})"
        ));
        let load = postgres(ctx, url, jobs).await?;
        report(ctx, figures, load, &Where::Postgres { host });
    }
    Ok(())
}

/// The held measurement against `barge server --database-url URL`. The database outlives the
/// server, so the queue's names carry a token of this run: an earlier run's are still there.
async fn postgres(ctx: &Ctx<'_>, url: &str, jobs: u64) -> Result<LoadResult> {
    let ctx = ctx.with_config(ServerConfig {
        plane: Plane::Alone {
            extra_args: vec![database::FLAG.to_string(), url.to_string()],
        },
        ..ctx.server.clone()
    });
    let token = run_token();
    let environment = format!("{HELD_ENVIRONMENT}-{token}");
    let queue = format!("{HELD_QUEUE}-{token}");
    ctx.with_server(async |server: &mut Server| {
        let mut api = Api::connect(server.addr).await?;
        create_held_queue_named(&mut api, &environment, &queue).await?;
        register_definition(&mut api).await?;
        submit_jobs(server.addr, &ctx.plan(&queue, jobs)).await
    })
    .await
}

enum Where {
    Held,
    Default,
    /// The held queue, on a server whose store is PostgreSQL at `host`.
    Postgres {
        host: String,
    },
}

fn report(ctx: &Ctx<'_>, figures: &mut Vec<Figure>, mut load: LoadResult, into: &Where) {
    let clients = ctx.args.clients;
    let (queue, keys) = match into {
        Where::Held => (
            format!("{HELD_QUEUE}, nothing runs"),
            [
                "submit_rps_held",
                "submit_p50_ms_held",
                "submit_p99_ms_held",
                "submit_failed_held",
            ],
        ),
        Where::Default => (
            format!("{DEFAULT_QUEUE}, jobs run meanwhile"),
            [
                "submit_rps_default",
                "submit_p50_ms_default",
                "submit_p99_ms_default",
                "submit_failed_default",
            ],
        ),
        Where::Postgres { host } => (
            format!("held queue, nothing runs, PostgreSQL at {host}"),
            [
                "submit_rps_postgres",
                "submit_p50_ms_postgres",
                "submit_p99_ms_postgres",
                "submit_failed_postgres",
            ],
        ),
    };
    ctx.progress(format!(
        "{} accepted in {:.2} s = {:.0}/s; {} failed",
        load.ok,
        load.elapsed.as_secs_f64(),
        load.ok_per_s(),
        load.failed()
    ));

    let rps = ctx
        .figure(
            keys[0],
            format!("SubmitJob requests/s, {clients} clients, {queue}"),
            load.ok_per_s(),
            "req/s",
        )
        .note(format!(
            "{} answered 200 in {:.2} s",
            load.ok,
            load.elapsed.as_secs_f64()
        ));
    // The target is for SubmitJob alone, whatever the store; with jobs running, the
    // same two cores also schedule and spawn, so that figure is reported without a target.
    figures.push(match into {
        Where::Held | Where::Postgres { .. } => rps.target(Target::at_least(SUBMIT_RPS_TARGET)),
        Where::Default => rps,
    });
    let ms = |us: Option<u32>| us.map_or(0.0, |us| f64::from(us) / 1000.0);
    let p50 = percentile(&mut load.latencies_us, 50.0);
    let p99 = percentile(&mut load.latencies_us, 99.0);
    figures.push(ctx.figure(
        keys[1],
        format!("SubmitJob latency p50, {queue}"),
        ms(p50),
        "ms",
    ));
    figures.push(ctx.figure(
        keys[2],
        format!("SubmitJob latency p99, {queue}"),
        ms(p99),
        "ms",
    ));

    let mut failed = ctx
        .figure(
            keys[3],
            format!("SubmitJob answers other than 200, {queue}"),
            load.failed() as f64,
            "requests",
        )
        .target(Target::at_most(0.0));
    if let Some(first) = &load.first_error {
        ctx.progress(format!("first failed SubmitJob: {first}"));
        failed = failed.note(format!(
            "first: {}",
            body_excerpt(first.as_bytes(), NOTE_CHARS_MAX)
        ));
    }
    figures.push(failed);
}
