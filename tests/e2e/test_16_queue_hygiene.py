"""Issue 3, point 8 (first slice): CancelJobs / TerminateJobs bulk operations and
GetJobQueueSnapshot, through boto3 and the aws CLI."""

from __future__ import annotations

import botocore.exceptions
import pytest

from barge_helpers import (
    create_ce,
    create_queue,
    describe_job,
    now_ms,
    register_jobdef,
    submit,
    uniq,
    wait_for,
)


def test_cancel_jobs_and_terminate_jobs_in_bulk(batch):
    parked_ce = create_ce(batch, max_vcpus=2, state="DISABLED")["computeEnvironmentName"]
    parked = create_queue(batch, [parked_ce])["jobQueueName"]
    ok = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    sleeper = register_jobdef(batch, ["sleep", "300"])["jobDefinitionArn"]
    waiting = [submit(batch, parked, ok)["jobId"] for _ in range(3)]
    running = submit(batch, "default", sleeper)["jobId"]
    wait_for(batch, running, ("RUNNING",))
    unknown = "11111111-2222-3333-4444-555555555555"

    out = batch.cancel_jobs(jobs=waiting + [running, unknown], reason="bulk cancel")
    assert sorted(out["successful"]) == sorted(waiting + [running, unknown])
    assert out["errors"] == []
    for job_id in waiting:
        job = describe_job(batch, job_id)
        assert job["status"] == "FAILED" and job["statusReason"] == "bulk cancel"
    # Cancel leaves a RUNNING job alone, as CancelJob does.
    assert describe_job(batch, running)["status"] == "RUNNING"

    out = batch.terminate_jobs(jobs=[running], reason="bulk terminate")
    assert out == {"successful": [running], "errors": [], **{k: v for k, v in out.items() if k == "ResponseMetadata"}}
    job = wait_for(batch, running, ("FAILED",))
    assert job["statusReason"] == "bulk terminate"


def test_bulk_limits_are_enforced(batch):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        batch.cancel_jobs(jobs=[f"job-{i}" for i in range(51)], reason="too many")
    assert e.value.response["Error"]["Code"] == "ClientException"
    assert "50" in e.value.response["Error"]["Message"]


def test_queue_snapshot_shows_the_front_of_the_queue_in_order(batch, aws):
    parked_ce = create_ce(batch, max_vcpus=2, state="DISABLED")["computeEnvironmentName"]
    parked = create_queue(batch, [parked_ce])["jobQueueName"]
    ok = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    before = now_ms()
    ids = [submit(batch, parked, ok, name=uniq("front"))["jobId"] for _ in range(105)]
    for job_id in (ids[0], ids[-1]):
        wait_for(batch, job_id, ("RUNNABLE",))
    snap = batch.get_job_queue_snapshot(jobQueue=parked)["frontOfQueue"]
    arns = [j["jobArn"] for j in snap["jobs"]]
    assert len(arns) == 100, "the first 100 RUNNABLE jobs"
    assert [a.rsplit("/", 1)[1] for a in arns] == ids[:100], "in submission order"
    assert all(j["earliestTimeAtPosition"] >= before for j in snap["jobs"])
    assert snap["lastUpdatedAt"] >= snap["jobs"][-1]["earliestTimeAtPosition"]
    cli = aws("batch", "get-job-queue-snapshot", "--job-queue", parked)
    assert [j["jobArn"] for j in cli["frontOfQueue"]["jobs"]] == arns
    with pytest.raises(botocore.exceptions.ClientError) as e:
        batch.get_job_queue_snapshot(jobQueue="no-such-queue")
    assert "no-such-queue" in e.value.response["Error"]["Message"]


def test_job_state_time_limit_actions_are_validated_and_echoed(batch):
    ce = create_ce(batch, max_vcpus=2)["computeEnvironmentName"]
    action = {"reason": "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT", "state": "RUNNABLE",
              "maxTimeSeconds": 600, "action": "CANCEL"}
    q = create_queue(batch, [ce], jobStateTimeLimitActions=[action])["jobQueueName"]
    described = batch.describe_job_queues(jobQueues=[q])["jobQueues"][0]
    assert described["jobStateTimeLimitActions"] == [action]
    bad = [
        ({**action, "maxTimeSeconds": 599}, "maxTimeSeconds"),
        ({**action, "reason": "CAPACITY:SOMETHING_ELSE"}, "reason"),
        ({**action, "action": "TERMINATE"}, "TERMINATE"),
        ({**action, "state": "PENDING"}, "state"),
    ]
    for candidate, words in bad:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            batch.update_job_queue(jobQueue=q, jobStateTimeLimitActions=[candidate])
        assert e.value.response["Error"]["Code"] == "ClientException"
        assert words in e.value.response["Error"]["Message"], e.value.response["Error"]["Message"]
    batch.update_job_queue(jobQueue=q, jobStateTimeLimitActions=[])
    assert "jobStateTimeLimitActions" not in batch.describe_job_queues(jobQueues=[q])["jobQueues"][0]
