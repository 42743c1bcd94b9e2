"""Issue 2, points 2 and 4 through the real aws CLI v1 (subprocess, --endpoint-url):
the AWS documentation's examples and a representative set of batch and logs commands."""

from __future__ import annotations

import json
import subprocess
import urllib.parse

import pytest

from barge_helpers import (
    LOG_GROUP,
    aws_cli_path,
    arn,
    cli_env,
    uniq,
    wait_until,
)

pytestmark = pytest.mark.cli


def test_cli_is_v1():
    out = subprocess.run([aws_cli_path(), "--version"], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert (out.stdout + out.stderr).startswith("aws-cli/1."), out.stdout + out.stderr


@pytest.fixture(scope="module")
def setup(aws):
    """CE (docs example shape), queue (CE by name), job definition, all via the CLI."""
    ce = uniq("C4OnDemand")
    resources = {
        "type": "EC2", "minvCpus": 0, "maxvCpus": 4, "desiredvCpus": 0,
        "instanceTypes": ["c4.large", "c4.xlarge"],
        "subnets": ["subnet-220c0e0a", "subnet-1a95556d"],
        "securityGroupIds": ["sg-cf5093b2"],
        "ec2KeyPair": "id_rsa",
        "instanceRole": "ecsInstanceRole",
        "bidPercentage": 60,
        "tags": {"Name": "Batch Instance - C4OnDemand"},
    }
    out = aws("batch", "create-compute-environment", "--compute-environment-name", ce, "--type", "MANAGED",
              "--state", "ENABLED", "--compute-resources", json.dumps(resources),
              "--service-role", "arn:aws:iam::012345678910:role/AWSBatchServiceRole")
    assert out["computeEnvironmentName"] == ce
    assert out["computeEnvironmentArn"] == arn("compute-environment", ce)

    q = uniq("HighPriority")
    out = aws("batch", "create-job-queue", "--job-queue-name", q, "--state", "ENABLED", "--priority", "1",
              "--compute-environment-order", f"order=1,computeEnvironment={ce}")
    assert out == {"jobQueueName": q, "jobQueueArn": arn("job-queue", q)}

    jd = uniq("sleep10")
    out = aws("batch", "register-job-definition", "--job-definition-name", jd, "--type", "container",
              "--container-properties", json.dumps({"image": "busybox", "vcpus": 1, "memory": 128,
                                                     "command": ["sleep", "10"],
                                                     "environment": [{"name": "FROM_DEF", "value": "yes"}]}),
              "--retry-strategy", "attempts=2", "--timeout", "attemptDurationSeconds=3600")
    assert out == {"jobDefinitionName": jd, "jobDefinitionArn": arn("job-definition", f"{jd}:1"), "revision": 1}
    return {"ce": ce, "q": q, "jd": jd, "resources": resources}


def test_describe_ce_echoes_docs_example(aws, setup):
    out = aws("batch", "describe-compute-environments", "--compute-environments", setup["ce"])
    [ce] = out["computeEnvironments"]
    assert ce["status"] == "VALID" and ce["state"] == "ENABLED"
    for key in ("subnets", "securityGroupIds", "instanceRole", "bidPercentage", "ec2KeyPair", "instanceTypes", "tags"):
        assert ce["computeResources"][key] == setup["resources"][key], key
    assert ce["serviceRole"] == "arn:aws:iam::012345678910:role/AWSBatchServiceRole"
    # auto-paginated listing of everything ends and contains it
    out = aws("batch", "describe-compute-environments", "--page-size", "1")
    assert setup["ce"] in [c["computeEnvironmentName"] for c in out["computeEnvironments"]]


def test_describe_queue_and_definition(aws, setup):
    [q] = aws("batch", "describe-job-queues", "--job-queues", setup["q"])["jobQueues"]
    assert q["computeEnvironmentOrder"] == [{"order": 1, "computeEnvironment": arn("compute-environment", setup["ce"])}]
    out = aws("batch", "describe-job-definitions", "--job-definition-name", setup["jd"], "--status", "ACTIVE")
    [d] = out["jobDefinitions"]
    assert d["containerProperties"]["vcpus"] == 1 and d["containerProperties"]["memory"] == 128
    assert d["retryStrategy"]["attempts"] == 2
    assert d["timeout"]["attemptDurationSeconds"] == 3600


def test_submit_with_shorthand_override_and_read_logs(aws, server, setup):
    out = aws("batch", "submit-job", "--job-name", "cli-hello", "--job-queue", setup["q"],
              "--job-definition", setup["jd"], "--container-overrides", "command=[echo,cli-hello-world]")
    job_id = out["jobId"]
    assert out["jobName"] == "cli-hello"

    def finished():
        [j] = aws("batch", "describe-jobs", "--jobs", job_id)["jobs"]
        return j if j["status"] in ("SUCCEEDED", "FAILED") else None

    job = wait_until(finished, what="CLI job finished", poll_s=0.5)
    assert job["status"] == "SUCCEEDED", job
    stream = job["container"]["logStreamName"]
    assert stream.startswith(setup["jd"] + "/default/")
    out = aws("logs", "get-log-events", "--log-group-name", LOG_GROUP, "--log-stream-name", stream)
    assert [e["message"].rstrip("\n") for e in out["events"]] == ["cli-hello-world"]
    # text output as a person would read it
    proc = subprocess.run([aws_cli_path(), "--endpoint-url", server.endpoint, "--region", "us-east-1",
                           "logs", "get-log-events", "--log-group-name", LOG_GROUP, "--log-stream-name", stream,
                           "--query", "events[].message", "--output", "text"],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "cli-hello-world" in proc.stdout

    out = aws("logs", "filter-log-events", "--log-group-name", LOG_GROUP, "--log-stream-names", stream,
              "--filter-pattern", "hello")
    assert [e["message"].rstrip("\n") for e in out["events"]] == ["cli-hello-world"]
    out = aws("logs", "describe-log-streams", "--log-group-name", LOG_GROUP,
              "--log-stream-name-prefix", setup["jd"] + "/")
    assert [s["logStreamName"] for s in out["logStreams"]] == [stream]
    out = aws("logs", "describe-log-groups", "--log-group-name-prefix", "/aws/batch")
    assert LOG_GROUP in [g["logGroupName"] for g in out["logGroups"]]


def test_logs_while_running_via_cli(aws, setup):
    out = aws("batch", "submit-job", "--job-name", "cli-live", "--job-queue", setup["q"],
              "--job-definition", setup["jd"], "--container-overrides",
              'command=[sh,-c,"echo live-line; sleep 300"]')
    job_id = out["jobId"]
    try:
        def stream():
            [j] = aws("batch", "describe-jobs", "--jobs", job_id)["jobs"]
            return j["status"] == "RUNNING" and j.get("container", {}).get("logStreamName")

        name = wait_until(stream, what="RUNNING with a logStreamName", poll_s=0.5)

        def has_line():
            out = aws("logs", "get-log-events", "--log-group-name", LOG_GROUP, "--log-stream-name", name)
            return "live-line" in [e["message"].rstrip("\n") for e in out["events"]]

        wait_until(has_line, what="live-line while the job runs", poll_s=0.5)
    finally:
        assert aws("batch", "terminate-job", "--job-id", job_id, "--reason", "done watching") is None


def test_list_jobs_auto_pagination_ends(aws, setup):
    prefix = uniq("cli-list")
    ids = []
    for i in range(5):
        out = aws("batch", "submit-job", "--job-name", f"{prefix}-{i}", "--job-queue", setup["q"],
                  "--job-definition", setup["jd"], "--container-overrides", "command=[true]")
        ids.append(out["jobId"])

    def all_done():
        jobs = aws("batch", "describe-jobs", "--jobs", *ids)["jobs"]
        return len(jobs) == 5 and all(j["status"] in ("SUCCEEDED", "FAILED") for j in jobs)

    wait_until(all_done, what="five CLI jobs finished", poll_s=0.5)
    out = aws("batch", "list-jobs", "--job-queue", setup["q"], "--job-status", "SUCCEEDED", "--page-size", "2",
              timeout_s=60)
    assert set(ids) <= {s["jobId"] for s in out["jobSummaryList"]}
    out = aws("batch", "list-jobs", "--job-queue", setup["q"], "--filters", f"name=JOB_NAME,values={prefix}*",
              "--page-size", "2", timeout_s=60)
    assert sorted(s["jobId"] for s in out["jobSummaryList"]) == sorted(ids)
    # default (no status): RUNNING only, none here
    out = aws("batch", "list-jobs", "--job-queue", setup["q"], timeout_s=60)
    assert not set(ids) & {s["jobId"] for s in out["jobSummaryList"]}


def test_cancel_and_terminate_print_nothing(aws, setup):
    parked_ce = uniq("cli-parked")
    aws("batch", "create-compute-environment", "--compute-environment-name", parked_ce, "--type", "MANAGED",
        "--compute-resources", "type=EC2,minvCpus=0,maxvCpus=1,subnets=subnet-1,instanceRole=r")
    parked_q = uniq("cli-parked-q")
    aws("batch", "create-job-queue", "--job-queue-name", parked_q, "--priority", "1",
        "--compute-environment-order", f"order=1,computeEnvironment={parked_ce}")
    aws("batch", "update-compute-environment", "--compute-environment", parked_ce, "--state", "DISABLED")
    a = aws("batch", "submit-job", "--job-name", "cancel-me", "--job-queue", parked_q,
            "--job-definition", setup["jd"])["jobId"]
    b = aws("batch", "submit-job", "--job-name", "terminate-me", "--job-queue", parked_q,
            "--job-definition", setup["jd"])["jobId"]
    assert aws("batch", "cancel-job", "--job-id", a, "--reason", "cancelled via cli") is None
    assert aws("batch", "terminate-job", "--job-id", b, "--reason", "terminated via cli") is None

    def failed():
        jobs = {j["jobId"]: j for j in aws("batch", "describe-jobs", "--jobs", a, b)["jobs"]}
        return jobs if all(jobs.get(x, {}).get("status") == "FAILED" for x in (a, b)) else None

    jobs = wait_until(failed, what="cancelled and terminated jobs FAILED", poll_s=0.5)
    assert jobs[a]["statusReason"] == "cancelled via cli"
    assert jobs[b]["statusReason"] == "terminated via cli"
    # --reason is required by the CLI itself
    proc = aws("batch", "cancel-job", "--job-id", a, check=False)
    assert proc.returncode != 0


def test_tags_via_cli(aws, setup):
    res = arn("job-definition", f"{setup['jd']}:1")
    assert aws("batch", "tag-resource", "--resource-arn", res, "--tags", "team=barge,stage=e2e") is None
    assert aws("batch", "list-tags-for-resource", "--resource-arn", res) == {"tags": {"team": "barge", "stage": "e2e"}}
    assert aws("batch", "untag-resource", "--resource-arn", res, "--tag-keys", "team") is None
    assert aws("batch", "list-tags-for-resource", "--resource-arn", res) == {"tags": {"stage": "e2e"}}
    q = arn("job-queue", setup["q"])
    aws("batch", "tag-resource", "--resource-arn", q, "--tags", "owner=cli")
    assert aws("batch", "list-tags-for-resource", "--resource-arn", q)["tags"] == {"owner": "cli"}
    assert urllib.parse.quote(q, safe="") != q  # the CLI percent-encodes the whole ARN


def test_updates_and_deletes_via_cli(aws, setup):
    ce = uniq("cli-ce")
    aws("batch", "create-compute-environment", "--compute-environment-name", ce, "--type", "MANAGED",
        "--compute-resources", "type=EC2,minvCpus=0,maxvCpus=8,desiredvCpus=1,subnets=subnet-1,instanceRole=r")
    out = aws("batch", "update-compute-environment", "--compute-environment", ce,
              "--compute-resources", "desiredvCpus=4")
    assert out == {"computeEnvironmentName": ce, "computeEnvironmentArn": arn("compute-environment", ce)}
    proc = aws("batch", "update-compute-environment", "--compute-environment", ce,
               "--compute-resources", "desiredvCpus=2", check=False)
    assert proc.returncode == 255 and "ClientException" in proc.stderr, proc.stderr
    q = uniq("cli-q")
    aws("batch", "create-job-queue", "--job-queue-name", q, "--priority", "5",
        "--compute-environment-order", f"order=1,computeEnvironment={arn('compute-environment', ce)}")
    out = aws("batch", "update-job-queue", "--job-queue", q, "--priority", "200")
    assert out == {"jobQueueName": q, "jobQueueArn": arn("job-queue", q)}
    assert aws("batch", "describe-job-queues", "--job-queues", q)["jobQueues"][0]["priority"] == 200
    # deletes: queue must be DISABLED, CE DISABLED and detached
    proc = aws("batch", "delete-job-queue", "--job-queue", q, check=False)
    assert proc.returncode == 255 and "ClientException" in proc.stderr, proc.stderr
    aws("batch", "update-job-queue", "--job-queue", q, "--state", "DISABLED")
    assert aws("batch", "delete-job-queue", "--job-queue", q) is None
    wait_until(lambda: not [x for x in aws("batch", "describe-job-queues", "--job-queues", q)["jobQueues"]
                            if x.get("status") != "DELETED"], what="queue gone", poll_s=0.5)
    aws("batch", "update-compute-environment", "--compute-environment", ce, "--state", "DISABLED")
    assert aws("batch", "delete-compute-environment", "--compute-environment", ce) is None
    aws("batch", "deregister-job-definition", "--job-definition", f"{setup['jd']}:1")
    [d] = aws("batch", "describe-job-definitions", "--job-definitions", f"{setup['jd']}:1")["jobDefinitions"]
    assert d["status"] == "INACTIVE"
    # re-register so later tests in this module still have an ACTIVE revision
    aws("batch", "register-job-definition", "--job-definition-name", setup["jd"], "--type", "container",
        "--container-properties", json.dumps({"image": "busybox", "command": ["sleep", "10"]}))
