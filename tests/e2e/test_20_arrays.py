"""Issue 3, arrays: array jobs with the real aws CLI and boto3. Children `<parent>:<i>` run
with AWS_BATCH_JOB_ARRAY_INDEX/SIZE; the parent stays PENDING and keeps statusSummary;
ListJobs(arrayJobId) lists children; SEQUENTIAL and N_TO_N order them; cancel cascades; a
million-child array is accepted and listed without a million rows."""

from __future__ import annotations

import botocore.exceptions
import pytest

from barge_helpers import (
    describe_job,
    register_jobdef,
    submit,
    uniq,
    wait_all,
    wait_for,
)


def summary(batch, job_id: str) -> dict[str, int]:
    counts = describe_job(batch, job_id)["arrayProperties"]["statusSummary"]
    return {k: v for k, v in counts.items() if v}


def children(batch, parent: str, status: str) -> list[dict]:
    pages = batch.get_paginator("list_jobs").paginate(arrayJobId=parent, jobStatus=status)
    return [j for page in pages for j in page["jobSummaryList"]]


def test_children_see_their_index_and_the_parent_keeps_the_books(aws, batch, tmp_path):
    out = tmp_path / "children"
    out.mkdir()
    jd = register_jobdef(batch, ["sh", "-c",
                                 f'echo "$AWS_BATCH_JOB_ARRAY_INDEX $AWS_BATCH_JOB_ARRAY_SIZE $AWS_BATCH_JOB_ID"'
                                 f' > {out}/$AWS_BATCH_JOB_ARRAY_INDEX'])["jobDefinitionName"]
    parent = aws("batch", "submit-job", "--job-name", uniq("arr"), "--job-queue", "default",
                 "--job-definition", jd, "--array-properties", "size=6")["jobId"]
    job = wait_for(batch, parent, ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    assert job["arrayProperties"]["size"] == 6
    assert summary(batch, parent) == {"SUCCEEDED": 6}
    assert set(job["arrayProperties"]["statusSummary"]) == {
        "SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"}
    assert job["arrayProperties"]["statusSummaryLastUpdatedAt"] >= job["createdAt"]
    for i in range(6):
        assert (out / str(i)).read_text().split() == [str(i), "6", f"{parent}:{i}"]

    listed = aws("batch", "list-jobs", "--array-job-id", parent, "--job-status", "SUCCEEDED")["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [f"{parent}:{i}" for i in range(6)]
    assert [j["arrayProperties"]["index"] for j in listed] == list(range(6))
    child = describe_job(batch, f"{parent}:3")
    assert child["arrayProperties"] == {"index": 3}
    assert child["status"] == "SUCCEEDED"
    assert child["attempts"][0]["container"]["exitCode"] == 0
    assert "statusSummary" in batch.list_jobs(jobQueue="default", filters=[
        {"name": "JOB_NAME", "values": [job["jobName"]]}])["jobSummaryList"][0]["arrayProperties"]


def test_a_parent_is_pending_while_its_children_run_and_fails_if_one_fails(batch):
    jd = register_jobdef(batch, ["sh", "-c",
                                 'sleep 1; [ "$AWS_BATCH_JOB_ARRAY_INDEX" != 2 ]'])["jobDefinitionArn"]
    parent = submit(batch, "default", jd, arrayProperties={"size": 4})["jobId"]
    pending = wait_for(batch, parent, ("PENDING",))
    assert pending["statusReason"].startswith("Array job:"), pending["statusReason"]
    listed = batch.list_jobs(jobQueue="default", jobStatus="PENDING")["jobSummaryList"]
    assert parent in [j["jobId"] for j in listed]
    job = wait_for(batch, parent, ("SUCCEEDED", "FAILED"))
    assert job["status"] == "FAILED"
    assert summary(batch, parent) == {"SUCCEEDED": 3, "FAILED": 1}
    assert describe_job(batch, f"{parent}:2")["status"] == "FAILED"


def test_each_child_retries_on_its_own(batch, tmp_path):
    """A retry table driven by exit codes, per child: evaluateOnExit decides for each child."""
    jd = register_jobdef(batch, ["sh", "-c",
                                 # child 0 exits 0; child 1 exits 5 once then 0; child 2 always 7
                                 'i=$AWS_BATCH_JOB_ARRAY_INDEX; a=$AWS_BATCH_JOB_ATTEMPT; '
                                 '[ $i = 0 ] && exit 0; [ $i = 1 ] && [ $a -ge 2 ] && exit 0; '
                                 '[ $i = 1 ] && exit 5; exit 7'],
                         retryStrategy={"attempts": 3, "evaluateOnExit": [
                             {"onExitCode": "7", "action": "EXIT"},
                             {"onExitCode": "*", "action": "RETRY"}]})["jobDefinitionArn"]
    parent = submit(batch, "default", jd, arrayProperties={"size": 3})["jobId"]
    wait_for(batch, parent, ("FAILED",))
    codes = {i: [a["container"]["exitCode"] for a in describe_job(batch, f"{parent}:{i}")["attempts"]]
             for i in range(3)}
    assert codes == {0: [0], 1: [5, 0], 2: [7]}


def test_sequential_children_run_in_index_order(aws, batch, tmp_path):
    order = tmp_path / "order"
    jd = register_jobdef(batch, ["sh", "-c", f'echo $AWS_BATCH_JOB_ARRAY_INDEX >> {order}'])["jobDefinitionName"]
    parent = aws("batch", "submit-job", "--job-name", uniq("seq"), "--job-queue", "default",
                 "--job-definition", jd, "--array-properties", "size=5",
                 "--depends-on", "type=SEQUENTIAL")["jobId"]
    assert wait_for(batch, parent, ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"
    assert order.read_text().split() == ["0", "1", "2", "3", "4"]


def test_a_three_stage_n_to_n_pipeline(aws, batch, tmp_path):
    """Stage k child i reads what stage k-1 child i wrote. Index 2 of stage 1 fails: index 2
    of the later stages fails with "Dependent Job failed", the other indexes flow through."""
    work = tmp_path / "pipeline"
    work.mkdir()
    stage_def = register_jobdef(batch, ["sh", "-c",
                                        f'i=$AWS_BATCH_JOB_ARRAY_INDEX; '
                                        f'if [ "$STAGE" = 1 ]; then [ $i = 2 ] && exit 1; echo 1 > {work}/$i; '
                                        f'else v=$(cat {work}/$i) && echo "$v $STAGE" > {work}/$i; fi'])["jobDefinitionName"]

    def stage(n: int, after: str | None) -> str:
        args = ["batch", "submit-job", "--job-name", uniq(f"stage{n}"), "--job-queue", "default",
                "--job-definition", jd_name, "--array-properties", "size=4",
                "--container-overrides", f"environment=[{{name=STAGE,value={n}}}]"]
        if after:
            args += ["--depends-on", f"jobId={after},type=N_TO_N"]
        return aws(*args)["jobId"]

    jd_name = stage_def
    first = stage(1, None)
    second = stage(2, first)
    third = stage(3, second)
    jobs = wait_all(batch, [first, second, third])
    assert all(j["status"] == "FAILED" for j in jobs.values()), "index 2 failed in every stage"
    for i in (0, 1, 3):
        assert (work / str(i)).read_text().split() == ["1", "2", "3"], i
    assert not (work / "2").exists()
    for parent in (second, third):
        child = describe_job(batch, f"{parent}:2")
        assert child["status"] == "FAILED"
        assert child["statusReason"] == "Dependent Job failed"
        assert child.get("attempts", []) == []
        assert summary(batch, parent) == {"SUCCEEDED": 3, "FAILED": 1}


def test_a_plain_dependency_on_an_array_waits_for_all_children(batch, tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    arr = register_jobdef(batch, ["sh", "-c", f'sleep 1; touch {done}/$AWS_BATCH_JOB_ARRAY_INDEX'])
    count = register_jobdef(batch, ["sh", "-c", f'[ $(ls {done} | wc -l) = 3 ]'])
    parent = submit(batch, "default", arr["jobDefinitionArn"], arrayProperties={"size": 3})["jobId"]
    after = submit(batch, "default", count["jobDefinitionArn"], dependsOn=[{"jobId": parent}])["jobId"]
    assert wait_for(batch, after, ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"


def test_cancelling_the_parent_cancels_every_waiting_child(batch, parked_queue):
    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    parent = submit(batch, parked_queue, jd, arrayProperties={"size": 1000})["jobId"]
    wait_for(batch, parent, ("PENDING",))
    assert summary(batch, parent) == {"RUNNABLE": 1000}
    assert describe_job(batch, f"{parent}:999")["status"] == "RUNNABLE"
    front = batch.get_job_queue_snapshot(jobQueue=parked_queue)["frontOfQueue"]["jobs"]
    assert front[0]["jobArn"].endswith(f"{parent}:0")
    batch.cancel_job(jobId=parent, reason="changed my mind")
    job = wait_for(batch, parent, ("FAILED",))
    assert job["isCancelled"] is True
    assert job["statusReason"] == "changed my mind"
    assert summary(batch, parent) == {"FAILED": 1000}
    child = describe_job(batch, f"{parent}:500")
    assert child["status"] == "FAILED" and child["isCancelled"] is True


def test_a_million_children_are_accepted_listed_and_described(batch, parked_queue):
    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    parent = submit(batch, parked_queue, jd, arrayProperties={"size": 1_000_000})["jobId"]
    wait_for(batch, parent, ("PENDING",))
    assert summary(batch, parent) == {"RUNNABLE": 1_000_000}
    last = describe_job(batch, f"{parent}:999999")
    assert last["status"] == "RUNNABLE" and last["arrayProperties"] == {"index": 999999}
    assert last["statusReason"], "a waiting child says why"
    pages = batch.get_paginator("list_jobs").paginate(
        arrayJobId=parent, jobStatus="RUNNABLE", PaginationConfig={"MaxItems": 2500, "PageSize": 1000})
    listed = [j["jobId"] for page in pages for j in page["jobSummaryList"]]
    assert listed == [f"{parent}:{i}" for i in range(2500)]
    assert batch.list_jobs(arrayJobId=parent, jobStatus="RUNNING")["jobSummaryList"] == []
    assert batch.describe_jobs(jobs=[f"{parent}:1000000"])["jobs"] == []
    batch.terminate_job(jobId=parent, reason="cleanup")
    assert wait_for(batch, parent, ("FAILED",))["isTerminated"] is True


@pytest.mark.parametrize("props, deps, words", [
    ({"size": 1}, [], "arrayProperties.size must be between 2 and 1000000"),
    ({"size": 1_000_001}, [], "--array-size-max"),
    ({"size": -3}, [], "arrayProperties.size"),
    ({"size": 5}, "N_TO_N-mismatch", "same size"),
    ({"size": 3}, "child-id", "child of an array job"),
])
def test_bad_array_submissions_are_refused(batch, props, deps, words):
    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    if isinstance(deps, str):
        other = submit(batch, "default", jd, arrayProperties={"size": 3})["jobId"]
        deps = ([{"jobId": other, "type": "N_TO_N"}] if deps == "N_TO_N-mismatch"
                else [{"jobId": f"{other}:1"}])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        submit(batch, "default", jd, arrayProperties=props, dependsOn=deps)
    assert e.value.response["Error"]["Code"] == "ClientException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert words in e.value.response["Error"]["Message"], e.value.response["Error"]["Message"]


def test_unknown_array_members_are_refused(server):
    from barge_helpers import raw_post, assert_client_exception
    resp = raw_post(server, "submitjob", {"jobName": "x", "jobQueue": "default", "jobDefinition": "x",
                                          "arrayProperties": {"size": 3, "bogus": 1}})
    assert "bogus" in assert_client_exception(resp)


def test_the_bounds_are_the_operators(server_factory):
    """barge up --array-size-max and --depends-on-max replace Barge's defaults (1,000,000 and
    1,000; AWS: 10,000 and 20)."""
    from barge_helpers import batch_client

    srv = server_factory(extra_args=["--array-size-max", "20000", "--depends-on-max", "2"])
    b = batch_client(srv)
    jd = register_jobdef(b, ["true"])["jobDefinitionArn"]
    ok = submit(b, "default", jd, arrayProperties={"size": 20000})["jobId"]
    assert describe_job(b, ok)["arrayProperties"]["size"] == 20000
    with pytest.raises(botocore.exceptions.ClientError) as e:
        submit(b, "default", jd, arrayProperties={"size": 20001})
    assert "between 2 and 20000" in e.value.response["Error"]["Message"]
    b.terminate_job(jobId=ok, reason="cleanup")
    deps = [submit(b, "default", jd)["jobId"] for _ in range(3)]
    submit(b, "default", jd, dependsOn=[{"jobId": d} for d in deps[:2]])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        submit(b, "default", jd, dependsOn=[{"jobId": d} for d in deps])
    assert "at most 2" in e.value.response["Error"]["Message"]


def test_barge_why_explains_waiting_children(server, batch):
    import json
    import subprocess
    from barge_helpers import barge_bin, create_ce, create_queue

    ce = create_ce(batch, max_vcpus=2, state="DISABLED")["computeEnvironmentName"]
    queue = create_queue(batch, [ce])["jobQueueName"]

    def why(job_id: str) -> dict:
        out = subprocess.run([barge_bin(), "why", job_id, "--endpoint", server.endpoint, "--output", "json"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    plain = submit(batch, queue, jd, arrayProperties={"size": 50})["jobId"]
    seq = submit(batch, queue, jd, arrayProperties={"size": 3}, dependsOn=[{"type": "SEQUENTIAL"}])["jobId"]
    wait_for(batch, seq, ("PENDING",))
    # Every unborn child of the first array is ahead of the sequential array's child 0.
    head = why(f"{seq}:0")
    assert head["status"] == "RUNNABLE" and head["jobsAhead"] == 50, head
    second = why(f"{seq}:1")
    assert second["status"] == "PENDING"
    assert second["statusReason"] == f"Waiting for array child {seq}:0 (RUNNABLE) to succeed (SEQUENTIAL)"
    assert any(f"barge why {seq}:0" in step for step in second["unblock"]), second["unblock"]
    parent = why(plain)
    assert parent["statusReason"].startswith("Array job: 0 of 50 children finished")
    for job_id in (plain, seq):
        batch.cancel_job(jobId=job_id, reason="cleanup")
