//! Barge's own API, beside AWS's, under `/barge/v1/`: what AWS Batch has no operation for.

use barge_core::reason::diagnose;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::wire::compact;
use crate::{Answer, Backend};

/// `GET /barge/v1/jobs/{jobId}/why`: where the job stands, why, and what would move it on.
pub fn why<B: Backend>(b: &B, job_id: &str) -> Answer {
    Answer::from_result(why_inner(b, job_id))
}

fn why_inner<B: Backend>(b: &B, job_id: &str) -> Result<Value, ApiError> {
    let state = b.snapshot();
    let job = barge_core::arrays::job_view(&state, job_id).ok_or_else(|| ApiError {
        status: 404,
        code: "ClientException",
        message: format!("job {job_id} does not exist"),
    })?;
    let d = diagnose(&state, &job);
    Ok(compact(json!({
        "jobId": job.id,
        "jobName": job.name,
        "jobQueue": job.queue,
        "status": d.status.as_str(),
        "statusReason": d.reason,
        "jobsAhead": d.jobs_ahead,
        "unblock": d.unblock,
    })))
}
