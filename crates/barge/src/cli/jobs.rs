//! `barge jobs`: ListJobs over one queue or all, every status unless told, newest first.

use serde_json::{json, Value};

use super::table::{clip, time, Table};
use super::{exit, fail, print_json, Api, Common, Failure, Outcome, Output, STATUSES};

/// ListJobs' page size with a filter (its largest).
const LIST_PAGE_ITEMS: u64 = 100;
/// DescribeJobQueues' page size.
const QUEUE_PAGE_ITEMS: u64 = 100;
/// The most ListJobs pages read per queue: a `--status` that matches few jobs of a huge
/// queue stops here (100,000 jobs scanned) instead of reading it all.
const LIST_PAGES_PER_QUEUE_MAX: usize = 1_000;
/// The most queues listed: DescribeJobQueues pages read.
const QUEUE_PAGES_MAX: usize = 100;
/// Table cells of free text (the reason) are cut to this many characters.
pub const REASON_CHARS_MAX: usize = 60;

#[derive(clap::Args)]
pub struct JobsArgs {
    /// Only this job queue (name or ARN); default: every queue.
    #[arg(long)]
    job_queue: Option<String>,
    /// Only jobs in these statuses (repeatable, or comma-separated); default: every status.
    #[arg(long, value_delimiter = ',', value_parser = status)]
    status: Vec<String>,
    /// Only jobs whose name starts with this (case-insensitive, as ListJobs' JOB_NAME).
    #[arg(long)]
    name: Option<String>,
    /// At most this many jobs, the newest.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    limit: u64,
    #[command(flatten)]
    common: Common,
}

fn status(s: &str) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    if STATUSES.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!("{s:?} is not one of {}", STATUSES.join(", ")))
    }
}

pub fn run(args: JobsArgs) -> Outcome {
    let api = Api::new(&args.common)?;
    let queues = match &args.job_queue {
        Some(q) => vec![q.clone()],
        None => all_queues(&api)?,
    };
    let limit = args.limit as usize;
    let mut jobs: Vec<Value> = Vec::new();
    for queue in &queues {
        jobs.extend(list_queue(&api, queue, &args, limit)?);
    }
    // Newest first across queues; a stable sort keeps each queue's own order on ties.
    jobs.sort_by_key(|j| std::cmp::Reverse(j["createdAt"].as_i64().unwrap_or(0)));
    jobs.truncate(limit);
    match args.common.output {
        Output::Json => print_json(&json!({ "jobSummaryList": jobs }))?,
        Output::Table => print!("{}", render(&jobs)),
    }
    Ok(exit::OK)
}

/// Every job queue's name.
fn all_queues(api: &Api) -> Result<Vec<String>, Failure> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..QUEUE_PAGES_MAX {
        let mut body = json!({ "maxResults": QUEUE_PAGE_ITEMS });
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let page = api.batch("DescribeJobQueues", &body)?;
        for q in page["jobQueues"].as_array().into_iter().flatten() {
            if let Some(name) = q["jobQueueName"].as_str() {
                names.push(name.to_string());
            }
        }
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(names),
        }
    }
    Err(fail(format!(
        "more than {} job queues; pass --job-queue",
        QUEUE_PAGES_MAX as u64 * QUEUE_PAGE_ITEMS
    )))
}

/// Up to `limit` of a queue's jobs that pass the flags, newest first. A filter makes ListJobs
/// answer every status newest first: the name prefix when given, else "created after 0".
fn list_queue(
    api: &Api,
    queue: &str,
    args: &JobsArgs,
    limit: usize,
) -> Result<Vec<Value>, Failure> {
    let filter = match &args.name {
        Some(prefix) => json!({ "name": "JOB_NAME", "values": [format!("{prefix}*")] }),
        None => json!({ "name": "AFTER_CREATED_AT", "values": ["0"] }),
    };
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..LIST_PAGES_PER_QUEUE_MAX {
        let mut body = json!({
            "jobQueue": queue,
            "filters": [filter],
            "maxResults": LIST_PAGE_ITEMS,
        });
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let page = api.batch("ListJobs", &body)?;
        for job in page["jobSummaryList"].as_array().into_iter().flatten() {
            let status = job["status"].as_str().unwrap_or("");
            if args.status.is_empty() || args.status.iter().any(|s| s == status) {
                let mut job = job.clone();
                job["jobQueue"] = json!(queue);
                out.push(job);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
    eprintln!(
        "barge jobs: stopped after the newest {} jobs of {queue}",
        LIST_PAGES_PER_QUEUE_MAX as u64 * LIST_PAGE_ITEMS
    );
    Ok(out)
}

/// The table: one row per job summary.
pub fn render(jobs: &[Value]) -> String {
    let mut t = Table::new(&[
        "JOB ID", "NAME", "QUEUE", "STATUS", "CREATED", "STARTED", "STOPPED", "REASON",
    ]);
    for j in jobs {
        let text = |k: &str| j[k].as_str().unwrap_or("").to_string();
        let mut status = text("status");
        if let Some(size) = j["arrayProperties"]["size"].as_u64() {
            status = format!("{status} (array of {size})");
        }
        let reason = j["statusReason"]
            .as_str()
            .or_else(|| j["container"]["reason"].as_str())
            .unwrap_or("");
        t.row(vec![
            text("jobId"),
            text("jobName"),
            text("jobQueue"),
            status,
            time(j["createdAt"].as_i64()),
            time(j["startedAt"].as_i64()),
            time(j["stoppedAt"].as_i64()),
            clip(reason, REASON_CHARS_MAX),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_checked_and_upper_cased() {
        assert_eq!(status("running").unwrap(), "RUNNING");
        assert!(status("DONE").unwrap_err().contains("SUCCEEDED"));
    }

    #[test]
    fn a_row_per_job_with_dashes_for_times_not_yet_come() {
        let jobs = [json!({
            "jobId": "j-1", "jobName": "train", "jobQueue": "q", "status": "RUNNABLE",
            "createdAt": 0, "arrayProperties": {"size": 3}
        })];
        let out = render(&jobs);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("JOB ID  NAME   QUEUE  STATUS"));
        assert_eq!(
            lines[1],
            "j-1     train  q      RUNNABLE (array of 3)  1970-01-01T00:00:00Z  -        -"
        );
    }
}
