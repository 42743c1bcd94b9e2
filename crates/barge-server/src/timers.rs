//! Time-driven changes: timeouts. Checked against the snapshot once a second; a command is sent
//! to the writer only when something is due.

use std::sync::Arc;
use std::time::Duration;

use barge_core::apply::due_timeouts;
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
        if !due_timeouts(&shared.published.load(), now_ms()).is_empty() {
            if let Err(e) = shared.execute(Command::EnforceTimeouts).await {
                tracing::warn!("timeouts not enforced this round: {e}");
            }
        }
    }
}
