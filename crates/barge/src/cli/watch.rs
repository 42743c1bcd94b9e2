//! `barge watch JOB|QUEUE`: live progress. For an array job its children's statusSummary, for
//! a job queue its jobs per status, as bars redrawn in place on a terminal; when stdout is not
//! a terminal, one plain line each time something changed. A job's watch ends when the job
//! does (exit 0 or 4, as `submit --wait`); a queue's when Ctrl-C comes (exit 0).

use std::io::{IsTerminal, Write};

use serde_json::{json, Value};

use super::submit::end_code;
use super::table::bar;
use super::{exit, fail, interrupt, is_done, Api, Common, Failure, Outcome, STATUSES};

/// How often the picture is refreshed.
const WATCH_POLL_MS: u64 = 1_000;
/// Cells in a progress bar.
const BAR_CELLS: usize = 30;
/// ListJobs' largest page, for counting a queue's jobs by status.
const COUNT_PAGE_ITEMS: u64 = 1_000;
/// The most pages counted per status: past it the count shows as at least that many.
const COUNT_PAGES_MAX: usize = 100;

#[derive(clap::Args)]
pub struct WatchArgs {
    /// A job's id, or a job queue's name or ARN.
    target: String,
    /// Print the picture once and exit.
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    common: Common,
}

enum Target {
    Job(String),
    Queue(String),
}

/// What is on screen: the lines drawn on a terminal, and the one line printed elsewhere.
struct Frame {
    lines: Vec<String>,
    plain: String,
}

pub fn run(args: WatchArgs) -> Outcome {
    let api = Api::new(&args.common)?;
    let target = find(&api, &args.target)?;
    interrupt::catch();
    let tty = std::io::stdout().is_terminal();
    let mut screen = Screen {
        tty,
        drawn: 0,
        last_plain: String::new(),
    };
    let result = watch(&api, &target, &args, &mut screen);
    screen.finish();
    result
}

fn watch(api: &Api, target: &Target, args: &WatchArgs, screen: &mut Screen) -> Outcome {
    loop {
        match target {
            Target::Job(id) => {
                let job = api.describe_job(id)?;
                screen.draw(&job_frame(&job))?;
                let done = job["status"].as_str().is_some_and(is_done);
                if done {
                    return Ok(end_code(&job));
                }
            }
            Target::Queue(name) => screen.draw(&queue_frame(name, &count_queue(api, name)?))?,
        }
        if args.once {
            return Ok(exit::OK);
        }
        if !interrupt::sleep(WATCH_POLL_MS) {
            return Ok(match target {
                Target::Job(_) => exit::INTERRUPTED,
                Target::Queue(_) => exit::OK,
            });
        }
    }
}

/// A job when one has this id, else a job queue of this name or ARN.
fn find(api: &Api, name: &str) -> Result<Target, Failure> {
    let jobs = api.batch("DescribeJobs", &json!({ "jobs": [name] }))?;
    if let Some(job) = jobs["jobs"].as_array().and_then(|j| j.first()) {
        return Ok(Target::Job(
            job["jobId"].as_str().unwrap_or(name).to_string(),
        ));
    }
    let queues = api.batch("DescribeJobQueues", &json!({ "jobQueues": [name] }))?;
    if let Some(q) = queues["jobQueues"].as_array().and_then(|q| q.first()) {
        return Ok(Target::Queue(
            q["jobQueueName"].as_str().unwrap_or(name).to_string(),
        ));
    }
    Err(fail(format!("there is no job or job queue {name}")))
}

/// The queue's jobs per status, in STATUSES' order; a count that hit the bound is marked.
fn count_queue(api: &Api, queue: &str) -> Result<Vec<(u64, bool)>, Failure> {
    let mut counts = Vec::new();
    for status in STATUSES {
        let mut n = 0;
        let mut token: Option<String> = None;
        let mut capped = true;
        for _ in 0..COUNT_PAGES_MAX {
            let mut body =
                json!({ "jobQueue": queue, "jobStatus": status, "maxResults": COUNT_PAGE_ITEMS });
            if let Some(t) = &token {
                body["nextToken"] = json!(t);
            }
            let page = api.batch("ListJobs", &body)?;
            n += page["jobSummaryList"]
                .as_array()
                .map_or(0, |l| l.len() as u64);
            match page["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => {
                    capped = false;
                    break;
                }
            }
        }
        counts.push((n, capped));
    }
    Ok(counts)
}

/// A bar per status: `counts` in STATUSES' order, bars relative to `whole`.
fn bars(counts: &[(u64, bool)], whole: u64) -> Vec<String> {
    STATUSES
        .iter()
        .zip(counts)
        .map(|(status, (n, capped))| {
            let plus = if *capped { "+" } else { "" };
            format!("  {status:<10} {} {n}{plus}", bar(*n, whole, BAR_CELLS))
        })
        .collect()
}

fn plain_counts(counts: &[(u64, bool)]) -> String {
    STATUSES
        .iter()
        .zip(counts)
        .map(|(s, (n, capped))| format!("{s} {n}{}", if *capped { "+" } else { "" }))
        .collect::<Vec<_>>()
        .join("  ")
}

fn job_frame(job: &Value) -> Frame {
    let text = |k: &str| job[k].as_str().unwrap_or("");
    let status = text("status");
    let array = &job["arrayProperties"];
    let Some(size) = array["size"].as_u64() else {
        let line = match job["statusReason"].as_str() {
            Some(r) => format!("job {} ({}): {status}: {r}", text("jobId"), text("jobName")),
            None => format!("job {} ({}): {status}", text("jobId"), text("jobName")),
        };
        return Frame {
            lines: vec![line.clone()],
            plain: line,
        };
    };
    let counts: Vec<(u64, bool)> = STATUSES
        .iter()
        .map(|s| (array["statusSummary"][*s].as_u64().unwrap_or(0), false))
        .collect();
    let done = counts[5].0 + counts[6].0;
    let head = format!(
        "array job {} ({}): {status}, {done} of {size} children done",
        text("jobId"),
        text("jobName")
    );
    let mut lines = vec![head];
    lines.extend(bars(&counts, size));
    Frame {
        lines,
        plain: format!("{}  ({done}/{size} done)", plain_counts(&counts)),
    }
}

fn queue_frame(queue: &str, counts: &[(u64, bool)]) -> Frame {
    let total: u64 = counts.iter().map(|(n, _)| n).sum();
    let mut lines = vec![format!("job queue {queue}: {total} jobs")];
    lines.extend(bars(counts, total));
    Frame {
        lines,
        plain: plain_counts(counts),
    }
}

/// Where frames go: redrawn in place on a terminal, as new lines when they change elsewhere.
struct Screen {
    tty: bool,
    drawn: usize,
    last_plain: String,
}

impl Screen {
    fn draw(&mut self, frame: &Frame) -> Result<(), Failure> {
        let mut out = std::io::stdout().lock();
        if !self.tty {
            if frame.plain != self.last_plain {
                writeln!(out, "{}", frame.plain)?;
                self.last_plain = frame.plain.clone();
            }
            return Ok(out.flush()?);
        }
        let mut text = String::new();
        if self.drawn == 0 {
            // Hide the cursor while redrawing; `finish` shows it again.
            text.push_str("\x1b[?25l");
        } else {
            text.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for line in &frame.lines {
            text.push_str("\x1b[2K");
            text.push_str(line);
            text.push('\n');
        }
        // A shorter frame than the last one clears what is left below it.
        for _ in frame.lines.len()..self.drawn {
            text.push_str("\x1b[2K\n");
        }
        self.drawn = self.drawn.max(frame.lines.len());
        out.write_all(text.as_bytes())?;
        Ok(out.flush()?)
    }

    fn finish(&mut self) {
        if self.tty && self.drawn > 0 {
            print!("\x1b[?25h");
            let _ = std::io::stdout().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_frame_has_a_bar_per_status_and_a_plain_line() {
        let job = json!({
            "jobId": "p", "jobName": "n", "status": "PENDING",
            "arrayProperties": {"size": 4, "statusSummary": {"RUNNING": 1, "SUCCEEDED": 2, "FAILED": 1}}
        });
        let f = job_frame(&job);
        assert_eq!(f.lines[0], "array job p (n): PENDING, 3 of 4 children done");
        assert_eq!(f.lines.len(), 8);
        assert_eq!(
            f.lines[5],
            format!("  RUNNING    {} 1", bar(1, 4, BAR_CELLS))
        );
        assert_eq!(
            f.plain,
            "SUBMITTED 0  PENDING 0  RUNNABLE 0  STARTING 0  RUNNING 1  SUCCEEDED 2  FAILED 1  (3/4 done)"
        );
    }

    #[test]
    fn a_queue_frame_marks_counts_that_hit_the_bound() {
        let mut counts = vec![(0, false); 7];
        counts[2] = (100_000, true);
        let f = queue_frame("q", &counts);
        assert_eq!(f.lines[0], "job queue q: 100000 jobs");
        assert!(f.plain.contains("RUNNABLE 100000+"));
    }
}
