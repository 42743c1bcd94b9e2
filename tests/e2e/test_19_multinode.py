"""Issue 3, feature 6: multi-node parallel (MNP) jobs. A type multinode definition with node
ranges runs as one gang: every node placed at once, the main node first, the others once it
runs, each node a job `<id>#<n>` with its own log stream and AWS's node variables; the main
node's exit decides the job and the nodes still running are then stopped; a main-node failure
retries the whole gang; bad ranges and overrides answer 400 naming the field; a gang that does
not fit waits RUNNABLE, whole, with a reason."""

from __future__ import annotations

import json

import pytest

from barge_helpers import (
    MARKER_ENV,
    assert_refused,
    create_ce,
    create_queue,
    describe_job,
    log_lines,
    register_jobdef,
    run_aws,
    submit,
    uniq,
    wait_for,
    wait_until,
)

SHOW_VARS = (
    "echo NODE=$AWS_BATCH_JOB_NODE_INDEX NUM=$AWS_BATCH_JOB_NUM_NODES "
    "MAIN=$AWS_BATCH_JOB_MAIN_NODE_INDEX IP=${AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS:-none} "
    "JOB=$AWS_BATCH_JOB_ID"
)


def node_container(script: str, vcpus: str = "1") -> dict:
    return {
        "image": "busybox",
        "command": ["sh", "-c", script],
        "resourceRequirements": [{"type": "VCPU", "value": vcpus}, {"type": "MEMORY", "value": "128"}],
        "environment": [MARKER_ENV],
    }


def register_mnp(batch, num_nodes: int, main: int, ranges: list[tuple[str, str]], **extra) -> dict:
    return batch.register_job_definition(
        jobDefinitionName=uniq("mnp"),
        type="multinode",
        nodeProperties={
            "numNodes": num_nodes,
            "mainNode": main,
            "nodeRangeProperties": [{"targetNodes": t, "container": node_container(s)} for t, s in ranges],
        },
        **extra,
    )


def stream_of(job: dict, attempt: int = -1) -> str:
    return job["attempts"][attempt]["container"]["logStreamName"]


def wait_terminal(batch, job_id: str) -> dict:
    return wait_for(batch, job_id, ("SUCCEEDED", "FAILED"))


def test_a_three_node_job_runs_as_a_gang_and_its_main_node_decides(batch, logs, aws, server, tmp_path):
    # Node 0 (main) waits until both other nodes are up, then exits 0; nodes 1 and 2 (the
    # second range) say they are up and would sleep for 5 minutes: they must be stopped.
    main = f'{SHOW_VARS}; i=0; while [ ! -e {tmp_path}/up-1 ] || [ ! -e {tmp_path}/up-2 ]; do ' \
           f'i=$((i+1)); [ $i -gt 300 ] && exit 9; sleep 0.1; done; echo all up'
    worker = f"{SHOW_VARS}; touch {tmp_path}/up-$AWS_BATCH_JOB_NODE_INDEX; exec sleep 300"
    node_properties = {
        "numNodes": 3,
        "mainNode": 0,
        "nodeRangeProperties": [
            {"targetNodes": "0", "container": node_container(main)},
            {"targetNodes": "1:", "container": node_container(worker)},
        ],
    }
    name = uniq("mnp")
    reg = aws("batch", "register-job-definition", "--job-definition-name", name, "--type", "multinode",
              "--node-properties", json.dumps(node_properties))
    assert reg["revision"] == 1
    described = aws("batch", "describe-job-definitions", "--job-definitions", reg["jobDefinitionArn"])
    jd = described["jobDefinitions"][0]
    assert jd["type"] == "multinode"
    assert jd["nodeProperties"]["numNodes"] == 3 and jd["nodeProperties"]["mainNode"] == 0
    assert [r["targetNodes"] for r in jd["nodeProperties"]["nodeRangeProperties"]] == ["0", "1:"]
    assert jd["nodeProperties"]["nodeRangeProperties"][1]["container"]["command"] == ["sh", "-c", worker]

    job_id = aws("batch", "submit-job", "--job-name", uniq("gang"), "--job-queue", "default",
                 "--job-definition", name)["jobId"]
    parent = wait_terminal(batch, job_id)
    assert parent["status"] == "SUCCEEDED", parent
    assert parent["nodeProperties"]["numNodes"] == 3
    assert parent["nodeProperties"]["mainNode"] == 0
    assert [r["targetNodes"] for r in parent["nodeProperties"]["nodeRangeProperties"]] == ["0:0", "1:2"]
    assert "container" not in parent, "a multi-node job shows its nodes' properties, not a container"
    assert len(parent["attempts"]) == 1
    assert parent["attempts"][0]["container"]["exitCode"] == 0

    # Every node is a job of its own, listed under its parent.
    nodes = [describe_job(batch, f"{job_id}#{i}") for i in range(3)]
    for i, node in enumerate(nodes):
        assert node["nodeDetails"] == {"nodeIndex": i, "isMainNode": i == 0}
    for node in nodes[1:]:
        node = wait_terminal(batch, node["jobId"])
        # Stopped (SIGTERM) when the main node exited; the job's success is theirs.
        assert node["attempts"][0]["container"]["exitCode"] == 143, node["attempts"]
        assert "main node 0" in node["statusReason"], node["statusReason"]
    listed = aws("batch", "list-jobs", "--multi-node-job-id", job_id, "--job-status", "SUCCEEDED")["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [f"{job_id}#{i}" for i in range(3)]
    assert [j["nodeProperties"] for j in listed] == [
        {"isMainNode": i == 0, "numNodes": 3, "nodeIndex": i} for i in range(3)
    ]
    # Nodes stay out of the queue's filtered listing; the job itself is there.
    filtered = batch.list_jobs(jobQueue="default", filters=[{"name": "JOB_DEFINITION", "values": [name]}])
    assert [j["jobId"] for j in filtered["jobSummaryList"]] == [job_id]

    # Each node logs AWS's node variables; the others also get the main node's address.
    main_lines = log_lines(logs, stream_of(nodes[0]))
    assert main_lines[0] == f"NODE=0 NUM=3 MAIN=0 IP=none JOB={job_id}#0", main_lines
    assert main_lines[-1] == "all up"
    for i in (1, 2):
        node = describe_job(batch, f"{job_id}#{i}")
        assert log_lines(logs, stream_of(node)) == [f"NODE={i} NUM=3 MAIN=0 IP=127.0.0.1 JOB={job_id}#{i}"]
    streams = {stream_of(describe_job(batch, f"{job_id}#{i}")) for i in range(3)}
    assert len(streams) == 3, "each node has its own log stream"


def test_a_main_node_failure_retries_the_whole_gang(batch, logs):
    # Node 1 is the main node: it fails its first attempt and succeeds its second.
    script = ('if [ "$AWS_BATCH_JOB_NODE_INDEX" = "$AWS_BATCH_JOB_MAIN_NODE_INDEX" ]; then '
              'echo main try $AWS_BATCH_JOB_ATTEMPT; sleep 1; test "$AWS_BATCH_JOB_ATTEMPT" -ge 2; '
              'else echo worker try $AWS_BATCH_JOB_ATTEMPT; exec sleep 300; fi')
    jd = register_mnp(batch, 2, 1, [(":", script)], retryStrategy={"attempts": 2})
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    parent = wait_terminal(batch, job_id)
    assert parent["status"] == "SUCCEEDED", parent
    assert [a["container"]["exitCode"] for a in parent["attempts"]] == [1, 0]
    main = wait_terminal(batch, f"{job_id}#1")
    assert main["nodeDetails"] == {"nodeIndex": 1, "isMainNode": True}
    assert [log_lines(logs, stream_of(main, i)) for i in (0, 1)] == [["main try 1"], ["main try 2"]]
    worker = wait_terminal(batch, f"{job_id}#0")
    assert len(worker["attempts"]) == 2, "the whole gang ran again"
    assert worker["attempts"][0]["container"]["logStreamName"] != worker["attempts"][1]["container"]["logStreamName"]


def test_terminating_the_job_stops_every_node(batch):
    script = "exec sleep 300"
    jd = register_mnp(batch, 2, 0, [("0", script), ("1", script)])
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    wait_for(batch, job_id, ("RUNNING",))
    wait_until(lambda: describe_job(batch, f"{job_id}#1")["status"] == "RUNNING", what="node 1 running")
    # A node is stopped only with its job.
    assert_refused(batch.terminate_job, f"{job_id}#1", jobId=f"{job_id}#1", reason="one node")
    batch.terminate_job(jobId=job_id, reason="stop the gang")
    parent = wait_terminal(batch, job_id)
    assert parent["status"] == "FAILED" and parent["isTerminated"] is True
    assert parent["statusReason"] == "stop the gang"
    for i in (0, 1):
        node = wait_terminal(batch, f"{job_id}#{i}")
        assert node["status"] == "FAILED"
        assert node["attempts"][0]["container"]["exitCode"] == 143


def test_a_gang_that_cannot_fit_waits_whole_with_a_reason(batch):
    ce = create_ce(batch, max_vcpus=3)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    blocker_jd = register_jobdef(batch, ["sleep", "300"],
                                 container={"resourceRequirements": [{"type": "VCPU", "value": "2"},
                                                                     {"type": "MEMORY", "value": "128"}]})
    blocker = submit(batch, q, blocker_jd["jobDefinitionArn"])["jobId"]
    wait_for(batch, blocker, ("RUNNING",))
    jd = register_mnp(batch, 3, 0, [(":", "true")])
    job_id = submit(batch, q, jd["jobDefinitionArn"])["jobId"]
    waiting = wait_for(batch, job_id, ("RUNNABLE",))
    reason = wait_until(
        lambda: (r := describe_job(batch, job_id).get("statusReason", "")).startswith("CAPACITY:") and r,
        what="a capacity reason",
    )
    assert "all 3 nodes" in reason and "room for 1 of 3 nodes" in reason, reason
    assert waiting["status"] == "RUNNABLE"
    # No node is placed while the gang does not fit whole.
    assert batch.describe_jobs(jobs=[f"{job_id}#0"])["jobs"] == []
    assert batch.list_jobs(multiNodeJobId=job_id, jobStatus="STARTING")["jobSummaryList"] == []
    batch.terminate_job(jobId=blocker, reason="make room")
    assert wait_terminal(batch, job_id)["status"] == "SUCCEEDED"

    # A gang larger than the environment's maxvCpus can never run: it says so.
    small_ce = create_ce(batch, max_vcpus=2)["computeEnvironmentName"]
    small_q = create_queue(batch, [small_ce])["jobQueueName"]
    never = submit(batch, small_q, jd["jobDefinitionArn"])["jobId"]
    reason = wait_until(
        lambda: (r := describe_job(batch, never).get("statusReason", "")).startswith("MISCONFIGURATION") and r,
        what="a misconfiguration reason",
    )
    assert reason.startswith("MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE"), reason
    batch.cancel_job(jobId=never, reason="cleanup")


def node_props(num_nodes, main, targets):
    return {
        "numNodes": num_nodes,
        "mainNode": main,
        "nodeRangeProperties": [{"targetNodes": t, "container": node_container("true")} for t in targets],
    }


@pytest.mark.parametrize(
    "props, field",
    [
        (node_props(3, 0, ["0", "2:"]), "nodeProperties.nodeRangeProperties"),
        (node_props(3, 0, ["0:1", "1:"]), "nodeProperties.nodeRangeProperties[1].targetNodes"),
        (node_props(3, 0, ["0", "1-2"]), "nodeProperties.nodeRangeProperties[1].targetNodes"),
        (node_props(3, 0, ["0", "1:5"]), "nodeProperties.nodeRangeProperties[1].targetNodes"),
        (node_props(0, 0, [":"]), "nodeProperties.numNodes"),
        (node_props(1001, 0, [":"]), "nodeProperties.numNodes"),
        (node_props(3, 3, [":"]), "nodeProperties.mainNode"),
        (node_props(6, 0, ["0", "1", "2", "3", "4", "5"]), "nodeProperties.nodeRangeProperties"),
        ({"numNodes": 2, "mainNode": 0, "nodeRangeProperties": [{"targetNodes": ":"}]},
         "nodeProperties.nodeRangeProperties[0].container"),
        ({"numNodes": 2, "nodeRangeProperties": [{"targetNodes": ":"}]}, "nodeProperties.mainNode"),
    ],
)
def test_bad_node_properties_answer_400_naming_the_field(server, props, field):
    from barge_helpers import assert_client_exception, raw_post

    # Raw HTTP: botocore would refuse some of these (missing members) before sending.
    resp = raw_post(server, "registerjobdefinition", {
        "jobDefinitionName": uniq("bad"), "type": "multinode", "nodeProperties": props})
    msg = assert_client_exception(resp)
    assert field in msg, f"{msg!r} should name {field}"


def test_bad_node_overrides_answer_400_naming_the_field(batch, aws):
    jd = register_mnp(batch, 3, 0, [("0", "true"), ("1:", "true")])["jobDefinitionArn"]
    closed = register_mnp(batch, 2, 0, [("0", "true"), ("1", "true")])["jobDefinitionArn"]
    plain = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    cases = [
        (jd, {"nodeOverrides": {"numNodes": 0}}, "nodeOverrides.numNodes"),
        (jd, {"nodeOverrides": {"numNodes": 1}}, "nodeOverrides.numNodes"),
        (closed, {"nodeOverrides": {"numNodes": 4}}, "nodeOverrides.numNodes"),
        (jd, {"nodeOverrides": {"nodePropertyOverrides": [{"targetNodes": "7"}]}},
         "nodeOverrides.nodePropertyOverrides[0].targetNodes"),
        (jd, {"nodeOverrides": {"nodePropertyOverrides": [
            {"targetNodes": "0", "containerOverrides": {"environment": [{"name": "AWS_BATCH_X", "value": "1"}]}}]}},
         "nodeOverrides.nodePropertyOverrides[0].containerOverrides.environment"),
        (jd, {"containerOverrides": {"command": ["x"]}}, "nodeOverrides"),
        (plain, {"nodeOverrides": {"numNodes": 2}}, "nodeOverrides"),
        (jd, {"arrayProperties": {"size": 2}}, "arrayProperties"),
    ]
    for definition, extra, field in cases:
        msg = assert_refused(batch.submit_job, field, jobName=uniq("bad"), jobQueue="default",
                             jobDefinition=definition, **extra)
        assert field in msg, msg
    # The aws CLI sees the same ClientException (exit 255) and prints the field.
    proc = aws("batch", "submit-job", "--job-name", uniq("bad"), "--job-queue", "default",
               "--job-definition", jd, "--node-overrides", json.dumps({"numNodes": 0}), check=False)
    assert proc.returncode == 255, proc
    assert "ClientException" in proc.stderr and "nodeOverrides.numNodes" in proc.stderr, proc.stderr

    # A valid override resizes the job and overrides a range of its nodes.
    ok = submit(batch, "default", jd, nodeOverrides={
        "numNodes": 4,
        "nodePropertyOverrides": [{"targetNodes": "2:", "containerOverrides": {"command": ["sh", "-c", "exit 0"]}}],
    })["jobId"]
    job = wait_terminal(batch, ok)
    assert job["status"] == "SUCCEEDED", job
    assert job["nodeProperties"]["numNodes"] == 4
    groups = {r["targetNodes"]: r["container"]["command"] for r in job["nodeProperties"]["nodeRangeProperties"]}
    assert groups == {"0:0": ["sh", "-c", "true"], "1:1": ["sh", "-c", "true"], "2:3": ["sh", "-c", "exit 0"]}
