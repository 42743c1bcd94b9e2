//! Job lists: one queue's jobs in one status (or all), newest first, optionally only those
//! whose name starts with a prefix, paged with an opaque cursor.
//!
//! A page walks the state's index (jobs per queue and status, or per queue, in submission
//! order) from the cursor and looks at no more than `JOBS_PAGE_SCAN_MAX` entries, so it costs
//! the same in a queue of a hundred jobs or of millions. Counts shown are the index sizes; no
//! count needs a scan, so a filtered list says how far it looked instead of how many match.

use std::fmt::Write;
use std::ops::Bound;
use std::sync::Arc;

use barge_api::Backend;
use barge_core::model::{Job, JobStatus};
use barge_core::state::JobKey;
use barge_core::State;

use crate::html::{esc, page, status_badge, time, url, Nav};
use crate::limits::{JOBS_PAGE_ITEMS, JOBS_PAGE_SCAN_MAX};
use crate::{Response, Session};

/// Where a page starts: the newest jobs, jobs older than a key, or newer than a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    Newest,
    Older(JobKey),
    Newer(JobKey),
}

impl Cursor {
    /// Opaque to the browser: `o` or `n`, then the key as hex.
    pub fn encode(&self) -> String {
        match self {
            Cursor::Newest => String::new(),
            Cursor::Older((seq, id)) => format!("o{}", hex::encode(format!("{seq} {id}"))),
            Cursor::Newer((seq, id)) => format!("n{}", hex::encode(format!("{seq} {id}"))),
        }
    }

    /// None for a cursor this page did not make.
    pub fn decode(s: &str) -> Option<Cursor> {
        if s.is_empty() {
            return Some(Cursor::Newest);
        }
        let (dir, rest) = s.split_at_checked(1)?;
        let text = String::from_utf8(hex::decode(rest).ok()?).ok()?;
        let (seq, id) = text.split_once(' ')?;
        let key = (seq.parse().ok()?, id.to_string());
        match dir {
            "o" => Some(Cursor::Older(key)),
            "n" => Some(Cursor::Newer(key)),
            _ => None,
        }
    }
}

/// One page of a job list.
#[derive(Debug)]
pub struct Page {
    /// Newest first.
    pub jobs: Vec<Arc<Job>>,
    /// Index entries looked at.
    pub scanned: usize,
    /// The scan bound ended the walk before the page was full.
    pub cut_short: bool,
    pub older: Option<Cursor>,
    pub newer: Option<Cursor>,
}

/// An index of jobs, in submission order.
type Set = imbl::OrdSet<JobKey>;

/// Walks one page from `cursor` over `index`: at most `size` jobs whose names start with
/// `prefix`, looking at no more than `scan_max` entries.
pub fn walk(
    state: &State,
    index: Option<&Set>,
    prefix: &str,
    cursor: &Cursor,
    size: usize,
    scan_max: usize,
) -> Page {
    let mut page = Page {
        jobs: Vec::new(),
        scanned: 0,
        cut_short: false,
        older: None,
        newer: None,
    };
    let Some(set) = index else {
        return page;
    };
    let entries: Box<dyn Iterator<Item = &JobKey>> = match cursor {
        Cursor::Newest => Box::new(set.iter().rev()),
        Cursor::Older(k) => Box::new(
            set.range((Bound::Unbounded, Bound::Excluded(k.clone())))
                .rev(),
        ),
        Cursor::Newer(k) => Box::new(set.range((Bound::Excluded(k.clone()), Bound::Unbounded))),
    };
    let (mut lowest, mut highest): (Option<&JobKey>, Option<&JobKey>) = (None, None);
    for key in entries {
        if page.jobs.len() == size {
            break;
        }
        if page.scanned == scan_max {
            page.cut_short = true;
            break;
        }
        page.scanned += 1;
        lowest = Some(lowest.map_or(key, |l| l.min(key)));
        highest = Some(highest.map_or(key, |h| h.max(key)));
        if let Some(job) = state.jobs.get(&key.1) {
            if job.name.starts_with(prefix) {
                page.jobs.push(job.clone());
            }
        }
    }
    if matches!(cursor, Cursor::Newer(_)) {
        page.jobs.reverse();
    }
    // Links only where there is something to go to: one O(log n) look each way.
    if let Some(low) = lowest {
        if set
            .range((Bound::Unbounded, Bound::Excluded(low.clone())))
            .next()
            .is_some()
        {
            page.older = Some(Cursor::Older(low.clone()));
        }
    }
    if let Some(high) = highest {
        if set
            .range((Bound::Excluded(high.clone()), Bound::Unbounded))
            .next()
            .is_some()
        {
            page.newer = Some(Cursor::Newer(high.clone()));
        }
    } else if *cursor != Cursor::Newest {
        page.newer = Some(Cursor::Newest);
    }
    page
}

pub fn list<B: Backend>(
    backend: &B,
    session: &Session,
    queue: &str,
    query: &std::collections::BTreeMap<String, String>,
) -> Response {
    let state = backend.snapshot();
    let status_param = query.get("status").map(String::as_str).unwrap_or("");
    // No status: all of them (the queue's own index).
    let status = JobStatus::parse(status_param);
    let prefix = query.get("prefix").map(String::as_str).unwrap_or("").trim();
    let Some(cursor) = Cursor::decode(query.get("cursor").map(String::as_str).unwrap_or("")) else {
        return super::message(
            400,
            session,
            "Bad cursor",
            "This page link is not one the console made; start again from the first page.",
        );
    };
    if !state.job_queues.contains_key(queue) && state.jobs_of_queue(queue).is_none() {
        return super::message(
            404,
            session,
            "No such job queue",
            &format!("Job queue {queue} does not exist."),
        );
    }
    let index = match status {
        Some(s) => state.jobs_in(queue, s),
        None => state.jobs_of_queue(queue),
    };
    let result = walk(
        &state,
        index,
        prefix,
        &cursor,
        JOBS_PAGE_ITEMS,
        JOBS_PAGE_SCAN_MAX,
    );

    let q = url(queue);
    let link = |status: &str, cursor: &Cursor| {
        let mut href = format!("/console/queues/{q}?status={}", url(status));
        if !prefix.is_empty() {
            let _ = write!(href, "&prefix={}", url(prefix));
        }
        if *cursor != Cursor::Newest {
            let _ = write!(href, "&cursor={}", cursor.encode());
        }
        href
    };
    let mut body = format!(
        "<h1>Job queue {}</h1><p><a class=\"button\" href=\"/console/new/job?queue={q}\">Submit a job to this queue</a></p><nav class=\"tabs\">",
        esc(queue)
    );
    let total: usize = JobStatus::ALL
        .iter()
        .map(|s| state.count_in(queue, *s))
        .sum();
    let _ = write!(
        body,
        "<a href=\"{}\"{}>All ({total})</a>",
        link("", &Cursor::Newest),
        if status.is_none() {
            " class=\"active\""
        } else {
            ""
        }
    );
    for s in JobStatus::ALL {
        let _ = write!(
            body,
            "<a href=\"{}\"{}>{} ({})</a>",
            link(s.as_str(), &Cursor::Newest),
            if status == Some(s) {
                " class=\"active\""
            } else {
                ""
            },
            s.as_str(),
            state.count_in(queue, s)
        );
    }
    let status_str = status.map_or("", |s| s.as_str());
    let _ = write!(
        body,
        "</nav><form class=\"filter\" method=\"get\" action=\"/console/queues/{q}\">\
         <input type=\"hidden\" name=\"status\" value=\"{}\">\
         <label>Name starts with <input type=\"text\" name=\"prefix\" value=\"{}\"></label> \
         <button type=\"submit\">Filter</button></form>",
        esc(status_str),
        esc(prefix)
    );
    body.push_str(
        "<table class=\"jobs\"><thead><tr><th>Name</th><th>Job id</th><th>Status</th>\
         <th>Created</th><th>Started</th><th>Stopped</th><th>Status reason</th></tr></thead><tbody>",
    );
    for job in &result.jobs {
        let reason: String = job
            .status_reason
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(160)
            .collect();
        let _ = write!(
            body,
            "<tr><td><a href=\"/console/jobs/{}\">{}</a>{}</td><td class=\"id\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            url(&job.id),
            esc(&job.name),
            job.array
                .as_ref()
                .map_or(String::new(), |a| format!(" <span class=\"tag\">array of {}</span>", a.size)),
            esc(&job.id),
            status_badge(job.status.as_str()),
            time(Some(job.created_at)),
            time(job.started_at),
            time(job.stopped_at),
            esc(&reason),
        );
    }
    if result.jobs.is_empty() {
        body.push_str("<tr><td colspan=\"7\">No jobs on this page.</td></tr>");
    }
    body.push_str("</tbody></table><nav class=\"pager\">");
    if result.cut_short {
        let _ = write!(
            body,
            "<p class=\"note\">Looked at {} jobs without filling the page; Older goes on looking from there.</p>",
            result.scanned
        );
    }
    if let Some(c) = &result.newer {
        let _ = write!(
            body,
            "<a href=\"{}\">Newest</a> <a rel=\"prev\" href=\"{}\">‹ Newer</a> ",
            link(status_str, &Cursor::Newest),
            link(status_str, c)
        );
    }
    if let Some(c) = &result.older {
        let _ = write!(
            body,
            "<a rel=\"next\" href=\"{}\">Older ›</a>",
            link(status_str, c)
        );
    }
    body.push_str("</nav>");
    Response::html(
        200,
        page(&format!("Queue {queue}"), Nav::Overview, session, &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Memory;
    use barge_api::Backend;
    use serde_json::json;

    /// A queue with `n` jobs: one submitted through the API, the rest copies of it put
    /// straight into the state (as a load would), named job-0 … job-(n-1).
    fn queue_with(n: u64) -> Memory {
        let m = Memory::new();
        m.call(
            "createcomputeenvironment",
            json!({"computeEnvironmentName": "ce", "type": "MANAGED",
                   "computeResources": {"type": "EC2", "maxvCpus": 4}}),
        );
        m.call(
            "createjobqueue",
            json!({"jobQueueName": "q", "priority": 1,
                   "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "ce"}]}),
        );
        m.call(
            "registerjobdefinition",
            json!({"jobDefinitionName": "d", "type": "container",
                   "containerProperties": {"image": "busybox", "command": ["true"],
                   "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]}}),
        );
        let first = m.call(
            "submitjob",
            json!({"jobName": "job-0", "jobQueue": "q", "jobDefinition": "d"}),
        );
        let mut state = m.state.lock().unwrap();
        let template = (**state.job(first["jobId"].as_str().unwrap()).unwrap()).clone();
        for i in 1..n {
            let mut job = template.clone();
            job.id = format!("job-id-{i}");
            job.name = format!("job-{i}");
            job.seq = template.seq + i;
            state.put_job(job);
        }
        drop(state);
        m
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        for c in [
            Cursor::Newest,
            Cursor::Older((7, "a b:1".into())),
            Cursor::Newer((0, "x".into())),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        assert_eq!(Cursor::decode("zz"), None);
        assert_eq!(Cursor::decode("o00"), None);
        assert_eq!(Cursor::decode("x3120"), None);
    }

    #[test]
    fn paging_visits_every_job_once_both_ways() {
        let m = queue_with(230);
        let state = m.snapshot();
        let index = state.jobs_in("q", JobStatus::Submitted);
        assert_eq!(index.map(|s| s.len()), Some(230));
        let mut seen = Vec::new();
        let mut cursor = Cursor::Newest;
        let mut pages = Vec::new();
        loop {
            let page = walk(&state, index, "", &cursor, 50, JOBS_PAGE_SCAN_MAX);
            assert!(page.scanned <= 50);
            seen.extend(page.jobs.iter().map(|j| j.name.clone()));
            pages.push(cursor.clone());
            match page.older {
                Some(c) => cursor = c,
                None => break,
            }
        }
        assert_eq!(pages.len(), 5);
        let expected: Vec<String> = (0..230).rev().map(|i| format!("job-{i}")).collect();
        assert_eq!(seen, expected);
        // Back up from the last page: Newer gives the page before it, in the same order.
        let last = walk(
            &state,
            index,
            "",
            pages.last().unwrap(),
            50,
            JOBS_PAGE_SCAN_MAX,
        );
        let newer = walk(
            &state,
            index,
            "",
            &last.newer.unwrap(),
            50,
            JOBS_PAGE_SCAN_MAX,
        );
        let names: Vec<&str> = newer.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"job-79"));
        assert_eq!(names.last(), Some(&"job-30"));
        // A prefix keeps only the names that start with it.
        let p = walk(
            &state,
            index,
            "job-22",
            &Cursor::Newest,
            50,
            JOBS_PAGE_SCAN_MAX,
        );
        let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "job-229", "job-228", "job-227", "job-226", "job-225", "job-224", "job-223",
                "job-222", "job-221", "job-220", "job-22"
            ]
        );
    }

    /// A job list at a million jobs is an index walk bounded by the page, wherever the
    /// cursor is, and a filtered one by JOBS_PAGE_SCAN_MAX: it renders in the same time as
    /// in a small queue by construction (counted here, not timed).
    #[test]
    fn a_million_jobs_page_by_the_index() {
        let m = queue_with(1_000_000);
        let state = m.snapshot();
        let index = state.jobs_in("q", JobStatus::Submitted);
        let first = walk(
            &state,
            index,
            "",
            &Cursor::Newest,
            JOBS_PAGE_ITEMS,
            JOBS_PAGE_SCAN_MAX,
        );
        assert_eq!(first.scanned, JOBS_PAGE_ITEMS);
        assert_eq!(first.jobs[0].name, "job-999999");
        let middle = Cursor::Older((
            state.job("job-id-500000").unwrap().seq,
            "job-id-500000".into(),
        ));
        let page = walk(
            &state,
            index,
            "",
            &middle,
            JOBS_PAGE_ITEMS,
            JOBS_PAGE_SCAN_MAX,
        );
        assert_eq!(page.scanned, JOBS_PAGE_ITEMS);
        assert_eq!(page.jobs[0].name, "job-499999");
        let none = walk(
            &state,
            index,
            "nothing-",
            &Cursor::Newest,
            JOBS_PAGE_ITEMS,
            JOBS_PAGE_SCAN_MAX,
        );
        assert!(none.jobs.is_empty() && none.cut_short);
        assert_eq!(none.scanned, JOBS_PAGE_SCAN_MAX);
        assert!(none.older.is_some());
        // The page itself, as the browser gets it.
        let session = crate::auth::Auth::new(Default::default(), false)
            .start("", 0)
            .0;
        let mut query = std::collections::BTreeMap::new();
        query.insert("status".to_string(), "SUBMITTED".to_string());
        let html = String::from_utf8(list(&m, &session, "q", &query).body).unwrap();
        assert_eq!(
            html.matches("<tr><td><a href=\"/console/jobs/").count(),
            JOBS_PAGE_ITEMS
        );
        assert!(html.contains("SUBMITTED (1000000)"));
    }
}
