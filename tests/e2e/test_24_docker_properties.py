"""Issue 4, point 2: container properties that map onto Docker do what AWS documents, seen from
inside a container run by the real `barge up --runner docker`: volumes with host.sourcePath and
mountPoints (read-only and read-write), ulimits, readonlyRootFilesystem, linuxParameters (tmpfs,
sharedMemorySize, initProcessEnabled, devices, maxSwap/swappiness), privileged. Members that
cannot apply (EFS, secrets, repositoryCredentials) are refused with a 400 naming the member;
Fargate and log settings are recorded and echoed.

The image is test_22_docker's busybox image, built locally. Skipped when no Docker daemon
answers."""

from __future__ import annotations

import pathlib
import shutil
import tempfile

import pytest
from botocore.exceptions import ClientError

from barge_helpers import batch_client, log_lines, logs_client, register_jobdef, submit, uniq, wait_for
from test_22_docker import (  # noqa: F401  (busybox_image is a fixture)
    IMAGE,
    barge_containers,
    busybox_image,
    container,
    docker,
    pytestmark,
)

# CAP_SYS_ADMIN: held by a privileged container only.
CAP_SYS_ADMIN_BIT = 21


@pytest.fixture(scope="module")
def psrv(server_factory, busybox_image):
    srv = server_factory("docker-props", runner="docker", vcpus=2, memory_mib=4096)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def pbatch(psrv):
    return batch_client(psrv)


@pytest.fixture(scope="module")
def plogs(psrv):
    return logs_client(psrv)


@pytest.fixture()
def host_dirs():
    """An input directory holding hello.txt and an empty output directory, on this host (the
    Docker daemon's host)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="barge-e2e-mounts-"))
    (root / "in").mkdir()
    (root / "out").mkdir()
    (root / "in" / "hello.txt").write_text("hello from the host\n")
    yield root
    # Files the container wrote belong to its root user; the directory is ours, so they go.
    shutil.rmtree(root, ignore_errors=True)


def run(batch, logs, script: str, **props) -> tuple[dict, list[str]]:
    jd = register_jobdef(batch, ["sh", "-c", script], container=container(**props))
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"), timeout_s=60)
    return job, log_lines(logs, job["container"]["logStreamName"])


def mount_line(lines: list[str], path: str) -> str:
    found = [line for line in lines if line.split()[1:2] == [path]]
    assert found, f"{path} is not mounted: {lines}"
    return found[0]


def test_host_directories_mount_read_only_and_read_write(pbatch, plogs, host_dirs):
    script = ("cat /in/hello.txt; "
              "if touch /in/written 2>/dev/null; then echo in-writable; else echo in-read-only; fi; "
              "echo from the container > /out/result.txt && echo out-written")
    job, lines = run(
        pbatch, plogs, script,
        volumes=[{"name": "input", "host": {"sourcePath": str(host_dirs / "in")}},
                 {"name": "output", "host": {"sourcePath": str(host_dirs / "out")}}],
        mountPoints=[{"sourceVolume": "input", "containerPath": "/in", "readOnly": True},
                     {"sourceVolume": "output", "containerPath": "/out", "readOnly": False}],
    )
    assert job["status"] == "SUCCEEDED", job
    assert lines == ["hello from the host", "in-read-only", "out-written"]
    assert not (host_dirs / "in" / "written").exists()
    assert (host_dirs / "out" / "result.txt").read_text() == "from the container\n"


def test_a_volume_without_source_path_is_a_scratch_volume_removed_with_the_container(pbatch, plogs):
    volumes_before = set(docker("volume", "ls", "-q").stdout.split())
    job, lines = run(
        pbatch, plogs, "echo kept > /scratch/f && cat /scratch/f",
        volumes=[{"name": "scratch"}],
        mountPoints=[{"sourceVolume": "scratch", "containerPath": "/scratch"}],
    )
    assert job["status"] == "SUCCEEDED", job
    assert lines == ["kept"]
    assert set(docker("volume", "ls", "-q").stdout.split()) <= volumes_before, "the anonymous volume must go"


def test_ulimits_are_seen_inside(pbatch, plogs):
    job, lines = run(pbatch, plogs, "ulimit -Sn; ulimit -Hn",
                     ulimits=[{"name": "nofile", "softLimit": 1234, "hardLimit": 2345}])
    assert job["status"] == "SUCCEEDED", job
    assert lines == ["1234", "2345"]


def test_a_read_only_root_filesystem_refuses_writes_but_tmpfs_takes_them(pbatch, plogs):
    script = ("if touch /written 2>/dev/null; then echo root-writable; else echo root-read-only; fi; "
              "echo ok > /scratch/f && cat /scratch/f; cat /proc/mounts")
    job, lines = run(
        pbatch, plogs, script,
        readonlyRootFilesystem=True,
        linuxParameters={"tmpfs": [{"containerPath": "/scratch", "size": 16, "mountOptions": ["noexec"]}]},
    )
    assert job["status"] == "SUCCEEDED", job
    assert lines[:2] == ["root-read-only", "ok"]
    assert " ro," in mount_line(lines[2:], "/") + ",", mount_line(lines[2:], "/")
    scratch = mount_line(lines[2:], "/scratch")
    assert scratch.split()[2] == "tmpfs"
    assert "size=16384k" in scratch and "noexec" in scratch, scratch


def test_shared_memory_size_sets_dev_shm(pbatch, plogs):
    job, lines = run(pbatch, plogs, "cat /proc/mounts", linuxParameters={"sharedMemorySize": 96})
    assert job["status"] == "SUCCEEDED", job
    assert "size=98304k" in mount_line(lines, "/dev/shm")


def test_init_process_enabled_makes_dockers_init_pid_1(pbatch, plogs):
    job, lines = run(pbatch, plogs, "cat /proc/1/comm", linuxParameters={"initProcessEnabled": True})
    assert job["status"] == "SUCCEEDED", job
    assert lines == ["docker-init"]
    job, lines = run(pbatch, plogs, "cat /proc/1/comm")
    assert lines == ["cat"], "without init the command itself is PID 1"


def test_privileged_gives_every_capability(pbatch, plogs):
    script = "grep CapEff /proc/self/status"
    # Where the daemon itself runs confined (a container without every capability), runc
    # cannot start a privileged container: Barge must then fail the attempt with the
    # daemon's words, which shows the flag reached Docker.
    probe = docker("run", "--rm", "--privileged", IMAGE, "true", check=False)
    if probe.returncode != 0:
        jd = register_jobdef(pbatch, ["sh", "-c", script], container=container(privileged=True))
        job = wait_for(pbatch, submit(pbatch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"),
                       timeout_s=60)
        assert job["status"] == "FAILED"
        assert job["container"]["reason"].startswith("CannotStartContainerError: "), job["container"]
        assert "caps" in job["container"]["reason"] or "permitted" in job["container"]["reason"], probe.stderr
        return
    job, lines = run(pbatch, plogs, script, privileged=True)
    assert job["status"] == "SUCCEEDED", job
    privileged = int(lines[0].split()[1], 16)
    _, lines = run(pbatch, plogs, script)
    plain = int(lines[0].split()[1], 16)
    assert privileged >> CAP_SYS_ADMIN_BIT & 1 == 1
    assert plain >> CAP_SYS_ADMIN_BIT & 1 == 0
    assert privileged & plain == plain


def test_devices_are_passed_with_their_permissions(pbatch, plogs):
    job, lines = run(pbatch, plogs, "echo x > /dev/barge-null && echo written; head -c 0 /dev/barge-null && echo read",
                     linuxParameters={"devices": [{"hostPath": "/dev/null", "containerPath": "/dev/barge-null",
                                                   "permissions": ["READ", "WRITE"]}]})
    assert job["status"] == "SUCCEEDED", job
    assert lines == ["written", "read"]


def test_max_swap_and_swappiness_reach_the_cgroup(pbatch, plogs):
    script = "cat /sys/fs/cgroup/memory/memory.swappiness 2>/dev/null || echo no-v1-swappiness"
    job, lines = run(pbatch, plogs, script, linuxParameters={"maxSwap": 64, "swappiness": 7})
    assert job["status"] == "SUCCEEDED", job
    if lines == ["no-v1-swappiness"]:
        pytest.skip("this host's cgroups have no memory.swappiness (cgroup v2)")
    assert lines == ["7"]


def test_fargate_and_log_settings_are_recorded_and_echoed(pbatch, plogs):
    recorded = {
        "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "mine"}},
        "networkConfiguration": {"assignPublicIp": "ENABLED"},
        "fargatePlatformConfiguration": {"platformVersion": "LATEST"},
    }
    job, lines = run(pbatch, plogs, "echo logged", **recorded)
    assert job["status"] == "SUCCEEDED", job
    assert lines == ["logged"], "logs go to Barge's log store whatever logConfiguration says"
    for name, value in recorded.items():
        assert job["container"][name] == value


BAD = [
    ({"volumes": [{"name": "a", "host": {"sourcePath": "/tmp"}}],
      "mountPoints": [{"sourceVolume": "b", "containerPath": "/b"}]},
     "containerProperties.mountPoints[0].sourceVolume names no volume"),
    ({"volumes": [{"name": "a", "efsVolumeConfiguration": {"fileSystemId": "fs-12345678"}}]},
     "containerProperties.volumes[0].efsVolumeConfiguration is not supported"),
    ({"secrets": [{"name": "TOKEN", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/t"}]},
     "containerProperties.secrets is not supported"),
    ({"repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:us-east-1:123456789012:secret:r"}},
     "containerProperties.repositoryCredentials is not supported"),
    ({"ulimits": [{"name": "files", "softLimit": 1, "hardLimit": 1}]},
     "containerProperties.ulimits[0].name"),
    ({"ulimits": [{"name": "nofile", "softLimit": 9, "hardLimit": 1}]},
     "containerProperties.ulimits[0].softLimit 9 is above hardLimit 1"),
    ({"linuxParameters": {"maxSwap": 1, "swappiness": 101}},
     "containerProperties.linuxParameters.swappiness must be between 0 and 100"),
    ({"linuxParameters": {"tmpfs": [{"containerPath": "relative", "size": 1}]}},
     "containerProperties.linuxParameters.tmpfs[0].containerPath"),
    ({"linuxParameters": {"devices": [{"hostPath": "/dev/null", "permissions": ["READ"]}],
                          "sharedMemorySize": 0}},
     "containerProperties.linuxParameters.sharedMemorySize must be at least 1"),
]


@pytest.mark.parametrize("props,message", BAD, ids=[m.split(" ")[0] for _, m in BAD])
def test_bad_properties_answer_400_naming_the_member(pbatch, props, message):
    with pytest.raises(ClientError) as err:
        pbatch.register_job_definition(jobDefinitionName=uniq("bad"), type="container",
                                       containerProperties=container(**props))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err.value.response["Error"]["Code"] == "ClientException"
    assert message in err.value.response["Error"]["Message"], err.value.response["Error"]["Message"]


def test_a_multinode_range_container_is_checked_too(pbatch):
    bad = container(volumes=[{"name": "a"}], mountPoints=[{"sourceVolume": "nope", "containerPath": "/x"}])
    with pytest.raises(ClientError) as err:
        pbatch.register_job_definition(
            jobDefinitionName=uniq("bad"), type="multinode",
            nodeProperties={"numNodes": 1, "mainNode": 0,
                            "nodeRangeProperties": [{"targetNodes": "0:", "container": bad}]})
    assert ("nodeProperties.nodeRangeProperties[0].container.mountPoints[0].sourceVolume names no volume"
            in err.value.response["Error"]["Message"])


def test_no_barge_container_is_left_on_the_host(psrv):
    psrv.stop()
    assert barge_containers() == [], docker("ps", "-a", "--filter", "label=barge.attempt-id").stdout
