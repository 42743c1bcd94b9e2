"""A remote agent that restarts keeps its running work (issue 5): its Docker containers outlive
it, and the next start of the agent (same data directory, so the same instance id) adopts them,
follows them to their end and reports their real exit codes. The job never sees a second
attempt.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from barge_helpers import (
    barge_bin,
    batch_client,
    docker,
    logs_client,
    log_events,
    uniq,
    wait_for,
    wait_until,
    why_no_docker,
)
from test_22_docker import busybox_image  # noqa: F401  (a fixture)

_WHY_NOT = why_no_docker()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"Docker runner not tested: {_WHY_NOT}")


def start_agent(server, ce: str, data_dir, log_path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARGE_")}
    env["BARGE_LOG"] = "info"
    log = open(log_path, "ab")
    return subprocess.Popen(
        [barge_bin(), "agent", "--server", server.endpoint, "--compute-environment", ce,
         "--runner", "docker", "--vcpus", "2", "--memory-mib", "512", "--data-dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )


def test_a_restarted_agent_adopts_its_containers_and_reports_their_real_end(server_factory, busybox_image, tmp_path):
    srv = server_factory(subcommand="server", extra_args=["--agent-heartbeat-timeout-seconds", "30"])
    batch, logs = batch_client(srv), logs_client(srv)
    ce, queue = uniq("ce"), uniq("q")
    batch.create_compute_environment(computeEnvironmentName=ce, type="UNMANAGED", state="ENABLED")
    batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
    name = uniq("jd")
    batch.register_job_definition(
        jobDefinitionName=name, type="container",
        containerProperties={"image": busybox_image, "command": [
            "sh", "-c", "echo before; sleep 4; echo after; exit 3"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]},
    )
    data_dir, log_path = tmp_path / "agent", tmp_path / "agent.log"
    agent = start_agent(srv, ce, data_dir, log_path)
    try:
        job_id = batch.submit_job(jobName="adopt", jobQueue=queue, jobDefinition=name)["jobId"]
        job = wait_for(batch, job_id, "RUNNING", timeout_s=60)
        stream = job["container"]["logStreamName"]
        wait_until(lambda: any(e["message"] == "before" for e in log_events(logs, stream)), timeout_s=30,
                   what="the first line")
        # The agent dies; its container does not.
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        attempt_id = stream.rsplit("/", 1)[1]
        assert docker("ps", "-q", "--filter", f"label=barge.attempt-id={attempt_id}").stdout.strip()
        agent = start_agent(srv, ce, data_dir, log_path)
        job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"), timeout_s=60)
        assert job["status"] == "FAILED"
        assert len(job["attempts"]) == 1, job["attempts"]
        assert job["attempts"][0]["container"]["exitCode"] == 3
        assert job["container"]["exitCode"] == 3
        messages = [e["message"] for e in log_events(logs, stream)]
        assert "after" in messages, messages
        assert "following the containers of an earlier run" in log_path.read_text()
        # No container is left behind.
        wait_until(lambda: not docker("ps", "-aq", "--filter", f"label=barge.attempt-id={attempt_id}").stdout.strip(),
                   timeout_s=20, what="the adopted container to be removed")
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
