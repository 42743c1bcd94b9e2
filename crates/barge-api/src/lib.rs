//! The AWS Batch (rest-json) and CloudWatch Logs (awsJson1.1) protocols: request shapes,
//! validation into core commands, answers rendered from a state snapshot, and the one mapping
//! of errors to AWS error responses.
//!
//! This crate knows the wire and nothing about how the server is put together: it talks to the
//! rest of Barge through `Backend` (a snapshot to read, a way to execute a command durably).
//! It must never know about HTTP frameworks, SQL, or how commands are committed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use barge_core::limits::*;
use barge_core::{Command, Reply, State};
use serde_json::Value;

mod compute;
mod definitions;
pub mod error;
pub mod extensions;
mod jobs;
pub mod logs;
mod policies;
pub mod schedules;
pub mod sigv4;
mod tags;
pub mod wire;

pub use error::ApiError;
/// The job as DescribeJobs renders it: the `detail` of a job state change event.
pub use jobs::render_job_detail;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the API needs from the server.
pub trait Backend: Send + Sync {
    /// The latest committed state.
    fn snapshot(&self) -> Arc<State>;
    /// Applies a command; resolves once the change is durable.
    fn execute(&self, command: Command) -> BoxFuture<'_, Result<Reply, ApiError>>;
    /// A fresh unique id (UUID v4).
    fn new_id(&self) -> String;
    /// Wall-clock time, epoch milliseconds.
    fn now_ms(&self) -> i64;
    /// The schedules' clock, epoch milliseconds: what decides when schedules fire. The wall
    /// clock unless a test injects another (docs/schedules.md).
    fn schedule_clock_ms(&self) -> i64 {
        self.now_ms()
    }
}

/// A rendered answer: status, JSON body, and the error code header when it is an error.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub error_code: Option<&'static str>,
}

impl Answer {
    pub fn from_result(result: Result<Value, ApiError>) -> Answer {
        match result {
            Ok(v) => Answer {
                status: 200,
                body: serde_json::to_vec(&v).expect("JSON values serialize"),
                error_code: None,
            },
            Err(e) => Answer {
                status: e.status,
                body: e.body(),
                error_code: Some(e.code),
            },
        }
    }
}

/// Operations of the current AWS Batch model that Barge does not implement yet; they answer
/// a ClientException that says so instead of a confusing 404.
const UNSUPPORTED: &[&str] = &[
    "createconsumableresource",
    "updateconsumableresource",
    "deleteconsumableresource",
    "describeconsumableresource",
    "listconsumableresources",
    "listjobsbyconsumableresource",
    "createserviceenvironment",
    "updateserviceenvironment",
    "deleteserviceenvironment",
    "describeserviceenvironments",
    "submitservicejob",
    "describeservicejob",
    "updateservicejob",
    "listservicejobs",
    "terminateservicejob",
    "terminateservicejobs",
    "createquotashare",
    "updatequotashare",
    "deletequotashare",
    "describequotashare",
    "listquotashares",
];

/// The largest body an operation accepts, in bytes (AWS's quotas where it has them).
pub fn body_limit_bytes(operation: &str) -> usize {
    match operation {
        "submitjob" => SUBMIT_JOB_BODY_BYTES_MAX,
        "registerjobdefinition" => REGISTER_JOB_DEFINITION_BODY_BYTES_MAX,
        _ => REQUEST_BODY_BYTES_MAX,
    }
}

/// Handles `POST /v1/<operation>`.
pub async fn batch_operation<B: Backend>(backend: &B, operation: &str, body: &[u8]) -> Answer {
    Answer::from_result(batch_operation_inner(backend, operation, body).await)
}

async fn batch_operation_inner<B: Backend>(
    backend: &B,
    op: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let limit = body_limit_bytes(op);
    if body.len() > limit {
        return Err(ApiError::client(format!(
            "The request body is {} bytes; {op} accepts at most {limit} bytes",
            body.len()
        )));
    }
    match op {
        "createcomputeenvironment" => compute::create_compute_environment(backend, body).await,
        "updatecomputeenvironment" => compute::update_compute_environment(backend, body).await,
        "deletecomputeenvironment" => compute::delete_compute_environment(backend, body).await,
        "describecomputeenvironments" => compute::describe_compute_environments(backend, body),
        "createjobqueue" => compute::create_job_queue(backend, body).await,
        "updatejobqueue" => compute::update_job_queue(backend, body).await,
        "deletejobqueue" => compute::delete_job_queue(backend, body).await,
        "describejobqueues" => compute::describe_job_queues(backend, body),
        "getjobqueuesnapshot" => jobs::queue_snapshot(backend, body),
        "registerjobdefinition" => definitions::register(backend, body).await,
        "deregisterjobdefinition" => definitions::deregister(backend, body).await,
        "describejobdefinitions" => definitions::describe(backend, body),
        "submitjob" => jobs::submit(backend, body).await,
        "describejobs" => jobs::describe(backend, body),
        "listjobs" => jobs::list(backend, body),
        "canceljob" => jobs::cancel(backend, body, false).await,
        "terminatejob" => jobs::cancel(backend, body, true).await,
        "canceljobs" => jobs::cancel_many(backend, body, false).await,
        "terminatejobs" => jobs::cancel_many(backend, body, true).await,
        "createschedulingpolicy" => policies::create(backend, body).await,
        "updateschedulingpolicy" => policies::update(backend, body).await,
        "deleteschedulingpolicy" => policies::delete(backend, body).await,
        "describeschedulingpolicies" => policies::describe(backend, body),
        "listschedulingpolicies" => policies::list(backend, body),
        op if UNSUPPORTED.contains(&op) => Err(ApiError::client(format!(
            "The operation {op} is not supported by this version of Barge"
        ))),
        other => Err(ApiError::client(format!(
            "Unknown operation /v1/{other}; see the AWS Batch API reference for the operations Barge speaks"
        ))),
    }
}

/// `GET|POST|DELETE /v1/tags/{resourceArn}`: `arn` is already percent-decoded; `tag_keys`
/// are the `tagKeys` query values of an UntagResource.
pub async fn tags_operation<B: Backend>(
    backend: &B,
    method: &str,
    arn: &str,
    body: &[u8],
    tag_keys: Vec<String>,
) -> Answer {
    let result = match method {
        "GET" => tags::list(backend, arn),
        "POST" => tags::tag(backend, arn, body).await,
        "DELETE" => tags::untag(backend, arn, tag_keys).await,
        other => Err(ApiError::client(format!(
            "{other} is not a tag operation; use GET, POST or DELETE"
        ))),
    };
    Answer::from_result(result)
}
