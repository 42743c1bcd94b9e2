"""Fixtures for the end-to-end suite: one shared `barge up` for most tests, fresh ones
for tests that restart or stop a server, and the clients (boto3, aws CLI v1, raw HTTP).

Environment:
  BARGE_BIN   path to the binary (default target/release/barge, relative to the repo root)
"""

from __future__ import annotations

import pathlib
import time

import pytest

from barge_helpers import (
    ALL_SERVERS,
    BargeServer,
    batch_client,
    create_ce,
    create_queue,
    kill_orphaned_jobs,
    logs_client,
    register_jobdef,
    run_aws,
    submit,
    uniq,
    wait_until,
)

# The shared server's agent. Larger than the host on purpose (the issue allows
# oversubscription for short jobs) so that tests sharing it rarely wait for capacity.
SHARED_VCPUS = 16
SHARED_MEMORY_MIB = 65536


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("barge-e2e")


@pytest.fixture(scope="session")
def server_factory(e2e_dir):
    """Make extra servers (own data dir and port); all are stopped at session end."""
    made: list[BargeServer] = []

    def make(name: str | None = None, start: bool = True, **kw) -> BargeServer:
        name = name or uniq("srv")
        data_dir = kw.pop("data_dir", e2e_dir / f"{name}-data")
        srv = BargeServer(name, data_dir, e2e_dir / f"{name}.log", **kw)
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        srv.close()
    kill_orphaned_jobs()


@pytest.fixture(scope="session")
def server(e2e_dir):
    srv = BargeServer(
        "shared", e2e_dir / "shared-data", e2e_dir / "shared.log",
        vcpus=SHARED_VCPUS, memory_mib=SHARED_MEMORY_MIB,
    )
    try:
        srv.start()
        yield srv
    finally:
        srv.close()
        kill_orphaned_jobs()


@pytest.fixture(scope="session")
def batch(server):
    return batch_client(server)


@pytest.fixture(scope="session")
def logs(server):
    return logs_client(server)


@pytest.fixture(scope="session")
def aws(server):
    """aws(*args) runs the venv's aws CLI v1 against the shared server, returns JSON."""

    def run(*args, **kw):
        return run_aws(server, *args, **kw)

    return run


@pytest.fixture(scope="session", autouse=True)
def early_timeout_job(request):
    """Submit, at session start, a job whose 60 s attemptDurationSeconds must stop it, so
    that the wait overlaps the rest of the suite (checked in test_14). Only when that test
    was collected."""
    wanted = any("test_attempt_duration_timeout_is_enforced" in item.nodeid for item in request.session.items)
    if not wanted:
        yield None
        return
    batch = request.getfixturevalue("batch")
    jd = register_jobdef(batch, ["sleep", "600"], timeout={"attemptDurationSeconds": 60})
    job_id = submit(batch, "default", jd["jobDefinitionArn"], retryStrategy={"attempts": 2})["jobId"]
    yield job_id, time.monotonic()
    try:
        batch.terminate_job(jobId=job_id, reason="cleanup")
    except Exception:  # the server may be gone already
        pass


@pytest.fixture(scope="session")
def parked_queue(batch):
    """A queue whose only compute environment is DISABLED: its jobs stay RUNNABLE."""
    ce = create_ce(batch, max_vcpus=4, name=uniq("parked-ce"))["computeEnvironmentName"]
    q = create_queue(batch, [ce], priority=1, name=uniq("parked-q"))["jobQueueName"]
    batch.update_compute_environment(computeEnvironment=ce, state="DISABLED")
    wait_until(
        lambda: batch.describe_compute_environments(computeEnvironments=[ce])["computeEnvironments"][0]["state"] == "DISABLED",
        what="parked CE disabled",
    )
    return q


_LOG_OFFSETS: dict[str, int] = {}


def _log_size(srv) -> int:
    try:
        return srv.log_path.stat().st_size
    except OSError:
        return 0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _LOG_OFFSETS.clear()
    _LOG_OFFSETS.update({srv.name: _log_size(srv) for srv in ALL_SERVERS})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach what each barge wrote while the test ran (last 150 lines)."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for srv in ALL_SERVERS:
        if not srv.starts:
            continue
        start = _LOG_OFFSETS.get(srv.name, 0)
        if _log_size(srv) > start:
            with open(srv.log_path, "rb") as f:
                f.seek(start)
                lines = f.read().decode(errors="replace").splitlines()
            title = f"barge log written during this test: {srv.name} ({srv.log_path})"
            rep.sections.append((title, "\n".join(lines[-150:])))
        elif srv.alive():
            title = f"barge log (nothing new during this test), last lines: {srv.name} ({srv.log_path})"
            rep.sections.append((title, "\n".join(srv.log_text().splitlines()[-40:])))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if ALL_SERVERS:
        terminalreporter.write_line("barge logs: " + ", ".join(str(s.log_path) for s in ALL_SERVERS if s.starts))
