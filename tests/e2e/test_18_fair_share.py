"""Issue 3, feature 7: fair-share scheduling. Scheduling policies through the aws CLI and
boto3 (CRUD, paging, tags, AWS's validation), the queue and SubmitJob rules that go with
them, ListJobs' SHARE_IDENTIFIER filter, what a waiting job says about its share, and two
shares with weights 1 and 0.25 saturating a small compute environment."""

from __future__ import annotations

import json

import pytest
import requests

from barge_helpers import (
    ARN_PREFIX,
    assert_client_exception,
    assert_refused,
    create_ce,
    create_queue,
    raw_post,
    register_jobdef,
    submit,
    uniq,
    wait_for,
    wait_until,
)


def policy_arn(name: str) -> str:
    return f"{ARN_PREFIX}scheduling-policy/{name}"


def make_policy(batch, **fairshare) -> str:
    return batch.create_scheduling_policy(name=uniq("pol"), fairsharePolicy=fairshare)["arn"]


@pytest.fixture(scope="module")
def parked(batch):
    """A fair-share queue and a FIFO queue on a DISABLED environment: jobs stay RUNNABLE."""
    ce = create_ce(batch, max_vcpus=2, state="DISABLED")["computeEnvironmentName"]
    pol = make_policy(batch, shareDistribution=[{"shareIdentifier": "light", "weightFactor": 0.25}])
    fair = create_queue(batch, [ce], schedulingPolicyArn=pol)["jobQueueName"]
    fifo = create_queue(batch, [ce])["jobQueueName"]
    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    return {"ce": ce, "policy": pol, "fair": fair, "fifo": fifo, "jd": jd}


def test_policy_lifecycle_with_the_aws_cli(aws):
    name = uniq("cli-pol")
    fairshare = {
        "shareDecaySeconds": 3600,
        "computeReservation": 10,
        "shareDistribution": [
            {"shareIdentifier": "teamA*", "weightFactor": 0.5},
            {"shareIdentifier": "teamB"},
        ],
    }
    out = aws("batch", "create-scheduling-policy", "--name", name,
              "--fairshare-policy", json.dumps(fairshare), "--tags", "owner=e2e")
    assert out == {"name": name, "arn": policy_arn(name)}
    [p] = aws("batch", "describe-scheduling-policies", "--arns", out["arn"])["schedulingPolicies"]
    assert p["name"] == name and p["arn"] == out["arn"]
    assert p["fairsharePolicy"] == fairshare
    assert p["tags"] == {"owner": "e2e"}
    listed = aws("batch", "list-scheduling-policies")["schedulingPolicies"]
    assert {"arn": out["arn"]} in listed

    changed = {"shareDecaySeconds": 0, "shareDistribution": [{"shareIdentifier": "x", "weightFactor": 2}]}
    aws("batch", "update-scheduling-policy", "--arn", out["arn"], "--fairshare-policy", json.dumps(changed))
    [p] = aws("batch", "describe-scheduling-policies", "--arns", out["arn"])["schedulingPolicies"]
    assert p["fairsharePolicy"] == changed

    aws("batch", "tag-resource", "--resource-arn", out["arn"], "--tags", "stage=test")
    tags = aws("batch", "list-tags-for-resource", "--resource-arn", out["arn"])["tags"]
    assert tags == {"owner": "e2e", "stage": "test"}
    aws("batch", "untag-resource", "--resource-arn", out["arn"], "--tag-keys", "owner")
    assert aws("batch", "list-tags-for-resource", "--resource-arn", out["arn"])["tags"] == {"stage": "test"}

    aws("batch", "delete-scheduling-policy", "--arn", out["arn"])
    assert aws("batch", "describe-scheduling-policies", "--arns", out["arn"])["schedulingPolicies"] == []
    proc = aws("batch", "delete-scheduling-policy", "--arn", out["arn"], check=False)
    assert proc.returncode == 255 and "An error occurred (ClientException)" in proc.stderr, proc.stderr
    assert "does not exist" in proc.stderr


def test_policies_page_with_boto3(batch):
    made = {make_policy(batch) for _ in range(3)}
    pages = list(batch.get_paginator("list_scheduling_policies").paginate(PaginationConfig={"PageSize": 1}))
    assert all(len(p["schedulingPolicies"]) <= 1 for p in pages)
    seen = [p["arn"] for page in pages for p in page["schedulingPolicies"]]
    assert made <= set(seen) and len(seen) == len(set(seen))
    first = batch.list_scheduling_policies(maxResults=2)
    assert len(first["schedulingPolicies"]) == 2 and first["nextToken"]
    described = batch.describe_scheduling_policies(arns=sorted(made) + [policy_arn("no-such-policy")])
    assert {p["arn"] for p in described["schedulingPolicies"]} == made


BAD_POLICIES = [
    ({"name": "has space"}, ["name"]),
    ({"name": "x" * 129}, ["name"]),
    ({"name": "ok", "fairsharePolicy": {"shareDecaySeconds": 604801}}, ["shareDecaySeconds"]),
    ({"name": "ok", "fairsharePolicy": {"shareDecaySeconds": -1}}, ["shareDecaySeconds"]),
    ({"name": "ok", "fairsharePolicy": {"computeReservation": 100}}, ["computeReservation"]),
    ({"name": "ok", "fairsharePolicy": {"shareDistribution": [{"shareIdentifier": "a", "weightFactor": 0}]}},
     ["weightFactor"]),
    ({"name": "ok", "fairsharePolicy": {"shareDistribution": [{"shareIdentifier": "a", "weightFactor": 1000}]}},
     ["weightFactor"]),
    ({"name": "ok", "fairsharePolicy": {"shareDistribution": [{"shareIdentifier": "a*b"}]}},
     ["shareIdentifier"]),
    ({"name": "ok", "fairsharePolicy": {"shareDistribution": [{"shareIdentifier": "x" * 256}]}},
     ["shareIdentifier"]),
    ({"name": "ok", "fairsharePolicy": {"shareDistribution": [{"weightFactor": 1}]}}, ["shareIdentifier"]),
    ({"name": "ok", "fairsharePolicy": {"shareDistribution": [{"shareIdentifier": "b"}, {"shareIdentifier": "b"}]}},
     ['"b" twice']),
    ({"name": "ok", "quotaSharePolicy": {"idleResourceAssignmentStrategy": "FIFO"}}, ["quotaSharePolicy"]),
    ({"name": "ok", "fairsharePolicy": {"shareDecaySeconds": "soon"}}, ["shareDecaySeconds"]),
    ({}, ["name"]),
]


@pytest.mark.parametrize("body,names", BAD_POLICIES, ids=[str(i) for i in range(len(BAD_POLICIES))])
def test_bad_policies_are_client_errors_naming_the_member(server, body, names):
    assert_client_exception(raw_post(server, "createschedulingpolicy", body), names)


def test_overlapping_identifiers_are_refused_naming_both(server, batch):
    msg = assert_refused(
        batch.create_scheduling_policy, "overlap", name=uniq("pol"),
        fairsharePolicy={"shareDistribution": [{"shareIdentifier": "UserA*"}, {"shareIdentifier": "UserA1"}]},
    )
    assert "UserA*" in msg and "UserA1" in msg, msg
    arn = make_policy(batch)
    assert_refused(batch.update_scheduling_policy, "overlap", arn=arn,
                   fairsharePolicy={"shareDistribution": [{"shareIdentifier": "T*"}, {"shareIdentifier": "Team*"}]})
    name = arn.rsplit("/", 1)[1]
    assert_refused(batch.create_scheduling_policy, "already exists", name=name)
    assert_refused(batch.update_scheduling_policy, "does not exist", arn=policy_arn("never-made"))
    assert_client_exception(raw_post(server, "listschedulingpolicies", {"maxResults": 0}), ["maxResults"])


def test_queues_keep_their_policy_rules(batch, parked):
    [q] = batch.describe_job_queues(jobQueues=[parked["fair"]])["jobQueues"]
    assert q["schedulingPolicyArn"] == parked["policy"]
    assert "schedulingPolicyArn" not in batch.describe_job_queues(jobQueues=[parked["fifo"]])["jobQueues"][0]
    assert_refused(create_queue, "schedulingPolicyArn", batch=batch, ces=[parked["ce"]],
                   schedulingPolicyArn=policy_arn("no-such-policy"))
    other = make_policy(batch)
    # A FIFO queue never gains a policy; a fair-share queue's can be replaced, not removed.
    assert_refused(batch.update_job_queue, "cannot gain", jobQueue=parked["fifo"], schedulingPolicyArn=other)
    spare = create_queue(batch, [parked["ce"]], schedulingPolicyArn=parked["policy"])["jobQueueName"]
    batch.update_job_queue(jobQueue=spare, schedulingPolicyArn=other)
    assert batch.describe_job_queues(jobQueues=[spare])["jobQueues"][0]["schedulingPolicyArn"] == other
    assert_refused(batch.update_job_queue, "not removed", jobQueue=spare, schedulingPolicyArn="")
    # A policy in use cannot be deleted; the message names the queue.
    assert_refused(batch.delete_scheduling_policy, spare, arn=other)
    batch.update_job_queue(jobQueue=spare, state="DISABLED")
    batch.delete_job_queue(jobQueue=spare)
    batch.delete_scheduling_policy(arn=other)


def test_share_identifier_is_required_exactly_on_fair_share_queues(server, batch, parked):
    assert_refused(submit, "shareIdentifier", batch=batch, queue=parked["fair"], jobdef=parked["jd"])
    assert_refused(submit, "shareIdentifier", batch=batch, queue=parked["fifo"], jobdef=parked["jd"],
                   shareIdentifier="light")
    body = {"jobName": "j", "jobQueue": parked["fair"], "jobDefinition": parked["jd"]}
    assert_client_exception(raw_post(server, "submitjob", {**body, "shareIdentifier": "x" * 256}),
                            ["shareIdentifier"])
    assert_client_exception(raw_post(server, "submitjob", {**body, "shareIdentifier": "a",
                                                           "schedulingPriorityOverride": 10000}),
                            ["schedulingPriorityOverride"])
    job = submit(batch, parked["fair"], parked["jd"], shareIdentifier="light", schedulingPriorityOverride=7)
    detail = wait_for(batch, job["jobId"], ("RUNNABLE",))
    assert detail["shareIdentifier"] == "light" and detail["schedulingPriority"] == 7


def test_list_jobs_filters_by_share_identifier(batch, parked):
    mine = uniq("share")
    ids = {submit(batch, parked["fair"], parked["jd"], shareIdentifier=mine)["jobId"] for _ in range(2)}
    submit(batch, parked["fair"], parked["jd"], shareIdentifier=uniq("other"))
    for i in ids:
        wait_for(batch, i, ("RUNNABLE",))
    share_filter = [{"name": "SHARE_IDENTIFIER", "values": [mine]}]
    got = batch.list_jobs(jobQueue=parked["fair"], filters=share_filter)["jobSummaryList"]
    assert {j["jobId"] for j in got} == ids
    assert all(j["shareIdentifier"] == mine for j in got)
    # Unlike the other filters, SHARE_IDENTIFIER heeds jobStatus.
    assert batch.list_jobs(jobQueue=parked["fair"], filters=share_filter, jobStatus="RUNNING")["jobSummaryList"] == []
    assert len(batch.list_jobs(jobQueue=parked["fair"], filters=share_filter,
                               jobStatus="RUNNABLE")["jobSummaryList"]) == 2


def test_waiting_jobs_say_where_their_share_stands(server, batch, parked):
    share = uniq("why")
    low = submit(batch, parked["fair"], parked["jd"], shareIdentifier=share, schedulingPriorityOverride=1)["jobId"]
    high = submit(batch, parked["fair"], parked["jd"], shareIdentifier=share, schedulingPriorityOverride=9)["jobId"]
    detail = wait_for(batch, low, ("RUNNABLE",))
    reason = detail["statusReason"]
    assert f"fair share: share {share} has used 0 vCPU-s (weight 1)" in reason, reason
    assert reason.startswith("Waiting: compute environment"), reason
    why = requests.get(f"{server.endpoint}/barge/v1/jobs/{low}/why", timeout=20).json()
    assert any("fair share" in step for step in why["unblock"]), why
    # Within a share, higher priority goes first: the queue snapshot shows the scheduler's order.
    wait_for(batch, high, ("RUNNABLE",))
    front = batch.get_job_queue_snapshot(jobQueue=parked["fair"])["frontOfQueue"]["jobs"]
    order = [j["jobArn"].rsplit("/", 1)[1] for j in front]
    assert order.index(high) < order.index(low), order


def test_a_quarter_weight_share_gets_about_four_times_the_dispatches(batch):
    """Two shares saturate a 2-vCPU environment with equal 1-vCPU, 1-second jobs. Weight
    0.25 against 1 means about four dispatches to one; asserting at least two to one leaves
    room for any timing, and the weight-1 share must still get some."""
    ce = create_ce(batch, max_vcpus=2, state="DISABLED")["computeEnvironmentName"]
    pol = make_policy(batch, shareDistribution=[{"shareIdentifier": "light", "weightFactor": 0.25}])
    q = create_queue(batch, [ce], schedulingPolicyArn=pol)["jobQueueName"]
    jd = register_jobdef(batch, ["sleep", "1"], container={"resourceRequirements": [
        {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]})["jobDefinitionArn"]
    share_of = {}
    for _ in range(20):
        for share in ("heavy", "light"):
            share_of[submit(batch, q, jd, shareIdentifier=share)["jobId"]] = share
    ids = list(share_of)
    wait_until(lambda: len(batch.list_jobs(jobQueue=q, jobStatus="RUNNABLE")["jobSummaryList"]) == len(ids),
               what="all jobs RUNNABLE")
    batch.update_compute_environment(computeEnvironment=ce, state="ENABLED")
    first = 24

    def started():
        jobs = [j for i in range(0, len(ids), 100) for j in batch.describe_jobs(jobs=ids[i:i + 100])["jobs"]]
        return sorted((j["startedAt"], j["jobId"]) for j in jobs if j.get("startedAt"))

    try:
        runs = wait_until(lambda: (s := started()) and len(s) >= first and s, timeout_s=120,
                          what=f"{first} jobs started", poll_s=0.5)
    finally:
        batch.update_compute_environment(computeEnvironment=ce, state="DISABLED")
        for i in ids:
            batch.terminate_job(jobId=i, reason="fair-share test over")
    counts = {"heavy": 0, "light": 0}
    for _, job_id in runs[:first]:
        counts[share_of[job_id]] += 1
    print(f"first {first} dispatches by share: {counts}")
    assert counts["light"] >= 2 * counts["heavy"], counts
    assert counts["heavy"] >= 2, counts
