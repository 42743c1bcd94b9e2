//! `barge cancel JOB` and `barge terminate JOB`: CancelJob and TerminateJob.

use serde_json::json;

use super::{exit, print_json, Api, Common, Outcome, Output};

#[derive(Clone, Copy)]
pub enum Kind {
    Cancel,
    Terminate,
}

#[derive(clap::Args)]
pub struct StopArgs {
    /// The job's id.
    job_id: String,
    /// Why: it becomes the job's statusReason (default: which command stopped it).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: StopArgs, kind: Kind) -> Outcome {
    let api = Api::new(&args.common)?;
    let (operation, verb) = match kind {
        Kind::Cancel => ("CancelJob", "cancel"),
        Kind::Terminate => ("TerminateJob", "terminate"),
    };
    let reason = args
        .reason
        .clone()
        .unwrap_or_else(|| format!("barge {verb}"));
    // Cancel and Terminate accept an id that does not exist (as AWS does); a person who
    // mistyped one should hear so.
    api.describe_job(&args.job_id)?;
    let answer = api.batch(
        operation,
        &json!({ "jobId": args.job_id, "reason": reason }),
    )?;
    match args.common.output {
        Output::Json => print_json(&answer)?,
        Output::Table => println!("{verb} requested for job {}: {reason}", args.job_id),
    }
    Ok(exit::OK)
}
