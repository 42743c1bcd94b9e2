"""Issue 2, point 2 (jobs): submit by name, name:revision or ARN; describe up to 100
ids with unknown ids absent; list by queue and status (RUNNING by default), the
JOB_NAME / JOB_DEFINITION / BEFORE_CREATED_AT / AFTER_CREATED_AT filters and nextToken
pagination that ends."""

from __future__ import annotations

import time
import uuid

import pytest

from barge_helpers import (
    ARN_PREFIX,
    arn,
    assert_refused,
    create_queue,
    now_ms,
    raw_post,
    register_jobdef,
    submit,
    uniq,
    wait_all,
    wait_for,
)


@pytest.fixture(scope="module")
def sleeper(batch):
    return register_jobdef(batch, ["sleep", "30"])


@pytest.fixture(scope="module")
def truejd(batch):
    return register_jobdef(batch, ["true"])


def list_all(batch, **kw) -> list[dict]:
    """Follow nextToken by hand (bounded) and return every summary."""
    out: list[dict] = []
    token = None
    for _ in range(1000):
        if token:
            kw["nextToken"] = token
        page = batch.list_jobs(**kw)
        out += page["jobSummaryList"]
        token = page.get("nextToken")
        if not token:
            return out
    raise AssertionError("list_jobs pagination never ended")


def test_submit_by_every_reference_form(batch, truejd):
    name = truejd["jobDefinitionName"]
    jd_arn = truejd["jobDefinitionArn"]
    forms = [("default", name), ("default", f"{name}:1"), (arn("job-queue", "default"), jd_arn),
             ("default", arn("job-definition", name))]
    for queue, jd in forms:
        job_name = uniq("job-ref")
        resp = batch.submit_job(jobName=job_name, jobQueue=queue, jobDefinition=jd)
        job_id = resp["jobId"]
        uuid.UUID(job_id)  # AWS job ids are UUIDs
        assert resp["jobName"] == job_name
        assert resp["jobArn"] == f"{ARN_PREFIX}job/{job_id}"
        job = batch.describe_jobs(jobs=[job_id])["jobs"][0]
        assert job["jobId"] == job_id
        assert job["jobName"] == job_name
        assert job["jobArn"] == resp["jobArn"]
        assert job["jobQueue"] == arn("job-queue", "default")
        assert job["jobDefinition"] == jd_arn
        assert job["status"] in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED")


def test_submit_unknown_references_refused(batch, truejd):
    missing_q = uniq("no-such-q")
    assert_refused(batch.submit_job, missing_q, "queue",
                   jobName="j", jobQueue=missing_q, jobDefinition=truejd["jobDefinitionArn"])
    missing_jd = uniq("no-such-jd")
    assert_refused(batch.submit_job, missing_jd, "definition",
                   jobName="j", jobQueue="default", jobDefinition=missing_jd)
    assert_refused(batch.submit_job, "99", "definition", "revision",
                   jobName="j", jobQueue="default", jobDefinition=f"{truejd['jobDefinitionName']}:99")


def test_timestamps_are_epoch_ms(batch, server, truejd):
    before = now_ms()
    job_id = submit(batch, "default", truejd["jobDefinitionArn"])["jobId"]
    assert wait_for(batch, job_id, ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"
    after = now_ms()
    raw = raw_post(server, "describejobs", {"jobs": [job_id]}).json()["jobs"][0]
    for key in ("createdAt", "startedAt", "stoppedAt"):
        assert isinstance(raw[key], int), (key, raw[key])
        assert before - 5000 <= raw[key] <= after + 5000, (key, raw[key], before, after)
    assert raw["createdAt"] <= raw["startedAt"] <= raw["stoppedAt"]
    att = raw["attempts"][0]
    assert isinstance(att["startedAt"], int) and isinstance(att["stoppedAt"], int)
    assert att["startedAt"] <= att["stoppedAt"]


def test_describe_100_ids_unknown_absent_and_101_refused(batch, parked_queue, truejd):
    real = [submit(batch, parked_queue, truejd["jobDefinitionArn"])["jobId"] for _ in range(50)]
    unknown = [str(uuid.uuid4()) for _ in range(50)]
    ids = [x for pair in zip(real, unknown) for x in pair]
    assert len(ids) == 100
    jobs = batch.describe_jobs(jobs=ids)["jobs"]
    assert sorted(j["jobId"] for j in jobs) == sorted(real)
    assert batch.describe_jobs(jobs=unknown[:3])["jobs"] == []
    assert_refused(batch.describe_jobs, "100", "jobs", jobs=ids + [str(uuid.uuid4())])
    for j in real:
        batch.cancel_job(jobId=j, reason="cleanup")


def test_list_default_is_running_only(batch, sleeper, truejd):
    q = create_queue(batch, ["default"])["jobQueueName"]
    done = submit(batch, q, truejd["jobDefinitionArn"])["jobId"]
    wait_for(batch, done, "SUCCEEDED")
    running = submit(batch, q, sleeper["jobDefinitionArn"])["jobId"]
    wait_for(batch, running, "RUNNING")
    try:
        ids = [s["jobId"] for s in list_all(batch, jobQueue=q)]
        assert ids == [running]
        ids = [s["jobId"] for s in list_all(batch, jobQueue=arn("job-queue", q), jobStatus="RUNNING")]
        assert ids == [running]
        summ = list_all(batch, jobQueue=q, jobStatus="SUCCEEDED")
        assert [s["jobId"] for s in summ] == [done]
        s = summ[0]
        assert s["status"] == "SUCCEEDED"
        assert s["jobArn"] == f"{ARN_PREFIX}job/{done}"
        assert isinstance(s["createdAt"], int) and isinstance(s["stoppedAt"], int)
        assert s["container"]["exitCode"] == 0
        assert s.get("jobDefinition") == truejd["jobDefinitionArn"]
    finally:
        batch.terminate_job(jobId=running, reason="cleanup")


def test_list_filters(batch, parked_queue):
    tag = uuid.uuid4().hex[:6]
    jd1 = register_jobdef(batch, ["true"], name=uniq("jd-filter"))
    jd_name = jd1["jobDefinitionName"]
    jd2 = register_jobdef(batch, ["true"], name=jd_name)
    names = [f"Alpha-{tag}-1", f"alpha-{tag}-2", f"beta-{tag}-3", f"ALPHA-{tag}-4"]
    ids = {}
    created = {}
    for i, n in enumerate(names):
        jd = jd1 if i % 2 == 0 else jd2
        ids[n] = submit(batch, parked_queue, jd["jobDefinitionArn"], name=n)["jobId"]
        created[n] = batch.describe_jobs(jobs=[ids[n]])["jobs"][0]["createdAt"]
        time.sleep(0.05)  # distinct createdAt milliseconds

    def listed(name, values):
        return [s["jobId"] for s in list_all(batch, jobQueue=parked_queue,
                                             filters=[{"name": name, "values": values}])]

    # JOB_NAME: case-insensitive, trailing * is a prefix; status is ignored (they are RUNNABLE)
    got = listed("JOB_NAME", [f"alpha-{tag}*"])
    assert sorted(got) == sorted(ids[n] for n in names if n.lower().startswith("alpha"))
    assert listed("JOB_NAME", [f"BETA-{tag}-3"]) == [ids[f"beta-{tag}-3"]]
    assert listed("JOB_NAME", [f"beta-{tag}"]) == []  # no * means exact
    # JOB_DEFINITION: a name matches every revision, an ARN one revision
    assert sorted(listed("JOB_DEFINITION", [jd_name])) == sorted(ids.values())
    by_arn = listed("JOB_DEFINITION", [jd2["jobDefinitionArn"]])
    assert sorted(by_arn) == sorted(ids[n] for i, n in enumerate(names) if i % 2 == 1)
    # with a filter, results are newest createdAt first
    summ = list_all(batch, jobQueue=parked_queue, filters=[{"name": "JOB_DEFINITION", "values": [jd_name]}])
    stamps = [s["createdAt"] for s in summ]
    assert stamps == sorted(stamps, reverse=True), stamps
    # BEFORE_CREATED_AT / AFTER_CREATED_AT take epoch milliseconds as a string
    order = sorted(names, key=lambda n: created[n])
    mid = (created[order[1]] + created[order[2]]) // 2
    if created[order[1]] < mid < created[order[2]]:
        after = set(listed("AFTER_CREATED_AT", [str(mid)])) & set(ids.values())
        before = set(listed("BEFORE_CREATED_AT", [str(mid)])) & set(ids.values())
        assert after == {ids[n] for n in order[2:]}
        assert before == {ids[n] for n in order[:2]}
    assert set(listed("AFTER_CREATED_AT", [str(created[order[0]] - 60_000)])) >= set(ids.values())
    assert not set(listed("AFTER_CREATED_AT", [str(now_ms() + 60_000)])) & set(ids.values())
    for j in ids.values():
        batch.cancel_job(jobId=j, reason="cleanup")


def test_list_pagination_ends(batch, parked_queue, truejd):
    prefix = f"page-{uuid.uuid4().hex[:6]}"
    ids = [submit(batch, parked_queue, truejd["jobDefinitionArn"], name=f"{prefix}-{i}")["jobId"] for i in range(5)]
    wait_all(batch, ids, "RUNNABLE")  # SUBMITTED -> RUNNABLE happens asynchronously
    # by status
    seen: list[str] = []
    token = None
    pages = 0
    for _ in range(100):
        kw = {"jobQueue": parked_queue, "jobStatus": "RUNNABLE", "maxResults": 2}
        if token:
            kw["nextToken"] = token
        page = batch.list_jobs(**kw)
        pages += 1
        assert len(page["jobSummaryList"]) <= 2
        seen += [s["jobId"] for s in page["jobSummaryList"]]
        token = page.get("nextToken")
        if not token:
            break
    else:
        pytest.fail("list_jobs pagination never ended")
    assert len(seen) == len(set(seen)), "an item was repeated across pages"
    assert set(ids) <= set(seen)
    assert pages >= 3
    # with a filter
    filt = [{"name": "JOB_NAME", "values": [prefix + "*"]}]
    seen = []
    token = None
    for _ in range(100):
        kw = {"jobQueue": parked_queue, "filters": filt, "maxResults": 2}
        if token:
            kw["nextToken"] = token
        page = batch.list_jobs(**kw)
        assert len(page["jobSummaryList"]) <= 2
        seen += [s["jobId"] for s in page["jobSummaryList"]]
        token = page.get("nextToken")
        if not token:
            break
    else:
        pytest.fail("filtered list_jobs pagination never ended")
    assert sorted(seen) == sorted(ids)
    # botocore's paginator terminates and agrees
    pag = batch.get_paginator("list_jobs")
    via = [s["jobId"] for p in pag.paginate(jobQueue=parked_queue, filters=filt, PaginationConfig={"PageSize": 3})
           for s in p["jobSummaryList"]]
    assert sorted(via) == sorted(ids)
    for j in ids:
        batch.cancel_job(jobId=j, reason="cleanup")


def test_job_tags_on_submit(batch, truejd):
    job = submit(batch, "default", truejd["jobDefinitionArn"], tags={"owner": "e2e", "n": "1"})
    d = batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0]
    assert d.get("tags") == {"owner": "e2e", "n": "1"}
    assert batch.list_tags_for_resource(resourceArn=job["jobArn"])["tags"] == {"owner": "e2e", "n": "1"}


def test_many_jobs_all_finish(batch, truejd):
    """A burst of trivial jobs on the default queue all reach SUCCEEDED."""
    ids = [submit(batch, "default", truejd["jobDefinitionArn"])["jobId"] for _ in range(40)]
    jobs = wait_all(batch, ids, ("SUCCEEDED", "FAILED"), timeout_s=60)
    assert {j["status"] for j in jobs.values()} == {"SUCCEEDED"}


def test_list_job_definition_filter_prefix(batch, parked_queue):
    base = uniq("jdpfx")
    a = register_jobdef(batch, ["true"], name=base + "-a")
    b = register_jobdef(batch, ["true"], name=base + "-b")
    ja = submit(batch, parked_queue, a["jobDefinitionArn"])["jobId"]
    jb = submit(batch, parked_queue, b["jobDefinitionArn"])["jobId"]
    got = [s["jobId"] for s in list_all(batch, jobQueue=parked_queue,
                                        filters=[{"name": "JOB_DEFINITION", "values": [base + "*"]}])]
    assert sorted(got) == sorted([ja, jb])
    got = [s["jobId"] for s in list_all(batch, jobQueue=parked_queue,
                                        filters=[{"name": "JOB_DEFINITION", "values": [base + "-a"]}])]
    assert got == [ja]
    for j in (ja, jb):
        batch.cancel_job(jobId=j, reason="cleanup")


def test_unknown_members_are_ignored(server, batch, truejd):
    """Newer SDKs send members an older server does not know; AWS ignores them."""
    r = raw_post(server, "submitjob", {"jobName": uniq("unknown-member"), "jobQueue": "default",
                                       "jobDefinition": truejd["jobDefinitionArn"], "someFutureMember": {"x": 1}})
    assert r.status_code == 200, r.text
    assert wait_for(batch, r.json()["jobId"], ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"
