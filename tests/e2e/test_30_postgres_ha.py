"""Several servers on one PostgreSQL database (issue 5): every one serves the API, one leads.

- kill the leader mid-run: the other takes over within seconds, every acknowledged job is still
  there, and every job runs exactly once (one attempt, one run recorded by the job itself);
- a leader that stalls past its lease (SIGSTOP) is replaced, and once it wakes it finds itself
  deposed and exits (status 3) instead of acting on what it holds.

Needs PostgreSQL: scripts/test.sh starts a throwaway one and exports BARGE_TEST_DATABASE_URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import requests

from barge_helpers import barge_bin, batch_client, uniq, wait_all, wait_until

LEASE_TTL_S = 2


@pytest.fixture
def database():
    """A fresh database on the test cluster, dropped afterwards."""
    base = os.environ.get("BARGE_TEST_DATABASE_URL")
    if not base:
        pytest.fail("BARGE_TEST_DATABASE_URL is not set: run scripts/test.sh, which starts PostgreSQL, "
                    "or eval \"$(scripts/test-postgres.sh start)\" first")
    name = uniq("ha").replace("-", "_")
    subprocess.run(["psql", base, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    yield base.rsplit("/", 1)[0] + "/" + name
    subprocess.run(["psql", base, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


def role(server) -> str | None:
    try:
        r = requests.get(server.endpoint + "/health", timeout=2)
    except requests.RequestException:
        return None
    return "follower" if "following" in r.text else "leader"


@pytest.fixture
def pair(server_factory, database):
    """Two servers on the database; the first to start leads."""
    args = ["--database-url", database, "--lease-ttl-seconds", str(LEASE_TTL_S)]
    first = server_factory(subcommand="server", extra_args=args)
    wait_until(lambda: role(first) == "leader", timeout_s=20, what="the first server to lead")
    second = server_factory(subcommand="server", extra_args=args)
    assert role(second) == "follower"
    return first, second


def start_agent(servers, ce: str, tmp_path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARGE_")}
    env["BARGE_LOG"] = "info"
    log = open(tmp_path / "agent.log", "ab")
    return subprocess.Popen(
        [barge_bin(), "agent", "--server", ",".join(s.endpoint for s in servers),
         "--compute-environment", ce, "--runner", "process", "--vcpus", "4", "--memory-mib", "1024",
         "--data-dir", str(tmp_path / "agent")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )


def fleet(batch, runs_file) -> tuple[str, str]:
    ce, queue, name = uniq("ce"), uniq("q"), uniq("jd")
    batch.create_compute_environment(computeEnvironmentName=ce, type="UNMANAGED", state="ENABLED")
    batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
    batch.register_job_definition(
        jobDefinitionName=name, type="container",
        containerProperties={"image": "busybox", "command": [
            "sh", "-c", f"echo $AWS_BATCH_JOB_ID >> {runs_file}; sleep 0.5"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "32"}]},
    )
    return ce, queue, name


def test_killing_the_leader_mid_run_loses_nothing_and_runs_every_job_once(pair, tmp_path):
    leader, follower = pair
    runs = tmp_path / "runs"
    # Everything goes through the follower, which forwards to whoever leads.
    batch = batch_client(follower)
    ce, queue, definition = fleet(batch, runs)
    agent = start_agent([leader, follower], ce, tmp_path)
    try:
        ids = [batch.submit_job(jobName=uniq("j"), jobQueue=queue, jobDefinition=definition)["jobId"]
               for _ in range(40)]
        wait_until(lambda: runs.exists() and len(runs.read_text().split()) >= 4, timeout_s=30,
                   what="some jobs to run")
        leader.kill9()
        taken_at = time.monotonic()
        wait_until(lambda: role(follower) == "leader", timeout_s=LEASE_TTL_S * 5, what="the follower to lead")
        took_s = time.monotonic() - taken_at
        # Submissions go on against the new leader.
        ids += [batch.submit_job(jobName=uniq("k"), jobQueue=queue, jobDefinition=definition)["jobId"]
                for _ in range(10)]
        jobs = wait_all(batch, ids, timeout_s=120)
        assert {j["status"] for j in jobs.values()} == {"SUCCEEDED"}, {
            i: (j["status"], j.get("statusReason")) for i, j in jobs.items() if j["status"] != "SUCCEEDED"}
        assert all(len(j["attempts"]) == 1 for j in jobs.values())
        ran = runs.read_text().split()
        assert sorted(ran) == sorted(ids), "every job ran exactly once"
        print(f"the follower led {took_s:.1f} s after the leader was killed")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    # A leader stops cleanly (its writer drains, its lease is given up).
    assert follower.stop(signal.SIGTERM, timeout_s=30) == 0, follower.log_tail()


def test_a_leader_that_stalls_past_its_lease_is_replaced_and_exits_when_it_wakes(pair, tmp_path):
    leader, follower = pair
    batch = batch_client(follower)
    ce, queue, definition = fleet(batch, tmp_path / "runs")
    os.kill(leader.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: role(follower) == "leader", timeout_s=LEASE_TTL_S * 5, what="the follower to lead")
        job_id = batch.submit_job(jobName="after", jobQueue=queue, jobDefinition=definition)["jobId"]
    finally:
        os.kill(leader.pid, signal.SIGCONT)
    # Awake, it cannot renew its lease (or commit): it exits rather than act on stale state.
    assert leader.proc.wait(timeout=LEASE_TTL_S * 5) == 3
    assert "no longer the leader" in leader.log_text()
    # The new leader has the job the stalled one never saw.
    assert batch.describe_jobs(jobs=[job_id])["jobs"][0]["jobName"] == "after"


def test_a_follower_stops_cleanly_and_the_leader_carries_on(pair):
    leader, follower = pair
    assert follower.stop(signal.SIGTERM, timeout_s=30) == 0, follower.log_tail()
    assert role(leader) == "leader"
    assert leader.stop(signal.SIGTERM, timeout_s=30) == 0, leader.log_tail()
