//! `barge logs JOB [-f]`: GetLogEvents on the log stream of the job's latest attempt; `-f`
//! follows it (and the next attempt's, after a retry) until the job has ended and its stream
//! is drained.

use std::io::Write;

use serde_json::{json, Value};

use super::table::time;
use super::{exit, fail, interrupt, is_done, Api, Common, Failure, Outcome, Output};

/// The log group AWS Batch (and Barge) writes jobs' logs to.
const LOG_GROUP: &str = "/aws/batch/job";
/// How often `-f` asks for new events and for the job's status.
const FOLLOW_POLL_MS: u64 = 1_000;
/// Polls after the job ended that must find nothing new before `-f` stops: the agent may
/// ship the last lines just after it reports the exit.
const DRAIN_EMPTY_POLLS: u32 = 2;
/// GetLogEvents pages read in one go before looking at the job again.
const PAGES_PER_POLL_MAX: usize = 100;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The job's id (an array child's is PARENT:INDEX).
    job_id: String,
    /// Keep printing new lines until the job has ended (Ctrl-C stops).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Start each line with its time (UTC).
    #[arg(long)]
    timestamps: bool,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: LogsArgs) -> Outcome {
    let api = Api::new(&args.common)?;
    if args.follow {
        interrupt::catch();
    }
    let mut stream: Option<String> = None;
    let mut token: Option<String> = None;
    let mut empty_after_end = 0;
    loop {
        let job = api.describe_job(&args.job_id)?;
        check_has_own_log(&job)?;
        let latest = job["container"]["logStreamName"]
            .as_str()
            .map(str::to_string);
        if latest.is_some() && latest != stream {
            if stream.is_some() {
                eprintln!(
                    "barge logs: the job was retried; now the stream {}",
                    latest.as_deref().unwrap_or("")
                );
            }
            stream = latest;
            token = None;
        }
        let printed = match &stream {
            Some(name) => print_new(&api, &args, name, &mut token)?,
            None => 0,
        };
        let status = job["status"].as_str().unwrap_or("");
        if !args.follow {
            // One call reads a bounded number of pages: read on until the stream is drained.
            if let Some(name) = &stream {
                let mut more = printed;
                while more > 0 {
                    more = print_new(&api, &args, name, &mut token)?;
                }
            }
            if stream.is_none() {
                eprintln!(
                    "barge logs: job {} has no log yet (it is {status})",
                    args.job_id
                );
            }
            return Ok(exit::OK);
        }
        if is_done(status) {
            empty_after_end = if printed == 0 { empty_after_end + 1 } else { 0 };
            if empty_after_end > DRAIN_EMPTY_POLLS {
                return Ok(exit::OK);
            }
        }
        if !interrupt::sleep(FOLLOW_POLL_MS) {
            return Ok(exit::INTERRUPTED);
        }
    }
}

/// An array parent or a multi-node job has no log of its own: its children and nodes do.
fn check_has_own_log(job: &Value) -> Result<(), Failure> {
    let id = job["jobId"].as_str().unwrap_or("?");
    if let Some(size) = job["arrayProperties"]["size"].as_u64() {
        return Err(fail(format!(
            "job {id} is an array job: its {size} children have the logs; pick one, e.g. barge logs {id}:0"
        )));
    }
    if job["nodeProperties"].is_object() {
        return Err(fail(format!(
            "job {id} is a multi-node parallel job: its nodes have the logs; pick one, e.g. barge logs {id}#0"
        )));
    }
    Ok(())
}

/// Prints the stream's events after `token`, moving it on; returns how many were printed.
fn print_new(
    api: &Api,
    args: &LogsArgs,
    stream: &str,
    token: &mut Option<String>,
) -> Result<usize, Failure> {
    let mut printed = 0;
    let stdout = std::io::stdout();
    for _ in 0..PAGES_PER_POLL_MAX {
        let mut body = json!({
            "logGroupName": LOG_GROUP,
            "logStreamName": stream,
            "startFromHead": true,
        });
        if let Some(t) = token.as_ref() {
            body["nextToken"] = json!(t);
        }
        let page = match api.logs("GetLogEvents", &body) {
            Ok(page) => page,
            // The attempt has begun but shipped nothing yet: nothing to print so far.
            Err(Failure::Refused { code, .. }) if code == "ResourceNotFoundException" => {
                return Ok(printed)
            }
            Err(e) => return Err(e),
        };
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let mut out = stdout.lock();
        for e in &events {
            let message = e["message"].as_str().unwrap_or("");
            let line = match (args.common.output, args.timestamps) {
                (Output::Json, _) => serde_json::to_string(&json!({
                    "timestamp": e["timestamp"], "message": message
                }))?,
                (Output::Table, true) => format!("{} {message}", time(e["timestamp"].as_i64())),
                (Output::Table, false) => message.to_string(),
            };
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        printed += events.len();
        let next = page["nextForwardToken"].as_str().map(str::to_string);
        let same = next == *token;
        if next.is_some() {
            *token = next;
        }
        if events.is_empty() || same {
            break;
        }
    }
    Ok(printed)
}
