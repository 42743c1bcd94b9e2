"""Barge beyond one host (issue 5): a server and three agents, each in its own Docker container
on a private network, driven from this host with boto3 through the server's published port.

- jobs spread over the agents that joined an UNMANAGED compute environment;
- an agent killed mid-job: its job is retried on another host with AWS's host-terminated reason;
- an agent cut off the network mid-job: it stops the job itself before the server gives the
  job to another host (the ticks each attempt writes to a shared directory never interleave),
  and once back it joins again and runs work;
- an agent with the wrong token is refused.
"""

from __future__ import annotations

import subprocess

import boto3
import pytest

from barge_helpers import REGION, client_config, docker, uniq, wait_all, wait_for, wait_until, why_no_docker
from multihost import IMAGE, Cluster, build_image, instance_of, ticks

_WHY_NOT = why_no_docker()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"multi-host tests need Docker: {_WHY_NOT}")

HEARTBEAT_S = 6


@pytest.fixture(scope="module")
def cluster():
    build_image()
    c = Cluster(heartbeat_s=HEARTBEAT_S)
    try:
        c.start_server()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def batch(cluster):
    return boto3.client(
        "batch", endpoint_url=cluster.endpoint, region_name=REGION,
        aws_access_key_id=cluster.ACCESS_KEY_ID, aws_secret_access_key=cluster.SECRET_ACCESS_KEY,
        config=client_config(),
    )


@pytest.fixture(scope="module")
def fleet(cluster, batch):
    """An UNMANAGED compute environment with three one-vCPU agents, and its queue."""
    ce = uniq("fleet")
    batch.create_compute_environment(computeEnvironmentName=ce, type="UNMANAGED", state="ENABLED")
    queue = uniq("q")
    batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
    agents = [cluster.start_agent(i, ce) for i in range(3)]
    ids = {name: cluster.agent_id(name) for name in agents}
    return {"ce": ce, "queue": queue, "agents": ids}


def ticking_definition(batch, seconds: float, attempts: int = 2) -> str:
    """A job that appends `<attempt> <uptime in 10 ms>` to /shared/<job id>.ticks every 0.1 s for
    `seconds` (every container reads the one kernel's uptime, so ticks compare across hosts)."""
    n = int(seconds * 10)
    script = (
        f'i=0; while [ $i -lt {n} ]; do echo "$AWS_BATCH_JOB_ATTEMPT $(cut -d" " -f1 /proc/uptime | tr -d .)" '
        '>> /shared/$AWS_BATCH_JOB_ID.ticks; sleep 0.1; i=$((i+1)); done'
    )
    name = uniq("tick")
    batch.register_job_definition(
        jobDefinitionName=name, type="container", retryStrategy={"attempts": attempts},
        containerProperties={"image": "busybox", "command": ["sh", "-c", script],
                             "resourceRequirements": [{"type": "VCPU", "value": "1"},
                                                      {"type": "MEMORY", "value": "64"}]},
    )
    return name


def running_on(batch, job_id: str) -> str:
    job = wait_for(batch, job_id, "RUNNING", timeout_s=60)
    return instance_of(job)


def container_of(fleet, agent_id: str) -> str:
    return next(name for name, aid in fleet["agents"].items() if aid == agent_id)


def test_jobs_spread_over_the_agents_that_joined(batch, fleet):
    definition = ticking_definition(batch, 1.5, attempts=1)
    ids = [batch.submit_job(jobName=uniq("j"), jobQueue=fleet["queue"], jobDefinition=definition)["jobId"]
           for _ in range(6)]
    jobs = wait_all(batch, ids, timeout_s=90)
    assert {j["status"] for j in jobs.values()} == {"SUCCEEDED"}, jobs
    # Three one-vCPU hosts and six one-vCPU jobs: each host ran some.
    assert {instance_of(j) for j in jobs.values()} == set(fleet["agents"].values())


def test_a_killed_agent_has_its_job_retried_on_another_host(cluster, batch, fleet):
    definition = ticking_definition(batch, 6)
    job_id = batch.submit_job(jobName=uniq("kill"), jobQueue=fleet["queue"], jobDefinition=definition)["jobId"]
    first = running_on(batch, job_id)
    victim = container_of(fleet, first)
    wait_until(lambda: ticks(cluster.shared, job_id), timeout_s=30, what="the job to tick")
    docker("kill", victim)
    job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"), timeout_s=HEARTBEAT_S + 60)
    assert job["status"] == "SUCCEEDED", job
    assert len(job["attempts"]) == 2
    assert job["attempts"][0]["statusReason"] == f"Host EC2 (instance {first}) terminated."
    assert instance_of(job["attempts"][1]) != first
    assert {a for a, _ in ticks(cluster.shared, job_id)} == {1, 2}
    # The host comes back as the same instance and takes work again.
    docker("start", victim)
    wait_until(lambda: "registered" in cluster.logs(victim).split("joining compute environment")[-1],
               timeout_s=30, what="the restarted agent to register")


def test_a_partitioned_agent_stops_its_job_before_the_job_runs_elsewhere(cluster, batch, fleet):
    definition = ticking_definition(batch, 8)
    job_id = batch.submit_job(jobName=uniq("cut"), jobQueue=fleet["queue"], jobDefinition=definition)["jobId"]
    first = running_on(batch, job_id)
    victim = container_of(fleet, first)
    wait_until(lambda: ticks(cluster.shared, job_id), timeout_s=30, what="the job to tick")
    docker("network", "disconnect", cluster.network, victim)
    try:
        job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"), timeout_s=HEARTBEAT_S + 60)
    finally:
        docker("network", "connect", cluster.network, victim)
    assert job["status"] == "SUCCEEDED", job
    assert job["attempts"][0]["statusReason"] == f"Host EC2 (instance {first}) terminated."
    assert instance_of(job["attempts"][1]) != first
    seen = ticks(cluster.shared, job_id)
    last_of_first = max(t for a, t in seen if a == 1)
    first_of_second = min(t for a, t in seen if a == 2)
    # Never two live attempts: the cut-off host stopped its attempt (its ticks end) before the
    # server gave the job to another host.
    assert last_of_first < first_of_second, (last_of_first, first_of_second)
    assert "no answer from the server for too long" in cluster.logs(victim)
    # Back on the network, it is told it was lost, joins again and runs work.
    wait_until(lambda: "registering again" in cluster.logs(victim), timeout_s=30,
               what="the reconnected agent to register again")
    definition = ticking_definition(batch, 1, attempts=1)
    ids = [batch.submit_job(jobName=uniq("after"), jobQueue=fleet["queue"], jobDefinition=definition)["jobId"]
           for _ in range(6)]
    jobs = wait_all(batch, ids, timeout_s=90)
    assert {j["status"] for j in jobs.values()} == {"SUCCEEDED"}
    assert first in {instance_of(j) for j in jobs.values()}


def test_an_agent_with_the_wrong_token_is_refused(cluster, fleet):
    r = subprocess.run(
        ["docker", "run", "--rm", "--network", cluster.network, "-e", "BARGE_AGENT_TOKEN=wrong", IMAGE,
         "barge", "agent", "--server", f"http://{cluster.server_ip}:8433", "--compute-environment", fleet["ce"],
         "--runner", "process", "--vcpus", "1", "--memory-mib", "64", "--data-dir", "/data"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 1, r
    assert "token is missing or wrong" in r.stderr


def test_an_agent_for_a_compute_environment_that_does_not_exist_is_refused(cluster):
    r = subprocess.run(
        ["docker", "run", "--rm", "--network", cluster.network, "-e", f"BARGE_AGENT_TOKEN={cluster.token}", IMAGE,
         "barge", "agent", "--server", f"http://{cluster.server_ip}:8433", "--compute-environment", "nope",
         "--runner", "process", "--vcpus", "1", "--memory-mib", "64", "--data-dir", "/data"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 1, r
    assert "compute environment nope does not exist" in r.stderr
