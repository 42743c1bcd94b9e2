//! For the unit tests: a `Backend` over an in-memory state that applies commands with the
//! real core (`barge_core::apply`), without a store or a server.

use std::sync::{Arc, Mutex};

use barge_api::{ApiError, Backend, BoxFuture};
use barge_core::{Changes, Command, Reply, State};

pub struct Memory {
    pub state: Mutex<State>,
    next_id: Mutex<u64>,
}

impl Memory {
    pub fn new() -> Memory {
        Memory {
            state: Mutex::new(State::new(Default::default())),
            next_id: Mutex::new(0),
        }
    }

    /// A state with an UNMANAGED compute environment `ce`, a job queue `q` on it and a job
    /// definition `d` (1 vCPU, 64 MiB): what most page tests start from.
    pub fn with_queue() -> Memory {
        let m = Memory::new();
        m.call(
            "createcomputeenvironment",
            serde_json::json!({"computeEnvironmentName": "ce", "type": "UNMANAGED"}),
        );
        m.call(
            "createjobqueue",
            serde_json::json!({"jobQueueName": "q", "priority": 1, "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "ce"}]}),
        );
        m.call(
            "registerjobdefinition",
            serde_json::json!({"jobDefinitionName": "d", "type": "container", "containerProperties": {"image": "busybox",
                   "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]}}),
        );
        m
    }

    /// Runs one API operation and returns its answer's JSON (panics on an error answer).
    pub fn call(&self, op: &str, body: serde_json::Value) -> serde_json::Value {
        let answer = futures_lite(barge_api::batch_operation(
            self,
            op,
            &serde_json::to_vec(&body).unwrap(),
        ));
        crate::pages::job::answer_json(answer).unwrap_or_else(|e| panic!("{op}: {e}"))
    }
}

/// Polls a future that never waits (the memory backend answers at once).
pub fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

impl Backend for Memory {
    fn snapshot(&self) -> Arc<State> {
        Arc::new(self.state.lock().unwrap().clone())
    }
    fn execute(&self, command: Command) -> BoxFuture<'_, Result<Reply, ApiError>> {
        let now = self.now_ms();
        let mut state = self.state.lock().unwrap();
        let result = barge_core::apply(&mut state, command, now, &mut Changes::default())
            .map_err(ApiError::from);
        Box::pin(async move { result })
    }
    fn new_id(&self) -> String {
        let mut n = self.next_id.lock().unwrap();
        *n += 1;
        format!("00000000-0000-4000-8000-{:012}", *n)
    }
    fn now_ms(&self) -> i64 {
        1_795_000_000_000
    }
}
