//! `barge why JOB`: Barge's own diagnosis (`GET /barge/v1/jobs/{id}/why`) of where a job
//! stands, why, how many jobs are ahead of it and what would move it on.

use super::{exit, percent_encode_segment, print_json, Api, Common, Outcome, Output};

#[derive(clap::Args)]
pub struct WhyArgs {
    /// The job's id.
    job_id: String,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: WhyArgs) -> Outcome {
    let api = Api::new(&args.common)?;
    let path = format!(
        "/barge/v1/jobs/{}/why",
        percent_encode_segment(&args.job_id)
    );
    let value = api.get(&path)?;
    if args.common.output == Output::Json {
        print_json(&value)?;
        return Ok(exit::OK);
    }
    let text = |k: &str| value[k].as_str().unwrap_or("").to_string();
    println!(
        "job {} ({}) in job queue {}: {}",
        text("jobId"),
        text("jobName"),
        text("jobQueue"),
        text("status")
    );
    if let Some(reason) = value["statusReason"].as_str() {
        println!("why: {reason}");
    }
    if let Some(n) = value["jobsAhead"].as_u64() {
        println!(
            "ahead of it: {n} RUNNABLE job{}",
            if n == 1 { "" } else { "s" }
        );
    }
    let steps: Vec<&str> = value["unblock"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    if !steps.is_empty() {
        println!("to move it on:");
        for step in steps {
            println!("  - {step}");
        }
    }
    Ok(exit::OK)
}
