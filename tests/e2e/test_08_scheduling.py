"""Issue 2, point 5: scheduling v1. Enabled queues in descending priority; each queue's
compute environments in order; a job is placed only where its vCPUs and memory fit the
free capacity; a waiting RUNNABLE job says why; a job that can never fit says
MISCONFIGURATION:... instead of waiting silently."""

from __future__ import annotations

from barge_helpers import (
    create_ce,
    create_queue,
    describe_job,
    log_lines,
    register_jobdef,
    submit,
    wait_all,
    wait_for,
    wait_until,
)


def misconfigured(batch, job_id):
    j = describe_job(batch, job_id)
    return j if j["status"] == "RUNNABLE" and j.get("statusReason", "").startswith("MISCONFIGURATION:") else None


def test_higher_priority_queue_starts_first(batch):
    ce = create_ce(batch, max_vcpus=1)["computeEnvironmentName"]
    lo = create_queue(batch, [ce], priority=1)["jobQueueName"]
    hi = create_queue(batch, [ce], priority=100)["jobQueueName"]
    blocker_jd = register_jobdef(batch, ["sleep", "300"])
    quick_jd = register_jobdef(batch, ["sleep", "0.2"])
    blocker = submit(batch, lo, blocker_jd["jobDefinitionArn"])["jobId"]
    try:
        wait_for(batch, blocker, "RUNNING")
        # while the only slot is taken, both queues get waiting work; low priority first
        lo_jobs = [submit(batch, lo, quick_jd["jobDefinitionArn"])["jobId"] for _ in range(2)]
        hi_jobs = [submit(batch, hi, quick_jd["jobDefinitionArn"])["jobId"] for _ in range(2)]
        for j in lo_jobs + hi_jobs:
            wait_for(batch, j, "RUNNABLE")
    finally:
        batch.terminate_job(jobId=blocker, reason="free the slot")
    jobs = wait_all(batch, [blocker] + lo_jobs + hi_jobs, ("SUCCEEDED", "FAILED"), timeout_s=60)
    assert {jobs[j]["status"] for j in lo_jobs + hi_jobs} == {"SUCCEEDED"}
    hi_start = max(jobs[j]["startedAt"] for j in hi_jobs)
    lo_start = min(jobs[j]["startedAt"] for j in lo_jobs)
    assert hi_start <= lo_start, (
        f"the priority-100 queue's jobs started at {[jobs[j]['startedAt'] for j in hi_jobs]}, "
        f"after the priority-1 queue's at {[jobs[j]['startedAt'] for j in lo_jobs]}")
    # one slot: runs never overlap
    spans = sorted((j["startedAt"], j["stoppedAt"]) for j in jobs.values())
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s2 >= e1 - 50, f"two jobs ran at once on a 1-vCPU CE: {spans}"


def test_compute_environments_in_order(batch, logs):
    first = create_ce(batch, max_vcpus=1)["computeEnvironmentName"]
    second = create_ce(batch, max_vcpus=1)["computeEnvironmentName"]
    q = create_queue(batch, [first, second], priority=1)["jobQueueName"]
    holder = register_jobdef(batch, ["sh", "-c", "echo CE=$AWS_BATCH_CE_NAME; sleep 300"])
    quick = register_jobdef(batch, ["sh", "-c", "echo CE=$AWS_BATCH_CE_NAME"])
    a = submit(batch, q, holder["jobDefinitionArn"])["jobId"]
    try:
        wait_for(batch, a, "RUNNING")
        # the first CE is full, so the second one takes b while a still runs
        b = wait_for(batch, submit(batch, q, quick["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
        assert b["status"] == "SUCCEEDED"
        assert describe_job(batch, a)["status"] == "RUNNING"
        assert log_lines(logs, b["container"]["logStreamName"]) == [f"CE={second}"]
    finally:
        batch.terminate_job(jobId=a, reason="cleanup")
    a_done = wait_for(batch, a, "FAILED")
    assert log_lines(logs, a_done["container"]["logStreamName"]) == [f"CE={first}"]


def test_job_waits_until_its_vcpus_fit(batch):
    ce = create_ce(batch, max_vcpus=2)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    one = register_jobdef(batch, ["sleep", "300"])
    two = register_jobdef(batch, ["true"], container={"resourceRequirements": [{"type": "VCPU", "value": "2"}]})
    first = submit(batch, q, one["jobDefinitionArn"])["jobId"]
    try:
        wait_for(batch, first, "RUNNING")
        second = submit(batch, q, two["jobDefinitionArn"])["jobId"]
        waiting = wait_until(lambda: (lambda j: j if j["status"] == "RUNNABLE" and j.get("statusReason") else None)(
            describe_job(batch, second)), what="the 2-vCPU job RUNNABLE with a reason")
        assert not waiting["statusReason"].startswith("MISCONFIGURATION"), (
            "a job that fits the CE once it is free is not misconfigured: " + waiting["statusReason"])
        assert describe_job(batch, first)["status"] == "RUNNING"
    finally:
        batch.terminate_job(jobId=first, reason="make room")
    jobs = wait_all(batch, [first, second], ("SUCCEEDED", "FAILED"))
    assert jobs[second]["status"] == "SUCCEEDED"
    assert jobs[second]["startedAt"] >= jobs[first]["stoppedAt"] - 50


def test_vcpus_larger_than_any_ce_is_misconfiguration(batch):
    ce = create_ce(batch, max_vcpus=2)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    jd = register_jobdef(batch, ["true"])
    big = submit(batch, q, jd["jobDefinitionArn"], containerOverrides={
        "resourceRequirements": [{"type": "VCPU", "value": "4"}]})["jobId"]
    job = wait_until(lambda: misconfigured(batch, big), what="MISCONFIGURATION for 4 vCPUs on a 2-vCPU CE")
    assert job["statusReason"].startswith("MISCONFIGURATION:")
    batch.cancel_job(jobId=big, reason="cleanup")
    assert wait_for(batch, big, "FAILED")["statusReason"] == "cleanup"


def test_deprecated_vcpus_count_as_requirement(batch):
    ce = create_ce(batch, max_vcpus=1)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    jd = register_jobdef(batch, ["true"], container={"vcpus": 2, "memory": 256})
    big = submit(batch, q, jd["jobDefinitionArn"])["jobId"]
    wait_until(lambda: misconfigured(batch, big), what="MISCONFIGURATION for vcpus=2 on a 1-vCPU CE")
    batch.cancel_job(jobId=big, reason="cleanup")


def test_memory_larger_than_agent_is_misconfiguration(batch, server):
    ce = create_ce(batch, max_vcpus=2)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    jd = register_jobdef(batch, ["true"])
    big = submit(batch, q, jd["jobDefinitionArn"], containerOverrides={
        "resourceRequirements": [{"type": "MEMORY", "value": str(server.memory_mib * 4)}]})["jobId"]
    wait_until(lambda: misconfigured(batch, big), what="MISCONFIGURATION for memory beyond the agent")
    batch.cancel_job(jobId=big, reason="cleanup")


def test_disabled_ce_takes_no_placements_until_enabled(batch):
    ce = create_ce(batch, max_vcpus=1)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    batch.update_compute_environment(computeEnvironment=ce, state="DISABLED")
    jd = register_jobdef(batch, ["true"])
    job = submit(batch, q, jd["jobDefinitionArn"])["jobId"]
    waiting = wait_until(lambda: (lambda j: j if j["status"] == "RUNNABLE" and j.get("statusReason") else None)(
        describe_job(batch, job)), what="RUNNABLE with a reason while the CE is disabled")
    assert waiting["status"] == "RUNNABLE"
    batch.update_compute_environment(computeEnvironment=ce, state="ENABLED")
    assert wait_for(batch, job, ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"


def test_disabled_queue_finishes_queued_jobs(batch):
    ce = create_ce(batch, max_vcpus=1)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    jd = register_jobdef(batch, ["sleep", "1"])
    jobs = [submit(batch, q, jd["jobDefinitionArn"])["jobId"] for _ in range(2)]
    wait_for(batch, jobs[0], "RUNNING")
    batch.update_job_queue(jobQueue=q, state="DISABLED")
    done = wait_all(batch, jobs, ("SUCCEEDED", "FAILED"))
    assert {j["status"] for j in done.values()} == {"SUCCEEDED"}


def test_raising_max_vcpus_lets_waiting_jobs_start(batch):
    ce = create_ce(batch, max_vcpus=1)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    jd = register_jobdef(batch, ["sleep", "300"])
    a = submit(batch, q, jd["jobDefinitionArn"])["jobId"]
    b = submit(batch, q, jd["jobDefinitionArn"])["jobId"]
    try:
        wait_until(lambda: {describe_job(batch, a)["status"], describe_job(batch, b)["status"]} == {"RUNNING", "RUNNABLE"},
                   what="one job running, one waiting on a 1-vCPU CE")
        batch.update_compute_environment(computeEnvironment=ce, computeResources={"maxvCpus": 2})
        wait_for(batch, a, "RUNNING")
        wait_for(batch, b, "RUNNING")
    finally:
        for j in (a, b):
            batch.terminate_job(jobId=j, reason="cleanup")
    wait_all(batch, [a, b], "FAILED")


def test_deleting_a_queue_ends_its_waiting_jobs(batch):
    ce = create_ce(batch, max_vcpus=1)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    batch.update_compute_environment(computeEnvironment=ce, state="DISABLED")
    jd = register_jobdef(batch, ["true"])
    job = submit(batch, q, jd["jobDefinitionArn"])["jobId"]
    wait_for(batch, job, "RUNNABLE")
    batch.update_job_queue(jobQueue=q, state="DISABLED")
    batch.delete_job_queue(jobQueue=q)
    failed = wait_for(batch, job, "FAILED")
    assert failed.get("statusReason"), failed


def test_capacity_is_never_overcommitted(batch):
    """60 one-vCPU jobs on a 2-vCPU CE: at no instant do more than two run."""
    ce = create_ce(batch, max_vcpus=2)["computeEnvironmentName"]
    q = create_queue(batch, [ce])["jobQueueName"]
    jd = register_jobdef(batch, ["sleep", "0.05"])
    ids = [submit(batch, q, jd["jobDefinitionArn"])["jobId"] for _ in range(60)]
    jobs = wait_all(batch, ids, ("SUCCEEDED", "FAILED"), timeout_s=120)
    assert {j["status"] for j in jobs.values()} == {"SUCCEEDED"}
    edges = []
    for j in jobs.values():
        edges.append((j["startedAt"], 1))
        edges.append((j["stoppedAt"], -1))
    running = peak = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):  # stops before starts at the same ms
        running += delta
        peak = max(peak, running)
    assert peak <= 2, f"{peak} jobs ran at once on a 2-vCPU compute environment"
