"""Issue 6, item 2: `barge` for people. The real binary against a real server: submit (with
--wait and its exit codes), jobs, describe, logs -f, watch, why, cancel and terminate, their
`--output json` checked against boto3, their errors and exit codes, and signed requests.

Golden files: the human outputs are compared with tests/e2e/golden/people_cli/*.txt after job
ids, times and durations are replaced by placeholders (see `normalise`). To regenerate them
after an intended change of format, run this file with BARGE_GOLDEN_UPDATE=1 and review the
diff:

    BARGE_GOLDEN_UPDATE=1 BARGE_BIN=$PWD/target/release/barge \
        .venv/bin/python -m pytest -q tests/e2e/test_34_people_cli.py
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess

import boto3
import pytest

from barge_helpers import (
    MARKER_ENV,
    REGION,
    barge_bin,
    batch_client,
    client_config,
    create_ce,
    create_queue,
    free_port,
    uniq,
    wait_for,
)

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "people_cli"
UPDATE = os.environ.get("BARGE_GOLDEN_UPDATE") == "1"

# The exit codes docs/cli.md promises.
OK, REFUSED, USAGE, UNREACHABLE, JOB_FAILED, INTERRUPTED = 0, 1, 2, 3, 4, 130

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
DURATION = re.compile(r"\(ran (\d+h)?(\d+m)?\d+s\)")


def normalise(text: str) -> str:
    """Ids become <ID1>, <ID2>… in order of first appearance, times <TIME>, durations <DUR>.
    Every id and time has one length, so the columns of a table stay where they were."""
    ids: dict[str, str] = {}

    def name(m: re.Match) -> str:
        return ids.setdefault(m.group(0), f"<ID{len(ids) + 1}>")

    text = UUID.sub(name, text)
    text = TIME.sub("<TIME>", text)
    return DURATION.sub("(ran <DUR>)", text)


def golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    actual = normalise(actual)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path} is missing: run with BARGE_GOLDEN_UPDATE=1 to write it"
    assert actual == path.read_text(), f"{name} differs from its golden file:\n{actual}"


def env_without_aws(**extra: str) -> dict[str, str]:
    """The environment with no AWS or Barge settings of the person running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BARGE_"))}
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/aws-credentials"
    env.update(extra)
    return env


def barge(server, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    endpoint = server if isinstance(server, str) else server.endpoint
    # Right after the command's name: anything after `--` is the job's command.
    argv = [barge_bin(), args[0], "--endpoint", endpoint, *args[1:]]
    return subprocess.run(argv, capture_output=True, text=True,
                          timeout=timeout, env=env or env_without_aws())


def ok(server, *args: str, **kw) -> str:
    out = barge(server, *args, **kw)
    assert out.returncode == OK, f"barge {' '.join(args)} exited {out.returncode}: {out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def srv(server_factory):
    """A server of this module's own, so that names (and so the golden tables) are fixed."""
    return server_factory(name=uniq("people-cli"))


@pytest.fixture(scope="module")
def setup(srv):
    """A queue and job definitions with fixed names: golden-q, golden-echo, golden-ticks."""
    batch = batch_client(srv)
    ce = create_ce(batch, max_vcpus=8, name="golden-ce")["computeEnvironmentName"]
    create_queue(batch, [ce], name="golden-q")
    parked = create_ce(batch, max_vcpus=2, name="parked-ce", state="DISABLED")["computeEnvironmentName"]
    create_queue(batch, [parked], name="parked-q")
    for name, command in [
        ("golden-echo", ["sh", "-c", "echo Ref::greeting"]),
        ("golden-ticks", ["sh", "-c", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.4; done"]),
    ]:
        batch.register_job_definition(
            jobDefinitionName=name, type="container", parameters={"greeting": "hello"},
            containerProperties={"image": "busybox", "command": command, "environment": [MARKER_ENV],
                                 "resourceRequirements": [{"type": "VCPU", "value": "1"},
                                                          {"type": "MEMORY", "value": "64"}]})
    return batch


def submit(srv, name: str, *extra: str, queue: str = "golden-q", jd: str = "golden-echo", **kw):
    return barge(srv, "submit", "--job-name", name, "--job-queue", queue, "--job-definition", jd, *extra, **kw)


def test_golden_outputs_of_a_succeeded_and_a_failed_job(srv, setup):
    good = submit(srv, "good", "--wait", "--parameters", "greeting=bonjour")
    assert good.returncode == OK, good.stderr
    good_id = good.stdout.strip()
    assert UUID.fullmatch(good_id), good.stdout
    assert f"job {good_id} is SUCCEEDED" in good.stderr

    bad = submit(srv, "bad", "--wait", "--retry-attempts", "2", "--", "sh", "-c", "echo oops; exit 3")
    assert bad.returncode == JOB_FAILED, bad.stderr
    bad_id = bad.stdout.strip()
    assert f"job {bad_id} FAILED: Essential container in task exited, exit code 3" in bad.stderr

    golden("describe_succeeded.txt", ok(srv, "describe", good_id))
    golden("describe_failed.txt", ok(srv, "describe", bad_id))
    golden("jobs.txt", ok(srv, "jobs", "--job-queue", "golden-q"))
    golden("jobs_failed.txt", ok(srv, "jobs", "--job-queue", "golden-q", "--status", "FAILED"))
    golden("why_succeeded.txt", ok(srv, "why", good_id))
    assert ok(srv, "logs", good_id) == "bonjour\n"
    assert ok(srv, "logs", bad_id) == "oops\n"


def test_json_output_is_what_boto3_sees(srv, setup):
    batch = setup
    job_id = submit(srv, "json-job", "--output", "json", "--tags", "team=ml",
                    "--env", "COLOUR=blue", "--vcpus", "2", "--memory", "128", "--timeout", "600",
                    "--", "sh", "-c", "echo $COLOUR")
    assert job_id.returncode == OK, job_id.stderr
    answer = json.loads(job_id.stdout)
    job_id = answer["jobId"]
    assert answer["jobName"] == "json-job" and answer["jobArn"].endswith(job_id)

    waited = submit(srv, "waited", "--wait", "--output", "json", "--depends-on", job_id)
    assert waited.returncode == OK, waited.stderr
    final = json.loads(waited.stdout)
    assert final["status"] == "SUCCEEDED" and final["dependsOn"] == [{"jobId": job_id}]

    described = json.loads(ok(srv, "describe", job_id, final["jobId"], "--output", "json"))
    expected = batch.describe_jobs(jobs=[job_id, final["jobId"]])
    expected.pop("ResponseMetadata")
    assert json.loads(json.dumps(expected, default=str)) == described
    job = described["jobs"][0]
    assert job["tags"] == {"team": "ml"} and job["timeout"] == {"attemptDurationSeconds": 600}
    assert {"name": "COLOUR", "value": "blue"} in job["container"]["environment"]
    assert {"type": "VCPU", "value": "2"} in job["container"]["resourceRequirements"]
    assert ok(srv, "logs", job_id) == "blue\n"

    listed = json.loads(ok(srv, "jobs", "--job-queue", "golden-q", "--output", "json"))["jobSummaryList"]
    boto = batch.list_jobs(jobQueue="golden-q", filters=[{"name": "AFTER_CREATED_AT", "values": ["0"]}])
    assert [j["jobId"] for j in listed] == [j["jobId"] for j in boto["jobSummaryList"]]
    assert all(j["jobQueue"] == "golden-q" for j in listed)
    # Every queue by default; --name is a prefix; --limit keeps the newest.
    everywhere = json.loads(ok(srv, "jobs", "--output", "json", "--name", "json-"))["jobSummaryList"]
    assert [j["jobId"] for j in everywhere] == [job_id]
    newest = json.loads(ok(srv, "jobs", "--output", "json", "--limit", "1"))["jobSummaryList"]
    assert [j["jobId"] for j in newest] == [final["jobId"]]


def test_logs_follow_a_job_that_prints_over_time(srv, setup):
    job_id = ok(srv, "submit", "--job-name", "ticks", "--job-queue", "golden-q",
                "--job-definition", "golden-ticks").strip()
    # Started at once, so it waits for the stream and then follows it to the job's end.
    follow = barge(srv, "logs", "-f", job_id, timeout=120)
    assert follow.returncode == OK, follow.stderr
    assert follow.stdout == "".join(f"tick {i}\n" for i in range(1, 6))
    assert setup.describe_jobs(jobs=[job_id])["jobs"][0]["status"] == "SUCCEEDED"
    lines = ok(srv, "logs", job_id, "--output", "json").splitlines()
    assert [json.loads(line)["message"] for line in lines] == [f"tick {i}" for i in range(1, 6)]
    stamped = ok(srv, "logs", job_id, "--timestamps").splitlines()
    assert all(TIME.match(line) and line.endswith(f"tick {i}") for i, line in enumerate(stamped, 1))


WATCH_LINE = re.compile(
    r"SUBMITTED (\d+)  PENDING (\d+)  RUNNABLE (\d+)  STARTING (\d+)  RUNNING (\d+)  "
    r"SUCCEEDED (\d+)  FAILED (\d+)  \((\d+)/(\d+) done\)")


def test_watch_an_array_without_a_terminal(srv, setup):
    parent = ok(srv, "submit", "--job-name", "arr", "--job-queue", "golden-q", "--job-definition", "golden-echo",
                "--array-size", "4", "--", "sh", "-c", "sleep 0.5; echo child $AWS_BATCH_JOB_ARRAY_INDEX").strip()
    watched = barge(srv, "watch", parent, timeout=120)
    assert watched.returncode == OK, watched.stderr
    lines = watched.stdout.splitlines()
    assert lines, "watch printed nothing"
    for line in lines:
        m = WATCH_LINE.fullmatch(line)
        assert m, line
        counts = [int(g) for g in m.groups()]
        assert sum(counts[:7]) == 4 and counts[8] == 4 and counts[7] == counts[5] + counts[6]
    assert lines[-1] == "SUBMITTED 0  PENDING 0  RUNNABLE 0  STARTING 0  RUNNING 0  SUCCEEDED 4  FAILED 0  (4/4 done)"
    # Lines come only when something changed.
    assert len(lines) == len(set(lines))
    # The parent has no log of its own: the command says to pick a child.
    parent_logs = barge(srv, "logs", parent)
    assert parent_logs.returncode == REFUSED and f"barge logs {parent}:0" in parent_logs.stderr
    assert ok(srv, "logs", f"{parent}:2") == "child 2\n"
    described = ok(srv, "describe", parent)
    assert "  array:      4 children: SUCCEEDED 4\n" in described

    once = ok(srv, "watch", "golden-q", "--once").splitlines()
    assert len(once) == 1 and once[0].startswith("SUBMITTED 0  PENDING 0  RUNNABLE 0"), once


def test_cancel_and_terminate(srv, setup):
    waiting = submit(srv, "parked", queue="parked-q")
    assert waiting.returncode == OK, waiting.stderr
    waiting = waiting.stdout.strip()
    wait_for(setup, waiting, ("RUNNABLE",))
    cancelled = ok(srv, "cancel", waiting, "--reason", "not today")
    golden("cancel.txt", cancelled)
    assert wait_for(setup, waiting, ("FAILED",))["statusReason"] == "not today"

    running = submit(srv, "sleeper", "--", "sleep", "300").stdout.strip()
    wait_for(setup, running, ("RUNNING",))
    golden("terminate.txt", ok(srv, "terminate", running))
    job = wait_for(setup, running, ("FAILED",))
    assert job["statusReason"] == "barge terminate"
    assert json.loads(ok(srv, "cancel", running, "--output", "json")) == {}


def test_errors_and_their_exit_codes(srv, setup):
    unknown = "00000000-0000-0000-0000-000000000000"
    stderr = []
    for command in (["describe", unknown], ["logs", unknown], ["why", unknown], ["cancel", unknown],
                    ["terminate", unknown], ["watch", unknown], ["submit", "--job-name", "x", "--job-queue",
                                                                "no-such-queue", "--job-definition", "golden-echo"]):
        out = barge(srv, *command)
        assert out.returncode == REFUSED, (command, out.stderr)
        assert out.stdout == "", (command, out.stdout)
        stderr.append(out.stderr)
    golden("errors.txt", "".join(stderr))

    bad_flag = barge(srv, "jobs", "--no-such-flag")
    assert bad_flag.returncode == USAGE and "--no-such-flag" in bad_flag.stderr
    bad_status = barge(srv, "jobs", "--status", "DONE")
    assert bad_status.returncode == USAGE and "SUCCEEDED" in bad_status.stderr
    bad_json = barge(srv, "submit", "--job-name", "x", "--job-queue", "q", "--job-definition", "d",
                     "--container-overrides", "{not json")
    assert bad_json.returncode == USAGE and "--container-overrides" in bad_json.stderr

    nobody = f"http://127.0.0.1:{free_port()}"
    for command in (["jobs"], ["describe", unknown], ["submit", "--job-name", "x", "--job-queue", "q",
                                                      "--job-definition", "d"]):
        out = barge(nobody, *command)
        assert out.returncode == UNREACHABLE, (command, out.stderr)
        assert f"cannot reach Barge at {nobody}" in out.stderr


def test_ctrl_c_ends_following_cleanly(srv, setup):
    def started(*args: str) -> subprocess.Popen:
        argv = [barge_bin(), args[0], "--endpoint", srv.endpoint, *args[1:]]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env_without_aws())

    # A queue's watch ends only with Ctrl-C, and that is a normal end.
    watch = started("watch", "golden-q")
    first = watch.stdout.readline()
    assert first.startswith("SUBMITTED "), first
    watch.send_signal(signal.SIGINT)
    assert watch.wait(timeout=30) == OK, watch.stderr.read()

    # `submit --wait`: Ctrl-C stops the waiting, not the job.
    waiting = started("submit", "--job-name", "long", "--job-queue", "golden-q", "--job-definition",
                      "golden-echo", "--wait", "--", "sleep", "300")
    job_id = waiting.stdout.readline().strip()
    wait_for(setup, job_id, ("RUNNING",))
    waiting.send_signal(signal.SIGINT)
    assert waiting.wait(timeout=30) == INTERRUPTED
    assert f"barge terminate {job_id}" in waiting.stderr.read()
    assert setup.describe_jobs(jobs=[job_id])["jobs"][0]["status"] == "RUNNING"
    ok(srv, "terminate", job_id)
    wait_for(setup, job_id, ("FAILED",))


AKID, SECRET = "AKIABARGEPEOPLECLI", "people/cli+secret"
AKID_2, SECRET_2 = "AKIABARGEPEOPLE2", "second-secret"


def test_signed_requests(server_factory, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n\n"
                     f"[second]\naws_access_key_id = {AKID_2}\naws_secret_access_key = {SECRET_2}\n")
    signed = server_factory(name=uniq("people-signed"), extra_args=["--credentials-file", str(creds)])
    keys = env_without_aws(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION=REGION)

    unsigned = barge(signed, "jobs")
    assert unsigned.returncode == REFUSED
    assert "Missing Authentication Token" in unsigned.stderr and "AWS_ACCESS_KEY_ID" in unsigned.stderr
    wrong = barge(signed, "jobs", env={**keys, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert wrong.returncode == REFUSED and "signature" in wrong.stderr.lower()

    # Batch (SubmitJob, DescribeJobs) and CloudWatch Logs (GetLogEvents), each signed for its
    # own service.
    out = barge(signed, "submit", "--job-name", "signed", "--job-queue", "default", "--job-definition",
                _jobdef(signed), "--wait", env=keys, timeout=120)
    assert out.returncode == OK, out.stderr
    job_id = out.stdout.strip()
    logs = barge(signed, "logs", job_id, env=keys)
    assert logs.returncode == OK and logs.stdout == "signed hello\n", logs.stderr
    # --profile reads the shared credentials file, as the aws CLI does, over the environment.
    by_profile = env_without_aws(AWS_SHARED_CREDENTIALS_FILE=str(creds), AWS_ACCESS_KEY_ID="AKIAIGNORED",
                                 AWS_SECRET_ACCESS_KEY="ignored")
    listed = barge(signed, "jobs", "--profile", "second", "--output", "json", env=by_profile)
    assert listed.returncode == OK, listed.stderr
    assert [j["jobId"] for j in json.loads(listed.stdout)["jobSummaryList"]] == [job_id]
    missing = barge(signed, "jobs", "--profile", "third", env=by_profile)
    assert missing.returncode == REFUSED and "[third]" in missing.stderr


def _jobdef(server) -> str:
    batch = boto3.client("batch", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=AKID,
                         aws_secret_access_key=SECRET, config=client_config())
    return batch.register_job_definition(
        jobDefinitionName="signed-echo", type="container",
        containerProperties={"image": "busybox", "command": ["echo", "signed hello"], "environment": [MARKER_ENV],
                             "resourceRequirements": [{"type": "VCPU", "value": "1"},
                                                      {"type": "MEMORY", "value": "64"}]},
    )["jobDefinitionArn"]
