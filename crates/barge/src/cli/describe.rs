//! `barge describe JOB…`: DescribeJobs, as a readable summary per job (or the DescribeJobs
//! object itself with `--output json`).

use serde_json::{json, Value};

use super::table::{duration, time};
use super::{exit, fail, print_json, Api, Common, Outcome, Output, STATUSES};

/// DescribeJobs' most ids per call (AWS: 100).
const DESCRIBE_IDS_MAX: usize = 100;

#[derive(clap::Args)]
pub struct DescribeArgs {
    /// The jobs' ids (up to 100).
    #[arg(required = true, num_args = 1..=DESCRIBE_IDS_MAX)]
    job_ids: Vec<String>,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: DescribeArgs) -> Outcome {
    let api = Api::new(&args.common)?;
    let answer = api.batch("DescribeJobs", &json!({ "jobs": args.job_ids }))?;
    let jobs = answer["jobs"].as_array().cloned().unwrap_or_default();
    match args.common.output {
        Output::Json => print_json(&answer)?,
        Output::Table => {
            let text: Vec<String> = jobs.iter().map(summary).collect();
            print!("{}", text.join("\n"));
        }
    }
    let missing: Vec<&str> = args
        .job_ids
        .iter()
        .filter(|id| {
            !jobs
                .iter()
                .any(|j| j["jobId"] == id.as_str() || j["jobArn"] == id.as_str())
        })
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(exit::OK)
    } else {
        Err(fail(match missing.as_slice() {
            [one] => format!("job {one} does not exist"),
            many => format!("jobs {} do not exist", many.join(", ")),
        }))
    }
}

/// The last part of an ARN (`job-queue/name` → `name`), or the text as it is.
fn short(arn: &str) -> &str {
    arn.rsplit_once('/').map_or(arn, |(_, name)| name)
}

/// One job, a line per fact, facts it lacks left out.
pub fn summary(job: &Value) -> String {
    let text = |k: &str| job[k].as_str().unwrap_or("");
    let mut out = format!("job {} ({})\n", text("jobId"), text("jobName"));
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("  {:<12}{value}\n", format!("{label}:")));
    };
    let status = match job["statusReason"].as_str() {
        Some(r) => format!("{}: {r}", text("status")),
        None => text("status").to_string(),
    };
    line("status", status);
    line("queue", short(text("jobQueue")).to_string());
    line("definition", short(text("jobDefinition")).to_string());
    line("created", time(job["createdAt"].as_i64()));
    if let Some(started) = job["startedAt"].as_i64() {
        line("started", time(Some(started)));
        if let Some(stopped) = job["stoppedAt"].as_i64() {
            line(
                "stopped",
                format!(
                    "{} (ran {})",
                    time(Some(stopped)),
                    duration(stopped - started)
                ),
            );
        }
    } else if let Some(stopped) = job["stoppedAt"].as_i64() {
        line("stopped", time(Some(stopped)));
    }
    let array = &job["arrayProperties"];
    if let Some(size) = array["size"].as_u64() {
        let counts: Vec<String> = STATUSES
            .iter()
            .filter_map(|s| {
                let n = array["statusSummary"][*s].as_u64().unwrap_or(0);
                (n > 0).then(|| format!("{s} {n}"))
            })
            .collect();
        line("array", format!("{size} children: {}", counts.join(", ")));
    } else if let Some(index) = array["index"].as_u64() {
        line("array index", index.to_string());
    }
    let deps: Vec<String> = job["dependsOn"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| match d["type"].as_str() {
            Some(t) => format!("{} ({t})", d["jobId"].as_str().unwrap_or("?")),
            None => d["jobId"].as_str().unwrap_or("?").to_string(),
        })
        .collect();
    if !deps.is_empty() {
        line("depends on", deps.join(", "));
    }
    let attempts = job["attempts"].as_array().cloned().unwrap_or_default();
    let allowed = job["retryStrategy"]["attempts"].as_u64().unwrap_or(1);
    line("attempts", format!("{} of {allowed}", attempts.len()));
    for (i, a) in attempts.iter().enumerate() {
        let exit_code = a["container"]["exitCode"]
            .as_i64()
            .map_or("exit -".to_string(), |c| format!("exit {c}"));
        let reason = a["statusReason"]
            .as_str()
            .or_else(|| a["container"]["reason"].as_str())
            .unwrap_or("");
        let span = format!(
            "{} .. {}",
            time(a["startedAt"].as_i64()),
            time(a["stoppedAt"].as_i64())
        );
        let mut row = format!("    #{}  {exit_code}  {span}", i + 1);
        if !reason.is_empty() {
            row.push_str(&format!("  {reason}"));
        }
        out.push_str(&row);
        out.push('\n');
    }
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("  {:<12}{value}\n", format!("{label}:")));
    };
    if let Some(code) = job["container"]["exitCode"].as_i64() {
        line("exit code", code.to_string());
    }
    if let Some(reason) = job["container"]["reason"].as_str() {
        line("reason", reason.to_string());
    }
    if let Some(stream) = job["container"]["logStreamName"].as_str() {
        line("log stream", stream.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_retried_job_reads_well() {
        let job = json!({
            "jobId": "j", "jobName": "n", "status": "FAILED",
            "statusReason": "Essential container in task exited",
            "jobQueue": "arn:aws:batch:us-east-1:0:job-queue/q",
            "jobDefinition": "arn:aws:batch:us-east-1:0:job-definition/d:2",
            "createdAt": 0, "startedAt": 1_000, "stoppedAt": 5_000,
            "retryStrategy": {"attempts": 2},
            "dependsOn": [{"jobId": "a", "type": "SEQUENTIAL"}, {"jobId": "b"}],
            "attempts": [
                {"container": {"exitCode": 1}, "startedAt": 1_000, "stoppedAt": 2_000,
                 "statusReason": "Essential container in task exited"},
                {"container": {"exitCode": 3}, "startedAt": 3_000, "stoppedAt": 5_000}
            ],
            "container": {"exitCode": 3, "logStreamName": "d/default/x"}
        });
        assert_eq!(
            summary(&job),
            "job j (n)\n\
             \x20 status:     FAILED: Essential container in task exited\n\
             \x20 queue:      q\n\
             \x20 definition: d:2\n\
             \x20 created:    1970-01-01T00:00:00Z\n\
             \x20 started:    1970-01-01T00:00:01Z\n\
             \x20 stopped:    1970-01-01T00:00:05Z (ran 4s)\n\
             \x20 depends on: a (SEQUENTIAL), b\n\
             \x20 attempts:   2 of 2\n\
             \x20   #1  exit 1  1970-01-01T00:00:01Z .. 1970-01-01T00:00:02Z  Essential container in task exited\n\
             \x20   #2  exit 3  1970-01-01T00:00:03Z .. 1970-01-01T00:00:05Z\n\
             \x20 exit code:  3\n\
             \x20 log stream: d/default/x\n"
        );
    }

    #[test]
    fn an_array_parent_shows_its_children_s_counts() {
        let job = json!({
            "jobId": "p", "jobName": "n", "status": "PENDING",
            "arrayProperties": {"size": 3, "statusSummary": {"RUNNING": 1, "SUCCEEDED": 2, "FAILED": 0}}
        });
        assert!(summary(&job).contains("  array:      3 children: RUNNING 1, SUCCEEDED 2\n"));
    }
}
