"""Issue 2, point 3: jobs really run through the process runner and report like AWS:
the lifecycle, attempts[] with exitCode and logStreamName, the injected AWS_BATCH_*
variables and the job's environment, Ref:: parameters, overrides, retries, and AWS's
per-state cancel/terminate semantics (terminate kills the whole process tree)."""

from __future__ import annotations

import os
import time

import pytest

from barge_helpers import (
    LIFECYCLE,
    arn,
    assert_refused,
    describe_job,
    log_lines,
    pid_alive,
    raw_job,
    register_jobdef,
    submit,
    uniq,
    wait_for,
    wait_until,
)

ORDER = ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"]


def stream_of(job: dict, attempt: int = -1) -> str:
    return job["attempts"][attempt]["container"]["logStreamName"]


def test_lifecycle_attempts_and_log_stream(batch, logs):
    jd = register_jobdef(batch, ["sh", "-c", "echo hello from barge; sleep 1"])
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = describe_job(batch, job_id)["status"]
        if not seen or seen[-1] != st:
            seen.append(st)
        if st in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(0.05)
    assert seen[-1] == "SUCCEEDED", seen
    assert "RUNNING" in seen, f"never observed RUNNING during a 1 s job: {seen}"
    idx = [ORDER.index(s) for s in seen]
    assert idx == sorted(idx), f"illegal order of states: {seen}"

    job = describe_job(batch, job_id)
    assert len(job["attempts"]) == 1
    att = job["attempts"][0]
    assert att["container"]["exitCode"] == 0
    assert isinstance(att["startedAt"], int) and isinstance(att["stoppedAt"], int)
    stream = att["container"]["logStreamName"]
    parts = stream.split("/")
    assert parts[0] == jd["jobDefinitionName"] and parts[1] == "default" and len(parts) == 3 and parts[2], stream
    assert job["container"]["exitCode"] == 0
    assert job["container"]["logStreamName"] == stream
    assert job["container"]["image"] == "busybox"
    assert job["container"]["command"] == ["sh", "-c", "echo hello from barge; sleep 1"]
    assert job["stoppedAt"] >= job["startedAt"] >= job["createdAt"]
    assert log_lines(logs, stream) == ["hello from barge"]


def test_injected_variables_and_environment_merge(batch, logs):
    script = ("echo JOB=$AWS_BATCH_JOB_ID; echo ATTEMPT=$AWS_BATCH_JOB_ATTEMPT; "
              "echo JQ=$AWS_BATCH_JQ_NAME; echo CE=$AWS_BATCH_CE_NAME; echo FOO=$FOO; echo BAR=$BAR; echo NEW=$NEW")
    jd = register_jobdef(batch, ["sh", "-c", script], container={
        "environment": [{"name": "FOO", "value": "from-def"}, {"name": "BAR", "value": "from-def"}]})
    job_id = submit(batch, "default", jd["jobDefinitionArn"], containerOverrides={
        "environment": [{"name": "BAR", "value": "from-override"}, {"name": "NEW", "value": "added"}]})["jobId"]
    job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    lines = log_lines(logs, stream_of(job))
    assert lines == [f"JOB={job_id}", "ATTEMPT=1", "JQ=default", "CE=default",
                     "FOO=from-def", "BAR=from-override", "NEW=added"]
    env = {e["name"]: e["value"] for e in job["container"].get("environment", [])}
    assert env.get("BAR") == "from-override" and env.get("FOO") == "from-def" and env.get("NEW") == "added"


def test_no_shell_unless_asked(batch, logs):
    jd = register_jobdef(batch, ["echo", "$HOME", "a;b", "*"])
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    assert log_lines(logs, stream_of(job)) == ["$HOME a;b *"]


def test_parameters_ref_substitution_and_command_override(batch, logs):
    jd = register_jobdef(batch, ["echo", "Ref::greeting", "Ref::who"],
                         parameters={"greeting": "hello", "who": "world"})
    j1 = submit(batch, "default", jd["jobDefinitionArn"], parameters={"who": "barge"})["jobId"]
    j2 = submit(batch, "default", jd["jobDefinitionArn"],
                containerOverrides={"command": ["echo", "overridden", "Ref::greeting"]})["jobId"]
    a = wait_for(batch, j1, ("SUCCEEDED", "FAILED"))
    b = wait_for(batch, j2, ("SUCCEEDED", "FAILED"))
    assert log_lines(logs, stream_of(a)) == ["hello barge"]
    assert a.get("parameters") == {"greeting": "hello", "who": "barge"}
    assert log_lines(logs, stream_of(b)) == ["overridden hello"]
    assert b["container"]["command"] == ["echo", "overridden", "hello"] or \
        b["container"]["command"] == ["echo", "overridden", "Ref::greeting"]


def test_reserved_prefix_refused_in_overrides(batch):
    jd = register_jobdef(batch, ["true"])
    assert_refused(batch.submit_job, "AWS_BATCH_",
                   jobName=uniq("j"), jobQueue="default", jobDefinition=jd["jobDefinitionArn"],
                   containerOverrides={"environment": [{"name": "AWS_BATCH_JOB_ID", "value": "spoof"}]})


def test_nonzero_exit_fails_with_exit_code(batch):
    jd = register_jobdef(batch, ["sh", "-c", "exit 3"])
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "FAILED"
    assert len(job["attempts"]) == 1
    assert job["attempts"][0]["container"]["exitCode"] == 3
    assert job["container"]["exitCode"] == 3
    assert job.get("statusReason"), "a FAILED job carries a statusReason"


def test_missing_executable_fails_not_hangs(batch):
    jd = register_jobdef(batch, [f"/nonexistent/{uniq('cmd')}"])
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "FAILED"
    assert job["attempts"], "the failed launch is recorded as an attempt"


def test_retry_strategy_three_attempts(batch, logs):
    jd = register_jobdef(batch, ["sh", "-c", "echo try $AWS_BATCH_JOB_ATTEMPT; exit 2"], retryStrategy={"attempts": 3})
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "FAILED"
    assert len(job["attempts"]) == 3, job["attempts"]
    assert [a["container"]["exitCode"] for a in job["attempts"]] == [2, 2, 2]
    streams = [stream_of(job, i) for i in range(3)]
    assert len(set(streams)) == 3, "each attempt has its own log stream"
    assert [log_lines(logs, s) for s in streams] == [["try 1"], ["try 2"], ["try 3"]]
    assert job["retryStrategy"]["attempts"] == 3
    starts = [a["startedAt"] for a in job["attempts"]]
    assert starts == sorted(starts)


def test_retry_until_success_and_submit_time_override(batch):
    jd = register_jobdef(batch, ["sh", "-c", 'test "$AWS_BATCH_JOB_ATTEMPT" -ge 2'], retryStrategy={"attempts": 1})
    # the definition says 1 attempt; the submit-time strategy replaces it
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"], retryStrategy={"attempts": 3})["jobId"],
                   ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    assert [a["container"]["exitCode"] for a in job["attempts"]] == [1, 0]
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "FAILED"
    assert len(job["attempts"]) == 1


def test_terminate_running_kills_whole_tree(batch, server, tmp_path):
    pidfile = tmp_path / "pids"
    # sh (the job) -> sh -> sleep: the sleep is a grandchild of the job's process
    script = f'sh -c "sleep 300 & echo \\$! >> {pidfile}; wait" & echo $$ >> {pidfile}; wait'
    jd = register_jobdef(batch, ["sh", "-c", script], retryStrategy={"attempts": 3})
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    wait_for(batch, job_id, "RUNNING")
    wait_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2, what="job wrote its pids")
    pids = [int(p) for p in pidfile.read_text().split()]
    assert all(pid_alive(p) for p in pids)
    resp = batch.terminate_job(jobId=job_id, reason="stop it now")
    assert set(resp) == {"ResponseMetadata"}
    job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"))
    assert job["status"] == "FAILED"
    assert job["statusReason"] == "stop it now"
    assert len(job["attempts"]) == 1, "a terminated job is never retried"
    raw = raw_job(server, job_id)
    assert raw.get("isTerminated") is True, raw
    assert not raw.get("isCancelled")
    try:
        wait_until(lambda: not any(pid_alive(p) for p in pids), timeout_s=35, what="process tree gone")
    finally:
        for p in pids:
            if pid_alive(p):
                os.kill(p, 9)


def test_cancel_running_is_a_noop(batch, server):
    jd = register_jobdef(batch, ["sleep", "2"])
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    wait_for(batch, job_id, "RUNNING")
    resp = batch.cancel_job(jobId=job_id, reason="too late")
    assert set(resp) == {"ResponseMetadata"}
    job = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    assert not raw_job(server, job_id).get("isCancelled")


@pytest.mark.parametrize("op", ["cancel_job", "terminate_job"])
def test_cancel_or_terminate_runnable_fails_it(batch, server, parked_queue, op):
    jd = register_jobdef(batch, ["true"], retryStrategy={"attempts": 3})
    job_id = submit(batch, parked_queue, jd["jobDefinitionArn"])["jobId"]
    wait_for(batch, job_id, "RUNNABLE")
    getattr(batch, op)(jobId=job_id, reason=f"{op} by test")
    job = wait_for(batch, job_id, "FAILED", timeout_s=30)
    assert job["statusReason"] == f"{op} by test"
    assert not job.get("attempts"), "a job cancelled before it started has no attempts"
    raw = raw_job(server, job_id)
    if op == "cancel_job":
        assert raw.get("isCancelled") is True, raw
    else:  # AWS: terminating a job that has not started behaves as a cancel
        assert raw.get("isCancelled") is True or raw.get("isTerminated") is True, raw


def test_cancel_and_terminate_of_finished_jobs_are_noops(batch):
    jd = register_jobdef(batch, ["true"])
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    before = wait_for(batch, job_id, ("SUCCEEDED", "FAILED"))
    batch.cancel_job(jobId=job_id, reason="late")
    batch.terminate_job(jobId=job_id, reason="later")
    after = describe_job(batch, job_id)
    assert after["status"] == before["status"] == "SUCCEEDED"
    assert after.get("statusReason") == before.get("statusReason")


def test_cancel_requires_reason_and_job_id(batch, server):
    from barge_helpers import assert_client_exception, raw_post

    assert_client_exception(raw_post(server, "canceljob", {"jobId": "x"}), ["reason"])
    assert_client_exception(raw_post(server, "terminatejob", {"reason": "r"}), ["jobId"])


def test_waiting_job_carries_status_reason(batch, parked_queue):
    jd = register_jobdef(batch, ["true"])
    job_id = submit(batch, parked_queue, jd["jobDefinitionArn"])["jobId"]
    job = wait_until(lambda: (lambda j: j if j["status"] == "RUNNABLE" and j.get("statusReason") else None)(
        describe_job(batch, job_id)), what="RUNNABLE with a statusReason")
    assert job["statusReason"].strip()
    batch.cancel_job(jobId=job_id, reason="cleanup")


def test_queue_and_definition_arns_in_detail(batch):
    jd = register_jobdef(batch, ["true"])
    job = describe_job(batch, submit(batch, arn("job-queue", "default"), jd["jobDefinitionName"])["jobId"])
    assert job["jobQueue"] == arn("job-queue", "default")
    assert job["jobDefinition"] == jd["jobDefinitionArn"]
    assert job["status"] in LIFECYCLE + ("SUCCEEDED",)


def test_job_runs_in_its_own_process_group(batch, logs, server):
    # /proc/<pid>/stat fields 5 and 6 are the process group and the session
    jd = register_jobdef(batch, ["sh", "-c", 'set -- $(cat /proc/$$/stat); echo "pid=$$ pgid=$5"'])
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    [line] = log_lines(logs, stream_of(job))
    fields = dict(kv.split("=") for kv in line.split())
    assert fields["pid"] == fields["pgid"], f"the job is not its own process group leader: {line}"
    assert int(fields["pgid"]) != os.getpgid(server.pid), "the job shares barge's process group"


def test_killed_by_signal_reports_128_plus_signal(batch):
    jd = register_jobdef(batch, ["sh", "-c", "kill -9 $$"])
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "FAILED"
    assert job["attempts"][0]["container"].get("exitCode") == 137, job["attempts"][0]


def test_running_job_has_started_at_but_no_stopped_at(batch, server):
    jd = register_jobdef(batch, ["sleep", "300"])
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    try:
        wait_for(batch, job_id, "RUNNING")
        raw = raw_job(server, job_id)
        assert isinstance(raw.get("startedAt"), int), raw
        assert "stoppedAt" not in raw or raw["stoppedAt"] is None, raw
        assert raw["container"].get("logStreamName"), "a RUNNING job shows its log stream"
    finally:
        batch.terminate_job(jobId=job_id, reason="cleanup")
    done = wait_for(batch, job_id, "FAILED")
    assert done["stoppedAt"] >= done["startedAt"]

