//! The single task that hands reports to the control plane. Attempts do not call the control
//! plane themselves: funnelling every report through one task lets many attempts share one
//! durable commit, and keeps each attempt's reports in the order they were queued.

use std::sync::Arc;
use std::time::Duration;

use barge_core::agent::AgentReport;
use tokio::sync::mpsc;

use crate::control::{ControlPlane, ReportError};
use crate::limits::{REPORT_BATCH_MAX, REPORT_RETRY_DELAY_INITIAL_MS, REPORT_RETRY_DELAY_MAX_MS};

/// Sends everything that arrives on `queue`, in batches of what is already waiting, until every
/// sender is gone.
pub(crate) async fn run(control: Arc<dyn ControlPlane>, mut queue: mpsc::Receiver<AgentReport>) {
    let mut batch = Vec::with_capacity(REPORT_BATCH_MAX);
    let mut control_closed = false;
    while queue.recv_many(&mut batch, REPORT_BATCH_MAX).await > 0 {
        // Once the control plane is closed, keep draining so that attempts never block on a
        // full queue while they are being stopped.
        if !control_closed {
            control_closed = !deliver(control.as_ref(), &batch).await;
        }
        batch.clear();
    }
}

/// Retries until the batch is durable. Returns false if the control plane is closed for good.
async fn deliver(control: &dyn ControlPlane, batch: &[AgentReport]) -> bool {
    let mut delay_ms = REPORT_RETRY_DELAY_INITIAL_MS;
    loop {
        // The trait takes the reports by value so the in-process control plane can move them
        // into the writer; a copy is kept for the retry.
        match control.report(batch.to_vec()).await {
            Ok(()) => return true,
            Err(ReportError::Closed) => {
                tracing::warn!(
                    dropped = batch.len(),
                    "control plane closed; reports dropped"
                );
                return false;
            }
            Err(err @ ReportError::Rejected(_)) => {
                tracing::warn!(%err, dropped = batch.len(), "reports dropped");
                return true;
            }
            Err(err @ ReportError::Unavailable(_)) => {
                tracing::warn!(%err, retry_in_ms = delay_ms, "report failed");
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                delay_ms = (delay_ms * 2).min(REPORT_RETRY_DELAY_MAX_MS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Calls(Mutex<Vec<Vec<AgentReport>>>);

    impl ControlPlane for Calls {
        fn report(
            &self,
            reports: Vec<AgentReport>,
        ) -> Pin<Box<dyn Future<Output = Result<(), ReportError>> + Send + '_>> {
            self.0.lock().unwrap().push(reports);
            Box::pin(async { Ok(()) })
        }
    }

    fn running(n: usize) -> AgentReport {
        AgentReport::Running {
            job_id: "j".into(),
            attempt_id: format!("a{n}"),
            at_ms: 0,
        }
    }

    #[tokio::test]
    async fn waiting_reports_share_one_call_up_to_the_batch_max() {
        let total = REPORT_BATCH_MAX + 5;
        let (tx, rx) = mpsc::channel(total);
        for n in 0..total {
            tx.send(running(n)).await.unwrap();
        }
        drop(tx);
        let calls = Arc::new(Calls::default());
        run(calls.clone(), rx).await;

        let calls = calls.0.lock().unwrap();
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![REPORT_BATCH_MAX, 5]);
        let sent: Vec<AgentReport> = calls.iter().flatten().cloned().collect();
        assert_eq!(sent, (0..total).map(running).collect::<Vec<_>>());
    }
}
