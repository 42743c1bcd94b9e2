"""Issue 2, point 2: compute environments through boto3 (create MANAGED and UNMANAGED,
describe by name or ARN with pagination, update with AWS's rules, delete only when
DISABLED and detached)."""

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


def describe_ce(batch, name_or_arn):
    ces = batch.describe_compute_environments(computeEnvironments=[name_or_arn])["computeEnvironments"]
    assert len(ces) == 1, ces
    return ces[0]


def ce_gone(batch, name):
    ces = batch.describe_compute_environments(computeEnvironments=[name])["computeEnvironments"]
    return not ces or ces[0].get("status") == "DELETED"


# The AWS documentation's managed on-demand example (create-compute-environment).
def docs_ondemand_resources():
    return {
        "type": "EC2",
        "minvCpus": 0,
        "maxvCpus": 128,
        "desiredvCpus": 48,
        "instanceTypes": ["c4.large", "c4.xlarge", "c4.2xlarge", "c4.4xlarge", "c4.8xlarge"],
        "subnets": ["subnet-220c0e0a", "subnet-1a95556d", "subnet-978f6dce"],
        "securityGroupIds": ["sg-cf5093b2"],
        "ec2KeyPair": "id_rsa",
        "instanceRole": "ecsInstanceRole",
        "tags": {"Name": "Batch Instance - C4OnDemand"},
    }


def test_create_managed_docs_example_is_valid_and_echoed(batch):
    name = uniq("C4OnDemand")
    resp = batch.create_compute_environment(
        computeEnvironmentName=name,
        type="MANAGED",
        state="ENABLED",
        computeResources=docs_ondemand_resources(),
        serviceRole="arn:aws:iam::012345678910:role/AWSBatchServiceRole",
    )
    assert resp["computeEnvironmentName"] == name
    assert resp["computeEnvironmentArn"] == arn("compute-environment", name)
    ce = describe_ce(batch, name)
    assert ce["status"] == "VALID"
    assert ce["state"] == "ENABLED"
    assert ce["type"] == "MANAGED"
    assert ce["serviceRole"] == "arn:aws:iam::012345678910:role/AWSBatchServiceRole"
    cr = ce["computeResources"]
    want = docs_ondemand_resources()
    for key in ("type", "minvCpus", "maxvCpus", "desiredvCpus", "instanceTypes", "subnets",
                "securityGroupIds", "ec2KeyPair", "instanceRole", "tags"):
        assert cr.get(key) == want[key], (key, cr.get(key))


def test_create_spot_docs_example_keeps_bid_percentage(batch):
    name = uniq("M4Spot")
    batch.create_compute_environment(
        computeEnvironmentName=name,
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "SPOT",
            "minvCpus": 0,
            "maxvCpus": 128,
            "desiredvCpus": 4,
            "instanceTypes": ["m4"],
            "subnets": ["subnet-220c0e0a"],
            "securityGroupIds": ["sg-cf5093b2"],
            "ec2KeyPair": "id_rsa",
            "instanceRole": "ecsInstanceRole",
            "bidPercentage": 20,
            "spotIamFleetRole": "arn:aws:iam::012345678910:role/aws-ec2-spot-fleet-role",
            "tags": {"Name": "Batch Instance - M4Spot"},
        },
        serviceRole="arn:aws:iam::012345678910:role/AWSBatchServiceRole",
    )
    ce = describe_ce(batch, name)
    assert ce["status"] == "VALID"
    assert ce["computeResources"]["type"] == "SPOT"
    assert ce["computeResources"]["bidPercentage"] == 20
    assert ce["computeResources"]["spotIamFleetRole"] == "arn:aws:iam::012345678910:role/aws-ec2-spot-fleet-role"
    # its jobs run here, on this host's agent
    q = create_queue(batch, [name])["jobQueueName"]
    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    job = wait_for(batch, submit(batch, q, jd)["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job


def test_create_unmanaged_is_valid_at_once(batch):
    name = uniq("unmanaged")
    resp = batch.create_compute_environment(computeEnvironmentName=name, type="UNMANAGED", unmanagedvCpus=8)
    assert resp["computeEnvironmentArn"] == arn("compute-environment", name)
    ce = describe_ce(batch, name)
    assert ce["type"] == "UNMANAGED"
    assert ce["status"] == "VALID"
    assert ce["state"] == "ENABLED"


def test_create_disabled_state_is_kept(batch):
    name = create_ce(batch, state="DISABLED")["computeEnvironmentName"]
    assert describe_ce(batch, name)["state"] == "DISABLED"


def test_describe_by_name_and_arn_and_tags(batch):
    name = uniq("ce-desc")
    batch.create_compute_environment(
        computeEnvironmentName=name, type="MANAGED",
        computeResources={"type": "EC2", "maxvCpus": 2, "subnets": ["subnet-1"], "securityGroupIds": ["sg-1"],
                          "instanceRole": "ecsInstanceRole"},
        tags={"team": "e2e"},
    )
    by_name = describe_ce(batch, name)
    by_arn = describe_ce(batch, arn("compute-environment", name))
    assert by_name == by_arn
    assert by_name.get("tags") == {"team": "e2e"}
    # both forms in one call; unknown names are simply absent
    ces = batch.describe_compute_environments(
        computeEnvironments=[name, "default", uniq("no-such-ce")])["computeEnvironments"]
    assert sorted(c["computeEnvironmentName"] for c in ces) == sorted([name, "default"])


def test_describe_paginates_with_max_results(batch):
    names = [create_ce(batch, max_vcpus=1, name=uniq("ce-page"))["computeEnvironmentName"] for _ in range(3)]
    seen: list[str] = []
    token = None
    for _ in range(200):
        kw = {"maxResults": 1}
        if token:
            kw["nextToken"] = token
        page = batch.describe_compute_environments(**kw)
        assert len(page["computeEnvironments"]) <= 1
        seen += [c["computeEnvironmentName"] for c in page["computeEnvironments"]]
        token = page.get("nextToken")
        if not token:
            break
    else:
        pytest.fail("describe_compute_environments pagination never ended")
    assert len(seen) == len(set(seen)), "a page repeated an item"
    assert set(names) | {"default"} <= set(seen)
    # botocore's paginator ends too and agrees
    pag = batch.get_paginator("describe_compute_environments")
    all_names = [c["computeEnvironmentName"] for p in pag.paginate(PaginationConfig={"PageSize": 2})
                 for c in p["computeEnvironments"]]
    assert set(all_names) == set(seen)


def test_update_state_and_vcpus_rules(batch):
    name = create_ce(batch, max_vcpus=8, minvCpus=0, desiredvCpus=2)["computeEnvironmentName"]
    resp = batch.update_compute_environment(computeEnvironment=name, state="DISABLED")
    assert resp["computeEnvironmentName"] == name
    assert resp["computeEnvironmentArn"] == arn("compute-environment", name)
    ce = describe_ce(batch, name)
    assert ce["state"] == "DISABLED"
    assert ce["status"] in ("VALID", "UPDATING")
    batch.update_compute_environment(computeEnvironment=arn("compute-environment", name), state="ENABLED")
    assert describe_ce(batch, name)["state"] == "ENABLED"

    # desiredvCpus may grow within [min, max]
    batch.update_compute_environment(computeEnvironment=name, computeResources={"desiredvCpus": 4})
    wait_until(lambda: describe_ce(batch, name)["status"] == "VALID", what="CE VALID after update")
    assert describe_ce(batch, name)["computeResources"]["desiredvCpus"] == 4
    # ... but never shrink
    assert_refused(batch.update_compute_environment, "desired",
                   computeEnvironment=name, computeResources={"desiredvCpus": 3})
    # ... nor exceed maxvCpus
    assert_refused(batch.update_compute_environment, "desired", "max",
                   computeEnvironment=name, computeResources={"desiredvCpus": 100})
    # minvCpus above maxvCpus is refused
    assert_refused(batch.update_compute_environment, "min", "max",
                   computeEnvironment=name, computeResources={"minvCpus": 10})
    assert_refused(batch.update_compute_environment, "min", "max",
                   computeEnvironment=name, computeResources={"minvCpus": 6, "maxvCpus": 5})
    cr = describe_ce(batch, name)["computeResources"]
    assert (cr["minvCpus"], cr["maxvCpus"], cr["desiredvCpus"]) == (0, 8, 4), "a refused update changed the CE"
    # maxvCpus can be raised
    batch.update_compute_environment(computeEnvironment=name, computeResources={"maxvCpus": 12})
    wait_until(lambda: describe_ce(batch, name)["computeResources"]["maxvCpus"] == 12, what="maxvCpus 12")


def test_create_refuses_min_above_max(batch):
    assert_refused(batch.create_compute_environment, "min", "max",
                   computeEnvironmentName=uniq("ce-bad"), type="MANAGED",
                   computeResources={"type": "EC2", "minvCpus": 8, "maxvCpus": 4,
                                     "subnets": ["subnet-1"], "instanceRole": "ecsInstanceRole"})


def test_create_duplicate_name_refused(batch):
    name = create_ce(batch)["computeEnvironmentName"]
    assert_refused(batch.create_compute_environment, name,
                   computeEnvironmentName=name, type="UNMANAGED")


def test_update_and_delete_unknown_refused(batch):
    missing = uniq("no-such-ce")
    assert_refused(batch.update_compute_environment, missing, "not", computeEnvironment=missing, state="DISABLED")
    assert_refused(batch.delete_compute_environment, missing, "not", computeEnvironment=missing)


def test_delete_requires_disabled_and_detached(batch):
    ce = create_ce(batch)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    # ENABLED: refused
    assert_refused(batch.delete_compute_environment, "DISABLED", "disable", "state", computeEnvironment=ce)
    batch.update_compute_environment(computeEnvironment=ce, state="DISABLED")
    wait_until(lambda: describe_ce(batch, ce)["state"] == "DISABLED", what="CE disabled")
    # DISABLED but still attached to a queue: refused
    assert_refused(batch.delete_compute_environment, "queue", "attached", "associated", computeEnvironment=ce)
    assert describe_ce(batch, ce)["computeEnvironmentName"] == ce
    # detach by deleting the queue (which must be DISABLED first)
    batch.update_job_queue(jobQueue=q, state="DISABLED")
    batch.delete_job_queue(jobQueue=q)
    wait_until(lambda: not [x for x in batch.describe_job_queues(jobQueues=[q])["jobQueues"]
                            if x.get("status") != "DELETED"], what="queue deleted")
    batch.delete_compute_environment(computeEnvironment=ce)
    wait_until(lambda: ce_gone(batch, ce), what="CE deleted")


def test_delete_after_detaching_by_queue_update(batch):
    ce1 = create_ce(batch)["computeEnvironmentName"]
    ce2 = create_ce(batch)["computeEnvironmentName"]
    q = create_queue(batch, [ce1])["jobQueueName"]
    batch.update_job_queue(jobQueue=q, computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce2}])
    batch.update_compute_environment(computeEnvironment=ce1, state="DISABLED")
    wait_until(lambda: describe_ce(batch, ce1)["state"] == "DISABLED", what="CE disabled")
    batch.delete_compute_environment(computeEnvironment=arn("compute-environment", ce1))
    wait_until(lambda: ce_gone(batch, ce1), what="CE deleted")
