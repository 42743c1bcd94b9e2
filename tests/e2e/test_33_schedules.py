"""Scheduled jobs (docs/schedules.md): the /barge/v1/schedules API against the real binary,
and schedules firing on an injected clock through the real loop, writer and store.

The server runs with BARGE_TEST_SCHEDULE_CLOCK_FILE: the schedules' clock is the epoch
milliseconds written in that file. Tests move it forward only (it is shared by the module's
server), and delete their schedules when done so that later moves fire nothing of theirs.
"""

from __future__ import annotations


import pytest
import requests

from barge_helpers import (
    SCHEDULE_CLOCK_T0 as T0,
    ScheduleClock as Clock,
    ARN_PREFIX,
    HTTP_TIMEOUT_S,
    assert_client_exception,
    batch_client,
    register_jobdef,
    uniq,
    wait_for,
    wait_until,
)

HOUR = 3_600_000


@pytest.fixture(scope="module")
def clock(e2e_dir):
    return Clock(e2e_dir / "schedule-clock")


@pytest.fixture(scope="module")
def srv(server_factory, clock):
    return server_factory(
        uniq("sched"), extra_env={"BARGE_TEST_SCHEDULE_CLOCK_FILE": str(clock.path)}
    )


@pytest.fixture(scope="module")
def batch(srv):
    return batch_client(srv)


@pytest.fixture(scope="module")
def echo_def(batch):
    return register_jobdef(batch, ["echo", "scheduled hello"])["jobDefinitionArn"]


@pytest.fixture(scope="module")
def sleep_def(batch):
    return register_jobdef(batch, ["sleep", "300"])["jobDefinitionArn"]


def url(srv, name: str = "") -> str:
    return f"{srv.endpoint}/barge/v1/schedules" + (f"/{name}" if name else "")


def create(srv, **body) -> requests.Response:
    return requests.post(url(srv), json=body, timeout=HTTP_TIMEOUT_S)


def describe(srv, name: str) -> dict:
    r = requests.get(url(srv, name), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return r.json()


def delete(srv, name: str) -> None:
    r = requests.delete(url(srv, name), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text


def template(jobdef: str, **extra) -> dict:
    t = {"jobName": "scheduled", "jobQueue": "default", "jobDefinition": jobdef}
    t.update(extra)
    return t


def fire(srv, clock: Clock, name: str, counter: str = "firedCount") -> dict:
    """Moves the clock to the schedule's next fire time and waits until the loop fired it."""
    s = describe(srv, name)
    before = s.get(counter, 0)
    clock.set(max(clock.now, s["nextFireAt"]))
    return wait_until(
        lambda: (d := describe(srv, name)).get(counter, 0) > before and d,
        what=f"schedule {name} to fire ({counter})",
    )


def test_crud_and_paging(srv, clock, echo_def):
    names = [uniq("crud") for _ in range(3)]
    r = create(
        srv,
        scheduleName=names[0],
        scheduleExpression="cron(0 3 * * ? *)",
        scheduleExpressionTimezone="Europe/Paris",
        overlapPolicy="SKIP",
        description="nightly",
        jobTemplate=template(echo_def, containerOverrides={"environment": [{"name": "A", "value": "1"}]}),
        tags={"team": "data"},
    )
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["scheduleName"] == names[0]
    assert s["scheduleArn"] == f"{ARN_PREFIX}schedule/{names[0]}"
    assert s["state"] == "ENABLED"
    assert s["overlapPolicy"] == "SKIP"
    assert s["scheduleExpressionTimezone"] == "Europe/Paris"
    # 03:00 in Paris (UTC+1 in January) after the clock's 2030-01-01T00:00Z.
    assert s["nextFireAt"] == T0 + 2 * HOUR
    assert s["jobTemplate"]["containerOverrides"]["environment"] == [{"name": "A", "value": "1"}]
    assert s["tags"] == {"team": "data"}
    assert s["firedCount"] == 0 and s["skippedCount"] == 0
    assert describe(srv, names[0]) == s

    for n in names[1:]:
        r = create(srv, scheduleName=n, scheduleExpression="rate(1 day)", state="DISABLED",
                   jobTemplate=template(echo_def))
        assert r.status_code == 200, r.text
        assert "nextFireAt" not in r.json()

    # Paging: every one of ours is seen once, in name order.
    seen, token = [], None
    for _ in range(100):
        params = {"maxResults": 2} | ({"nextToken": token} if token else {})
        r = requests.get(url(srv), params=params, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["schedules"]) <= 2
        seen += [s["scheduleName"] for s in page["schedules"]]
        token = page.get("nextToken")
        if not token:
            break
    assert seen == sorted(seen)
    assert [n for n in seen if n in names] == sorted(names)

    # Update: PATCH and PUT change only what they name.
    r = requests.patch(url(srv, names[1]), json={"state": "ENABLED", "overlapPolicy": "CANCEL_PREVIOUS"},
                       timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    u = r.json()
    assert (u["state"], u["overlapPolicy"], u["scheduleExpression"]) == ("ENABLED", "CANCEL_PREVIOUS", "rate(1 day)")
    # Re-enabled: the rate counts from the change, on the schedules' clock.
    assert u["nextFireAt"] == clock.now + 24 * HOUR
    r = requests.put(url(srv, names[1]), json={"scheduleExpression": "rate(2 hours)", "state": "DISABLED"},
                     timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert r.json()["scheduleExpression"] == "rate(2 hours)"

    for n in names:
        delete(srv, n)
    r = requests.get(url(srv, names[0]), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 404, r.text
    assert names[0] in r.json()["message"]
    r = requests.delete(url(srv, names[0]), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 404, r.text


def test_validation_messages_name_the_field(srv, echo_def):
    good = dict(scheduleName=uniq("bad"), scheduleExpression="rate(5 minutes)", jobTemplate=template(echo_def))
    cases = [
        (dict(scheduleExpression="cron(0 12 * * *)"), ["scheduleExpression", "6"]),
        (dict(scheduleExpression="rate(5 weeks)"), ["scheduleExpression", "minute"]),
        (dict(scheduleExpression="at(2029-01-01T00:00:00)"), ["scheduleExpression", "passed"]),
        (dict(scheduleExpression="cron(0 12 ? * MON-FRI *)", scheduleExpressionTimezone="Mars/Base"),
         ["scheduleExpressionTimezone", "Mars/Base"]),
        (dict(overlapPolicy="QUEUE"), ["overlapPolicy"]),
        (dict(state="ON"), ["state"]),
        (dict(scheduleName="no spaces"), ["scheduleName"]),
        (dict(jobTemplate=template(echo_def, jobQueue="no-such-queue")), ["jobTemplate", "no-such-queue"]),
        (dict(jobTemplate=template("no-such-def")), ["jobTemplate", "no-such-def"]),
        (dict(jobTemplate=template(echo_def, containerOverrides={"vcpus": "two"})),
         ["jobTemplate.containerOverrides.vcpus"]),
        (dict(jobTemplate=template(echo_def, jobName="-dash")), ["jobTemplate", "jobName"]),
        (dict(jobTemplate=template(echo_def, retryStrategy={"attempts": 11})), ["jobTemplate", "attempts"]),
        (dict(jobTemplate={"jobQueue": "default", "jobDefinition": echo_def}), ["jobTemplate.jobName"]),
        (dict(jobTemplate=template(echo_def, dependsOn=[{"jobId": "x"}])), ["dependsOn"]),
        (dict(unknownMember=1), ["unknownMember"]),
    ]
    for change, tokens in cases:
        body = dict(good) | change
        msg = assert_client_exception(create(srv, **body), tokens)
        assert "panic" not in msg.lower()
    r = create(srv, **{k: v for k, v in good.items() if k != "jobTemplate"})
    assert_client_exception(r, ["jobTemplate"])
    r = requests.post(url(srv), data=b"{not json", timeout=HTTP_TIMEOUT_S)
    assert_client_exception(r, ["JSON"])
    r = requests.get(url(srv), params={"maxResults": 0}, timeout=HTTP_TIMEOUT_S)
    assert_client_exception(r, ["maxResults"])
    r = requests.get(url(srv), params={"nextToken": "!!"}, timeout=HTTP_TIMEOUT_S)
    assert_client_exception(r, ["nextToken"])
    # Nothing was created by the refusals.
    assert good["scheduleName"] not in [s["scheduleName"] for s in requests.get(url(srv)).json()["schedules"]]
    # Updates are checked the same way and change nothing when refused.
    name = uniq("upd")
    assert create(srv, **(good | {"scheduleName": name, "state": "DISABLED"})).status_code == 200
    before = describe(srv, name)
    r = requests.patch(url(srv, name), json={"scheduleExpression": "cron(bad)"}, timeout=HTTP_TIMEOUT_S)
    assert_client_exception(r, ["scheduleExpression"])
    r = requests.patch(url(srv, name), json={"jobTemplate": template(echo_def, jobQueue="nope")}, timeout=HTTP_TIMEOUT_S)
    assert_client_exception(r, ["jobTemplate", "nope"])
    assert describe(srv, name) == before
    delete(srv, name)


def test_a_schedule_fires_on_the_injected_clock_and_its_job_succeeds(srv, batch, clock, echo_def):
    name = uniq("fire")
    r = create(srv, scheduleName=name, scheduleExpression="cron(0/30 * * * ? *)",
               jobTemplate=template(echo_def, jobName="nightly-report", tags={"owner": "ops"}))
    assert r.status_code == 200, r.text
    s = fire(srv, clock, name)
    assert s["firedCount"] == 1
    assert s["lastFiredAt"] == clock.now
    assert s["nextFireAt"] == clock.now + HOUR // 2
    job_id = s["lastJobId"]
    job = wait_for(batch, job_id, "SUCCEEDED")
    assert job["jobName"] == "nightly-report"
    assert job["tags"] == {"owner": "ops", "barge:schedule": name}
    # Catch-up: five fire times pass at once, one job is submitted.
    clock.set(clock.now + 5 * HOUR // 2 + 1000)
    s = wait_until(lambda: (d := describe(srv, name))["firedCount"] == 2 and d, what="the catch-up fire")
    assert s["nextFireAt"] > clock.now
    wait_for(batch, s["lastJobId"], "SUCCEEDED")
    jobs = batch.list_jobs(jobQueue="default", filters=[{"name": "JOB_NAME", "values": ["nightly-report"]}])
    assert len(jobs["jobSummaryList"]) == 2
    delete(srv, name)


def test_skip_does_not_overlap(srv, batch, clock, sleep_def):
    name = uniq("skip")
    r = create(srv, scheduleName=name, scheduleExpression="rate(1 hour)", overlapPolicy="SKIP",
               jobTemplate=template(sleep_def))
    assert r.status_code == 200, r.text
    first = fire(srv, clock, name)["lastJobId"]
    wait_for(batch, first, "RUNNING")
    s = fire(srv, clock, name, counter="skippedCount")
    assert (s["firedCount"], s["skippedCount"], s["lastJobId"]) == (1, 1, first)
    assert s["activeJobIds"] == [first]
    batch.terminate_job(jobId=first, reason="test over")
    wait_for(batch, first, "FAILED")
    # A finished run is no longer shown as active, even before the schedule next fires.
    assert describe(srv, name).get("activeJobIds", []) == []
    s = fire(srv, clock, name)
    assert (s["firedCount"], s["skippedCount"]) == (2, 1)
    assert s["lastJobId"] != first
    delete(srv, name)
    batch.terminate_job(jobId=s["lastJobId"], reason="test over")


def test_cancel_previous_terminates_the_running_job(srv, batch, clock, sleep_def):
    name = uniq("cancel")
    r = create(srv, scheduleName=name, scheduleExpression="rate(1 hour)", overlapPolicy="CANCEL_PREVIOUS",
               jobTemplate=template(sleep_def))
    assert r.status_code == 200, r.text
    first = fire(srv, clock, name)["lastJobId"]
    wait_for(batch, first, "RUNNING")
    s = fire(srv, clock, name)
    second = s["lastJobId"]
    assert second != first
    old = wait_for(batch, first, "FAILED")
    assert name in old["statusReason"] and "CANCEL_PREVIOUS" in old["statusReason"], old["statusReason"]
    wait_for(batch, second, ("RUNNABLE", "STARTING", "RUNNING"))
    delete(srv, name)
    batch.terminate_job(jobId=second, reason="test over")


def test_schedules_survive_a_restart(srv, batch, clock, echo_def):
    name = uniq("durable")
    r = create(srv, scheduleName=name, scheduleExpression="cron(15 * * * ? *)",
               scheduleExpressionTimezone="America/New_York", overlapPolicy="SKIP",
               jobTemplate=template(echo_def))
    assert r.status_code == 200, r.text
    s = fire(srv, clock, name)
    wait_for(batch, s["lastJobId"], "SUCCEEDED")
    before = describe(srv, name)
    srv.restart(kill=True)
    after = describe(srv, name)
    assert after == before
    s = fire(srv, clock, name)
    assert s["firedCount"] == 2
    wait_for(batch_client(srv), s["lastJobId"], "SUCCEEDED")
    delete(srv, name)


def test_signed_like_the_rest_when_access_keys_are_on(server_factory):
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from barge_helpers import REGION, error_code

    akid, secret = "AKIASCHEDULES", "schedules-secret"
    srv = server_factory(uniq("sched-signed"),
                         extra_env={"BARGE_ACCESS_KEY_ID": akid, "BARGE_SECRET_ACCESS_KEY": secret})
    r = requests.get(url(srv), timeout=HTTP_TIMEOUT_S)
    assert (r.status_code, error_code(r)) == (403, "MissingAuthenticationTokenException"), r.text

    def send(method: str, target: str, body: bytes = b"") -> requests.Response:
        req = AWSRequest(method=method, url=target, data=body, headers={"Content-Type": "application/json"})
        botocore.auth.SigV4Auth(Credentials(akid, secret), "batch", REGION).add_auth(req)
        return requests.request(method, req.url, data=body, headers=dict(req.headers.items()),
                                timeout=HTTP_TIMEOUT_S)

    r = send("GET", url(srv) + "?maxResults=5")
    assert r.status_code == 200, r.text
    assert r.json() == {"schedules": []}
    # Signed and read: the refusal is the API's own.
    r = send("POST", url(srv), b'{"scheduleName": "x", "scheduleExpression": "rate(1 day)"}')
    assert_client_exception(r, ["jobTemplate"])
