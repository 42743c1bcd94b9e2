//! The scheduler loop: whenever something that matters changed (or once a second), plan from
//! the latest snapshot and hand the plan to the writer, which re-checks and commits it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use barge_core::{scheduler, Command, Reply};
use tokio::sync::Notify;

use crate::limits::SCHEDULER_IDLE_PASS_MS;
use crate::metrics;
use crate::shared::Shared;

pub async fn run(shared: Shared, wake: Arc<Notify>, shutdown: Arc<Notify>) {
    loop {
        let started = Instant::now();
        let plan = scheduler::plan(&shared.published.load(), &mut || {
            uuid::Uuid::new_v4().to_string()
        });
        if !plan.is_empty() {
            let admitted = !plan.admit.is_empty();
            let proposed = metrics::Proposed::of(&plan);
            let result = shared.execute(Command::SchedulerPass(plan)).await;
            let placed = match &result {
                Ok(Reply::Placed { placed }) => Some(*placed),
                _ => None,
            };
            metrics::observe_pass(
                started.elapsed(),
                &proposed,
                placed,
                &shared.published.load(),
            );
            match result {
                // Progress was made and more may be possible (passes are bounded, capacity
                // may have freed meanwhile): look again at once. A pass that changed nothing
                // waits for the next wake-up instead of spinning.
                Ok(Reply::Placed { placed }) if placed > 0 || admitted => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!("scheduling pass not committed: {e}"),
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(SCHEDULER_IDLE_PASS_MS)) => {}
            _ = shutdown.notified() => return,
        }
    }
}
