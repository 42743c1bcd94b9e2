"""Issue 3, point 9 (first slice): `barge why <job-id>` says where a job stands, why, how many
jobs are ahead of it and what would move it on; `--output json` for scripts; exit 1 for an
unknown job."""

from __future__ import annotations

import json
import subprocess

from barge_helpers import (
    barge_bin,
    create_ce,
    create_queue,
    register_jobdef,
    submit,
    wait_for,
)


def why(server, job_id: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([barge_bin(), "why", job_id, "--endpoint", server.endpoint, *extra],
                          capture_output=True, text=True, timeout=30)


def test_why_names_the_disabled_environment_and_how_to_enable_it(server, batch):
    ce = create_ce(batch, max_vcpus=2, state="DISABLED")["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    first = submit(batch, q, jd)["jobId"]
    second = submit(batch, q, jd)["jobId"]
    wait_for(batch, second, ("RUNNABLE",))
    out = why(server, second)
    assert out.returncode == 0, out.stderr
    assert "RUNNABLE" in out.stdout
    assert f"compute environment {ce}" in out.stdout and "DISABLED" in out.stdout
    assert "ahead of it: 1 RUNNABLE job" in out.stdout
    assert f"update-compute-environment --compute-environment {ce} --state ENABLED" in out.stdout
    data = json.loads(why(server, first, "--output", "json").stdout)
    assert data["jobId"] == first and data["status"] == "RUNNABLE" and data["jobsAhead"] == 0
    assert any("ENABLED" in step for step in data["unblock"])


def test_why_follows_dependencies_and_explains_never_fitting_jobs(server, batch):
    big = batch.register_job_definition(
        jobDefinitionName="why-big", type="container",
        containerProperties={"image": "busybox", "command": ["true"], "vcpus": 1024})["jobDefinitionArn"]
    ok = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    stuck = submit(batch, "default", big)["jobId"]
    waiting = submit(batch, "default", ok, dependsOn=[{"jobId": stuck}])["jobId"]
    wait_for(batch, stuck, ("RUNNABLE",))
    wait_for(batch, waiting, ("PENDING",))
    out = why(server, stuck)
    assert "MISCONFIGURATION:" in out.stdout, out.stdout
    data = json.loads(why(server, waiting, "--output", "json").stdout)
    assert data["status"] == "PENDING"
    assert stuck in data["statusReason"]
    assert any(f"barge why {stuck}" in step for step in data["unblock"])
    batch.cancel_job(jobId=stuck, reason="cannot fit")
    assert wait_for(batch, waiting, ("FAILED",))["statusReason"] == "Dependent Job failed"


def test_why_an_unknown_job_exits_1(server):
    out = why(server, "no-such-job")
    assert out.returncode == 1
    assert "no-such-job" in out.stderr
