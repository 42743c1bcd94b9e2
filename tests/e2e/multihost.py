"""Several hosts on this machine: a Barge server and agents, each in its own Docker container on
a private Docker network, from an image built here out of our binary (no registry).

The image holds the release `barge` binary with the few shared libraries it links (found with
ldd) and Debian's static busybox, whose shell and sleep the jobs use; agents run jobs with the
process runner inside their container. The server's API port is published on 127.0.0.1 so the
aws CLI and boto3 on this host reach it; agents reach the server by its address on the network.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import tempfile
import time

from barge_helpers import barge_bin, docker, uniq, wait_until

IMAGE = "barge-test/barge:e2e"
BUSYBOX = pathlib.Path("/bin/busybox")
SERVER_PORT = 8433


def build_image(image: str = IMAGE) -> str:
    """Imports the image afresh (the binary changes between runs). Suites that may run beside
    another checkout's pass their own tag, so neither starts the other's binary."""
    binary = pathlib.Path(barge_bin())
    assert BUSYBOX.exists(), "install Debian's busybox-static (scripts/test.sh does) to build the image"
    libs = []
    for line in subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            libs.append(pathlib.Path(path))
    with tempfile.TemporaryDirectory() as root:
        rootfs = pathlib.Path(root)
        for d in ("bin", "tmp", "etc", "usr/local/bin", "data", "shared"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (rootfs / "bin" / applet).symlink_to("busybox")
        shutil.copy(binary, rootfs / "usr/local/bin/barge")
        for lib in libs:
            target = rootfs / lib.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(lib.resolve(), target)
        (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (rootfs / "etc/group").write_text("root:x:0:\n")
        (rootfs / "etc/nsswitch.conf").write_text("hosts: files dns\n")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "-c", "ENV PATH=/bin:/usr/local/bin", "-", image],
            stdin=tar.stdout, check=True, capture_output=True, timeout=300,
        )
        assert tar.wait() == 0
    return image


class Cluster:
    """One server container and agent containers on a network of their own."""

    # The server listens beyond loopback (on the network), which needs access keys.
    ACCESS_KEY_ID = "AKIABARGEMULTIHOST"
    SECRET_ACCESS_KEY = "multihost-secret"

    def __init__(self, heartbeat_s: int = 6, token: str = "e2e-agent-token"):
        self.name = uniq("bargenet")
        self.token = token
        self.heartbeat_s = heartbeat_s
        self.network = self.name
        self.containers: list[str] = []
        # Job output that must outlive the agents (ticks of every attempt) goes here.
        self.shared = pathlib.Path(tempfile.mkdtemp(prefix="barge-multihost-"))
        self.port: int | None = None
        self.server_ip: str | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_server(self, extra: list[str] | None = None) -> None:
        docker("network", "create", self.network)
        name = f"{self.name}-server"
        docker(
            "run", "-d", "--name", name, "--network", self.network, "--hostname", "server",
            "-p", f"127.0.0.1::{SERVER_PORT}", "-e", f"BARGE_AGENT_TOKEN={self.token}", "-e", "BARGE_LOG=info",
            "-e", f"BARGE_ACCESS_KEY_ID={self.ACCESS_KEY_ID}", "-e", f"BARGE_SECRET_ACCESS_KEY={self.SECRET_ACCESS_KEY}",
            IMAGE, "barge", "server", "--listen", f"0.0.0.0:{SERVER_PORT}", "--data-dir", "/data",
            "--agent-heartbeat-timeout-seconds", str(self.heartbeat_s), *(extra or []),
        )
        self.containers.append(name)
        mapping = docker("port", name, f"{SERVER_PORT}/tcp").stdout.strip().splitlines()[0]
        self.port = int(mapping.rsplit(":", 1)[1])
        self.server_ip = self.ip_of(name)
        import requests

        def healthy():
            try:
                return requests.get(f"{self.endpoint}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout_s=30, what="the server container to answer")

    def ip_of(self, container: str) -> str:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return docker("inspect", "-f", fmt, container).stdout.strip()

    def start_agent(self, index: int, compute_environment: str, vcpus: int = 1, memory_mib: int = 256,
                    token: str | None = None) -> str:
        name = f"{self.name}-agent-{index}"
        docker(
            "run", "-d", "--name", name, "--network", self.network, "--hostname", f"agent-{index}",
            "-v", f"{self.shared}:/shared", "-e", f"BARGE_AGENT_TOKEN={token or self.token}", "-e", "BARGE_LOG=info",
            IMAGE, "barge", "agent", "--server", f"http://{self.server_ip}:{SERVER_PORT}",
            "--compute-environment", compute_environment, "--runner", "process",
            "--vcpus", str(vcpus), "--memory-mib", str(memory_mib), "--data-dir", "/data",
        )
        self.containers.append(name)
        return name

    def agent_id(self, container: str) -> str:
        return wait_until(
            lambda: docker("exec", container, "cat", "/data/agent-id", check=False).stdout.strip(),
            timeout_s=20, what=f"{container} to make its agent id",
        )

    def logs(self, container: str) -> str:
        r = docker("logs", container, check=False)
        return r.stdout + r.stderr

    def close(self) -> None:
        for c in self.containers:
            docker("rm", "-f", c, check=False)
        docker("network", "rm", self.network, check=False)
        shutil.rmtree(self.shared, ignore_errors=True)


def instance_of(job_or_attempt: dict) -> str:
    """The agent id at the end of a containerInstanceArn."""
    return job_or_attempt["container"]["containerInstanceArn"].rsplit("/", 1)[1]


def ticks(shared: pathlib.Path, job_id: str) -> list[tuple[int, int]]:
    """(attempt, uptime in 10 ms) of every tick a job's attempts wrote."""
    path = shared / f"{job_id}.ticks"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                out.append((int(parts[0]), int(parts[1])))
    return out


def now() -> float:
    return time.monotonic()
