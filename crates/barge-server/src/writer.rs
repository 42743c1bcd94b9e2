//! The one writer. Every change to Barge's state goes through here: commands are applied to a
//! private copy of the state in batches, the batch is committed to the store in one durable
//! transaction (group commit), and only then is the new state published, the effects run and
//! the callers answered. If the commit fails, the batch is dropped and every caller in it gets a
//! ServerException: nothing is published that is not durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use barge_api::ApiError;
use barge_core::agent::AgentInstruction;
use barge_core::{apply, Changes, Command, Effect, Reply, State};
use barge_store::Store;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::limits::*;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub struct WriteRequest {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Reply, ApiError>>,
}

/// Where agent instructions go once their change is durable. In-process agents register a
/// channel here; instructions for an agent without one are dropped (it will be told again by
/// reconciliation, or declared lost).
#[derive(Default)]
pub struct AgentRouter {
    senders: Mutex<HashMap<String, mpsc::UnboundedSender<AgentInstruction>>>,
    /// Remote agents get no messages: their waiting poll is woken and reads what to do from
    /// the state (`barge_core::apply::reconcile`).
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl AgentRouter {
    pub fn register(&self, agent_id: &str, sender: mpsc::UnboundedSender<AgentInstruction>) {
        self.senders
            .lock()
            .expect("agent router")
            .insert(agent_id.to_string(), sender);
    }
    pub fn unregister(&self, agent_id: &str) {
        self.senders.lock().expect("agent router").remove(agent_id);
    }
    /// What a remote agent's poll waits on.
    pub fn waker(&self, agent_id: &str) -> Arc<Notify> {
        self.wakers
            .lock()
            .expect("agent router")
            .entry(agent_id.to_string())
            .or_default()
            .clone()
    }
    pub fn forget_waker(&self, agent_id: &str) {
        self.wakers.lock().expect("agent router").remove(agent_id);
    }
    fn deliver(&self, effects: Vec<Effect>) {
        let senders = self.senders.lock().expect("agent router");
        let wakers = self.wakers.lock().expect("agent router");
        for effect in effects {
            let Effect::Agent {
                agent_id,
                instruction,
            } = effect;
            if let Some(tx) = senders.get(&agent_id) {
                let _ = tx.send(instruction);
            } else if let Some(wake) = wakers.get(&agent_id) {
                wake.notify_one();
            }
        }
    }
}

/// Applies one command. A panic in the core is a Barge bug: it must cost that one command (a
/// ServerException, nothing changed), never the writer and with it the whole server.
/// `before` is a clone of `state` (O(1)), kept by the caller to find what the command moved.
fn apply_guarded(
    state: &mut State,
    before: &State,
    command: Command,
    now: i64,
    changes: &mut Changes,
) -> Result<Reply, ApiError> {
    let mark = changes.mark();
    let what = command.name();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        apply(state, command, now, changes)
    })) {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => {
            *state = before.clone();
            changes.rollback(mark);
            tracing::error!("the core panicked applying {what}; the command was refused");
            Err(ApiError::server("Barge hit an internal error applying this request; nothing was changed. Please report it."))
        }
    }
}

/// Runs the writer loop on the current (dedicated) thread until every sender is dropped.
pub fn run_writer(
    mut store: Store,
    published: Arc<ArcSwap<State>>,
    mut requests: mpsc::Receiver<WriteRequest>,
    router: Arc<AgentRouter>,
    schedule: Arc<Notify>,
    mut events: crate::events::Sink,
) {
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(WRITER_BATCH_COMMANDS_MAX);
    while let Some(first) = requests.blocking_recv() {
        batch.push(first);
        while batch.len() < WRITER_BATCH_COMMANDS_MAX {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut state: State = (**published.load()).clone();
        let mut changes = Changes::default();
        let now = now_ms();
        let mut results = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        // Per command that moved jobs, the state right after it: the events' job details.
        let mut moved = Vec::new();
        for req in batch.drain(..) {
            let (before, mark) = (state.clone(), changes.dirty.len());
            let result = apply_guarded(&mut state, &before, req.command, now, &mut changes);
            // Only the jobs this command dirtied are compared (a refused command dirtied none).
            if events.wanted() && result.is_ok() && changes.dirty.len() > mark {
                let transitions =
                    barge_core::events::transitions(&before, &state, &changes.dirty[mark..]);
                if !transitions.is_empty() {
                    moved.push((state.clone(), transitions));
                }
            }
            results.push(result);
            replies.push(req.reply);
        }
        let durable = if changes.dirty.is_empty() && changes.log_events.is_empty() {
            Ok(())
        } else {
            let started = std::time::Instant::now();
            let result = store.commit(&state, &changes);
            let took = started.elapsed();
            crate::metrics::observe_commit(
                took,
                replies.len(),
                changes.dirty.len(),
                result.is_ok(),
            );
            result
        };
        match durable {
            Ok(()) => {
                published.store(Arc::new(state));
                router.deliver(changes.effects);
                // Durable now: the events may be told. Never waits.
                events.send(now, moved);
                if changes.schedule {
                    schedule.notify_one();
                }
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e @ barge_store::StoreError::Fenced { .. }) => {
                // Another server leads now. This process's state runs ahead of nothing it may
                // write, and the scheduler and agents here act on it: stop at once (fail-stop),
                // so the new leader is the only one deciding. The callers get no answer and
                // retry, against the new leader.
                eprintln!("barge: {e}; exiting");
                std::process::exit(crate::EXIT_DEPOSED);
            }
            Err(e) => {
                tracing::error!(
                    "commit failed, batch of {} commands dropped: {e}",
                    replies.len()
                );
                for reply in replies {
                    let _ = reply.send(Err(ApiError::server(format!(
                        "the change could not be stored ({e}); nothing was changed, retry later"
                    ))));
                }
            }
        }
    }
}
