"""Issue 3, timeouts: the grace period between SIGTERM and SIGKILL is AWS's 30 s unless the
compute environment's `barge:stop-grace-seconds` tag says otherwise."""

from __future__ import annotations

import time

import botocore.exceptions
import pytest

from barge_helpers import create_ce, create_queue, register_jobdef, submit, wait_for


def test_a_tagged_environment_kills_a_job_that_ignores_sigterm_after_its_grace(batch):
    ce = create_ce(batch, max_vcpus=2, tags={"barge:stop-grace-seconds": "1"})["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    # The shell ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    jd = register_jobdef(batch, ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
    job_id = submit(batch, q, jd["jobDefinitionArn"])["jobId"]
    wait_for(batch, job_id, ("RUNNING",))
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
