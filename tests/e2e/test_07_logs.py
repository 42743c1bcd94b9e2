"""Issue 2, point 4: each attempt's stdout and stderr are stored line by line with
timestamps and served through the CloudWatch Logs protocol on the same port:
GetLogEvents (also while the job runs), FilterLogEvents, DescribeLogStreams,
DescribeLogGroups; group /aws/batch/job, stream <jobdef>/default/<id>."""

from __future__ import annotations

import json

import pytest
import requests

from barge_helpers import (
    LOG_GROUP,
    log_events,
    log_lines,
    now_ms,
    register_jobdef,
    submit,
    uniq,
    wait_for,
    wait_log_line,
    wait_until,
)


@pytest.fixture(scope="module")
def ten_lines_job(batch):
    jd = register_jobdef(batch, ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo line-$i; done; "
                                             "echo to-stderr >&2; echo needle in a haystack"])
    before = now_ms()
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    return {"job": job, "jd": jd, "stream": job["container"]["logStreamName"], "before": before}


EXPECTED = [f"line-{i}" for i in range(1, 11)] + ["to-stderr", "needle in a haystack"]


def test_get_log_events_returns_stdout_and_stderr_lines(logs, ten_lines_job):
    events = log_events(logs, ten_lines_job["stream"])
    msgs = [e["message"].rstrip("\n") for e in events]
    # stdout lines keep their order; stderr interleaving with stdout is not ordered
    assert sorted(msgs) == sorted(EXPECTED)
    assert [m for m in msgs if m != "to-stderr"] == [m for m in EXPECTED if m != "to-stderr"]
    job = ten_lines_job["job"]
    for e in events:
        assert isinstance(e["timestamp"], int) and isinstance(e["ingestionTime"], int)
        assert ten_lines_job["before"] - 5000 <= e["timestamp"] <= now_ms() + 5000
        assert e["timestamp"] <= e["ingestionTime"] + 5000
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert job["startedAt"] - 5000 <= stamps[0]


def test_get_log_events_tokens_and_limit(logs, ten_lines_job):
    stream = ten_lines_job["stream"]
    first = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True, limit=5)
    assert len(first["events"]) == 5
    assert first["nextForwardToken"] and first["nextBackwardToken"]
    rest = []
    token = first["nextForwardToken"]
    for _ in range(20):
        page = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, nextToken=token, limit=5)
        rest += page["events"]
        if page["nextForwardToken"] == token:
            assert page["events"] == []
            break
        token = page["nextForwardToken"]
    else:
        pytest.fail("the forward token never repeated at the end of the stream")
    all_msgs = [e["message"].rstrip("\n") for e in first["events"] + rest]
    assert sorted(all_msgs) == sorted(EXPECTED)
    # startFromHead defaults to false: the newest events come back
    tail = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, limit=2)
    newest = [e["message"] for e in log_events(logs, stream)][-2:]
    assert [e["message"] for e in tail["events"]] == newest


def test_get_log_events_by_group_identifier(logs, ten_lines_job):
    page = logs.get_log_events(logGroupIdentifier=LOG_GROUP, logStreamName=ten_lines_job["stream"], startFromHead=True)
    assert len(page["events"]) == len(EXPECTED)


def test_logs_while_job_runs(batch, logs):
    jd = register_jobdef(batch, ["sh", "-c", "echo started; sleep 300"])
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    try:
        wait_for(batch, job_id, "RUNNING")
        # AWS shows the running attempt's stream in `container` (attempts[] lists finished ones)
        stream = wait_until(lambda: (lambda j: j.get("container", {}).get("logStreamName"))(
            batch.describe_jobs(jobs=[job_id])["jobs"][0]), what="logStreamName while RUNNING")
        wait_log_line(logs, stream, lambda l: l == "started")
        assert batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"] == "RUNNING"
    finally:
        batch.terminate_job(jobId=job_id, reason="cleanup")
    wait_for(batch, job_id, "FAILED")


def test_filter_log_events(logs, ten_lines_job):
    stream = ten_lines_job["stream"]
    resp = logs.filter_log_events(logGroupName=LOG_GROUP, logStreamNames=[stream], filterPattern="needle")
    msgs = [e["message"].rstrip("\n") for e in resp["events"]]
    assert msgs == ["needle in a haystack"]
    e = resp["events"][0]
    for key in ("logStreamName", "timestamp", "ingestionTime", "eventId", "message"):
        assert key in e, key
    assert e["logStreamName"] == stream
    # everything in the stream, paginated, ends, eventIds unique
    events = []
    kw = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": stream, "limit": 4}
    for _ in range(50):
        page = logs.filter_log_events(**kw)
        events += page["events"]
        if not page.get("nextToken"):
            break
        kw["nextToken"] = page["nextToken"]
    else:
        pytest.fail("filter_log_events pagination never ended")
    assert sorted(e["message"].rstrip("\n") for e in events) == sorted(EXPECTED)
    assert len({e["eventId"] for e in events}) == len(events)
    # a time window after the job finished holds nothing from it
    later = logs.filter_log_events(logGroupName=LOG_GROUP, logStreamNames=[stream], startTime=now_ms() + 60_000)
    assert later["events"] == []


def test_describe_log_streams(logs, ten_lines_job):
    stream = ten_lines_job["stream"]
    prefix = ten_lines_job["jd"]["jobDefinitionName"] + "/"
    resp = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=prefix)
    names = [s["logStreamName"] for s in resp["logStreams"]]
    assert names == [stream]
    s = resp["logStreams"][0]
    for key in ("creationTime", "firstEventTimestamp", "lastEventTimestamp", "arn"):
        assert key in s, key
    assert s["firstEventTimestamp"] <= s["lastEventTimestamp"]
    # paginated listing with limit ends and includes it
    seen = []
    kw = {"logGroupName": LOG_GROUP, "limit": 5}
    for _ in range(500):
        page = logs.describe_log_streams(**kw)
        seen += [x["logStreamName"] for x in page["logStreams"]]
        if not page.get("nextToken"):
            break
        kw["nextToken"] = page["nextToken"]
    else:
        pytest.fail("describe_log_streams pagination never ended")
    assert stream in seen


def test_describe_log_groups(logs, ten_lines_job):
    groups = logs.describe_log_groups()["logGroups"]
    assert LOG_GROUP in [g["logGroupName"] for g in groups]
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/batch")["logGroups"]
    g = [g for g in groups if g["logGroupName"] == LOG_GROUP]
    assert g and "arn" in g[0] and "creationTime" in g[0]
    assert logs.describe_log_groups(logGroupNamePrefix="/no/such/prefix")["logGroups"] == []


def test_unknown_stream_is_resource_not_found(logs, server):
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=uniq("nope/default/x"))
    # the wire form: awsJson1.1 POST / with X-Amz-Target
    r = requests.post(server.endpoint + "/", data=json.dumps({"logGroupName": "/no/such/group",
                                                                "logStreamName": "x"}),
                      headers={"Content-Type": "application/x-amz-json-1.1",
                               "X-Amz-Target": "Logs_20140328.GetLogEvents"}, timeout=10)
    assert r.status_code == 400
    assert r.json().get("__type", "").split("#")[-1] == "ResourceNotFoundException"


def test_each_retry_attempt_has_its_own_stream(batch, logs):
    jd = register_jobdef(batch, ["sh", "-c", "echo attempt-$AWS_BATCH_JOB_ATTEMPT; exit 1"], retryStrategy={"attempts": 2})
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    streams = [a["container"]["logStreamName"] for a in job["attempts"]]
    assert len(streams) == 2 and streams[0] != streams[1]
    assert [log_lines(logs, s) for s in streams] == [["attempt-1"], ["attempt-2"]]
    assert job["container"]["logStreamName"] == streams[-1]


def test_partial_last_line_unicode_and_empty_lines(batch, logs):
    jd = register_jobdef(batch, ["sh", "-c", "printf 'first\\n\\nh\\303\\251llo w\\303\\266rld\\nno-newline-at-end'"])
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"))
    assert job["status"] == "SUCCEEDED", job
    lines = log_lines(logs, job["container"]["logStreamName"])
    assert [l for l in lines if l] == ["first", "h\u00e9llo w\u00f6rld", "no-newline-at-end"], lines


def test_large_output_pages_through_tokens(batch, logs):
    jd = register_jobdef(batch, ["seq", "1", "25000"])
    job = wait_for(batch, submit(batch, "default", jd["jobDefinitionArn"])["jobId"], ("SUCCEEDED", "FAILED"),
                   timeout_s=60)
    assert job["status"] == "SUCCEEDED", job
    stream = job["container"]["logStreamName"]
    lines = log_lines(logs, stream)
    assert lines == [str(i) for i in range(1, 25001)], (len(lines), lines[:3], lines[-3:])
    first = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True)
    assert 0 < len(first["events"]) <= 10000


def test_time_window(logs, ten_lines_job):
    stream = ten_lines_job["stream"]
    events = log_events(logs, stream)
    first, last = events[0]["timestamp"], events[-1]["timestamp"]
    later = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True, startTime=last + 1)
    assert later["events"] == []
    earlier = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True, endTime=first)
    assert earlier["events"] == []  # endTime is exclusive
    window = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True,
                                 startTime=first, endTime=last + 1)
    assert len(window["events"]) == len(events)


def test_describe_log_streams_by_last_event_time(logs, ten_lines_job):
    page = logs.describe_log_streams(logGroupName=LOG_GROUP, orderBy="LastEventTime", descending=True, limit=50)
    # streams of jobs that printed nothing have no lastEventTimestamp; order the others
    stamps = [s["lastEventTimestamp"] for s in page["logStreams"] if "lastEventTimestamp" in s]
    assert stamps == sorted(stamps, reverse=True)
    assert page["logStreams"], "no streams listed"
