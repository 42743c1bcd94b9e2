"""Issue 3, timeouts: the grace period between SIGTERM and SIGKILL is AWS's 30 s unless the
compute environment's `barge:stop-grace-seconds` tag says otherwise."""

from __future__ import annotations

import time

import botocore.exceptions
import pytest

from barge_helpers import create_ce, create_queue, register_jobdef, submit, wait_for, wait_log_line


def test_a_tagged_environment_kills_a_job_that_ignores_sigterm_after_its_grace(batch, logs):
    ce = create_ce(batch, max_vcpus=2, tags={"barge:stop-grace-seconds": "1"})["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    # The shell ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    jd = register_jobdef(batch, ["sh", "-c", "trap '' TERM; echo trapped; while true; do sleep 1; done"])
    job_id = submit(batch, q, jd["jobDefinitionArn"])["jobId"]
    running = wait_for(batch, job_id, ("RUNNING",))
    # RUNNING means the process started, not that the shell has set its trap yet: on a busy
    # machine a SIGTERM could come first and end it with 143. Terminate once it says so.
    wait_log_line(logs, running["container"]["logStreamName"], lambda line: line == "trapped")
    asked = time.monotonic()
    batch.terminate_job(jobId=job_id, reason="enough")
    job = wait_for(batch, job_id, ("FAILED",), timeout_s=20)
    took = time.monotonic() - asked
    assert job["statusReason"] == "enough"
    assert job["attempts"][0]["container"]["exitCode"] == 137, "SIGKILL, not a clean exit"
    assert took < 15, f"killed after {took:.1f} s; the default 30 s grace applied"


def test_a_bad_grace_tag_is_refused(batch):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        create_ce(batch, tags={"barge:stop-grace-seconds": "forever"})
    assert e.value.response["Error"]["Code"] == "ClientException"
    assert "barge:stop-grace-seconds" in e.value.response["Error"]["Message"]
