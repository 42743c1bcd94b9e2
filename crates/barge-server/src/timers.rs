//! Time-driven changes: attempt timeouts and the job queues' time-limit actions. Checked against the snapshot once a second; a command is sent
//! to the writer only when something is due.

use std::sync::Arc;
use std::time::Duration;

use barge_core::apply::{due_state_time_limits, due_timeouts};
use barge_core::Command;
use tokio::sync::Notify;

use crate::limits::TIMER_CHECK_MS;
use crate::shared::Shared;
use crate::writer::now_ms;

pub async fn run(shared: Shared, shutdown: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(TIMER_CHECK_MS)) => {}
            _ = shutdown.notified() => return,
        }
        let due = {
            let state = shared.published.load();
            let now = now_ms();
            [
                (!due_timeouts(&state, now).is_empty()).then_some(Command::EnforceTimeouts),
                (!due_state_time_limits(&state, now).is_empty())
                    .then_some(Command::EnforceStateTimeLimits),
            ]
        };
        for command in due.into_iter().flatten() {
            let name = command.name();
            if let Err(e) = shared.execute(command).await {
                tracing::warn!("{name} not applied this round: {e}");
            }
        }
    }
}
