"""Issue 2, point 6: nothing acknowledged is lost. SIGKILL `barge up` (while clients are
still submitting) and start it again on the same data directory: every acknowledged
object and job is there; attempts that were running fail with a host-terminated
statusReason and are retried when attempts remain."""

from __future__ import annotations

import os
import threading

import botocore.exceptions
import pytest
import urllib3.exceptions

from barge_helpers import (
    arn,
    batch_client,
    create_ce,
    create_queue,
    describe_job,
    log_lines,
    logs_client,
    pid_alive,
    register_jobdef,
    submit,
    uniq,
    wait_for,
    wait_until,
)

HOST_TERMINATED_PREFIX = "Host EC2 (instance "
HOST_TERMINATED_SUFFIX = ") terminated."


def host_terminated(reason: str | None) -> bool:
    return bool(reason) and reason.startswith(HOST_TERMINATED_PREFIX) and HOST_TERMINATED_SUFFIX in reason


@pytest.fixture(scope="module")
def crash_server(server_factory):
    return server_factory("restart", vcpus=4, memory_mib=16384)


def test_sigkill_restart_keeps_everything(crash_server, tmp_path):
    srv = crash_server
    b = batch_client(srv)
    lg = logs_client(srv)

    # --- acknowledged state of every kind --------------------------------------------
    ce = create_ce(b, max_vcpus=4, tags={"kind": "ce"})["computeEnvironmentName"]
    q = create_queue(b, [ce], priority=7, tags={"kind": "queue"})["jobQueueName"]
    parked_ce = create_ce(b, max_vcpus=2)["computeEnvironmentName"]
    parked_q = create_queue(b, [parked_ce])["jobQueueName"]
    b.update_compute_environment(computeEnvironment=parked_ce, state="DISABLED")
    jd_name = uniq("jd-crash")
    register_jobdef(b, ["sh", "-c", "echo finished-before-crash"], name=jd_name, tags={"kind": "jd"})
    register_jobdef(b, ["true"], name=jd_name)
    b.deregister_job_definition(jobDefinition=f"{jd_name}:2")

    done = submit(b, q, f"{jd_name}:1")["jobId"]
    wait_for(b, done, "SUCCEEDED")

    pid_retry = tmp_path / "retry.pid"
    pid_once = tmp_path / "once.pid"
    # attempt 1 hangs (and records its pid); attempt 2 finishes at once
    retry_jd = register_jobdef(b, ["sh", "-c",
        f'if [ "$AWS_BATCH_JOB_ATTEMPT" = 1 ]; then echo $$ > {pid_retry}; exec sleep 300; fi; echo second-attempt'],
        retryStrategy={"attempts": 2})
    once_jd = register_jobdef(b, ["sh", "-c", f"echo $$ > {pid_once}; exec sleep 300"])
    retried = submit(b, q, retry_jd["jobDefinitionArn"])["jobId"]
    not_retried = submit(b, q, once_jd["jobDefinitionArn"])["jobId"]
    wait_for(b, retried, "RUNNING")
    wait_for(b, not_retried, "RUNNING")
    wait_until(lambda: pid_retry.exists() and pid_once.exists()
               and pid_retry.read_text().strip() and pid_once.read_text().strip(), what="job pids")
    orphans = [int(pid_retry.read_text()), int(pid_once.read_text())]
    waiting = submit(b, parked_q, f"{jd_name}:1")["jobId"]
    wait_for(b, waiting, "RUNNABLE")

    # --- clients keep submitting while the server is SIGKILLed -----------------------
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def submitter():
        c = batch_client(srv)
        while not stop.is_set():
            try:
                r = c.submit_job(jobName=uniq("burst"), jobQueue=parked_q, jobDefinition=f"{jd_name}:1")
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                    urllib3.exceptions.HTTPError, OSError):
                return
            with lock:
                acked.append(r["jobId"])

    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 200, timeout_s=60, what="200 acknowledged submits")
    last_ce = create_ce(b, max_vcpus=1)["computeEnvironmentName"]  # acknowledged just before the kill
    srv.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    acked_ids = list(acked)

    try:
        # --- restart on the same data dir --------------------------------------------
        srv.start()
        b = batch_client(srv)
        lg = logs_client(srv)

        ces = {c["computeEnvironmentName"]: c for c in b.describe_compute_environments(
            computeEnvironments=[ce, parked_ce, last_ce, "default"])["computeEnvironments"]}
        assert set(ces) == {ce, parked_ce, last_ce, "default"}
        assert ces[parked_ce]["state"] == "DISABLED"
        assert ces[ce]["computeResources"]["maxvCpus"] == 4
        assert len(b.describe_compute_environments(computeEnvironments=["default"])["computeEnvironments"]) == 1
        queue = b.describe_job_queues(jobQueues=[q])["jobQueues"][0]
        assert queue["priority"] == 7
        assert queue["computeEnvironmentOrder"][0]["computeEnvironment"] == arn("compute-environment", ce)
        revs = {d["revision"]: d["status"] for d in b.describe_job_definitions(jobDefinitionName=jd_name)["jobDefinitions"]}
        assert revs == {1: "ACTIVE", 2: "INACTIVE"}
        assert b.list_tags_for_resource(resourceArn=arn("job-queue", q))["tags"] == {"kind": "queue"}
        assert b.list_tags_for_resource(resourceArn=arn("compute-environment", ce))["tags"] == {"kind": "ce"}

        # the finished job and its logs
        d = describe_job(b, done)
        assert d["status"] == "SUCCEEDED"
        assert d["attempts"][0]["container"]["exitCode"] == 0
        assert log_lines(lg, d["container"]["logStreamName"]) == ["finished-before-crash"]

        # every acknowledged submit survived
        found = set()
        for i in range(0, len(acked_ids), 100):
            found |= {j["jobId"] for j in b.describe_jobs(jobs=acked_ids[i:i + 100])["jobs"]}
        missing = set(acked_ids) - found
        assert not missing, f"{len(missing)} of {len(acked_ids)} acknowledged jobs lost: {sorted(missing)[:5]}"
        assert describe_job(b, waiting)["status"] == "RUNNABLE"

        # the running attempts failed with the host-terminated reason ...
        nr = wait_for(b, not_retried, "FAILED")
        assert len(nr["attempts"]) == 1
        assert host_terminated(nr["attempts"][0].get("statusReason")), nr["attempts"][0]
        assert host_terminated(nr.get("statusReason")), nr.get("statusReason")
        # ... and the one with attempts left was retried and succeeded
        r = wait_for(b, retried, ("SUCCEEDED", "FAILED"))
        assert r["status"] == "SUCCEEDED", r
        assert len(r["attempts"]) == 2
        assert host_terminated(r["attempts"][0].get("statusReason")), r["attempts"][0]
        assert r["attempts"][1]["container"]["exitCode"] == 0
        assert log_lines(lg, r["attempts"][1]["container"]["logStreamName"]) == ["second-attempt"]

        # and the restarted server keeps working
        again = submit(b, q, f"{jd_name}:1")["jobId"]
        assert wait_for(b, again, ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"
    finally:
        for p in orphans:
            if pid_alive(p):
                os.kill(p, 9)


def test_second_sigkill_in_a_row(crash_server):
    """Crash again right after a restart: the store reopens and nothing is duplicated."""
    srv = crash_server
    if not srv.alive():
        srv.start()
    b = batch_client(srv)
    name = uniq("ce-twice")
    b.create_compute_environment(computeEnvironmentName=name, type="UNMANAGED")
    srv.kill9()
    srv.start()
    srv.kill9()
    srv.start()
    b = batch_client(srv)
    assert [c["computeEnvironmentName"] for c in b.describe_compute_environments(
        computeEnvironments=[name])["computeEnvironments"]] == [name]
    assert len(b.describe_job_queues(jobQueues=["default"])["jobQueues"]) == 1


def test_restart_leaves_no_orphaned_attempt_running(crash_server, tmp_path):
    """An attempt declared dead by a restart must not keep running beside its retry:
    at most one live attempt per job, on the host as in the records."""
    srv = crash_server
    if not srv.alive():
        srv.start()
    b = batch_client(srv)
    pidfile = tmp_path / "orphan.pid"
    jd = register_jobdef(b, ["sh", "-c", f"echo $$ >> {pidfile}; exec sleep 300"], retryStrategy={"attempts": 2})
    job = submit(b, "default", jd["jobDefinitionArn"])["jobId"]
    wait_for(b, job, "RUNNING")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="attempt 1 pid")
    first_pid = int(pidfile.read_text().split()[0])
    srv.kill9()
    srv.start()
    b = batch_client(srv)
    try:
        d = wait_until(lambda: (lambda j: j if len(j.get("attempts", [])) >= 1 else None)(describe_job(b, job)),
                       what="the killed attempt recorded as failed")
        assert host_terminated(d["attempts"][0].get("statusReason")), d["attempts"][0]
        wait_until(lambda: not pid_alive(first_pid), timeout_s=35,
                   what=f"the dead attempt's process {first_pid} to be gone after the restart")
    finally:
        pids = [int(p) for p in pidfile.read_text().split()] if pidfile.exists() else []
        b.terminate_job(jobId=job, reason="cleanup")
        wait_for(b, job, ("SUCCEEDED", "FAILED"))
        for p in pids:
            if pid_alive(p):
                os.kill(p, 9)
