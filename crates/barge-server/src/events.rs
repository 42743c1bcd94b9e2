//! Job state change events (docs/events.md). The writer hands the changes of each committed
//! batch to a renderer thread (never waiting: a full hand-off drops the batch, and consumers
//! are told); the renderer turns each into EventBridge's "Batch Job State Change" JSON with
//! the job as DescribeJobs renders it right after the command, numbers it, keeps it in a
//! bounded history, wakes the event streams (`sse.rs`) and queues it for each webhook
//! (`webhooks.rs`).
//!
//! Events live in memory only. Their ids are `BOOT-SEQ`: BOOT is when this server (this
//! leader) started, in epoch milliseconds, and SEQ counts from 1 within it. A consumer that
//! resumes from an id of another boot, or from one that has left the history, is told so by a
//! `missed` event rather than silently skipped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use barge_core::events::Transition;
use barge_core::State;
use serde_json::json;
use tokio::sync::watch;

use crate::limits::*;

pub mod sse;
pub mod webhooks;

/// The changes of one committed batch: per command that moved jobs, the state right after it.
pub struct Moved {
    pub now_ms: i64,
    /// Changes the writer could not hand over since the last batch it did (the renderer was
    /// behind): their sequence numbers are skipped, so consumers see the gap.
    pub dropped_before: u64,
    pub commands: Vec<(State, Vec<Transition>)>,
}

/// The writer's end: hands batches over without ever waiting.
pub struct Sink {
    tx: SyncSender<Moved>,
    dropped: u64,
    wanted: Arc<AtomicBool>,
}

impl Sink {
    /// Whether anyone can receive events: a webhook is configured, or an event stream has been
    /// opened since this start. Until then nobody can hold an id of this start to resume from,
    /// so the writer skips finding its changes and nothing is rendered.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Called once the batch is durable.
    pub fn send(&mut self, now_ms: i64, commands: Vec<(State, Vec<Transition>)>) {
        if commands.is_empty() {
            return;
        }
        let count: u64 = commands.iter().map(|(_, t)| t.len() as u64).sum();
        let moved = Moved {
            now_ms,
            dropped_before: self.dropped,
            commands,
        };
        match self.tx.try_send(moved) {
            Ok(()) => self.dropped = 0,
            Err(TrySendError::Full(_)) => {
                if self.dropped == 0 {
                    tracing::warn!("job state change events are being dropped: their renderer is {EVENTS_PENDING_BATCHES_MAX} batches behind");
                }
                self.dropped += count;
            }
            // The renderer is gone (shutting down): nobody is left to tell.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// One rendered event.
pub struct Event {
    pub seq: u64,
    pub job_id: String,
    /// The job's queue, by name (for the stream's and the webhooks' filters).
    pub queue: String,
    /// The EventBridge event, JSON on one line.
    pub json: String,
}

struct History {
    events: VecDeque<Arc<Event>>,
    /// The sequence number of the latest event numbered (held, dropped or evicted).
    latest: u64,
}

/// What a consumer reads after its cursor.
pub struct Read {
    /// Events after the cursor that were numbered but are not held (evicted, or dropped
    /// before rendering): (first, last).
    pub missed: Option<(u64, u64)>,
    pub events: Vec<Arc<Event>>,
}

pub struct EventBus {
    /// This boot's id (epoch ms of the start): the first half of every event id.
    pub boot: u64,
    history_max: usize,
    history: Mutex<History>,
    /// The latest sequence number, for streams to wait on.
    latest: watch::Sender<u64>,
    webhooks: Vec<Arc<webhooks::Queue>>,
    /// Event streams open now (bounded by `EVENTS_STREAMS_MAX`).
    streams: std::sync::atomic::AtomicUsize,
    /// See `Sink::wanted`; set for good by the first stream.
    wanted: Arc<AtomicBool>,
}

impl EventBus {
    /// A bus, the writer's sink and the renderer thread's receiving end.
    pub fn new(
        boot: u64,
        history_max: usize,
        webhooks: Vec<Arc<webhooks::Queue>>,
    ) -> (Arc<EventBus>, Sink, Receiver<Moved>) {
        let (tx, rx) = sync_channel(EVENTS_PENDING_BATCHES_MAX);
        let wanted = Arc::new(AtomicBool::new(!webhooks.is_empty()));
        let bus = Arc::new(EventBus {
            boot,
            history_max,
            history: Mutex::new(History {
                events: VecDeque::new(),
                latest: 0,
            }),
            latest: watch::channel(0).0,
            webhooks,
            streams: Default::default(),
            wanted: wanted.clone(),
        });
        let sink = Sink {
            tx,
            dropped: 0,
            wanted,
        };
        (bus, sink, rx)
    }

    pub fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.boot)
    }

    /// From now on, every change is an event (the first stream opens).
    pub fn want(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    pub fn latest(&self) -> u64 {
        self.history.lock().expect("event history").latest
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Up to `max` events after `cursor` that pass `keep`, and what was missed just after the
    /// cursor. The returned cursor is where the next read starts (past events filtered out).
    pub fn read_after(
        &self,
        cursor: u64,
        max: usize,
        keep: impl Fn(&Event) -> bool,
    ) -> (Read, u64) {
        let history = self.history.lock().expect("event history");
        let start = history.events.partition_point(|e| e.seq <= cursor);
        let first_held = history.events.get(start).map(|e| e.seq);
        let missed = match first_held {
            Some(first) if first > cursor + 1 => Some((cursor + 1, first - 1)),
            None if history.latest > cursor => Some((cursor + 1, history.latest)),
            _ => None,
        };
        let mut next = missed.map_or(cursor, |(_, last)| last);
        let mut events = Vec::new();
        // A filter that keeps little must not walk the whole history under the lock: the
        // renderer waits on it. The caller reads on from the returned cursor.
        for (examined, event) in history.events.range(start..).enumerate() {
            // A gap inside (changes dropped before rendering) is reported by the next read.
            if events.len() == max || examined == EVENTS_READ_EXAMINED_MAX || event.seq != next + 1
            {
                break;
            }
            next = event.seq;
            if keep(event) {
                events.push(event.clone());
            }
        }
        (Read { missed, events }, next)
    }

    /// Numbers, keeps and fans out one rendered batch (the renderer thread).
    fn publish(&self, dropped_before: u64, rendered: Vec<(String, String, String)>) {
        let mut fresh = Vec::with_capacity(rendered.len());
        let latest = {
            let mut history = self.history.lock().expect("event history");
            history.latest += dropped_before;
            for (job_id, queue, json) in rendered {
                history.latest += 1;
                let event = Arc::new(Event {
                    seq: history.latest,
                    job_id,
                    queue,
                    json,
                });
                history.events.push_back(event.clone());
                fresh.push(event);
            }
            while history.events.len() > self.history_max {
                history.events.pop_front();
            }
            history.latest
        };
        self.latest.send_replace(latest);
        for hook in &self.webhooks {
            hook.push(&fresh, |seq| self.id(seq));
        }
    }
}

/// The renderer thread: runs until the writer (the only sender) is gone.
pub fn run_renderer(bus: Arc<EventBus>, rx: Receiver<Moved>) {
    while let Ok(moved) = rx.recv() {
        if moved.dropped_before > 0 {
            tracing::warn!(
                "{} job state change events were dropped before rendering",
                moved.dropped_before
            );
        }
        let time = barge_core::time::UtcTime::from_ms(moved.now_ms).iso8601();
        let mut rendered = Vec::new();
        for (state, transitions) in &moved.commands {
            for t in transitions {
                let Some(job) = barge_core::arrays::job_view(state, &t.job_id) else {
                    continue;
                };
                let event = envelope(state, &job, &time);
                rendered.push((t.job_id.clone(), job.queue.clone(), event.to_string()));
            }
        }
        bus.publish(moved.dropped_before, rendered);
    }
}

/// EventBridge's "Batch Job State Change" for `job` as it is in `state`.
fn envelope(state: &State, job: &barge_core::model::Job, time: &str) -> serde_json::Value {
    let identity = &state.identity;
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Batch Job State Change",
        "source": "aws.batch",
        "account": identity.account_id,
        "time": time,
        "region": identity.region,
        "resources": [identity.job_arn(&job.id)],
        "detail": barge_api::render_job_detail(state, job),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(bus: &EventBus, dropped: u64, n: usize) {
        let rendered = (0..n)
            .map(|i| (format!("j{i}"), "q".to_string(), "{}".to_string()))
            .collect();
        bus.publish(dropped, rendered);
    }

    #[test]
    fn reads_resume_after_the_cursor_and_name_what_was_missed() {
        let (bus, _sink, _rx) = EventBus::new(7, 10, Vec::new());
        publish(&bus, 0, 4);
        let (read, next) = bus.read_after(2, 100, |_| true);
        assert_eq!(read.missed, None);
        assert_eq!(
            read.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(next, 4);
        // Eight more: the history holds 10, so 1 and 2 are gone.
        publish(&bus, 0, 8);
        let (read, next) = bus.read_after(0, 3, |_| true);
        assert_eq!(read.missed, Some((1, 2)));
        assert_eq!(
            read.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(next, 5);
        // Changes dropped before rendering leave a gap in the numbers.
        publish(&bus, 5, 1);
        let (read, next) = bus.read_after(12, 100, |_| true);
        assert_eq!(read.missed, Some((13, 17)));
        assert_eq!(read.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [18]);
        assert_eq!(next, 18);
        // A filter skips events but moves the cursor past them; a read stops at a gap, which
        // the next read reports.
        let (read, next) = bus.read_after(10, 100, |e| e.job_id == "j0");
        assert!(read.events.is_empty() && read.missed.is_none());
        assert_eq!(next, 12);
        let (read, next) = bus.read_after(next, 100, |e| e.job_id == "j0");
        assert_eq!(read.missed, Some((13, 17)));
        assert_eq!(read.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [18]);
        assert_eq!(next, 18);
        assert_eq!(bus.id(18), "7-18");
    }
}
