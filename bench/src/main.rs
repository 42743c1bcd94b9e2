//! `barge-bench`: runs the real `barge` binary and measures it over HTTP, the way a user's
//! clients would see it: SubmitJob requests/s from many concurrent clients, trivial jobs/s end
//! to end through the process runner, the server's resident memory idle and with many jobs
//! queued, array jobs (SubmitJob of a million children, the reads with them queued, an array
//! run end to end), a dependency graph run end to end in order, trivial container jobs
//! through the Docker runner against plain `docker run --rm` of the same image, and trivial
//! jobs end to end through 1, 2 and 4 remote agents (`barge server` and `barge agent`). Every
//! measurement starts its own `barge up` (or `barge server` and its agents) on a free loopback
//! port with a fresh data directory, and stops it afterwards. With `--database-url`, the
//! submit scenario also measures `barge server --database-url URL`.
//! The report (markdown for docs/benchmarks.md, or JSON) goes to stdout and gives only measured
//! numbers, beside the targets; progress goes to stderr.
//!
//! Exit status: 0 when every scenario ran to the end (whether or not each target was met), 1
//! when one could not (the report then says why), 2 for bad arguments.

mod cli;
mod database;
mod http;
mod load;
mod report;
mod scenarios;
mod server;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::cli::{Args, OutputFormat, Scenario};
use crate::report::{Machine, Report, ScenarioError, ScenarioSkip};
use crate::scenarios::Ctx;
use crate::server::{Plane, ServerConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let barge = match server::resolve_barge(args.barge.as_deref()) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("barge-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let started_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut report = Report {
        // The command line goes into the report; a database password must not.
        command: report::shell_command_line(database::redact_args(std::env::args())),
        date: report::utc_date(started_s),
        barge: barge.display().to_string(),
        machine: Machine::probe(),
        figures: Vec::new(),
        errors: Vec::new(),
        skipped: Vec::new(),
    };
    let server = ServerConfig {
        barge,
        agent_vcpus: args.agent_vcpus,
        agent_memory_mib: args.agent_memory_mib,
        // The scenarios run host commands (`true`), not images; the container scenario asks
        // for the Docker runner itself.
        runner: "process",
        plane: Plane::Up,
    };
    let limit = Duration::from_secs(args.scenario_timeout_s);

    for scenario in args.scenarios() {
        // The default run leaves the container scenario out where no Docker daemon answers,
        // and says so; asked for by name (--only container), it fails there instead.
        if scenario == Scenario::Container && args.only.is_none() {
            if let Some(reason) = scenarios::container::docker_unavailable().await {
                eprintln!("barge-bench: container: skipped: {reason}");
                report.skipped.push(ScenarioSkip {
                    scenario: scenario.name(),
                    reason,
                });
                continue;
            }
        }
        let ctx = Ctx {
            args: &args,
            scenario,
            server: server.clone(),
            limit,
            deadline: Instant::now() + limit,
        };
        let started = Instant::now();
        let outcome = match scenario {
            Scenario::Submit => scenarios::submit::run(&ctx, &mut report.figures).await,
            Scenario::E2e => scenarios::e2e::run(&ctx, &mut report.figures).await,
            Scenario::Agents => scenarios::agents::run(&ctx, &mut report.figures).await,
            Scenario::Memory => scenarios::memory::run(&ctx, &mut report.figures).await,
            Scenario::ArraySubmit => scenarios::array_submit::run(&ctx, &mut report.figures).await,
            Scenario::ArrayE2e => scenarios::array_e2e::run(&ctx, &mut report.figures).await,
            Scenario::Dag => scenarios::dag::run(&ctx, &mut report.figures).await,
            Scenario::Container => scenarios::container::run(&ctx, &mut report.figures).await,
        };
        match outcome {
            Ok(()) => ctx.progress(format!("done in {:.1} s", started.elapsed().as_secs_f64())),
            Err(e) => {
                ctx.progress(format!("FAILED: {e:#}"));
                report.errors.push(ScenarioError {
                    scenario: scenario.name(),
                    error: format!("{e:#}"),
                });
            }
        }
    }

    match args.output {
        OutputFormat::Markdown => print!("{}", report.to_markdown()),
        OutputFormat::Json => println!("{}", report.to_json()),
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
