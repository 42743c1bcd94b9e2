"""Helpers shared by the end-to-end tests: the `barge` process, clients, polling.

The tests drive the real binary with the real aws CLI v1 and boto3. Everything that
waits is bounded; nothing asserts on speed.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, Callable, Iterable

import boto3
import requests
from botocore.config import Config

REGION = "us-east-1"
ACCOUNT = "000000000000"
ARN_PREFIX = f"arn:aws:batch:{REGION}:{ACCOUNT}:"
LOG_GROUP = "/aws/batch/job"

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Upper bound for every wait on a job or a server (seconds). Generous on purpose: the
# suite asserts behaviour, never speed.
WAIT_S = 30.0
POLL_S = 0.1
HTTP_TIMEOUT_S = 20.0

TERMINAL = ("SUCCEEDED", "FAILED")

# Put into the environment of barge and of every job definition the tests register, so
# that leftover job processes of this session (and only those) can be found and killed.
SESSION_MARKER = uuid.uuid4().hex
MARKER_ENV = {"name": "E2E_SESSION", "value": SESSION_MARKER}
LIFECYCLE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


def barge_bin() -> str:
    path = os.environ.get("BARGE_BIN", "target/release/barge")
    p = pathlib.Path(path)
    if not p.is_absolute():
        p = REPO_ROOT / p
    return str(p)


def aws_cli_path() -> str:
    """The venv's `aws` (next to the running interpreter), else the one on PATH."""
    here = pathlib.Path(sys.executable).parent / "aws"
    if here.exists():
        return str(here)
    found = shutil.which("aws")
    if not found:
        raise RuntimeError("the aws CLI v1 is not installed (pip install awscli)")
    return found


def uniq(prefix: str) -> str:
    """A fresh resource name ([A-Za-z0-9_-], alphanumeric first) so tests share one server."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def arn(kind: str, name: str) -> str:
    return f"{ARN_PREFIX}{kind}/{name}"


# --------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------

ALL_SERVERS: list["BargeServer"] = []


class BargeServer:
    """One `barge up` process on a free port with its own data directory.

    stdout and stderr go to one log file (appended across restarts), printed on failure.
    """

    def __init__(
        self,
        name: str,
        data_dir: pathlib.Path,
        log_path: pathlib.Path,
        vcpus: int | None = 16,
        memory_mib: int | None = 65536,
        port: int | None = None,
        use_env_vars: bool = False,
        no_config: bool = False,
        cwd: pathlib.Path | None = None,
        extra_args: list[str] | None = None,
        runner: str | None = "process",
        subcommand: str = "up",
        extra_env: dict[str, str] | None = None,
        tls_ca: str | None = None,
    ) -> None:
        self.name = name
        # "server": the control plane without a local agent (no agent flags).
        self.subcommand = subcommand
        # The suite's jobs are host commands: the process runner unless a test asks for docker
        # (or for None: barge up's own default, auto).
        self.runner = runner
        self.extra_args = list(extra_args or [])
        # Set after the inherited BARGE_* variables are dropped (BARGE_ACCESS_KEY_ID, say).
        self.extra_env = dict(extra_env or {})
        # A server started with --tls-cert: its endpoint is https, trusted through this PEM.
        self.tls_ca = tls_ca
        self.data_dir = data_dir
        self.log_path = log_path
        self.vcpus = vcpus
        self.memory_mib = memory_mib
        self.port = port if port is not None else free_port()
        self.use_env_vars = use_env_vars
        self.no_config = no_config
        self.cwd = cwd or REPO_ROOT
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        ALL_SERVERS.append(self)

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls_ca else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BARGE_")}
        env.setdefault("RUST_BACKTRACE", "1")
        env["E2E_SESSION"] = SESSION_MARKER
        env.update(self.extra_env)
        cmd = [barge_bin(), self.subcommand]
        if self.no_config:
            return cmd, env
        if self.subcommand == "server":
            cmd += ["--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir)]
            return cmd + self.extra_args, env
        if self.use_env_vars:
            env["BARGE_LISTEN"] = f"127.0.0.1:{self.port}"
            env["BARGE_DATA_DIR"] = str(self.data_dir)
            if self.vcpus is not None:
                env["BARGE_AGENT_VCPUS"] = str(self.vcpus)
            if self.memory_mib is not None:
                env["BARGE_AGENT_MEMORY_MIB"] = str(self.memory_mib)
            if self.runner is not None:
                env["BARGE_RUNNER"] = self.runner
        else:
            cmd += ["--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir)]
            if self.vcpus is not None:
                cmd += ["--agent-vcpus", str(self.vcpus)]
            if self.memory_mib is not None:
                cmd += ["--agent-memory-mib", str(self.memory_mib)]
            if self.runner is not None:
                cmd += ["--runner", self.runner]
        return cmd + self.extra_args, env

    def start(self, timeout_s: float = WAIT_S) -> "BargeServer":
        assert not self.alive(), "already running"
        binary = barge_bin()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"barge binary not found at {binary}; run cargo build --release")
        cmd, env = self.command()
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(self.cwd),
                start_new_session=True,
            )
        self.wait_healthy(timeout_s)
        return self

    def wait_healthy(self, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"barge exited with {self.proc.returncode} before /health answered\n"
                    + self.log_tail()
                )
            try:
                r = requests.get(self.endpoint + "/health", timeout=2, verify=self.tls_ca or True)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:  # not listening yet
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(f"/health did not answer 200 within {timeout_s}s ({last})\n" + self.log_tail())

    def kill9(self) -> None:
        """SIGKILL: the crash the durability promise is about."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=WAIT_S)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = WAIT_S) -> int | None:
        """Send `sig`, wait; SIGKILL if it does not exit in time. Returns the exit status
        after `sig`, or None if it had to be killed."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=WAIT_S)
            return None

    def restart(self, kill: bool = True, timeout_s: float = WAIT_S) -> "BargeServer":
        """Start again on the same data directory and port (SIGKILL first if `kill`)."""
        if self.alive():
            if kill:
                self.kill9()
            else:
                self.stop()
        return self.start(timeout_s)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 150) -> str:
        text = self.log_text().splitlines()
        return f"--- {self.log_path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])

    def close(self) -> None:
        if self.alive():
            self.stop(signal.SIGINT, timeout_s=15)


def kill_orphaned_jobs() -> None:
    """Kill job processes of this session left behind by SIGKILLed servers.

    Job processes run in their own process groups, so killing `barge` does not end
    them; each one carrying this session's marker is killed here individually by pid.
    """
    me = os.getpid()
    marker = f"E2E_SESSION={SESSION_MARKER}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if b"AWS_BATCH_JOB_ID=" in environ and marker in environ:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def pid_alive(pid: int) -> bool:
    """True if `pid` is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


# --------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------

def client_config() -> Config:
    return Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=HTTP_TIMEOUT_S,
    )


def batch_client(server: BargeServer):
    return boto3.client(
        "batch",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=client_config(),
    )


def logs_client(server: BargeServer):
    return boto3.client(
        "logs",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=client_config(),
    )


class CliError(AssertionError):
    pass


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BARGE_"))}
    env.update(
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/nonexistent/aws-config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
        AWS_MAX_ATTEMPTS="1",
        AWS_RETRY_MODE="standard",
        AWS_PAGER="",
    )
    return env


def run_aws(server: BargeServer, *args: str, check: bool = True, timeout_s: float = 60):
    """Run `aws <args>` against `server`. Returns parsed JSON (None for empty output),
    or the CompletedProcess when check=False."""
    cmd = [
        aws_cli_path(),
        "--endpoint-url", server.endpoint,
        "--region", REGION,
        "--output", "json",
        *args,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=cli_env(), timeout=timeout_s
    )
    if not check:
        return proc
    if proc.returncode != 0:
        raise CliError(
            f"aws {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    out = proc.stdout.strip()
    return json.loads(out) if out else None


# --------------------------------------------------------------------------------------
# Raw HTTP (botocore validates input client-side, so bad input goes around it)
# --------------------------------------------------------------------------------------

def raw_post(server: BargeServer, op: str, body: Any, headers: dict | None = None) -> requests.Response:
    if isinstance(body, (dict, list)):
        data: bytes = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    elif body is None:
        data = b""
    else:
        data = body
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return requests.post(f"{server.endpoint}/v1/{op}", data=data, headers=h, timeout=HTTP_TIMEOUT_S)


def raw_job(server: BargeServer, job_id: str) -> dict:
    """The job exactly as the server sends it (botocore may drop members it lacks)."""
    r = raw_post(server, "describejobs", {"jobs": [job_id]})
    assert r.status_code == 200, r.text
    jobs = r.json()["jobs"]
    assert len(jobs) == 1, r.text
    return jobs[0]


def error_code(resp: requests.Response) -> str | None:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    code = resp.headers.get("x-amzn-ErrorType") or body.get("__type") or body.get("code")
    if code is None:
        return None
    return code.split(":")[0].split("#")[-1]


def assert_client_exception(resp: requests.Response, any_of: Iterable[str] = ()) -> str:
    """400 + x-amzn-ErrorType ClientException + {"__type":"ClientException","message":...}.

    `any_of`: at least one of these must appear (case-insensitively) in the message, so
    that the message names the problem. Returns the message."""
    assert resp.status_code == 400, f"expected 400, got {resp.status_code}: {resp.text[:500]}"
    header = resp.headers.get("x-amzn-ErrorType", "")
    assert header.split(":")[0] == "ClientException", (
        f"x-amzn-ErrorType header is {header!r}; body {resp.text[:500]}"
    )
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp.text[:500]!r}")
    assert isinstance(body, dict), body
    assert str(body.get("__type", "")).split(":")[0].split("#")[-1] == "ClientException", body
    msg = body.get("message")
    assert isinstance(msg, str) and msg.strip(), f"no message in {body}"
    tokens = list(any_of)
    if tokens:
        low = msg.lower()
        assert any(t.lower() in low for t in tokens), (
            f"message {msg!r} names none of {tokens}"
        )
    return msg


# --------------------------------------------------------------------------------------
# Polling
# --------------------------------------------------------------------------------------

def describe_job(batch, job_id: str) -> dict:
    jobs = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert len(jobs) == 1, f"job {job_id} not found: {jobs}"
    return jobs[0]


def wait_until(pred: Callable[[], Any], timeout_s: float = WAIT_S, what: str = "condition", poll_s: float = POLL_S):
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)


def wait_for(batch, job_id: str, statuses, timeout_s: float = WAIT_S) -> dict:
    """Poll describe_jobs until the job's status is one of `statuses` (bounded)."""
    if isinstance(statuses, str):
        statuses = (statuses,)
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while True:
        job = describe_job(batch, job_id)
        if job["status"] in statuses:
            return job
        if job["status"] in TERMINAL and not set(statuses) & set(TERMINAL):
            raise AssertionError(
                f"job {job_id} reached {job['status']} while waiting for {statuses}: {json.dumps(job, default=str)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {job_id} not in {statuses} after {timeout_s}s: {json.dumps(job, default=str)}"
            )
        time.sleep(POLL_S)


def wait_all(batch, job_ids: list[str], statuses=TERMINAL, timeout_s: float = WAIT_S) -> dict[str, dict]:
    if isinstance(statuses, str):
        statuses = (statuses,)
    deadline = time.monotonic() + timeout_s
    while True:
        out: dict[str, dict] = {}
        for i in range(0, len(job_ids), 100):
            for j in batch.describe_jobs(jobs=job_ids[i:i + 100])["jobs"]:
                out[j["jobId"]] = j
        if len(out) == len(job_ids) and all(j["status"] in statuses for j in out.values()):
            return out
        if time.monotonic() > deadline:
            pending = {i: out.get(i, {}).get("status") for i in job_ids if out.get(i, {}).get("status") not in statuses}
            raise AssertionError(f"jobs not in {statuses} after {timeout_s}s: {pending}")
        time.sleep(POLL_S * 2)


# --------------------------------------------------------------------------------------
# Resource builders
# --------------------------------------------------------------------------------------

def register_jobdef(batch, command: list[str], name: str | None = None, **extra) -> dict:
    name = name or uniq("jd")
    props = {"image": "busybox", "command": command}
    props.update(extra.pop("container", {}))
    props["environment"] = list(props.get("environment", [])) + [MARKER_ENV]
    resp = batch.register_job_definition(
        jobDefinitionName=name, type="container", containerProperties=props, **extra
    )
    return resp


def create_ce(batch, max_vcpus: int = 4, name: str | None = None, state: str = "ENABLED",
              tags: dict | None = None, **resources) -> dict:
    """A MANAGED EC2 compute environment; `resources` go into computeResources."""
    name = name or uniq("ce")
    cr = {"type": "EC2", "minvCpus": 0, "maxvCpus": max_vcpus, "instanceTypes": ["optimal"],
          "subnets": ["subnet-0123456789abcdef0"], "securityGroupIds": ["sg-0123456789abcdef0"],
          "instanceRole": "ecsInstanceRole"}
    cr.update(resources)
    extra = {"tags": tags} if tags else {}
    return batch.create_compute_environment(
        computeEnvironmentName=name, type="MANAGED", state=state, computeResources=cr, **extra
    )


def create_queue(batch, ces: list[str], priority: int = 1, name: str | None = None, **extra) -> dict:
    name = name or uniq("q")
    return batch.create_job_queue(
        jobQueueName=name,
        state="ENABLED",
        priority=priority,
        computeEnvironmentOrder=[{"order": i + 1, "computeEnvironment": ce} for i, ce in enumerate(ces)],
        **extra,
    )


def submit(batch, queue: str, jobdef: str, name: str | None = None, **extra) -> dict:
    return batch.submit_job(jobName=name or uniq("job"), jobQueue=queue, jobDefinition=jobdef, **extra)


# --------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------

def log_events(logs, stream: str) -> list[dict]:
    """All events of a stream, oldest first, following nextForwardToken until it repeats."""
    events: list[dict] = []
    kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
    token = None
    for _ in range(1000):
        if token:
            kwargs["nextToken"] = token
        page = logs.get_log_events(**kwargs)
        events.extend(page["events"])
        nxt = page.get("nextForwardToken")
        if not page["events"] or nxt == token or nxt is None:
            return events
        token = nxt
    raise AssertionError(f"get_log_events on {stream} did not stop paginating")


def log_lines(logs, stream: str) -> list[str]:
    return [e["message"].rstrip("\n") for e in log_events(logs, stream)]


def wait_log_line(logs, stream: str, pred: Callable[[str], bool], timeout_s: float = WAIT_S) -> list[str]:
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline:
        try:
            lines = log_lines(logs, stream)
        except logs.exceptions.ResourceNotFoundException:
            lines = []
        if any(pred(l) for l in lines):
            return lines
        time.sleep(0.2)
    raise AssertionError(f"no matching line in stream {stream} after {timeout_s}s; got {lines}")


# --------------------------------------------------------------------------------------
# boto3 errors
# --------------------------------------------------------------------------------------

def assert_refused(fn, *tokens, **kw) -> str:
    """Call a boto3 method and expect botocore.exceptions.ClientError with code
    ClientException and HTTP 400; at least one of `tokens` in the message. Returns it."""
    import botocore.exceptions

    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        err = e.response
        code = err["Error"]["Code"]
        msg = err["Error"].get("Message", "")
        status = err["ResponseMetadata"]["HTTPStatusCode"]
        assert (code, status) == ("ClientException", 400), (code, status, msg)
        if tokens:
            assert any(t.lower() in msg.lower() for t in tokens), f"message {msg!r} names none of {tokens}"
        return msg
    raise AssertionError(f"{getattr(fn, '__name__', fn)}({kw}) was accepted; expected ClientException")


# --------------------------------------------------------------------------------------
# Docker
# --------------------------------------------------------------------------------------

def docker(*args: str, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout_s)


def why_no_docker() -> str | None:
    """None when a Docker daemon answers, else why not (for skipif reasons)."""
    if shutil.which("docker") is None:
        return "no docker CLI on this machine"
    try:
        r = docker("version", "--format", "{{.Server.Version}}", check=False, timeout_s=20)
    except subprocess.TimeoutExpired:
        return "the Docker daemon did not answer"
    return None if r.returncode == 0 else f"the Docker daemon does not answer: {r.stderr.strip()}"


# 2030-01-01T00:00:00Z: where an injected schedules' clock starts.
SCHEDULE_CLOCK_T0 = int(datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc).timestamp() * 1000)


class ScheduleClock:
    """The schedules' clock a test injects (`BARGE_TEST_SCHEDULE_CLOCK_FILE`): epoch
    milliseconds in a file, replaced atomically, only ever moved forward."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.now = SCHEDULE_CLOCK_T0
        self.set(SCHEDULE_CLOCK_T0)

    def set(self, ms: int) -> None:
        assert ms >= self.now, "the module's clock only moves forward"
        self.now = ms
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(ms))
        tmp.replace(self.path)
