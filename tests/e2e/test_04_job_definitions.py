"""Issue 2, point 2: job definitions through boto3 (register revisions 1, 2, 3 with the
documented members echoed back; describe by name, name:revision, ARN and status, with
pagination; deregister makes a revision INACTIVE; a bare name means the latest ACTIVE
revision)."""

from __future__ import annotations

import pytest

from barge_helpers import (
    arn,
    assert_refused,
    register_jobdef,
    submit,
    uniq,
    wait_for,
)


def describe(batch, **kw):
    return batch.describe_job_definitions(**kw)["jobDefinitions"]


def test_revisions_count_up_and_arns(batch):
    name = uniq("jd-rev")
    for want in (1, 2, 3):
        resp = register_jobdef(batch, ["echo", str(want)], name=name)
        assert resp["jobDefinitionName"] == name
        assert resp["revision"] == want
        assert resp["jobDefinitionArn"] == arn("job-definition", f"{name}:{want}")
    revs = describe(batch, jobDefinitionName=name)
    assert sorted(d["revision"] for d in revs) == [1, 2, 3]
    for d in revs:
        assert d["jobDefinitionArn"] == arn("job-definition", f"{name}:{d['revision']}")
        assert d["status"] == "ACTIVE"
        assert d["type"] == "container"
        assert d["containerProperties"]["command"] == ["echo", str(d["revision"])]


def test_register_echoes_members(batch):
    name = uniq("jd-full")
    env = [{"name": "GREETING", "value": "hello"}]
    batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        parameters={"inputPath": "s3://bucket/in", "n": "3"},
        containerProperties={
            "image": "public.ecr.aws/amazonlinux/amazonlinux:2023",
            "command": ["echo", "Ref::inputPath"],
            "environment": env,
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
            "jobRoleArn": "arn:aws:iam::012345678910:role/JobRole",
        },
        retryStrategy={"attempts": 3},
        timeout={"attemptDurationSeconds": 3600},
        tags={"project": "barge"},
        platformCapabilities=["EC2"],
    )
    d = describe(batch, jobDefinitions=[f"{name}:1"])[0]
    assert d["jobDefinitionName"] == name
    assert d["revision"] == 1
    assert d["parameters"] == {"inputPath": "s3://bucket/in", "n": "3"}
    cp = d["containerProperties"]
    assert cp["image"] == "public.ecr.aws/amazonlinux/amazonlinux:2023"
    assert cp["command"] == ["echo", "Ref::inputPath"]
    assert cp["environment"] == env
    assert sorted(cp["resourceRequirements"], key=lambda r: r["type"]) == [
        {"type": "MEMORY", "value": "512"}, {"type": "VCPU", "value": "1"}]
    assert cp["jobRoleArn"] == "arn:aws:iam::012345678910:role/JobRole"
    assert d["retryStrategy"]["attempts"] == 3
    assert d["timeout"] == {"attemptDurationSeconds": 3600}
    assert d.get("tags") == {"project": "barge"}


def test_deprecated_vcpus_and_memory_are_kept_as_given(batch):
    name = uniq("jd-old")
    register_jobdef(batch, ["true"], name=name, container={"vcpus": 2, "memory": 1024})
    cp = describe(batch, jobDefinitions=[f"{name}:1"])[0]["containerProperties"]
    assert cp["vcpus"] == 2
    assert cp["memory"] == 1024


def test_describe_by_name_rev_arn_and_status(batch):
    name = uniq("jd-desc")
    for _ in range(3):
        register_jobdef(batch, ["true"], name=name)
    assert [d["revision"] for d in describe(batch, jobDefinitions=[f"{name}:2"])] == [2]
    assert [d["revision"] for d in describe(batch, jobDefinitions=[arn("job-definition", f"{name}:3")])] == [3]
    both = describe(batch, jobDefinitions=[f"{name}:1", arn("job-definition", f"{name}:3")])
    assert sorted(d["revision"] for d in both) == [1, 3]
    # unknown revisions are simply absent
    assert describe(batch, jobDefinitions=[f"{name}:99"]) == []

    resp = batch.deregister_job_definition(jobDefinition=f"{name}:2")
    assert set(resp) == {"ResponseMetadata"}
    assert describe(batch, jobDefinitions=[f"{name}:2"])[0]["status"] == "INACTIVE"
    active = describe(batch, jobDefinitionName=name, status="ACTIVE")
    assert sorted(d["revision"] for d in active) == [1, 3]
    inactive = describe(batch, jobDefinitionName=name, status="INACTIVE")
    assert [d["revision"] for d in inactive] == [2]
    # deregister by ARN too
    batch.deregister_job_definition(jobDefinition=arn("job-definition", f"{name}:3"))
    assert describe(batch, jobDefinitions=[f"{name}:3"])[0]["status"] == "INACTIVE"
    # status filter alone spans names
    any_active = describe(batch, status="ACTIVE", maxResults=100)
    assert all(d["status"] == "ACTIVE" for d in any_active)


def test_bare_name_means_latest_active_revision(batch):
    name = uniq("jd-latest")
    register_jobdef(batch, ["true"], name=name)
    register_jobdef(batch, ["true"], name=name)
    register_jobdef(batch, ["true"], name=name)
    batch.deregister_job_definition(jobDefinition=f"{name}:3")
    job = submit(batch, "default", name)["jobId"]
    d = wait_for(batch, job, ("SUCCEEDED", "FAILED"))
    assert d["jobDefinition"] == arn("job-definition", f"{name}:2")
    job = submit(batch, "default", f"{name}:1")["jobId"]
    assert batch.describe_jobs(jobs=[job])["jobs"][0]["jobDefinition"] == arn("job-definition", f"{name}:1")


def test_describe_paginates(batch):
    name = uniq("jd-page")
    for _ in range(5):
        register_jobdef(batch, ["true"], name=name)
    seen = []
    token = None
    for _ in range(50):
        kw = {"jobDefinitionName": name, "maxResults": 2}
        if token:
            kw["nextToken"] = token
        page = batch.describe_job_definitions(**kw)
        assert len(page["jobDefinitions"]) <= 2
        seen += [d["revision"] for d in page["jobDefinitions"]]
        token = page.get("nextToken")
        if not token:
            break
    else:
        pytest.fail("describe_job_definitions pagination never ended")
    assert sorted(seen) == [1, 2, 3, 4, 5]
    pag = batch.get_paginator("describe_job_definitions")
    revs = [d["revision"] for p in pag.paginate(jobDefinitionName=name, PaginationConfig={"PageSize": 3})
            for d in p["jobDefinitions"]]
    assert sorted(revs) == [1, 2, 3, 4, 5]


def test_deregister_unknown_refused(batch):
    missing = uniq("no-such-jd")
    assert_refused(batch.deregister_job_definition, missing, "not", jobDefinition=f"{missing}:1")


def test_register_validation(batch):
    name = uniq("jd-bad")
    assert_refused(batch.register_job_definition, "attempts",
                   jobDefinitionName=name, type="container",
                   containerProperties={"image": "x", "command": ["true"]}, retryStrategy={"attempts": 11})
    assert_refused(batch.register_job_definition, "attemptDurationSeconds", "timeout", "60",
                   jobDefinitionName=name, type="container",
                   containerProperties={"image": "x", "command": ["true"]}, timeout={"attemptDurationSeconds": 59})
    assert_refused(batch.register_job_definition, "AWS_BATCH_",
                   jobDefinitionName=name, type="container",
                   containerProperties={"image": "x", "command": ["true"],
                                        "environment": [{"name": "AWS_BATCH_FOO", "value": "1"}]})
    assert_refused(batch.register_job_definition, "jobDefinitionName", "name",
                   jobDefinitionName="bad name!", type="container",
                   containerProperties={"image": "x", "command": ["true"]})
    # nothing was registered under the name by the refused calls
    assert describe(batch, jobDefinitionName=name) == []
