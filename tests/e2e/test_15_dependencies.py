"""Issue 3 (first slice): dependsOn between jobs. A job waits PENDING, with a reason naming
what it waits for, until every job it depends on SUCCEEDED; a failed or cancelled dependency
fails its dependents with "Dependent Job failed", cascading. The array dependency types
(N_TO_N, SEQUENTIAL) are refused on plain jobs; test_20_arrays covers them on arrays."""

from __future__ import annotations

import botocore.exceptions
import pytest

from barge_helpers import (
    create_ce,
    create_queue,
    describe_job,
    register_jobdef,
    submit,
    uniq,
    wait_for,
)


def test_a_pipeline_runs_in_dependency_order(batch, tmp_path):
    order = tmp_path / "order.txt"
    jd = register_jobdef(batch, ["sh", "-c", f'echo "$STAGE" >> {order}'])["jobDefinitionArn"]

    def stage(name: str, deps: list[str]) -> str:
        return submit(batch, "default", jd, name=uniq(name),
                      containerOverrides={"environment": [{"name": "STAGE", "value": name}]},
                      dependsOn=[{"jobId": d} for d in deps])["jobId"]

    # A slow first stage, so the others are seen PENDING.
    slow = register_jobdef(batch, ["sh", "-c", f'sleep 1; echo first >> {order}'])["jobDefinitionArn"]
    first = submit(batch, "default", slow, name=uniq("first"))["jobId"]
    second = stage("second", [first])
    third = stage("third", [second, first])
    pending = wait_for(batch, third, ("PENDING",))
    assert second in pending["statusReason"] or first in pending["statusReason"], pending["statusReason"]
    assert describe_job(batch, third)["dependsOn"] == [{"jobId": second}, {"jobId": first}]
    wait_for(batch, third, ("SUCCEEDED",))
    assert order.read_text().split() == ["first", "second", "third"]
    for job_id in (first, second, third):
        assert describe_job(batch, job_id)["status"] == "SUCCEEDED"


def test_a_failed_or_cancelled_dependency_fails_its_dependents(batch):
    fails = register_jobdef(batch, ["sh", "-c", "sleep 1; exit 3"])["jobDefinitionArn"]
    ok = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    parent = submit(batch, "default", fails)["jobId"]
    child = submit(batch, "default", ok, dependsOn=[{"jobId": parent}])["jobId"]
    grandchild = submit(batch, "default", ok, dependsOn=[{"jobId": child}])["jobId"]
    for job_id in (child, grandchild):
        job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"))
        assert job["status"] == "FAILED"
        assert job["statusReason"] == "Dependent Job failed"
        assert job.get("attempts", []) == [], "a job failed by its dependency never ran"

    # Cancelling a job that others wait for fails them too.
    parked_ce = create_ce(batch, max_vcpus=2, state="DISABLED")["computeEnvironmentName"]
    parked_q = create_queue(batch, [parked_ce])["jobQueueName"]
    waiting = submit(batch, parked_q, ok)["jobId"]
    dependent = submit(batch, "default", ok, dependsOn=[{"jobId": waiting}])["jobId"]
    wait_for(batch, dependent, ("PENDING",))
    batch.cancel_job(jobId=waiting, reason="not needed")
    job = wait_for(batch, dependent, ("FAILED",))
    assert job["statusReason"] == "Dependent Job failed"


def test_bad_dependencies_are_refused(batch):
    ok = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    real = submit(batch, "default", ok)["jobId"]
    cases = [
        ([{"jobId": "00000000-0000-0000-0000-000000000000"}], "does not exist"),
        ([{"jobId": real, "type": "N_TO_N"}], "N_TO_N"),
        ([{"type": "SEQUENTIAL"}], "SEQUENTIAL"),
    ]
    for deps, words in cases:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            submit(batch, "default", ok, dependsOn=deps)
        assert e.value.response["Error"]["Code"] == "ClientException"
        assert words in e.value.response["Error"]["Message"], e.value.response["Error"]["Message"]


def test_depends_on_from_the_cli(aws, batch):
    ok = register_jobdef(batch, ["true"])["jobDefinitionName"]
    first = aws("batch", "submit-job", "--job-name", uniq("cli-a"), "--job-queue", "default",
                "--job-definition", ok)["jobId"]
    second = aws("batch", "submit-job", "--job-name", uniq("cli-b"), "--job-queue", "default",
                 "--job-definition", ok, "--depends-on", f"jobId={first}")["jobId"]
    assert wait_for(batch, second, ("SUCCEEDED",))["dependsOn"] == [{"jobId": first}]
