"""Issue 4, point 6: the process runner enforces a job's MEMORY and VCPU with a cgroup per
attempt (v1 or v2, whichever the host has), kills the whole tree through it, reports an OOM kill
as AWS does, and removes the cgroup afterwards. `barge up` says at start which limits are
enforced. Skipped, with the reason, where the host gives Barge no usable cgroups (the runner
then falls back to rlimits, tested in the agent's Rust tests)."""

from __future__ import annotations

import pathlib
import re

import pytest

from barge_helpers import log_lines, register_jobdef, submit, wait_for, wait_log_line

OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"

# Prints the job's own cgroups, then its memory limit and CPU quota read from its cgroup's files:
# v1 (a hierarchy per controller; cpu may be mounted with cpuacct) or v2 (one `0::` line).
SHOW_LIMITS = r"""
cat /proc/self/cgroup
m=$(awk -F: '$2=="memory" {print $3}' /proc/self/cgroup)
c=$(awk -F: '{n=split($2, a, ","); for (i=1; i<=n; i++) if (a[i]=="cpu") print $3}' /proc/self/cgroup)
if [ -n "$m" ]; then
  echo "memory-limit $(cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes)"
  echo "cpu-quota $(cat /sys/fs/cgroup/cpu$c/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu$c/cpu.cfs_period_us)"
else
  u=$(awk -F: '$1=="0" {print $3}' /proc/self/cgroup)
  echo "memory-limit $(cat /sys/fs/cgroup$u/memory.max)"
  echo "cpu-quota $(cat /sys/fs/cgroup$u/cpu.max)"
fi
"""


def container(vcpus: str, memory: str) -> dict:
    return {"resourceRequirements": [{"type": "VCPU", "value": vcpus}, {"type": "MEMORY", "value": memory}]}


@pytest.fixture(scope="module")
def limits_note(server) -> str:
    notes = re.findall(r"^\s*(limits: .*)$", server.log_text(), re.MULTILINE)
    assert notes, "barge up printed no limits note for the process runner"
    note = notes[0]
    if not note.startswith("limits: cgroup") or "memory" not in note or "cpu" not in note:
        pytest.skip(f"no usable cgroups on this host: {note}")
    return note


def test_the_banner_says_which_limits_are_enforced_and_how(limits_note):
    assert re.fullmatch(r"limits: cgroup v[12] \(memory, cpu\)", limits_note), limits_note


def test_a_job_over_its_memory_is_killed_with_137_and_the_oom_reason(batch, logs, limits_note):
    # The shell keeps 200 MB in a variable; MEMORY is 64 MiB.
    hog = ["sh", "-c", "echo allocating; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]
    jd = register_jobdef(
        batch, hog, container=container("1", "64"),
        retryStrategy={"attempts": 3, "evaluateOnExit": [
            {"onReason": "OutOfMemoryError*", "action": "EXIT"},
            {"onExitCode": "*", "action": "RETRY"},
        ]},
    )
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"), timeout_s=60)
    assert job["status"] == "FAILED", job
    assert job["container"]["exitCode"] == 137, job["container"]
    assert job["container"]["reason"] == OOM_REASON
    assert len(job["attempts"]) == 1, "evaluateOnExit onReason OutOfMemoryError* must EXIT, not retry"
    lines = log_lines(logs, job["container"]["logStreamName"])
    assert "allocating" in lines and "survived" not in lines, lines


def test_a_job_sees_its_cgroup_limits_and_the_cgroup_is_removed_after_it(batch, logs, limits_note):
    jd = register_jobdef(batch, ["sh", "-c", SHOW_LIMITS], container=container("1", "96"))
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"), timeout_s=60)
    lines = log_lines(logs, job["container"]["logStreamName"])
    assert job["status"] == "SUCCEEDED", (job, lines)
    assert f"memory-limit {96 * 1024 * 1024}" in lines, lines
    # One vCPU: a quota of one whole period.
    assert "cpu-quota 100000 100000" in lines, lines
    # Its cgroups are Barge's (`barge/<home>.<attempt id>`), and gone once it ended.
    cgroups = [line.split(":", 2) for line in lines if re.match(r"^\d+:[^:]*:/", line)]
    mine = [(controllers, path) for _, controllers, path in cgroups if path.startswith("/barge/")]
    assert mine, lines
    for controllers, path in mine:
        hierarchy = [c for c in controllers.split(",") if c in ("memory", "cpu")]
        for d in ([f"/sys/fs/cgroup/{h}{path}" for h in hierarchy] if controllers else [f"/sys/fs/cgroup{path}"]):
            assert not pathlib.Path(d).exists(), f"{d} is left after the job ended"


def test_terminate_kills_what_left_the_process_group(batch, logs, limits_note):
    # The grandchild leaves the job's process group (setsid) and ignores SIGTERM: only the
    # cgroup still reaches it.
    script = "setsid sh -c 'trap \"\" TERM; echo escapee $$; exec sleep 600' & wait"
    jd = register_jobdef(batch, ["sh", "-c", script], container=container("1", "64"))
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    job = wait_for(batch, job_id, ("RUNNING",), timeout_s=60)
    lines = wait_log_line(logs, job["container"]["logStreamName"], lambda line: line.startswith("escapee "))
    pid = int(next(line for line in lines if line.startswith("escapee ")).split()[1])
    batch.terminate_job(jobId=job_id, reason="enough")
    wait_for(batch, job_id, ("FAILED",), timeout_s=60)
    assert not pathlib.Path(f"/proc/{pid}").exists(), f"the grandchild {pid} outside the group survived"
