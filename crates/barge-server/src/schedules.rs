//! The firing loop for schedules: once a second it reads the schedules' clock, asks the core
//! which schedules are due on the published snapshot, and sends FireSchedules (with a fresh job
//! id per due schedule) to the writer, which re-checks each one at commit time.
//!
//! The schedules' clock is the wall clock. For tests only, `BARGE_TEST_SCHEDULE_CLOCK_FILE`
//! names a file holding an epoch-millisecond time that replaces it while the file can be read
//! (docs/schedules.md): a test writes a time, and the real loop, command and store fire the
//! schedules due then. Nothing else in the server (timeouts, heartbeats, job timestamps) reads
//! it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use barge_core::limits::SCHEDULE_FIRES_PER_COMMAND_MAX;
use barge_core::schedule::due_schedules;
use barge_core::Command;
use tokio::sync::Notify;

use crate::limits::SCHEDULE_CHECK_MS;
use crate::shared::Shared;
use crate::writer::now_ms;

/// The test-only variable that injects the schedules' clock.
pub const TEST_CLOCK_FILE_ENV: &str = "BARGE_TEST_SCHEDULE_CLOCK_FILE";

fn clock_file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::var_os(TEST_CLOCK_FILE_ENV).map(PathBuf::from);
        if let Some(p) = &path {
            tracing::warn!(
                "{TEST_CLOCK_FILE_ENV} is set: schedules fire by the time in {} (a test clock), not the wall clock",
                p.display()
            );
        }
        path
    })
    .as_ref()
}

/// The schedules' clock, epoch milliseconds.
pub fn clock_ms() -> i64 {
    clock_file()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(now_ms)
}

pub async fn run(shared: Shared, shutdown: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(SCHEDULE_CHECK_MS)) => {}
            _ = shutdown.notified() => return,
        }
        let clock = clock_ms();
        let due = due_schedules(&shared.published.load(), clock);
        for chunk in due.chunks(SCHEDULE_FIRES_PER_COMMAND_MAX) {
            let fires = chunk
                .iter()
                .map(|name| (name.clone(), uuid::Uuid::new_v4().to_string()))
                .collect();
            let command = Command::FireSchedules {
                clock_ms: clock,
                fires,
            };
            if let Err(e) = shared.execute(command).await {
                tracing::warn!("FireSchedules not applied this round: {e}");
            }
        }
    }
}
