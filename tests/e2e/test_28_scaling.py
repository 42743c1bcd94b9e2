"""MANAGED compute environments that scale (issue: "a managed environment scaling 0 -> N -> 0"):
a compute environment tagged barge:provider=NAME gets instances from that provider of the
server's --config file as RUNNABLE jobs need them, reports desiredvCpus, and gives the
instances back once they have been idle for the cooldown.

- docker: the server in a container (with the Docker socket) launches one container per
  instance on a private network; 0 -> N -> 0 containers; a container killed mid-job is a
  SPOT-style reclaim: the job is retried with AWS's host-terminated reason.
- local: `barge up --config` runs instances as `barge agent` child processes.
- command: the operator's launch/terminate programs (two shell scripts here).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import textwrap

import boto3
import pytest

from barge_helpers import (
    REGION,
    barge_bin,
    client_config,
    create_ce,
    create_queue,
    docker,
    pid_alive,
    register_jobdef,
    submit,
    uniq,
    wait_for,
    wait_until,
    why_no_docker,
)
from multihost import SERVER_PORT, build_image, instance_of

PROVIDER_TAG = "barge:provider"
COOLDOWN_S = 2
# Long enough that a retry seen within the tests' waits came from the provider noticing the
# killed container, not from the heartbeat timeout.
HEARTBEAT_S = 60
TYPES = """
[[instance_types]]
name = "one"
vcpus = 1
memory_mib = 256

[[instance_types]]
name = "two"
vcpus = 2
memory_mib = 512
"""
_WHY_NO_DOCKER = why_no_docker()
needs_docker = pytest.mark.skipif(_WHY_NO_DOCKER is not None, reason=f"needs Docker: {_WHY_NO_DOCKER}")


def desired_vcpus(batch, ce: str) -> int:
    envs = batch.describe_compute_environments(computeEnvironments=[ce])["computeEnvironments"]
    return envs[0]["computeResources"]["desiredvCpus"]


def scaled_ce(batch, provider: str, max_vcpus: int, kind: str = "EC2") -> tuple[str, str]:
    """A MANAGED environment scaled by `provider`, from 0, and its queue."""
    ce = uniq(f"{provider}ce")
    create_ce(batch, max_vcpus=max_vcpus, name=ce, type=kind, tags={PROVIDER_TAG: provider})
    queue = uniq("q")
    create_queue(batch, [ce], name=queue)
    return ce, queue


def sleeper(batch, seconds: float, attempts: int = 1, first_attempt_s: float | None = None) -> str:
    """One vCPU, 64 MiB, sleeping `seconds` (`first_attempt_s` on the first attempt)."""
    script = f"sleep {seconds}"
    if first_attempt_s is not None:
        script = f'if [ "$AWS_BATCH_JOB_ATTEMPT" = 1 ]; then sleep {first_attempt_s}; else sleep {seconds}; fi'
    return register_jobdef(
        batch, ["sh", "-c", script], retryStrategy={"attempts": attempts},
        container={"resourceRequirements": [{"type": "VCPU", "value": "1"},
                                            {"type": "MEMORY", "value": "64"}]},
    )["jobDefinitionName"]


# --------------------------------------------------------------------------------------
# docker: a server container launching instance containers
# --------------------------------------------------------------------------------------

class DockerScaling:
    def __init__(self):
        self.network = uniq("bargescale")
        self.image = build_image(f"barge-test/barge:scale-{self.network}")
        self.server = f"{self.network}-server"
        self.etc = pathlib.Path(tempfile.mkdtemp(prefix="barge-scale-"))
        self.token = "scale-e2e-token"
        # Beyond loopback (inside its container) the server wants access keys.
        self.access_key, self.secret_key = "AKIASCALEE2E", "scale-e2e-secret"
        (self.etc / "barge.toml").write_text(textwrap.dedent(f"""
            [scaling]
            cooldown_seconds = {COOLDOWN_S}
            register_timeout_seconds = 60
            {TYPES}
            [providers.dock]
            kind = "docker"
            image = "{self.image}"
            network = "{self.network}"
            server_url = "http://{self.server}:{SERVER_PORT}"
            runner = "process"
        """))
        docker("network", "create", self.network)
        docker(
            "run", "-d", "--name", self.server, "--network", self.network,
            "-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", f"{self.etc}:/etc/barge:ro",
            "-p", f"127.0.0.1::{SERVER_PORT}", "-e", f"BARGE_AGENT_TOKEN={self.token}", "-e", "BARGE_LOG=info",
            "-e", f"BARGE_ACCESS_KEY_ID={self.access_key}", "-e", f"BARGE_SECRET_ACCESS_KEY={self.secret_key}",
            self.image, "barge", "server", "--listen", f"0.0.0.0:{SERVER_PORT}", "--data-dir", "/data",
            "--agent-heartbeat-timeout-seconds", str(HEARTBEAT_S), "--config", "/etc/barge/barge.toml",
        )
        mapping = docker("port", self.server, f"{SERVER_PORT}/tcp").stdout.strip().splitlines()[0]
        self.endpoint = f"http://127.0.0.1:{int(mapping.rsplit(':', 1)[1])}"
        import requests

        def healthy():
            try:
                return requests.get(f"{self.endpoint}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout_s=30, what=f"the server container to answer\n{self.logs()}")

    def logs(self) -> str:
        r = docker("logs", self.server, check=False)
        return r.stdout + r.stderr

    def instances(self, ce: str, running_only: bool = True) -> dict[str, str]:
        """Instance id -> container name, of the containers of `ce`."""
        args = ["ps", "--filter", f"label=barge.compute-environment={ce}",
                "--format", '{{.Label "barge.instance-id"}} {{.Names}}']
        if not running_only:
            args.insert(1, "-a")
        out = docker(*args).stdout.split("\n")
        return dict(line.split(" ", 1) for line in out if line.strip())

    def close(self):
        docker("rm", "-f", self.server, check=False)
        leftover = docker("ps", "-aq", "--filter", f"label=barge.server", "--filter",
                          f"network={self.network}", check=False).stdout.split()
        for c in leftover:
            docker("rm", "-f", c, check=False)
        docker("network", "rm", self.network, check=False)
        docker("rmi", self.image, check=False)
        shutil.rmtree(self.etc, ignore_errors=True)


@pytest.fixture(scope="module")
def dock():
    if _WHY_NO_DOCKER is not None:
        pytest.skip(f"needs Docker: {_WHY_NO_DOCKER}")
    d = DockerScaling()
    try:
        yield d
    finally:
        d.close()


@pytest.fixture(scope="module")
def dock_batch(dock):
    return boto3.client(
        "batch", endpoint_url=dock.endpoint, region_name=REGION,
        aws_access_key_id=dock.access_key, aws_secret_access_key=dock.secret_key, config=client_config(),
    )


@needs_docker
def test_docker_environment_scales_from_zero_to_n_and_back_to_zero(dock, dock_batch):
    batch = dock_batch
    ce, queue = scaled_ce(batch, "dock", max_vcpus=3)
    assert desired_vcpus(batch, ce) == 0
    assert dock.instances(ce) == {}
    definition = sleeper(batch, 3)
    ids = [submit(batch, queue, definition)["jobId"] for _ in range(3)]

    # Three one-vCPU jobs: three one-vCPU instances (the smallest type that fits), each a
    # container of the image, whose agent joins under the instance's id.
    wait_until(lambda: desired_vcpus(batch, ce) == 3, timeout_s=20, what="desiredvCpus to rise to 3")
    instances = wait_until(lambda: (lambda i: i if len(i) == 3 else None)(dock.instances(ce)),
                           timeout_s=30, what=f"three instance containers\n{dock.logs()}")
    jobs = [wait_for(batch, i, ("SUCCEEDED", "FAILED"), timeout_s=60) for i in ids]
    assert {j["status"] for j in jobs} == {"SUCCEEDED"}, jobs
    ran_on = {instance_of(j) for j in jobs}
    assert ran_on <= set(instances), (ran_on, instances)
    assert all(i.startswith("i-") and len(i) == 19 for i in ran_on)

    # Idle for the cooldown: every instance goes, and desiredvCpus with them.
    wait_until(lambda: dock.instances(ce, running_only=False) == {}, timeout_s=60,
               what=f"the instance containers to be removed\n{dock.logs()}")
    wait_until(lambda: desired_vcpus(batch, ce) == 0, timeout_s=20, what="desiredvCpus to fall to 0")
    logs = dock.logs()
    assert "launching instance" in logs and "idle, not needed" in logs


@needs_docker
def test_a_reclaimed_instance_has_its_job_retried_with_the_host_terminated_reason(dock, dock_batch):
    batch = dock_batch
    ce, queue = scaled_ce(batch, "dock", max_vcpus=2, kind="SPOT")
    definition = sleeper(batch, 0.2, attempts=2, first_attempt_s=120)
    job_id = submit(batch, queue, definition)["jobId"]
    first = instance_of(wait_for(batch, job_id, "RUNNING", timeout_s=60))
    container = dock.instances(ce)[first]
    # The instance goes away under the job, as a SPOT reclaim does.
    docker("kill", container)
    job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"), timeout_s=45)
    assert job["status"] == "SUCCEEDED", job
    assert len(job["attempts"]) == 2, job
    assert job["attempts"][0]["statusReason"] == f"Host EC2 (instance {first}) terminated."
    assert instance_of(job["attempts"][1]) != first
    assert "instance gone" in dock.logs()
    wait_until(lambda: dock.instances(ce, running_only=False) == {}, timeout_s=60,
               what="the environment to scale back in")


# --------------------------------------------------------------------------------------
# local: barge up --config
# --------------------------------------------------------------------------------------

def agent_pids(instance_id: str) -> list[int]:
    """Live `barge agent` processes of an instance."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"agent" in args and instance_id.encode() in args and pid_alive(int(entry)):
            pids.append(int(entry))
    return pids


def test_local_provider_runs_instances_as_child_agents(server_factory, e2e_dir):
    config = e2e_dir / uniq("local") / "barge.toml"
    config.parent.mkdir()
    config.write_text(textwrap.dedent(f"""
        [scaling]
        cooldown_seconds = {COOLDOWN_S}
        {TYPES}
        [providers.laptop]
        kind = "local"
        runner = "process"
    """))
    srv = server_factory(extra_args=["--config", str(config)])
    batch = boto3.client("batch", endpoint_url=srv.endpoint, region_name=REGION,
                         aws_access_key_id="x", aws_secret_access_key="x", config=client_config())
    ce, queue = scaled_ce(batch, "laptop", max_vcpus=2)
    definition = sleeper(batch, 3)
    ids = [submit(batch, queue, definition)["jobId"] for _ in range(2)]
    wait_until(lambda: desired_vcpus(batch, ce) == 2, timeout_s=20, what="desiredvCpus to rise to 2")
    # Running on an instance: a `barge agent` child of the server, with its own data directory,
    # not barge up's own agent.
    running_on = instance_of(wait_for(batch, ids[0], "RUNNING", timeout_s=30))
    assert agent_pids(running_on), running_on
    assert (srv.data_dir / "instances" / running_on / "agent").is_dir()
    assert f"local agent {running_on}" not in srv.log_text()
    jobs = [wait_for(batch, i, ("SUCCEEDED", "FAILED"), timeout_s=60) for i in ids]
    assert {j["status"] for j in jobs} == {"SUCCEEDED"}, (jobs, srv.log_tail())
    instances = {instance_of(j) for j in jobs}
    wait_until(lambda: desired_vcpus(batch, ce) == 0, timeout_s=30, what="desiredvCpus to fall to 0")
    wait_until(lambda: not any(agent_pids(i) for i in instances), timeout_s=30,
               what="the instances' agents to stop")
    wait_until(lambda: not any((srv.data_dir / "instances" / i).exists() for i in instances), timeout_s=10,
               what="the instances' records to go")
    # barge up's own agent still runs the default queue.
    local = register_jobdef(batch, ["true"])["jobDefinitionName"]
    job = wait_for(batch, submit(batch, "default", local)["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED"
    assert instance_of(job) not in instances


# --------------------------------------------------------------------------------------
# command: the operator's programs
# --------------------------------------------------------------------------------------

def test_command_provider_runs_the_operators_launch_and_terminate_programs(server_factory, e2e_dir):
    work = e2e_dir / uniq("cmd")
    work.mkdir()
    launch = work / "launch"
    launch.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        set -e
        dir={work}
        echo "$BARGE_INSTANCE_ID $BARGE_INSTANCE_TYPE $BARGE_VCPUS $BARGE_MEMORY_MIB $BARGE_COMPUTE_ENVIRONMENT" >> "$dir/launched"
        # The agent starts once the test says so (a boot that takes a while).
        (
          while [ ! -e "$dir/go" ]; do sleep 0.1; done
          exec {barge_bin()} agent --server "$BARGE_SERVER_URL" --compute-environment "$BARGE_COMPUTE_ENVIRONMENT" \\
            --agent-id "$BARGE_INSTANCE_ID" --vcpus "$BARGE_VCPUS" --memory-mib "$BARGE_MEMORY_MIB" \\
            --gpus "$BARGE_GPUS" --runner process --data-dir "$dir/$BARGE_INSTANCE_ID"
        ) > "$dir/$BARGE_INSTANCE_ID.log" 2>&1 < /dev/null &
        echo $! > "$dir/$BARGE_INSTANCE_ID.pid"
        echo "started instance $BARGE_INSTANCE_ID"
    """))
    terminate = work / "terminate"
    terminate.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        dir={work}
        echo "$BARGE_INSTANCE_ID" >> "$dir/terminated"
        pidfile="$dir/$BARGE_INSTANCE_ID.pid"
        [ -e "$pidfile" ] || exit 0
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null
        i=0
        while [ -e /proc/$pid ] && ! grep -q ') Z' /proc/$pid/stat 2>/dev/null && [ $i -lt 100 ]; do
          sleep 0.1; i=$((i+1))
        done
        kill -9 "$pid" 2>/dev/null
        rm -f "$pidfile"
    """))
    launch.chmod(0o755)
    terminate.chmod(0o755)
    config = work / "barge.toml"
    config.write_text(textwrap.dedent(f"""
        [scaling]
        cooldown_seconds = {COOLDOWN_S}
        {TYPES}
        [providers.cloud]
        kind = "command"
        launch = "{launch}"
        terminate = "{terminate}"
        timeout_seconds = 20
    """))
    srv = server_factory(extra_args=["--config", str(config)])
    batch = boto3.client("batch", endpoint_url=srv.endpoint, region_name=REGION,
                         aws_access_key_id="x", aws_secret_access_key="x", config=client_config())
    ce, queue = scaled_ce(batch, "cloud", max_vcpus=1)
    definition = sleeper(batch, 0.5)
    job_id = submit(batch, queue, definition)["jobId"]

    launched = wait_until(lambda: (work / "launched").exists() and (work / "launched").read_text().split(),
                          timeout_s=20, what=f"the launch program to run\n{srv.log_tail()}")
    instance, instance_type, vcpus, memory, env_ce = launched[:5]
    assert (instance_type, vcpus, memory, env_ce) == ("one", "1", "256", ce)
    # Launched, not joined: the job says what it waits for.
    job = wait_until(lambda: (lambda j: j if "scale up" in j.get("statusReason", "") else None)(
        batch.describe_jobs(jobs=[job_id])["jobs"][0]), timeout_s=20, what="the scaling reason")
    assert job["status"] == "RUNNABLE"
    assert f"compute environment {ce}" in job["statusReason"] and "desiredvCpus 1" in job["statusReason"]

    (work / "go").touch()
    job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"), timeout_s=60)
    assert job["status"] == "SUCCEEDED", job
    assert instance_of(job) == instance

    wait_until(lambda: (work / "terminated").exists() and instance in (work / "terminated").read_text().split(),
               timeout_s=30, what=f"the terminate program to run\n{srv.log_tail()}")
    wait_until(lambda: not (work / f"{instance}.pid").exists(), timeout_s=20,
               what="the terminate program to stop the instance's agent")
    wait_until(lambda: desired_vcpus(batch, ce) == 0, timeout_s=20, what="desiredvCpus to fall to 0")


def test_bad_configuration_is_refused_at_start_naming_the_file_and_key(server_factory, e2e_dir):
    config = e2e_dir / uniq("bad") / "barge.toml"
    config.parent.mkdir()
    config.write_text(TYPES + '\n[providers.x]\nkind = "docker"\nimage = "i"\n')
    srv = server_factory(start=False, extra_args=["--config", str(config)])
    with pytest.raises(RuntimeError) as e:
        srv.start(timeout_s=20)
    assert str(config) in str(e.value) and "providers.x.server_url" in str(e.value)


def test_an_unknown_provider_is_refused(batch):
    with pytest.raises(batch.exceptions.ClientException) as e:
        create_ce(batch, name=uniq("nope"), tags={PROVIDER_TAG: "nope"})
    message = e.value.response["Error"]["Message"]
    assert PROVIDER_TAG in message and "nope" in message and "--config" in message
