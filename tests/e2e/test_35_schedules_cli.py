"""Issue 6, items 2 and 5: `barge schedules` (docs/cli.md) against the real binary and a real
server whose schedules' clock is injected (BARGE_TEST_SCHEDULE_CLOCK_FILE, as in
test_33_schedules.py): create from submit's flags, list, describe, update, enable, disable,
delete; their `--output json` checked against the API's GET; the API's refusals with exit 1;
and a schedule made by the CLI firing and its job SUCCEEDED, as `barge jobs` lists it.

Golden files (tests/e2e/golden/schedules_cli/*.txt) are normalised as test_34 does (ids and
times become placeholders). Regenerate after an intended change of format with
BARGE_GOLDEN_UPDATE=1 and review the diff.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest
import requests

from barge_helpers import SCHEDULE_CLOCK_T0 as T0, ScheduleClock as Clock, HTTP_TIMEOUT_S, MARKER_ENV, barge_bin, batch_client, free_port, uniq, wait_for, wait_until
from test_34_people_cli import REFUSED, OK, UNREACHABLE, USAGE, env_without_aws, normalise

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "schedules_cli"
UPDATE = os.environ.get("BARGE_GOLDEN_UPDATE") == "1"



def golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    actual = normalise(actual)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path} is missing: run with BARGE_GOLDEN_UPDATE=1 to write it"
    assert actual == path.read_text(), f"{name} differs from its golden file:\n{actual}"


@pytest.fixture(scope="module")
def clock(e2e_dir):
    return Clock(e2e_dir / "schedules-cli-clock")


@pytest.fixture(scope="module")
def srv(server_factory, clock):
    return server_factory(uniq("sched-cli"), extra_env={"BARGE_TEST_SCHEDULE_CLOCK_FILE": str(clock.path)})


@pytest.fixture(scope="module")
def batch(srv):
    """A job definition of a fixed name, so that the golden summaries are fixed."""
    batch = batch_client(srv)
    batch.register_job_definition(
        jobDefinitionName="cli-echo", type="container",
        containerProperties={"image": "busybox", "command": ["echo", "scheduled hello"], "environment": [MARKER_ENV],
                             "resourceRequirements": [{"type": "VCPU", "value": "1"},
                                                      {"type": "MEMORY", "value": "64"}]})
    return batch


def barge(server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    endpoint = server if isinstance(server, str) else server.endpoint
    # Right after the command's name (`schedules` has subcommands): anything after `--` is the
    # job's command.
    words = 2 if args[0] == "schedules" else 1
    argv = [barge_bin(), *args[:words], "--endpoint", endpoint, *args[words:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env_without_aws())


def ok(server, *args: str) -> str:
    out = barge(server, *args)
    assert out.returncode == OK, f"barge {' '.join(args)} exited {out.returncode}: {out.stderr}"
    return out.stdout


def sched(srv, *args: str) -> str:
    return ok(srv, "schedules", *args)


def api(srv, name: str = "") -> dict:
    url = f"{srv.endpoint}/barge/v1/schedules" + (f"/{name}" if name else "")
    r = requests.get(url, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_schedule_from_submit_flags_fires_and_its_job_succeeds(srv, batch, clock):
    created = sched(srv, "create", "half-hourly", "--expression", "cron(0/30 * * * ? *)", "--overlap", "skip",
                    "--description", "every half hour", "--schedule-tags", "team=data",
                    "--job-name", "cli-report", "--job-queue", "default", "--job-definition", "cli-echo",
                    "--env", "MODE=full", "--tags", "owner=ops", "--", "sh", "-c", "echo scheduled $MODE")
    golden("create.txt", created)
    s = api(srv, "half-hourly")
    assert s["jobTemplate"] == {
        "jobName": "cli-report", "jobQueue": "default", "jobDefinition": "cli-echo",
        "containerOverrides": {"command": ["sh", "-c", "echo scheduled $MODE"],
                               "environment": [{"name": "MODE", "value": "full"}]},
        "tags": {"owner": "ops"},
    }
    assert (s["overlapPolicy"], s["tags"], s["nextFireAt"]) == ("SKIP", {"team": "data"}, T0 + 1_800_000)
    assert json.loads(sched(srv, "describe", "half-hourly", "--output", "json")) == s
    # A second one that is disabled: the list shows what has not happened as dashes.
    sched(srv, "create", "parked", "--expression", "rate(1 hour)", "--state", "DISABLED", "--job-template",
          json.dumps({"jobName": "parked", "jobQueue": "default", "jobDefinition": "cli-echo"}))

    clock.set(s["nextFireAt"])
    s = wait_until(lambda: (d := api(srv, "half-hourly")).get("firedCount") == 1 and d, what="the schedule to fire")
    job_id = s["lastJobId"]
    job = wait_for(batch, job_id, "SUCCEEDED")
    assert job["tags"] == {"owner": "ops", "barge:schedule": "half-hourly"}

    # `barge jobs` lists the run; its log is the template's command.
    listed = json.loads(ok(srv, "jobs", "--name", "cli-report", "--output", "json"))["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [job_id] and listed[0]["status"] == "SUCCEEDED"
    assert ok(srv, "logs", job_id) == "scheduled full\n"

    golden("describe_fired.txt", sched(srv, "describe", "half-hourly"))
    golden("list.txt", sched(srv, "list"))
    assert json.loads(sched(srv, "list", "--output", "json")) == api(srv)

    for name in ("half-hourly", "parked"):
        sched(srv, "delete", name)
    assert api(srv)["schedules"] == []


def test_update_enable_disable_and_delete(srv, batch, clock):
    name = uniq("weekly")
    template = {"jobName": "weekly", "jobQueue": "default", "jobDefinition": "cli-echo",
                "containerOverrides": {"environment": [{"name": "A", "value": "1"}]}}
    sched(srv, "create", name, "--expression", "rate(1 hour)", "--state", "disabled",
          "--job-template", json.dumps(template))
    assert "  next fire:    none (disabled)\n" in sched(srv, "describe", name)

    # Job flags change the current template; the rest of it stays.
    updated = json.loads(sched(srv, "update", name, "--expression", "cron(0 9 ? * MON *)", "--timezone",
                               "Europe/Paris", "--env", "B=2", "--retry-attempts", "2", "--output", "json"))
    assert updated == api(srv, name)
    assert (updated["scheduleExpression"], updated["scheduleExpressionTimezone"]) == \
        ("cron(0 9 ? * MON *)", "Europe/Paris")
    assert updated["jobTemplate"] == template | {
        "containerOverrides": {"environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
        "retryStrategy": {"attempts": 2}}
    assert updated["state"] == "DISABLED" and "nextFireAt" not in updated

    enabled = json.loads(sched(srv, "enable", name, "--output", "json"))
    assert enabled == api(srv, name)
    # Mondays 09:00 in Paris: 2030-01-07T08:00:00Z is the first after the clock's now.
    assert enabled["state"] == "ENABLED" and enabled["nextFireAt"] >= clock.now
    disabled = sched(srv, "disable", name)
    assert "  state:        DISABLED\n" in disabled and api(srv, name)["state"] == "DISABLED"

    # --job-template replaces the template whole.
    sched(srv, "update", name, "--job-template", json.dumps(template), "--overlap", "CANCEL_PREVIOUS")
    s = api(srv, name)
    assert s["jobTemplate"] == template and s["overlapPolicy"] == "CANCEL_PREVIOUS"

    nothing = barge(srv, "schedules", "update", name)
    assert nothing.returncode == REFUSED and "nothing to change" in nothing.stderr

    assert sched(srv, "delete", name) == f"deleted schedule {name}\n"
    gone = barge(srv, "schedules", "describe", name)
    assert gone.returncode == REFUSED
    assert gone.stderr == f"barge schedules describe: schedule {name} does not exist (ClientException)\n"
    other = uniq("other")
    sched(srv, "create", other, "--expression", "rate(5 minutes)", "--state", "DISABLED",
          "--job-name", "o", "--job-queue", "default", "--job-definition", "cli-echo")
    assert json.loads(sched(srv, "delete", other, "--output", "json")) == {}


def test_the_apis_refusals_exit_1_with_its_message(srv, batch):
    job = ["--job-name", "x", "--job-queue", "default", "--job-definition", "cli-echo"]
    stderr = []
    for args in (
        ["create", "bad-expr", "--expression", "cron(0 12 * * *)", *job],
        ["create", "bad-tz", "--expression", "rate(1 hour)", "--timezone", "Mars/Base", *job],
        ["create", "bad-queue", "--expression", "rate(1 hour)", "--job-name", "x", "--job-queue", "no-such-queue",
         "--job-definition", "cli-echo"],
        ["create", "no-name", "--expression", "rate(1 hour)", "--job-queue", "default", "--job-definition", "cli-echo"],
        ["create", "dep", "--expression", "rate(1 hour)", "--depends-on", "some-job", *job],
        ["describe", "nope"],
        ["update", "nope", "--state", "ENABLED"],
        ["enable", "nope"],
        ["delete", "nope"],
    ):
        out = barge(srv, "schedules", *args)
        assert out.returncode == REFUSED, (args, out.stderr)
        assert out.stdout == "", (args, out.stdout)
        stderr.append(out.stderr)
    golden("errors.txt", "".join(stderr))
    assert api(srv)["schedules"] == []

    bad_overlap = barge(srv, "schedules", "create", "x", "--expression", "rate(1 hour)", "--overlap", "SOMETIMES")
    assert bad_overlap.returncode == USAGE and "CANCEL_PREVIOUS" in bad_overlap.stderr
    no_expression = barge(srv, "schedules", "create", "x", "--job-name", "x")
    assert no_expression.returncode == USAGE and "--expression" in no_expression.stderr
    nobody = f"http://127.0.0.1:{free_port()}"
    out = barge(nobody, "schedules", "list")
    assert out.returncode == UNREACHABLE and f"cannot reach Barge at {nobody}" in out.stderr
