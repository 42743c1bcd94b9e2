//! The handle every part of the server shares: the published state, the way to the writer,
//! and the log reader. Implements the API's `Backend`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use barge_api::{ApiError, Backend, BoxFuture};
use barge_core::{Command, Reply, State};
use barge_store::LogReader;
use tokio::sync::{mpsc, oneshot};

use crate::writer::{now_ms, WriteRequest};

#[derive(Clone)]
pub struct Shared {
    pub published: Arc<ArcSwap<State>>,
    pub writer: mpsc::Sender<WriteRequest>,
    pub logs: LogReader,
    /// Remote agents: their token, heartbeats and waiting polls.
    pub agents: Arc<crate::agents::RemoteAgents>,
    /// Job state change events: the history the event stream reads.
    pub events: Arc<crate::events::EventBus>,
}

impl Shared {
    /// Applies a command through the writer; resolves once it is durable.
    pub async fn execute(&self, command: Command) -> Result<Reply, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteRequest { command, reply })
            .await
            .map_err(|_| {
                ApiError::server("Barge is shutting down; retry against a running server")
            })?;
        answer.await.map_err(|_| {
            ApiError::server("Barge is shutting down; retry against a running server")
        })?
    }
}

impl Backend for Shared {
    fn snapshot(&self) -> Arc<State> {
        self.published.load_full()
    }
    fn execute(&self, command: Command) -> BoxFuture<'_, Result<Reply, ApiError>> {
        Box::pin(Shared::execute(self, command))
    }
    fn new_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
    fn now_ms(&self) -> i64 {
        now_ms()
    }
    fn schedule_clock_ms(&self) -> i64 {
        crate::schedules::clock_ms()
    }
}
