"""Issue 4, first slice: the Docker runner. `barge up --runner docker` runs each attempt as a
container of the job's image on the local Docker Engine, with the job's command, environment,
user, CPU quota and memory limit; output streams into the job's log stream; OOM, terminate and
timeouts behave as on AWS; containers are always removed, also after a crash of barge.

No registry is reachable here: the image is built locally, once per session, with `docker
import` of a rootfs holding Debian's static busybox (scripts/test.sh installs busybox-static).
Skipped, with the reason, when no Docker daemon answers."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import tempfile

import pytest

from barge_helpers import (
    batch_client,
    create_ce,
    create_queue,
    docker,
    log_lines,
    logs_client,
    register_jobdef,
    submit,
    uniq,
    wait_for,
    wait_until,
    why_no_docker,
)

# Its own tag: the agent's Rust tests build a smaller image without a default command.
IMAGE = "barge-test/busybox:e2e"
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
BUSYBOX = pathlib.Path("/bin/busybox")


def barge_containers(label: str = "barge.attempt-id") -> list[str]:
    return docker("ps", "-aq", "--filter", f"label={label}").stdout.split()


_WHY_NOT = why_no_docker()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"Docker runner not tested: {_WHY_NOT}")


@pytest.fixture(scope="session")
def busybox_image() -> str:
    """The test image: a rootfs of /bin/busybox and its applet links, imported once (an
    existing image is reused)."""
    if docker("image", "inspect", IMAGE, check=False).returncode == 0:
        return IMAGE
    assert BUSYBOX.exists(), "install Debian's busybox-static (scripts/test.sh does) to build the test image"
    with tempfile.TemporaryDirectory() as root:
        rootfs = pathlib.Path(root)
        (rootfs / "bin").mkdir()
        (rootfs / "tmp").mkdir()
        (rootfs / "etc").mkdir()
        shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (rootfs / "bin" / applet).symlink_to("busybox")
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "-c", "ENV PATH=/bin",
             "-c", 'CMD ["sh", "-c", "echo the image default command ran"]', "-", IMAGE],
            stdin=tar.stdout, check=True, capture_output=True, timeout=120,
        )
        assert tar.wait() == 0
    return IMAGE


@pytest.fixture(scope="module")
def dsrv(server_factory, busybox_image):
    srv = server_factory("docker", runner="docker", vcpus=2, memory_mib=4096)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def dbatch(dsrv):
    return batch_client(dsrv)


@pytest.fixture(scope="module")
def dlogs(dsrv):
    return logs_client(dsrv)


@pytest.fixture(scope="module")
def quick_queue(dbatch):
    """A queue on an environment whose stop grace is 1 s, for terminate and timeouts."""
    ce = create_ce(dbatch, max_vcpus=2, tags={"barge:stop-grace-seconds": "1"})["computeEnvironmentName"]
    return create_queue(dbatch, [ce])["jobQueueName"]


@pytest.fixture(scope="module")
def timeout_job(dbatch, quick_queue):
    """Submitted when the module starts so that its 60 s timeout (AWS's minimum) overlaps the
    other tests; checked by the last test."""
    jd = register_jobdef(dbatch, ["sleep", "600"], container=container(), timeout={"attemptDurationSeconds": 60})
    return submit(dbatch, quick_queue, jd["jobDefinitionArn"])["jobId"]


def container(vcpus: str = "1", memory: str = "64", **extra) -> dict:
    props = {
        "image": IMAGE,
        "resourceRequirements": [{"type": "VCPU", "value": vcpus}, {"type": "MEMORY", "value": memory}],
    }
    props.update(extra)
    return props


def run_job(batch, command: list[str] | None, queue: str = "default", **props):
    """Registers and submits a job of the test image; None as command: the image's own."""
    if command is None:
        jd = batch.register_job_definition(
            jobDefinitionName=uniq("jd"), type="container", containerProperties=container(**props))
    else:
        jd = register_jobdef(batch, command, container=container(**props))
    job_id = submit(batch, queue, jd["jobDefinitionArn"])["jobId"]
    return wait_for(batch, job_id, ("SUCCEEDED", "FAILED"), timeout_s=60)


def test_the_banner_names_the_docker_runner(dsrv, timeout_job):
    assert "runner: docker (Docker " in dsrv.log_text()
    assert ", API 1." in dsrv.log_text()


def test_exit_codes_and_environment_come_back(dbatch, dlogs):
    ok = run_job(dbatch, ["sh", "-c", 'echo "job=$AWS_BATCH_JOB_ID attempt=$AWS_BATCH_JOB_ATTEMPT marker=$E2E_SESSION"'])
    assert ok["status"] == "SUCCEEDED"
    assert ok["container"]["exitCode"] == 0
    lines = log_lines(dlogs, ok["container"]["logStreamName"])
    assert f"job={ok['jobId']} attempt=1 marker=" in lines[0] and len(lines[0]) > len(f"job={ok['jobId']} attempt=1 marker=")

    failed = run_job(dbatch, ["sh", "-c", "echo to-stderr >&2; exit 42"])
    assert failed["status"] == "FAILED"
    assert failed["container"]["exitCode"] == 42
    assert log_lines(dlogs, failed["container"]["logStreamName"]) == ["to-stderr"]


def test_an_empty_command_runs_the_image_default(dbatch, dlogs):
    job = run_job(dbatch, None)
    assert job["status"] == "SUCCEEDED", job
    assert log_lines(dlogs, job["container"]["logStreamName"]) == ["the image default command ran"]


def test_the_user_of_the_job_definition_runs_the_container(dbatch, dlogs):
    job = run_job(dbatch, ["id", "-u"], user="65534")
    assert job["status"] == "SUCCEEDED", job
    assert log_lines(dlogs, job["container"]["logStreamName"]) == ["65534"]


def test_vcpus_become_a_cpu_quota_seen_inside_the_container(dbatch, dlogs):
    # cgroup v1: cpu.cfs_quota_us over cpu.cfs_period_us; v2: "quota period" in cpu.max.
    script = ("if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max; "
              "else echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); fi")
    job = run_job(dbatch, ["sh", "-c", script], vcpus="0.5")
    assert job["status"] == "SUCCEEDED", job
    quota, period = log_lines(dlogs, job["container"]["logStreamName"])[0].split()
    assert int(quota) * 2 == int(period), f"0.5 vCPU should be half the period: {quota} {period}"


def test_memory_becomes_a_hard_limit_seen_inside_the_container(dbatch, dlogs):
    script = ("if [ -f /sys/fs/cgroup/memory.max ]; then cat /sys/fs/cgroup/memory.max; "
              "else cat /sys/fs/cgroup/memory/memory.limit_in_bytes; fi")
    job = run_job(dbatch, ["sh", "-c", script], memory="96")
    assert job["status"] == "SUCCEEDED", job
    assert log_lines(dlogs, job["container"]["logStreamName"]) == [str(96 * 1024 * 1024)]


def test_out_of_memory_reports_137_and_the_reason_evaluate_on_exit_matches(dbatch, dlogs):
    hog = ["sh", "-c", "echo allocating; x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived"]
    jd = register_jobdef(
        dbatch, hog, container=container(memory="32"),
        retryStrategy={"attempts": 3, "evaluateOnExit": [
            {"onReason": "OutOfMemoryError*", "action": "EXIT"},
            {"onExitCode": "*", "action": "RETRY"},
        ]},
    )
    job = wait_for(dbatch, submit(dbatch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"), timeout_s=60)
    assert job["status"] == "FAILED"
    assert job["container"]["exitCode"] == 137
    assert job["container"]["reason"] == OOM_REASON
    assert len(job["attempts"]) == 1, "evaluateOnExit onReason OutOfMemoryError* must EXIT, not retry"
    assert "survived" not in log_lines(dlogs, job["container"]["logStreamName"])


def test_terminate_stops_the_container(dbatch, quick_queue):
    jd = register_jobdef(dbatch, ["sleep", "600"], container=container(vcpus="0.25"))
    job_id = submit(dbatch, quick_queue, jd["jobDefinitionArn"])["jobId"]
    wait_for(dbatch, job_id, ("RUNNING",), timeout_s=60)
    wait_until(lambda: barge_containers(f"barge.job-id={job_id}"), what="the job's container")
    dbatch.terminate_job(jobId=job_id, reason="enough")
    job = wait_for(dbatch, job_id, ("FAILED",), timeout_s=20)
    assert job["statusReason"] == "enough"
    # `sleep` is PID 1 and ignores SIGTERM: the SIGKILL after the 1 s grace ends it.
    assert job["container"]["exitCode"] == 137
    assert barge_containers(f"barge.job-id={job_id}") == []


def test_a_missing_image_fails_with_cannot_pull_container_error(dbatch):
    job = run_job(dbatch, ["true"], image="barge-test/never-built:1")
    assert job["status"] == "FAILED"
    reason = job["container"]["reason"]
    assert reason.startswith("CannotPullContainerError: image barge-test/never-built:1 "), reason
    assert "pulling it failed" in reason
    assert job["container"].get("exitCode") is None


def test_a_crash_of_barge_leaves_no_container_behind(server_factory, busybox_image):
    srv = server_factory("docker-restart", runner="docker", vcpus=2, memory_mib=4096)
    b = batch_client(srv)
    jd = register_jobdef(b, ["sleep", "600"], container=container(vcpus="0.25"))
    job_id = submit(b, "default", jd["jobDefinitionArn"])["jobId"]
    wait_for(b, job_id, ("RUNNING",), timeout_s=60)
    wait_until(lambda: barge_containers(f"barge.job-id={job_id}"), what="the job's container")

    srv.kill9()
    assert barge_containers(f"barge.job-id={job_id}"), "SIGKILL of barge does not stop Docker's containers"
    srv.start()
    # The agent removes its earlier run's containers before it runs anything.
    wait_until(lambda: not barge_containers(f"barge.job-id={job_id}"), timeout_s=20,
               what="the crashed run's container removed")
    b = batch_client(srv)
    job = wait_for(b, job_id, ("FAILED",), timeout_s=20)
    assert "terminated" in job["statusReason"]

    # A clean stop (Ctrl-C) with a running container also removes it.
    job_id = submit(b, "default", jd["jobDefinitionArn"])["jobId"]
    wait_for(b, job_id, ("RUNNING",), timeout_s=60)
    assert srv.stop() == 0
    assert barge_containers(f"barge.job-id={job_id}") == []
    srv.close()


def test_the_attempt_duration_timeout_stops_the_container(dbatch, timeout_job):
    job = wait_for(dbatch, timeout_job, ("SUCCEEDED", "FAILED"), timeout_s=90)
    assert job["status"] == "FAILED"
    assert "timeout" in job["statusReason"].lower(), job["statusReason"]
    assert job["container"]["exitCode"] == 137
    assert barge_containers(f"barge.job-id={timeout_job}") == []


def test_no_barge_container_is_left_on_the_host(dsrv):
    # Every attempt of this file has ended: none of them may have left a container.
    dsrv.stop()
    assert barge_containers() == [], docker("ps", "-a", "--filter", "label=barge.attempt-id").stdout


def test_a_compute_environment_tag_chooses_the_docker_runner(batch, logs, busybox_image):
    """The suite's shared server runs the process runner; a compute environment tagged
    barge:runner=docker runs its jobs as containers all the same."""
    ce = create_ce(batch, max_vcpus=2, tags={"barge:runner": "docker"})["computeEnvironmentName"]
    queue = create_queue(batch, [ce])["jobQueueName"]
    jd = register_jobdef(batch, ["sh", "-c", "test -f /.dockerenv && echo in-a-container"], container=container())
    job = wait_for(batch, submit(batch, queue, jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    assert log_lines(logs, job["container"]["logStreamName"]) == ["in-a-container"]
    assert barge_containers() == []
