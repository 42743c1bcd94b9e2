"""Members Barge accepts must be honoured (it refuses what it cannot do yet). These go slightly beyond the literal text of issue 2
(which lists retryStrategy and timeout as registered members) because silently ignoring
an accepted retry rule or timeout changes what a user's job does.

The timeout job is submitted when the session starts (see conftest.py) so that its
60-second minimum overlaps the rest of the suite."""

from __future__ import annotations

import time

from barge_helpers import (
    describe_job,
    register_jobdef,
    submit,
    wait_for,
)


def test_evaluate_on_exit_is_honoured_or_refused(batch):
    """Barge refuses what it cannot do with a ClientException; a
    retryStrategy.evaluateOnExit it accepts must then decide retries as on AWS:
    EXIT on a matching exit code stops retrying, RETRY on another continues."""
    import botocore.exceptions

    strategy = {"attempts": 3, "evaluateOnExit": [
        {"onExitCode": "3", "action": "EXIT"},
        {"onExitCode": "*", "action": "RETRY"},
    ]}
    try:
        jd = register_jobdef(batch, ["sh", "-c", "exit $(( $AWS_BATCH_JOB_ATTEMPT == 1 ? 4 : 3 ))"],
                             retryStrategy=strategy)
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "ClientException"
        assert "evaluateOnExit" in e.response["Error"]["Message"]
        return
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "FAILED"
    # attempt 1 exits 4 (RETRY), attempt 2 exits 3 (EXIT): two attempts, not three
    assert [a["container"]["exitCode"] for a in job["attempts"]] == [4, 3], job["attempts"]


def test_attempt_duration_timeout_is_enforced(batch, early_timeout_job):
    job_id, submitted_at = early_timeout_job
    # AWS: 60 s from startedAt, then SIGTERM (SIGKILL 30 s later); allow generous slack
    remaining = max(1.0, submitted_at + 120 - time.monotonic())
    job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"), timeout_s=remaining)
    assert job["status"] == "FAILED", job
    assert len(job["attempts"]) == 1, "a timed-out attempt is not retried"
    assert job["stoppedAt"] - job["startedAt"] >= 60_000
    assert "timeout" in (job.get("statusReason") or "").lower(), job.get("statusReason")
    assert describe_job(batch, job_id)["status"] == "FAILED"
