//! The commands for people: submit, jobs, describe, logs, watch, why, cancel, terminate and
//! schedules.
//! Each talks to a Barge endpoint through `Api` (AWS's own operations, signed as the aws CLI
//! would sign them), prints a human table by default and the API's JSON with `--output json`,
//! and ends with one of the exit codes below.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::client::{self, Credentials, SendError};

mod describe;
pub mod interrupt;
mod jobs;
mod logs;
mod schedules;
mod stop;
mod submit;
mod table;
mod watch;
mod why;

/// The exit codes scripts may rely on (docs/cli.md lists them).
pub mod exit {
    /// Done: the request was accepted, or the job followed by `--wait`/`watch` SUCCEEDED.
    pub const OK: u8 = 0;
    /// Barge refused or failed the request (unknown job, a ClientException, a missing
    /// signature), or the command could not do what was asked.
    pub const REFUSED: u8 = 1;
    /// The command line is wrong (clap's own code for usage errors: clap exits with it
    /// itself, so nothing here uses it; a unit test checks that the two agree).
    #[allow(dead_code)]
    pub const USAGE: u8 = 2;
    /// Barge could not be reached at the endpoint: nothing was asked, so a retry is safe.
    pub const UNREACHABLE: u8 = 3;
    /// `--wait` or `watch` saw the job end FAILED.
    pub const JOB_FAILED: u8 = 4;
    /// Ctrl-C ended a command that follows something (`--wait`, `logs -f`, `watch`), as shells
    /// report SIGINT.
    pub const INTERRUPTED: u8 = 130;
}

/// The people-facing commands, flattened into `barge`'s own.
#[derive(Subcommand)]
pub enum Command {
    /// Submit a job (flags as `aws batch submit-job`'s); prints its id.
    Submit(Box<submit::SubmitArgs>),
    /// List jobs, newest first: every queue and every status unless told otherwise.
    Jobs(jobs::JobsArgs),
    /// Describe jobs: status, attempts, exit codes, reasons, array progress, dependencies.
    Describe(describe::DescribeArgs),
    /// Print a job's log (its latest attempt's stream); -f follows it until the job ends.
    Logs(logs::LogsArgs),
    /// Watch a job or a job queue: live progress bars until the job ends (Ctrl-C to stop).
    Watch(watch::WatchArgs),
    /// Say why a job is where it is, and what would move it on.
    Why(why::WhyArgs),
    /// Cancel a job that has not started yet (CancelJob).
    Cancel(stop::StopArgs),
    /// Terminate a job, running or not (TerminateJob).
    Terminate(stop::StopArgs),
    /// Manage scheduled jobs: create, list, describe, update, enable, disable, delete.
    Schedules(schedules::SchedulesArgs),
}

/// Runs one command: prints what went wrong as `barge <command>: <message>` and maps it to
/// an exit code.
pub fn run(command: Command) -> ExitCode {
    // These commands print to a terminal or a pipe. Rust ignores SIGPIPE, which turns a closed
    // pipe (`barge jobs | head -1`) into a panic in println!; the default action ends the
    // process quietly instead, as other command-line tools do. Only here: the server must keep
    // ignoring it.
    // SAFETY: setting a signal's disposition to its default, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let (name, result) = match command {
        Command::Submit(a) => ("submit", submit::run(*a)),
        Command::Jobs(a) => ("jobs", jobs::run(a)),
        Command::Describe(a) => ("describe", describe::run(a)),
        Command::Logs(a) => ("logs", logs::run(a)),
        Command::Watch(a) => ("watch", watch::run(a)),
        Command::Why(a) => ("why", why::run(a)),
        Command::Cancel(a) => ("cancel", stop::run(a, stop::Kind::Cancel)),
        Command::Terminate(a) => ("terminate", stop::run(a, stop::Kind::Terminate)),
        Command::Schedules(a) => (a.name(), schedules::run(a)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            for line in failure.lines() {
                eprintln!("barge {name}: {line}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

/// What every people-facing command takes: where Barge is, how to trust and sign for it, and
/// how to print.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// Where Barge listens.
    #[arg(long, env = "BARGE_ENDPOINT", default_value = "http://127.0.0.1:8433")]
    pub endpoint: String,
    /// table for people, json for scripts (the API's own objects).
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    /// Certificates to trust for an https endpoint (PEM), like the aws CLI's --ca-bundle;
    /// default: the system's CAs.
    #[arg(long, env = "AWS_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// The profile of the shared credentials file to sign with, like the aws CLI's --profile
    /// (default: the environment's keys, else AWS_PROFILE, else `default`).
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Why a command did not do what was asked.
#[derive(Debug)]
pub enum Failure {
    /// Barge answered with an error: its AWS code and message.
    Refused {
        status: u16,
        code: String,
        message: String,
        signed: bool,
    },
    Unreachable(String),
    /// Anything else worth exit 1: a job that does not exist, a bad answer, a local file.
    Other(anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Unreachable(_) => exit::UNREACHABLE,
            Failure::Refused { .. } | Failure::Other(_) => exit::REFUSED,
        }
    }

    /// What to tell the person, one line each.
    fn lines(&self) -> Vec<String> {
        match self {
            Failure::Refused {
                status,
                code,
                message,
                signed,
            } => {
                let mut lines = vec![if code.is_empty() {
                    message.clone()
                } else {
                    format!("{message} ({code})")
                }];
                if *status == 403 && !signed {
                    lines.push("this Barge requires signed requests: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to one of its access keys (or pass --profile)".to_string());
                }
                lines
            }
            Failure::Unreachable(m) => vec![m.clone()],
            Failure::Other(e) => vec![format!("{e:#}")],
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Other(e.into())
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::Other(e.into())
    }
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Unreachable(m) => Failure::Unreachable(m),
            SendError::Failed(e) => Failure::Other(e),
        }
    }
}

pub type Outcome = Result<u8, Failure>;

/// A failure of the command itself (exit 1) with a message.
pub fn fail(message: impl Into<String>) -> Failure {
    Failure::Other(anyhow::anyhow!(message.into()))
}

/// Barge at an endpoint, with the credentials to sign for it.
pub struct Api {
    endpoint: String,
    credentials: Option<Credentials>,
    ca_bundle: Option<PathBuf>,
}

impl Api {
    pub fn new(common: &Common) -> Result<Api, Failure> {
        Ok(Api {
            endpoint: common.endpoint.clone(),
            credentials: client::credentials_from_environment(common.profile.as_deref())?,
            ca_bundle: common.ca_bundle.clone(),
        })
    }

    /// An AWS Batch operation (rest-json): `POST /v1/<operation>` with a JSON body.
    pub fn batch(&self, operation: &str, body: &Value) -> Result<Value, Failure> {
        let body = serde_json::to_vec(body)?;
        let path = format!("/v1/{}", operation.to_ascii_lowercase());
        self.call(&client::Request {
            method: "POST",
            path: &path,
            headers: &[("content-type", "application/json")],
            body: &body,
            service: "batch",
        })
    }

    /// A CloudWatch Logs operation (json 1.1): `POST /` with X-Amz-Target.
    pub fn logs(&self, operation: &str, body: &Value) -> Result<Value, Failure> {
        let body = serde_json::to_vec(body)?;
        let target = format!("Logs_20140328.{operation}");
        self.call(&client::Request {
            method: "POST",
            path: "/",
            headers: &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", &target),
            ],
            body: &body,
            service: "logs",
        })
    }

    /// One of Barge's own operations (`GET /barge/v1/...`).
    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call(&client::Request {
            method: "GET",
            path,
            headers: &[],
            body: b"",
            service: "batch",
        })
    }

    /// One of Barge's own operations with any method, and a JSON body when given.
    pub fn own(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let body = match body {
            Some(b) => serde_json::to_vec(b)?,
            None => Vec::new(),
        };
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("content-type", "application/json")]
        };
        self.call(&client::Request {
            method,
            path,
            headers,
            body: &body,
            service: "batch",
        })
    }

    fn call(&self, request: &client::Request<'_>) -> Result<Value, Failure> {
        let (status, body) = client::send(
            &self.endpoint,
            request,
            self.credentials.as_ref(),
            self.ca_bundle.as_deref(),
        )?;
        let value: Option<Value> = if body.trim().is_empty() {
            Some(json!({}))
        } else {
            serde_json::from_str(&body).ok()
        };
        if (200..300).contains(&status) {
            return value.ok_or_else(|| {
                fail(format!(
                    "Barge answered {status} with a body that is not JSON: {body}"
                ))
            });
        }
        let value = value.unwrap_or(Value::Null);
        let text = |k: &str| value[k].as_str().map(str::to_string);
        Err(Failure::Refused {
            status,
            code: text("__type").unwrap_or_default(),
            message: text("message")
                .or_else(|| text("Message"))
                .unwrap_or_else(|| format!("Barge answered {status}: {body}")),
            signed: self.credentials.is_some(),
        })
    }

    /// DescribeJobs for one id: the job, or a failure naming it when it does not exist.
    pub fn describe_job(&self, job_id: &str) -> Result<Value, Failure> {
        let answer = self.batch("DescribeJobs", &json!({ "jobs": [job_id] }))?;
        answer["jobs"]
            .as_array()
            .and_then(|jobs| jobs.first())
            .cloned()
            .ok_or_else(|| fail(format!("job {job_id} does not exist")))
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &Value) -> Result<(), Failure> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Whether a job status is final.
pub fn is_done(status: &str) -> bool {
    status == "SUCCEEDED" || status == "FAILED"
}

/// The statuses in the order a job goes through them.
pub const STATUSES: [&str; 7] = [
    "SUBMITTED",
    "PENDING",
    "RUNNABLE",
    "STARTING",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
];

/// Percent-encodes everything but unreserved characters, so any job id is one path segment.
pub fn percent_encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(subcommand)]
        command: Command,
    }

    #[test]
    fn a_usage_error_exits_with_the_documented_code() {
        let err = Wrap::try_parse_from(["barge", "jobs", "--no-such-flag"])
            .err()
            .expect("refused");
        assert_eq!(err.exit_code(), i32::from(exit::USAGE));
    }
}
