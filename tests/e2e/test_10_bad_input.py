"""Issue 2, point 7: bad input is refused clearly. Missing required members, wrong JSON
types, out-of-range values, unknown queues or definitions, malformed JSON and bodies
over AWS's limits (30 KiB SubmitJob, 24 KiB job definition) get HTTP 400,
`x-amzn-ErrorType: ClientException` and `{"__type":"ClientException","message":...}`
whose message names the problem. Never a 500, a panic or a hung request.

botocore validates input client-side, so the table is sent as raw HTTP; a few cases
also go through boto3 and the aws CLI to check what the real clients report."""

from __future__ import annotations

import json
import uuid

import botocore.exceptions
import pytest
import requests

from barge_helpers import (
    assert_client_exception,
    register_jobdef,
    run_aws,
    uniq,
)

KIB = 1024


@pytest.fixture(scope="module")
def ctx(batch):
    jd = register_jobdef(batch, ["true"])
    ce = uniq("ce-badin")
    batch.create_compute_environment(computeEnvironmentName=ce, type="UNMANAGED")
    return {"jd": jd["jobDefinitionName"], "jd_arn": jd["jobDefinitionArn"], "q": "default", "ce": ce}


def submit_body(c, **over):
    body = {"jobName": "bad-input", "jobQueue": c["q"], "jobDefinition": c["jd"]}
    body.update(over)
    return body


def without(d, key):
    d = dict(d)
    d.pop(key)
    return d


def jd_body(**over):
    body = {"jobDefinitionName": "bad-input-jd", "type": "container",
            "containerProperties": {"image": "busybox", "command": ["true"]}}
    body.update(over)
    return body


def cp(**over):
    props = {"image": "busybox", "command": ["true"]}
    props.update(over)
    return props


def ce_body(**over):
    body = {"computeEnvironmentName": "bad-input-ce", "type": "MANAGED",
            "computeResources": {"type": "EC2", "minvCpus": 0, "maxvCpus": 4,
                                 "subnets": ["subnet-1"], "instanceRole": "ecsInstanceRole"}}
    body.update(over)
    return body


def cr(**over):
    res = {"type": "EC2", "minvCpus": 0, "maxvCpus": 4, "subnets": ["subnet-1"], "instanceRole": "ecsInstanceRole"}
    res.update(over)
    return res


def q_body(c, **over):
    body = {"jobQueueName": "bad-input-q", "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": c["ce"]}]}
    body.update(over)
    return body


# (id, operation path, body factory(ctx), tokens of which the message must name one)
CASES = [
    # ---- SubmitJob: missing required members
    ("submit-missing-jobName", "submitjob", lambda c: without(submit_body(c), "jobName"), ["jobName"]),
    ("submit-missing-jobQueue", "submitjob", lambda c: without(submit_body(c), "jobQueue"), ["jobQueue"]),
    ("submit-missing-jobDefinition", "submitjob", lambda c: without(submit_body(c), "jobDefinition"), ["jobDefinition"]),
    ("submit-empty-object", "submitjob", lambda c: {}, ["jobName", "jobQueue", "jobDefinition"]),
    # ---- SubmitJob: wrong JSON types
    ("submit-jobName-number", "submitjob", lambda c: submit_body(c, jobName=123), ["jobName"]),
    ("submit-jobQueue-list", "submitjob", lambda c: submit_body(c, jobQueue=["default"]), ["jobQueue"]),
    ("submit-parameters-string", "submitjob", lambda c: submit_body(c, parameters="x"), ["parameters"]),
    ("submit-parameters-value-number", "submitjob", lambda c: submit_body(c, parameters={"a": 1}), ["parameters"]),
    ("submit-overrides-string", "submitjob", lambda c: submit_body(c, containerOverrides="x"), ["containerOverrides"]),
    ("submit-command-string", "submitjob",
     lambda c: submit_body(c, containerOverrides={"command": "echo hi"}), ["command"]),
    ("submit-command-numbers", "submitjob",
     lambda c: submit_body(c, containerOverrides={"command": [1, 2]}), ["command"]),
    ("submit-environment-object", "submitjob",
     lambda c: submit_body(c, containerOverrides={"environment": {"A": "b"}}), ["environment"]),
    ("submit-vcpus-string", "submitjob",
     lambda c: submit_body(c, containerOverrides={"vcpus": "two"}), ["vcpus"]),
    ("submit-attempts-string", "submitjob",
     lambda c: submit_body(c, retryStrategy={"attempts": "3"}), ["attempts", "retryStrategy"]),
    ("submit-timeout-number", "submitjob", lambda c: submit_body(c, timeout=5), ["timeout"]),
    ("submit-tags-list", "submitjob", lambda c: submit_body(c, tags=["a"]), ["tags"]),
    # ---- SubmitJob: out-of-range values
    ("submit-attempts-0", "submitjob", lambda c: submit_body(c, retryStrategy={"attempts": 0}), ["attempts"]),
    ("submit-attempts-11", "submitjob", lambda c: submit_body(c, retryStrategy={"attempts": 11}), ["attempts"]),
    ("submit-timeout-59", "submitjob",
     lambda c: submit_body(c, timeout={"attemptDurationSeconds": 59}), ["attemptDurationSeconds", "timeout"]),
    ("submit-jobName-129", "submitjob", lambda c: submit_body(c, jobName="a" * 129), ["jobName", "name"]),
    ("submit-jobName-chars", "submitjob", lambda c: submit_body(c, jobName="bad name!"), ["jobName", "name"]),
    ("submit-jobName-empty", "submitjob", lambda c: submit_body(c, jobName=""), ["jobName", "name"]),
    ("submit-vcpu-negative", "submitjob",
     lambda c: submit_body(c, containerOverrides={"resourceRequirements": [{"type": "VCPU", "value": "-1"}]}),
     ["VCPU", "resourceRequirements", "value"]),
    ("submit-vcpu-not-a-number", "submitjob",
     lambda c: submit_body(c, containerOverrides={"resourceRequirements": [{"type": "VCPU", "value": "abc"}]}),
     ["VCPU", "resourceRequirements", "value", "abc"]),
    ("submit-memory-negative", "submitjob",
     lambda c: submit_body(c, containerOverrides={"resourceRequirements": [{"type": "MEMORY", "value": "-5"}]}),
     ["MEMORY", "resourceRequirements", "value"]),
    ("submit-requirement-type", "submitjob",
     lambda c: submit_body(c, containerOverrides={"resourceRequirements": [{"type": "BOGUS", "value": "1"}]}),
     ["type", "BOGUS", "resourceRequirements"]),
    ("submit-reserved-env", "submitjob",
     lambda c: submit_body(c, containerOverrides={"environment": [{"name": "AWS_BATCH_X", "value": "1"}]}),
     ["AWS_BATCH_"]),
    ("submit-tags-51", "submitjob",
     lambda c: submit_body(c, tags={f"k{i}": "v" for i in range(51)}), ["tags", "50"]),
    # ---- SubmitJob: unknown references
    ("submit-unknown-queue", "submitjob",
     lambda c: submit_body(c, jobQueue="no-such-queue-e2e"), ["no-such-queue-e2e"]),
    ("submit-unknown-queue-arn", "submitjob",
     lambda c: submit_body(c, jobQueue="arn:aws:batch:us-east-1:000000000000:job-queue/no-such-queue-e2e"),
     ["no-such-queue-e2e"]),
    ("submit-unknown-definition", "submitjob",
     lambda c: submit_body(c, jobDefinition="no-such-jd-e2e"), ["no-such-jd-e2e"]),
    ("submit-unknown-revision", "submitjob",
     lambda c: submit_body(c, jobDefinition=c["jd"] + ":99"), [":99", "revision", "definition"]),
    # ---- malformed bodies
    ("malformed-json", "submitjob", lambda c: b'{"jobName": "x", ', ["json", "parse", "malformed", "syntax", "expected", "invalid"]),
    ("not-json", "submitjob", lambda c: b"jobName=x", ["json", "parse", "malformed", "syntax", "expected", "invalid"]),
    ("json-array", "submitjob", lambda c: b"[1, 2]", ["json", "object", "expected", "invalid", "type"]),
    ("json-string", "submitjob", lambda c: b'"hello"', ["json", "object", "expected", "invalid", "type"]),
    ("json-null", "submitjob", lambda c: b"null", ["json", "object", "expected", "invalid", "type", "jobName"]),
    ("invalid-utf8", "submitjob", lambda c: b'{"jobName": "\xff\xfe"}', ["json", "utf", "invalid", "parse", "expected"]),
    ("empty-body-submit", "submitjob", lambda c: b"", ["jobName", "body", "json", "empty"]),
    ("malformed-register", "registerjobdefinition", lambda c: b"{", ["json", "parse", "malformed", "eof", "expected", "invalid"]),
    # ---- body size limits
    ("submit-over-30KiB", "submitjob",
     lambda c: submit_body(c, parameters={f"p{i}": "x" * 1000 for i in range(31)}),
     ["size", "large", "limit", "bytes", "kib", "exceed", "30"]),
    ("submit-1MiB", "submitjob",
     lambda c: submit_body(c, parameters={"big": "x" * (1024 * KIB)}),
     ["size", "large", "limit", "bytes", "kib", "exceed", "30"]),
    ("register-over-24KiB", "registerjobdefinition",
     lambda c: jd_body(parameters={f"p{i}": "x" * 1000 for i in range(25)}),
     ["size", "large", "limit", "bytes", "kib", "exceed", "24"]),
    # ---- RegisterJobDefinition
    ("register-missing-name", "registerjobdefinition", lambda c: without(jd_body(), "jobDefinitionName"), ["jobDefinitionName"]),
    ("register-missing-type", "registerjobdefinition", lambda c: without(jd_body(), "type"), ["type"]),
    ("register-type-bogus", "registerjobdefinition", lambda c: jd_body(type="bogus"), ["type", "bogus"]),
    ("register-name-chars", "registerjobdefinition", lambda c: jd_body(jobDefinitionName="bad name"), ["jobDefinitionName", "name"]),
    ("register-name-129", "registerjobdefinition", lambda c: jd_body(jobDefinitionName="a" * 129), ["jobDefinitionName", "name"]),
    ("register-vcpus-string", "registerjobdefinition", lambda c: jd_body(containerProperties=cp(vcpus="two")), ["vcpus"]),
    ("register-memory-too-small", "registerjobdefinition", lambda c: jd_body(containerProperties=cp(memory=2)), ["memory"]),
    ("register-memory-requirement-too-small", "registerjobdefinition",
     lambda c: jd_body(containerProperties=cp(resourceRequirements=[{"type": "MEMORY", "value": "2"}])),
     ["MEMORY", "memory"]),
    ("register-command-string", "registerjobdefinition", lambda c: jd_body(containerProperties=cp(command="true")), ["command"]),
    ("register-reserved-env", "registerjobdefinition",
     lambda c: jd_body(containerProperties=cp(environment=[{"name": "AWS_BATCH_JOB_ID", "value": "x"}])), ["AWS_BATCH_"]),
    ("register-attempts-11", "registerjobdefinition", lambda c: jd_body(retryStrategy={"attempts": 11}), ["attempts"]),
    ("register-attempts-0", "registerjobdefinition", lambda c: jd_body(retryStrategy={"attempts": 0}), ["attempts"]),
    ("register-timeout-59", "registerjobdefinition",
     lambda c: jd_body(timeout={"attemptDurationSeconds": 59}), ["attemptDurationSeconds", "timeout"]),
    ("register-parameters-number", "registerjobdefinition", lambda c: jd_body(parameters={"a": 1}), ["parameters"]),
    ("register-tags-51", "registerjobdefinition", lambda c: jd_body(tags={f"k{i}": "v" for i in range(51)}), ["tags", "50"]),
    ("register-requirement-type", "registerjobdefinition",
     lambda c: jd_body(containerProperties=cp(resourceRequirements=[{"type": "CPU", "value": "1"}])),
     ["type", "CPU", "resourceRequirements"]),
    # ---- CreateComputeEnvironment
    ("ce-missing-name", "createcomputeenvironment", lambda c: without(ce_body(), "computeEnvironmentName"), ["computeEnvironmentName"]),
    ("ce-missing-type", "createcomputeenvironment", lambda c: without(ce_body(), "type"), ["type"]),
    ("ce-type-bogus", "createcomputeenvironment", lambda c: ce_body(type="BOGUS"), ["type", "BOGUS"]),
    ("ce-state-bogus", "createcomputeenvironment", lambda c: ce_body(state="SOMETIMES"), ["state", "SOMETIMES"]),
    ("ce-managed-without-resources", "createcomputeenvironment",
     lambda c: without(ce_body(), "computeResources"), ["computeResources"]),
    ("ce-missing-maxvCpus", "createcomputeenvironment",
     lambda c: ce_body(computeResources=without(cr(), "maxvCpus")), ["maxvCpus"]),
    ("ce-maxvCpus-string", "createcomputeenvironment",
     lambda c: ce_body(computeResources=cr(maxvCpus="four")), ["maxvCpus"]),
    ("ce-maxvCpus-negative", "createcomputeenvironment",
     lambda c: ce_body(computeResources=cr(maxvCpus=-1)), ["maxvCpus"]),
    ("ce-min-above-max", "createcomputeenvironment",
     lambda c: ce_body(computeResources=cr(minvCpus=8, maxvCpus=4)), ["minvCpus", "maxvCpus"]),
    ("ce-resources-type-bogus", "createcomputeenvironment",
     lambda c: ce_body(computeResources=cr(type="MAINFRAME")), ["type", "MAINFRAME"]),
    ("ce-name-chars", "createcomputeenvironment", lambda c: ce_body(computeEnvironmentName="bad name"), ["computeEnvironmentName", "name"]),
    ("ce-duplicate", "createcomputeenvironment",
     lambda c: {"computeEnvironmentName": c["ce"], "type": "UNMANAGED"}, ["exist", "already", "duplicate"]),
    # ---- UpdateComputeEnvironment / DeleteComputeEnvironment
    ("ce-update-unknown", "updatecomputeenvironment",
     lambda c: {"computeEnvironment": "no-such-ce-e2e", "state": "DISABLED"}, ["no-such-ce-e2e"]),
    ("ce-update-missing", "updatecomputeenvironment", lambda c: {"state": "DISABLED"}, ["computeEnvironment"]),
    ("ce-update-state-bogus", "updatecomputeenvironment",
     lambda c: {"computeEnvironment": c["ce"], "state": "HALF"}, ["state", "HALF"]),
    ("ce-delete-unknown", "deletecomputeenvironment", lambda c: {"computeEnvironment": "no-such-ce-e2e"}, ["no-such-ce-e2e"]),
    # ---- CreateJobQueue / UpdateJobQueue / DeleteJobQueue
    ("q-missing-name", "createjobqueue", lambda c: without(q_body(c), "jobQueueName"), ["jobQueueName"]),
    ("q-missing-priority", "createjobqueue", lambda c: without(q_body(c), "priority"), ["priority"]),
    ("q-missing-order", "createjobqueue", lambda c: without(q_body(c), "computeEnvironmentOrder"), ["computeEnvironmentOrder"]),
    ("q-priority-string", "createjobqueue", lambda c: q_body(c, priority="high"), ["priority"]),
    ("q-order-4-entries", "createjobqueue",
     lambda c: q_body(c, computeEnvironmentOrder=[{"order": i, "computeEnvironment": c["ce"]} for i in range(1, 5)]),
     ["computeEnvironmentOrder", "3"]),
    ("q-order-empty", "createjobqueue", lambda c: q_body(c, computeEnvironmentOrder=[]), ["computeEnvironmentOrder"]),
    ("q-order-missing-ce", "createjobqueue",
     lambda c: q_body(c, computeEnvironmentOrder=[{"order": 1}]), ["computeEnvironment"]),
    ("q-unknown-ce", "createjobqueue",
     lambda c: q_body(c, computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "no-such-ce-e2e"}]),
     ["no-such-ce-e2e"]),
    ("q-state-bogus", "createjobqueue", lambda c: q_body(c, state="OPEN"), ["state", "OPEN"]),
    ("q-update-unknown", "updatejobqueue", lambda c: {"jobQueue": "no-such-queue-e2e", "priority": 2}, ["no-such-queue-e2e"]),
    ("q-delete-unknown", "deletejobqueue", lambda c: {"jobQueue": "no-such-queue-e2e"}, ["no-such-queue-e2e"]),
    ("q-delete-missing", "deletejobqueue", lambda c: {}, ["jobQueue"]),
    # ---- DescribeJobs / ListJobs / Cancel / Terminate / Deregister
    ("describejobs-missing", "describejobs", lambda c: {}, ["jobs"]),
    ("describejobs-not-list", "describejobs", lambda c: {"jobs": "abc"}, ["jobs"]),
    ("describejobs-101", "describejobs", lambda c: {"jobs": [str(uuid.uuid4()) for _ in range(101)]}, ["jobs", "100"]),
    ("listjobs-no-queue", "listjobs", lambda c: {}, ["jobQueue"]),
    ("listjobs-status-bogus", "listjobs", lambda c: {"jobQueue": "default", "jobStatus": "DONE"}, ["jobStatus", "DONE"]),
    ("listjobs-maxResults-0", "listjobs", lambda c: {"jobQueue": "default", "maxResults": 0}, ["maxResults"]),
    ("listjobs-bad-token", "listjobs",
     lambda c: {"jobQueue": "default", "nextToken": "not-a-token-!!"}, ["nextToken", "token"]),
    ("listjobs-filter-bogus", "listjobs",
     lambda c: {"jobQueue": "default", "filters": [{"name": "COLOR", "values": ["red"]}]}, ["filter", "COLOR", "name"]),
    ("canceljob-missing-reason", "canceljob", lambda c: {"jobId": str(uuid.uuid4())}, ["reason"]),
    ("terminatejob-missing-jobId", "terminatejob", lambda c: {"reason": "r"}, ["jobId"]),
    ("deregister-unknown", "deregisterjobdefinition", lambda c: {"jobDefinition": "no-such-jd-e2e:1"}, ["no-such-jd-e2e"]),
    ("deregister-missing", "deregisterjobdefinition", lambda c: {}, ["jobDefinition"]),
    ("describe-ce-maxResults-0", "describecomputeenvironments", lambda c: {"maxResults": 0}, ["maxResults"]),
    ("describe-ce-maxResults-101", "describecomputeenvironments", lambda c: {"maxResults": 101}, ["maxResults"]),
    ("describe-q-maxResults-101", "describejobqueues", lambda c: {"maxResults": 101}, ["maxResults"]),
]


@pytest.mark.parametrize("op,make,tokens", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_table(server, ctx, op, make, tokens):
    try:
        resp = requests.post(f"{server.endpoint}/v1/{op}", data=_encode(make(ctx)),
                             headers={"Content-Type": "application/json"}, timeout=20)
    except requests.Timeout:
        pytest.fail("the request hung (no answer within 20 s)")
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text[:300]}"
    assert_client_exception(resp, tokens)
    assert server.alive(), "barge died"


def _encode(body) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def test_sizes_just_under_the_limits_are_accepted(server, batch, ctx):
    sub = submit_body(ctx, jobName=uniq("big-ok"), parameters={f"p{i}": "x" * 1000 for i in range(27)})
    data = _encode(sub)
    assert 26 * KIB < len(data) < 30 * KIB
    r = requests.post(f"{server.endpoint}/v1/submitjob", data=data, headers={"Content-Type": "application/json"}, timeout=20)
    assert r.status_code == 200, r.text[:300]
    batch.cancel_job(jobId=r.json()["jobId"], reason="cleanup")
    reg = jd_body(jobDefinitionName=uniq("jd-big-ok"), parameters={f"p{i}": "x" * 1000 for i in range(21)})
    data = _encode(reg)
    assert 20 * KIB < len(data) < 24 * KIB
    r = requests.post(f"{server.endpoint}/v1/registerjobdefinition", data=data,
                      headers={"Content-Type": "application/json"}, timeout=20)
    assert r.status_code == 200, r.text[:300]


def test_chunked_body_over_the_limit_is_refused(server, ctx):
    """Without a Content-Length the limit still holds (no unbounded buffering)."""
    def chunks():
        yield b'{"jobName": "chunked", "jobQueue": "default", "jobDefinition": "x", "parameters": {"a": "'
        for _ in range(64):
            yield b"x" * KIB
        yield b'"}}'

    resp = requests.post(f"{server.endpoint}/v1/submitjob", data=chunks(),
                         headers={"Content-Type": "application/json"}, timeout=20)
    assert_client_exception(resp, ["size", "large", "limit", "bytes", "kib", "exceed", "30"])


def test_missing_content_type_is_tolerated(server, ctx):
    r = requests.post(f"{server.endpoint}/v1/describejobqueues", data=b"{}", timeout=20)
    assert r.status_code == 200, r.text[:300]
    r = requests.post(f"{server.endpoint}/v1/describejobqueues", data=b"{}",
                      headers={"Content-Type": "text/plain"}, timeout=20)
    assert r.status_code == 200, r.text[:300]


def test_request_id_header(server):
    ok = requests.post(f"{server.endpoint}/v1/describejobqueues", json={}, timeout=20)
    bad = requests.post(f"{server.endpoint}/v1/submitjob", json={}, timeout=20)
    for r in (ok, bad):
        assert r.headers.get("x-amzn-RequestId"), r.headers


def test_unknown_route_and_method_are_client_errors(server):
    r = requests.post(f"{server.endpoint}/v1/nosuchoperation", json={}, timeout=20)
    assert 400 <= r.status_code < 500, r.status_code
    r = requests.get(f"{server.endpoint}/v1/submitjob", timeout=20)
    assert 400 <= r.status_code < 500, r.status_code


def test_boto3_reports_client_exception(batch, ctx):
    cases = [
        dict(fn=batch.submit_job, kw=dict(jobName="j", jobQueue="no-such-queue-e2e", jobDefinition=ctx["jd"])),
        dict(fn=batch.submit_job, kw=dict(jobName="j", jobQueue="default", jobDefinition="no-such-jd-e2e")),
        dict(fn=batch.submit_job, kw=dict(jobName="j", jobQueue="default", jobDefinition=ctx["jd"],
                                          retryStrategy={"attempts": 11})),
        dict(fn=batch.submit_job, kw=dict(jobName="j", jobQueue="default", jobDefinition=ctx["jd"],
                                          parameters={"big": "x" * (31 * KIB)})),
        dict(fn=batch.register_job_definition, kw=dict(jobDefinitionName=uniq("jd"), type="container",
                                                       containerProperties={"image": "x", "command": ["true"]},
                                                       parameters={"big": "x" * (25 * KIB)})),
        dict(fn=batch.describe_jobs, kw=dict(jobs=[str(uuid.uuid4()) for _ in range(101)])),
        dict(fn=batch.create_job_queue, kw=dict(jobQueueName=uniq("q"), priority=1, computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": "no-such-ce-e2e"}])),
    ]
    for case in cases:
        with pytest.raises(botocore.exceptions.ClientError) as ei:
            case["fn"](**case["kw"])
        err = ei.value.response
        assert err["Error"]["Code"] == "ClientException", err
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert err["Error"]["Message"]
        # the modelled exception class matches too
        assert isinstance(ei.value, batch.exceptions.ClientException)


def test_cli_reports_client_exception(server, ctx):
    proc = run_aws(server, "batch", "submit-job", "--job-name", "x", "--job-queue", "no-such-queue-e2e",
                   "--job-definition", ctx["jd"], check=False)
    assert proc.returncode == 255, (proc.returncode, proc.stdout, proc.stderr)
    assert "An error occurred (ClientException) when calling the SubmitJob operation" in proc.stderr, proc.stderr
    assert "no-such-queue-e2e" in proc.stderr


def test_server_survived_the_table(server):
    assert server.alive()
    assert requests.get(server.endpoint + "/health", timeout=10).status_code == 200
    assert "panicked" not in server.log_text()


def test_every_batch_operation_answers_without_a_5xx(server):
    """Sweep the whole botocore model with an empty body: each operation either works or
    answers a ClientException; none answers 5xx or hangs."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("batch")
    queue_arn = urllib_quote("arn:aws:batch:us-east-1:000000000000:job-queue/default")
    for name in model.operation_names:
        http = model.operation_model(name).http
        uri = http["requestUri"].replace("{resourceArn}", queue_arn)
        try:
            resp = requests.request(http["method"], server.endpoint + uri, data=b"{}",
                                    headers={"Content-Type": "application/json"}, timeout=20)
        except requests.Timeout:
            pytest.fail(f"{name} hung")
        assert resp.status_code < 500, f"{name}: {resp.status_code} {resp.text[:300]}"
        if resp.status_code != 200:
            assert_client_exception(resp)


def urllib_quote(s: str) -> str:
    import urllib.parse

    return urllib.parse.quote(s, safe="")
