"""Issue 2, point 2: job queues through boto3 (create with computeEnvironmentOrder by
name or ARN, 1 to 3 entries; describe with pagination; update priority, state and
order; delete only when DISABLED; a DISABLED queue refuses SubmitJob)."""

from __future__ import annotations

import pytest

from barge_helpers import (
    arn,
    assert_refused,
    create_ce,
    create_queue,
    register_jobdef,
    submit,
    uniq,
    wait_for,
    wait_until,
)


def describe_q(batch, q):
    qs = batch.describe_job_queues(jobQueues=[q])["jobQueues"]
    assert len(qs) == 1, qs
    return qs[0]


@pytest.fixture(scope="module")
def two_ces(batch):
    return [create_ce(batch, max_vcpus=2)["computeEnvironmentName"] for _ in range(2)]


def test_create_by_name_describe_returns_arns(batch, two_ces):
    name = uniq("q")
    resp = batch.create_job_queue(
        jobQueueName=name, state="ENABLED", priority=10,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": two_ces[0]},
                                 {"order": 2, "computeEnvironment": two_ces[1]}],
        tags={"k": "v"},
    )
    assert resp == {"jobQueueName": name, "jobQueueArn": arn("job-queue", name),
                    "ResponseMetadata": resp["ResponseMetadata"]}
    q = describe_q(batch, name)
    assert q["jobQueueArn"] == arn("job-queue", name)
    assert q["state"] == "ENABLED"
    assert q["status"] == "VALID"
    assert q["priority"] == 10
    assert q.get("tags") == {"k": "v"}
    order = sorted(q["computeEnvironmentOrder"], key=lambda o: o["order"])
    assert [o["computeEnvironment"] for o in order] == [arn("compute-environment", c) for c in two_ces]
    assert describe_q(batch, arn("job-queue", name)) == q


def test_create_by_arn_and_default_state(batch, two_ces):
    name = uniq("q")
    batch.create_job_queue(jobQueueName=name, priority=1, computeEnvironmentOrder=[
        {"order": 1, "computeEnvironment": arn("compute-environment", two_ces[1])}])
    q = describe_q(batch, name)
    assert q["state"] == "ENABLED"
    assert q["computeEnvironmentOrder"][0]["computeEnvironment"] == arn("compute-environment", two_ces[1])


def test_order_entries_one_to_three(batch, two_ces):
    extra = [create_ce(batch, max_vcpus=1)["computeEnvironmentName"] for _ in range(2)]
    four = two_ces + extra
    ok = uniq("q3")
    create_queue(batch, four[:3], name=ok)
    assert len(describe_q(batch, ok)["computeEnvironmentOrder"]) == 3
    assert_refused(batch.create_job_queue, "computeEnvironmentOrder", "3", "three",
                   jobQueueName=uniq("q4"), priority=1,
                   computeEnvironmentOrder=[{"order": i + 1, "computeEnvironment": c} for i, c in enumerate(four)])
    assert_refused(batch.create_job_queue, "computeEnvironmentOrder", "compute environment",
                   jobQueueName=uniq("q0"), priority=1, computeEnvironmentOrder=[])


def test_unknown_ce_and_duplicate_name_refused(batch, two_ces):
    missing = uniq("no-such-ce")
    assert_refused(batch.create_job_queue, missing, "compute environment",
                   jobQueueName=uniq("q"), priority=1,
                   computeEnvironmentOrder=[{"order": 1, "computeEnvironment": missing}])
    name = create_queue(batch, [two_ces[0]])["jobQueueName"]
    assert_refused(batch.create_job_queue, name, "exist",
                   jobQueueName=name, priority=1,
                   computeEnvironmentOrder=[{"order": 1, "computeEnvironment": two_ces[0]}])


def test_update_priority_state_order(batch, two_ces):
    name = create_queue(batch, [two_ces[0]], priority=5)["jobQueueName"]
    resp = batch.update_job_queue(jobQueue=name, priority=200)
    assert resp["jobQueueName"] == name and resp["jobQueueArn"] == arn("job-queue", name)
    assert describe_q(batch, name)["priority"] == 200
    batch.update_job_queue(jobQueue=arn("job-queue", name), state="DISABLED")
    assert describe_q(batch, name)["state"] == "DISABLED"
    batch.update_job_queue(jobQueue=name, state="ENABLED")
    assert describe_q(batch, name)["state"] == "ENABLED"
    batch.update_job_queue(jobQueue=name, computeEnvironmentOrder=[
        {"order": 1, "computeEnvironment": two_ces[1]}, {"order": 2, "computeEnvironment": two_ces[0]}])
    order = sorted(describe_q(batch, name)["computeEnvironmentOrder"], key=lambda o: o["order"])
    assert [o["computeEnvironment"] for o in order] == [arn("compute-environment", two_ces[1]),
                                                         arn("compute-environment", two_ces[0])]
    missing = uniq("no-such-q")
    assert_refused(batch.update_job_queue, missing, "not", jobQueue=missing, priority=1)


def test_disabled_queue_refuses_submit(batch, two_ces):
    name = create_queue(batch, [two_ces[0]])["jobQueueName"]
    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    batch.update_job_queue(jobQueue=name, state="DISABLED")
    assert_refused(batch.submit_job, "DISABLED", "disabled", "not enabled", "state",
                   jobName=uniq("j"), jobQueue=name, jobDefinition=jd)
    batch.update_job_queue(jobQueue=name, state="ENABLED")
    job = submit(batch, name, jd)["jobId"]
    assert wait_for(batch, job, ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"


def test_delete_requires_disabled(batch, two_ces):
    name = create_queue(batch, [two_ces[0]])["jobQueueName"]
    assert_refused(batch.delete_job_queue, "DISABLED", "disable", "state", jobQueue=name)
    assert describe_q(batch, name)["state"] == "ENABLED"
    batch.update_job_queue(jobQueue=name, state="DISABLED")
    batch.delete_job_queue(jobQueue=arn("job-queue", name))
    wait_until(lambda: not [q for q in batch.describe_job_queues(jobQueues=[name])["jobQueues"]
                            if q.get("status") != "DELETED"], what="queue deleted")
    missing = uniq("no-such-q")
    assert_refused(batch.delete_job_queue, missing, "not", jobQueue=missing)


def test_describe_paginates_with_max_results(batch, two_ces):
    names = [create_queue(batch, [two_ces[0]])["jobQueueName"] for _ in range(3)]
    seen: list[str] = []
    token = None
    for _ in range(500):
        kw = {"maxResults": 2}
        if token:
            kw["nextToken"] = token
        page = batch.describe_job_queues(**kw)
        assert len(page["jobQueues"]) <= 2
        seen += [q["jobQueueName"] for q in page["jobQueues"]]
        token = page.get("nextToken")
        if not token:
            break
    else:
        pytest.fail("describe_job_queues pagination never ended")
    assert len(seen) == len(set(seen)), "a page repeated an item"
    assert set(names) | {"default"} <= set(seen)
    unknown = uniq("no-such-q")
    got = batch.describe_job_queues(jobQueues=[names[0], unknown])["jobQueues"]
    assert [q["jobQueueName"] for q in got] == [names[0]]
