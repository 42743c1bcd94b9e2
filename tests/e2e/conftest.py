"""Fixtures for the end-to-end suite: one shared `barge up` for most tests, fresh ones
for tests that restart or stop a server, and the clients (boto3, aws CLI v1, raw HTTP).

Environment:
  BARGE_BIN   path to the binary (default target/release/barge, relative to the repo root)
"""

from __future__ import annotations

import pathlib

import pytest

from barge_helpers import (
    ALL_SERVERS,
    BargeServer,
    batch_client,
    create_ce,
    create_queue,
    kill_orphaned_jobs,
    logs_client,
    run_aws,
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in ALL_SERVERS:
            if srv.starts:
                rep.sections.append((f"barge log: {srv.name}", srv.log_tail(120)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if ALL_SERVERS:
        terminalreporter.write_line("barge logs: " + ", ".join(str(s.log_path) for s in ALL_SERVERS if s.starts))
