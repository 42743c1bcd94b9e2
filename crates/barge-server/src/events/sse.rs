//! `GET /barge/v1/events`: job state change events as a server-sent event stream.
//!
//! Each consumer reads the shared history at its own pace (the stream is pulled by the
//! connection as it drains), so a slow consumer holds one chunk of events and slows nobody;
//! if it falls behind the history, it is told with a `missed` event. Resumable with the
//! standard `Last-Event-ID` header or `?after=ID`; filtered by `?jobQueue=` (name or ARN) and
//! `?jobId=` (a job, or an array job with its children).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use barge_api::ApiError;
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use serde_json::json;
use tokio::sync::{watch, Notify};

use super::{Event, EventBus, Read};
use crate::limits::*;

/// The name of the SSE event that carries a job state change.
pub const EVENT_NAME: &str = "job-state-change";
/// The name of the SSE event that says events were missed.
pub const MISSED_NAME: &str = "missed";

/// Set once the server is stopping: streams end, so the graceful shutdown is not held up by
/// consumers that would listen forever.
static CLOSED: AtomicBool = AtomicBool::new(false);
static CLOSING: Notify = Notify::const_new();

/// Ends every event stream of this process (at shutdown).
pub fn close_streams() {
    CLOSED.store(true, Ordering::SeqCst);
    CLOSING.notify_waiters();
}

struct Filter {
    queue: Option<String>,
    job_id: Option<String>,
}

impl Filter {
    fn keep(&self, event: &Event) -> bool {
        if let Some(q) = &self.queue {
            if &event.queue != q {
                return false;
            }
        }
        match &self.job_id {
            Some(id) => {
                event.job_id == *id
                    || event
                        .job_id
                        .strip_prefix(id.as_str())
                        .is_some_and(|rest| rest.starts_with(':'))
            }
            None => true,
        }
    }
}

/// A slot among `EVENTS_STREAMS_MAX`, given back when the stream ends.
struct Slot(Arc<EventBus>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Consumer {
    slot: Slot,
    cursor: u64,
    filter: Filter,
    latest: watch::Receiver<u64>,
    /// Said before anything else (a resume from another boot).
    notice: Option<String>,
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// Where a resumed stream starts: `BOOT-SEQ`.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (boot, seq) = id.trim().split_once('-')?;
    Some((boot.parse().ok()?, seq.parse().ok()?))
}

pub fn stream(bus: &Arc<EventBus>, headers: &HeaderMap, uri: &Uri) -> Result<Response, ApiError> {
    // The header wins: a browser's EventSource reconnects to the same URL (with its ?after=)
    // and says in the header how far it got.
    let (field, after) = match headers.get("last-event-id") {
        Some(v) => (
            "the Last-Event-ID header",
            Some(v.to_str().unwrap_or("?").to_string()),
        ),
        None => ("the after parameter", query_param(uri, "after")),
    };
    bus.want();
    let latest = bus.latest();
    let (cursor, notice) = match after.filter(|a| !a.trim().is_empty()) {
        None => (latest, None),
        Some(id) => match parse_id(&id) {
            None => {
                return Err(ApiError::client(format!(
                "{field} must be an event id as the stream sent it (BOOT-SEQ, like {}), not {id:?}",
                bus.id(1)
            )))
            }
            Some((boot, seq)) if boot == bus.boot => {
                if seq > latest {
                    return Err(ApiError::client(format!(
                        "{field} names event {id}, which this server has not sent yet (the latest is {})",
                        bus.id(latest)
                    )));
                }
                (seq, None)
            }
            Some(_) => (0, Some(restarted(bus, &id))),
        },
    };
    let queue = query_param(uri, "jobQueue").map(|q| match q.rsplit_once("job-queue/") {
        Some((_, name)) => name.to_string(),
        None => q,
    });
    let filter = Filter {
        queue,
        job_id: query_param(uri, "jobId"),
    };
    if bus.streams.fetch_add(1, Ordering::SeqCst) >= EVENTS_STREAMS_MAX {
        bus.streams.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError {
            status: 503,
            code: "ServerException",
            message: format!(
                "{EVENTS_STREAMS_MAX} event streams are open, the most this server serves; retry later"
            ),
        });
    }
    let consumer = Consumer {
        slot: Slot(bus.clone()),
        cursor,
        filter,
        latest: bus.subscribe(),
        notice: Some(format!(
            ": job state change events of barge boot {}\nretry: 1000\n\n{}",
            bus.boot,
            notice.unwrap_or_default()
        )),
    };
    let body = Body::from_stream(futures_util::stream::unfold(consumer, next_chunk));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    // Nginx and its kind would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn restarted(bus: &EventBus, their_id: &str) -> String {
    let data = json!({
        "reason": "restarted",
        "lastEventId": their_id,
        "message": format!("{their_id} is an event of an earlier start of the server (this one is boot {}); events after it were not kept across the restart. The stream goes on from the first event of this start; re-read the jobs you follow (DescribeJobs) to catch up.", bus.boot),
    });
    format!("id: {}\nevent: {MISSED_NAME}\ndata: {data}\n\n", bus.id(0))
}

fn missed(bus: &EventBus, first: u64, last: u64) -> String {
    let data = json!({
        "reason": "notHeld",
        "firstMissedId": bus.id(first),
        "lastMissedId": bus.id(last),
        "missedEvents": last - first + 1,
        "message": format!("events {} to {} are no longer held (the server keeps its latest events in a bounded history) or were dropped under load; re-read the jobs you follow (DescribeJobs) to catch up", bus.id(first), bus.id(last)),
    });
    format!(
        "id: {}\nevent: {MISSED_NAME}\ndata: {data}\n\n",
        bus.id(last)
    )
}

fn render(bus: &EventBus, read: &Read) -> String {
    let mut out = String::new();
    if let Some((first, last)) = read.missed {
        out.push_str(&missed(bus, first, last));
    }
    for e in &read.events {
        out.push_str(&format!(
            "id: {}\nevent: {EVENT_NAME}\ndata: {}\n\n",
            bus.id(e.seq),
            e.json
        ));
    }
    out
}

/// The next piece of the stream: events, a `missed` notice, or a heartbeat comment; None once
/// the server stops.
async fn next_chunk(mut c: Consumer) -> Option<(Result<Bytes, Infallible>, Consumer)> {
    if let Some(notice) = c.notice.take() {
        return Some((Ok(Bytes::from(notice)), c));
    }
    loop {
        let closing = CLOSING.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        if CLOSED.load(Ordering::SeqCst) {
            return None;
        }
        c.latest.borrow_and_update();
        let bus = c.slot.0.clone();
        let (read, next) = bus.read_after(c.cursor, EVENTS_STREAM_CHUNK_EVENTS_MAX, |e| {
            c.filter.keep(e)
        });
        c.cursor = next;
        if read.missed.is_some() || !read.events.is_empty() {
            return Some((Ok(Bytes::from(render(&bus, &read))), c));
        }
        if next < *c.latest.borrow() {
            // Everything read was filtered out, and there is more: read on, letting other
            // tasks on this worker run between reads.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            changed = c.latest.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            _ = &mut closing => return None,
            _ = tokio::time::sleep(Duration::from_millis(EVENTS_HEARTBEAT_MS)) => {
                return Some((Ok(Bytes::from_static(b": heartbeat\n\n")), c));
            }
        }
    }
}
