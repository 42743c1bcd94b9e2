"""Issue 2, point 1: `barge up` starts with one command, creates the default compute
environment and job queue, prints the endpoint and a ready-to-paste aws line, is
configured by flags or env vars, and shuts down cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import pytest
import requests

from barge_helpers import (
    arn,
    aws_cli_path,
    batch_client,
    cli_env,
    log_lines,
    register_jobdef,
    submit,
    uniq,
    wait_for,
    wait_until,
)


def test_health_answers_200(server):
    r = requests.get(server.endpoint + "/health", timeout=10)
    assert r.status_code == 200


def test_default_compute_environment(batch, server):
    ces = batch.describe_compute_environments(computeEnvironments=["default"])["computeEnvironments"]
    assert len(ces) == 1, ces
    ce = ces[0]
    assert ce["computeEnvironmentName"] == "default"
    assert ce["computeEnvironmentArn"] == arn("compute-environment", "default")
    assert ce["type"] == "MANAGED"
    assert ce["state"] == "ENABLED"
    assert ce["status"] == "VALID"
    assert ce["computeResources"]["type"] == "EC2"
    assert ce["computeResources"]["maxvCpus"] == server.vcpus
    assert isinstance(ce.get("statusReason"), str) and ce["statusReason"]
    assert ce.get("ecsClusterArn", "").startswith("arn:aws:ecs:us-east-1:000000000000:cluster/")


def test_default_job_queue(batch):
    qs = batch.describe_job_queues(jobQueues=["default"])["jobQueues"]
    assert len(qs) == 1, qs
    q = qs[0]
    assert q["jobQueueName"] == "default"
    assert q["jobQueueArn"] == arn("job-queue", "default")
    assert q["state"] == "ENABLED"
    assert q["status"] == "VALID"
    assert isinstance(q["priority"], int)
    assert isinstance(q.get("statusReason"), str) and q["statusReason"]
    assert [o["computeEnvironment"] for o in q["computeEnvironmentOrder"]] == [arn("compute-environment", "default")]


def test_banner_prints_endpoint_and_aws_line(server):
    text = server.log_text()
    assert f"http://127.0.0.1:{server.port}" in text, "the endpoint is not printed"
    lines = [l for l in text.splitlines() if "aws batch submit-job" in l]
    assert lines, "no ready-to-paste `aws batch submit-job` line"
    assert any(f"--endpoint-url http://127.0.0.1:{server.port}" in l for l in lines), lines


def test_banner_aws_lines_work_when_pasted(server, batch, logs):
    """Run the `aws ...` lines the banner prints, as a user would paste them into a shell."""
    lines = [l.strip() for l in server.log_text().split("===== start #1")[-1].splitlines()]
    cmds = [l for l in lines if l.startswith("aws ")]
    assert any(c.startswith("aws batch submit-job") for c in cmds), lines
    env = cli_env()
    env["PATH"] = os.path.dirname(aws_cli_path()) + os.pathsep + env.get("PATH", "")
    job_id = None
    for cmd in cmds:
        assert f"--endpoint-url {server.endpoint}" in cmd, cmd
        proc = subprocess.run(["bash", "-c", cmd + " --output json"], capture_output=True, text=True,
                              env=env, timeout=60)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
        if cmd.startswith("aws batch submit-job"):
            job_id = json.loads(proc.stdout)["jobId"]
    assert job_id
    job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    assert log_lines(logs, job["container"]["logStreamName"]), "the example job printed nothing"


def test_env_vars_configure_listen_data_dir_and_agent(server_factory, e2e_dir):
    srv = server_factory("envcfg", use_env_vars=True, vcpus=3, memory_mib=3000)
    assert srv.data_dir.is_dir() and any(srv.data_dir.iterdir()), "BARGE_DATA_DIR not used"
    b = batch_client(srv)
    ce = b.describe_compute_environments(computeEnvironments=["default"])["computeEnvironments"][0]
    assert ce["computeResources"]["maxvCpus"] == 3
    # A job with no resources asks for the defaults (1 vCPU, 2048 MiB): it fits 3000 MiB.
    jd = register_jobdef(b, ["true"])["jobDefinitionArn"]
    ok = submit(b, "default", jd)["jobId"]
    assert wait_for(b, ok, ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"
    # 4096 MiB can never fit an agent of 3000 MiB: it says so instead of waiting silently.
    big = submit(b, "default", jd, containerOverrides={
        "resourceRequirements": [{"type": "MEMORY", "value": "4096"}]})["jobId"]
    job = wait_until(
        lambda: (lambda j: j if j.get("statusReason", "").startswith("MISCONFIGURATION:") else None)(
            b.describe_jobs(jobs=[big])["jobs"][0]),
        what="MISCONFIGURATION statusReason for a 4096 MiB job on a 3000 MiB agent",
    )
    assert job["status"] == "RUNNABLE"
    b.cancel_job(jobId=big, reason="cleanup")


def test_defaults_without_flags(server_factory, e2e_dir):
    """No flags, no env: 127.0.0.1:8433, ./barge-data, the host's cores."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 8433))
        except OSError:
            pytest.skip("port 8433 is in use on this machine")
    cwd = e2e_dir / "defaults-cwd"
    cwd.mkdir()
    srv = server_factory("defaults", no_config=True, port=8433, cwd=cwd, vcpus=None, memory_mib=None)
    assert (cwd / "barge-data").is_dir(), "default data dir ./barge-data not created"
    b = batch_client(srv)
    ce = b.describe_compute_environments(computeEnvironments=["default"])["computeEnvironments"][0]
    assert ce["computeResources"]["maxvCpus"] == os.cpu_count()
    srv.close()


def test_ctrl_c_shuts_down_cleanly_and_keeps_state(server_factory):
    srv = server_factory("sigint", vcpus=2, memory_mib=4096)
    b = batch_client(srv)
    jd = register_jobdef(b, ["sh", "-c", "echo before-ctrl-c"])
    job = submit(b, "default", jd["jobDefinitionArn"])["jobId"]
    wait_for(b, job, ("SUCCEEDED", "FAILED"))
    ce_name = uniq("ce-sigint")
    b.create_compute_environment(computeEnvironmentName=ce_name, type="UNMANAGED")

    rc = srv.stop(signal.SIGINT, timeout_s=30)
    assert rc is not None, "barge did not exit within 30 s of SIGINT"
    assert rc == 0, f"exit status {rc} after SIGINT"
    assert "panicked" not in srv.log_text()

    srv.start()
    b = batch_client(srv)
    assert wait_for(b, job, ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"
    names = [c["computeEnvironmentName"] for c in b.describe_compute_environments(
        computeEnvironments=[ce_name])["computeEnvironments"]]
    assert names == [ce_name]
    # Still exactly one default CE and queue after a second start.
    assert len(b.describe_compute_environments(computeEnvironments=["default"])["computeEnvironments"]) == 1
    assert len(b.describe_job_queues(jobQueues=["default"])["jobQueues"]) == 1
    assert jd["revision"] == b.describe_job_definitions(
        jobDefinitions=[jd["jobDefinitionArn"]])["jobDefinitions"][0]["revision"]
