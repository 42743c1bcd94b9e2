"""Prometheus metrics at GET /metrics: after a known workload (jobs that succeed, fail after a
retry, run, wait RUNNABLE behind a disabled compute environment, wait PENDING on a
dependency, and arrays), the scrape, parsed with the official Prometheus client's parser,
agrees with what ListJobs, DescribeJobs and DescribeComputeEnvironments say; histograms are
well formed; with access keys on, a scrape needs the metrics token or a signature."""

from __future__ import annotations

import pathlib

import botocore.auth
import pytest
import requests
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from barge_helpers import (
    HTTP_TIMEOUT_S,
    LIFECYCLE,
    REGION,
    batch_client,
    create_ce,
    create_queue,
    register_jobdef,
    submit,
    uniq,
    wait_all,
    wait_for,
    wait_until,
)

STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
AWS_NAMES = {s: s.capitalize() + "Jobs" for s in STATUSES}
AKID = "AKIABARGEMETRICSE2E"
SECRET = "metrics/e2e+secret"
TOKEN = "prometheus-scrape-token-0123456789"


def scrape(server, **kw) -> requests.Response:
    return requests.get(server.endpoint + "/metrics", timeout=HTTP_TIMEOUT_S, **kw)


def parse(text: str) -> dict[str, object]:
    """Family name → family, as Prometheus's own Python parser reads the text."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families, family: str, sample: str | None = None, **labels) -> float:
    """The one sample of `family` named `sample` (the family's name by default) whose labels
    include `labels`."""
    found = [
        s.value for s in families[family].samples
        if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (family, sample, labels, families[family].samples)
    return found[0]


def histogram(families, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """(buckets as (le, cumulative count), count, sum); checks the shape of the family."""
    fam = families[name]
    assert fam.type == "histogram", fam.type
    buckets = [(float(s.labels["le"]), s.value) for s in fam.samples if s.name == name + "_bucket"]
    count = value(families, name, name + "_count")
    total = value(families, name, name + "_sum")
    bounds = [b for b, _ in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf"), bounds
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), f"{name} buckets are not cumulative: {buckets}"
    assert counts[-1] == count, (name, buckets, count)
    return buckets, count, total


def list_jobs(batch, queue: str, status: str) -> list[dict]:
    out, token = [], None
    while True:
        kw = {"nextToken": token} if token else {}
        page = batch.list_jobs(jobQueue=queue, jobStatus=status, **kw)
        out += page["jobSummaryList"]
        token = page.get("nextToken")
        if not token:
            return out


def listed(batch, queues: list[str]) -> dict[str, dict[str, list[dict]]]:
    return {q: {s: list_jobs(batch, q, s) for s in STATUSES} for q in queues}


@pytest.fixture(scope="module")
def workload(server_factory):
    """A server of its own (the histograms count everything it ever placed) and a workload
    left in a steady state: nothing changes while the test compares."""
    srv = server_factory(name=uniq("metrics"), vcpus=8, memory_mib=16384)
    batch = batch_client(srv)
    ce_on = create_ce(batch, max_vcpus=6, name=uniq("ce-on"), minvCpus=0, desiredvCpus=0)
    ce_off = create_ce(batch, max_vcpus=4, name=uniq("ce-off"), state="DISABLED")
    q_main = create_queue(batch, [ce_on["computeEnvironmentName"]], name=uniq("q-main"))["jobQueueName"]
    q_held = create_queue(batch, [ce_off["computeEnvironmentName"]], name=uniq("q-held"))["jobQueueName"]
    ok = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    fail = register_jobdef(batch, ["sh", "-c", "exit 3"], retryStrategy={"attempts": 2})["jobDefinitionArn"]
    sleep = register_jobdef(batch, ["sleep", "600"])["jobDefinitionArn"]

    finished = [submit(batch, q_main, ok)["jobId"] for _ in range(3)]
    finished += [submit(batch, q_main, fail)["jobId"] for _ in range(2)]
    finished.append(submit(batch, q_main, ok, arrayProperties={"size": 4})["jobId"])
    running = submit(batch, q_main, sleep)["jobId"]
    held = [submit(batch, q_held, ok)["jobId"] for _ in range(2)]
    held_array = submit(batch, q_held, ok, arrayProperties={"size": 3})["jobId"]
    waiting = submit(batch, q_held, ok, dependsOn=[{"jobId": held[0]}])["jobId"]

    wait_all(batch, finished)
    wait_for(batch, running, ["RUNNING"])
    for job in held:
        wait_for(batch, job, ["RUNNABLE"])
    wait_for(batch, waiting, ["PENDING"])
    wait_until(
        lambda: batch.describe_jobs(jobs=[held_array])["jobs"][0].get("arrayProperties", {})
        .get("statusSummary", {}).get("RUNNABLE") == 3,
        what="the held array's children RUNNABLE",
    )
    yield {
        "server": srv, "batch": batch, "queues": [q_main, q_held], "q_main": q_main, "q_held": q_held,
        "ces": [ce_on["computeEnvironmentName"], ce_off["computeEnvironmentName"]],
        "ce_on": ce_on["computeEnvironmentName"], "running": running,
    }
    batch.terminate_job(jobId=running, reason="metrics test done")


def test_job_counts_per_queue_match_list_jobs(workload):
    batch, queues = workload["batch"], workload["queues"]
    before = listed(batch, queues)
    families = parse(scrape(workload["server"]).text)
    after = listed(batch, queues)
    counts = {q: {s: len(v) for s, v in by.items()} for q, by in before.items()}
    assert counts == {q: {s: len(v) for s, v in by.items()} for q, by in after.items()}, "the workload moved"
    for q in queues:
        for status in STATUSES:
            got = value(families, f"barge_job_queue_{AWS_NAMES[status]}", job_queue=q)
            assert got == counts[q][status], (q, status, got, counts[q])
        assert value(families, "barge_job_queue_QueueSize", job_queue=q) == sum(
            counts[q][s] for s in LIFECYCLE)
    # The workload as designed: 3 + 1 array parent + 4 children succeeded, 2 failed after two
    # attempts, 1 running; 2 held RUNNABLE, the array waiting with 3 unborn RUNNABLE children,
    # 1 PENDING on a dependency.
    main, held = counts[workload["q_main"]], counts[workload["q_held"]]
    assert (main["SUCCEEDED"], main["FAILED"], main["RUNNING"]) == (8, 2, 1), main
    assert (held["RUNNABLE"], held["PENDING"]) == (2, 2), held
    assert value(families, "barge_job_queue_unborn_runnable_array_children", job_queue=workload["q_held"]) == 3
    assert value(families, "barge_job_queue_unborn_runnable_array_children", job_queue=workload["q_main"]) == 0
    assert value(families, "barge_job_queue_info", job_queue=workload["q_main"], state="ENABLED") == 1


def test_compute_environment_gauges_match_describe(workload):
    batch = workload["batch"]
    families = parse(scrape(workload["server"]).text)
    described = batch.describe_compute_environments(computeEnvironments=workload["ces"])
    assert len(described["computeEnvironments"]) == 2
    for ce in described["computeEnvironments"]:
        name, resources = ce["computeEnvironmentName"], ce["computeResources"]
        for field in ("minvCpus", "desiredvCpus", "maxvCpus"):
            assert value(families, f"barge_compute_environment_{field}", compute_environment=name) \
                == resources[field], (name, field)
        assert value(families, "barge_compute_environment_info", compute_environment=name,
                     state=ce["state"], status=ce["status"], type=ce["type"]) == 1
    # The one running job holds 1 vCPU (the default) of the enabled environment.
    running = batch.describe_jobs(jobs=[workload["running"]])["jobs"][0]
    assert running["status"] == "RUNNING"
    assert value(families, "barge_compute_environment_vcpus_in_use",
                 compute_environment=workload["ce_on"]) == 1
    assert value(families, "barge_compute_environment_vcpus_in_use",
                 compute_environment=workload["ces"][1]) == 0
    # barge up's local agent (8 vCPUs) serves both MANAGED environments.
    for name in workload["ces"]:
        assert value(families, "barge_compute_environment_agents", compute_environment=name,
                     state="ACTIVE") == 1
    assert value(families, "barge_agents", kind="local", state="ACTIVE") == 1
    assert value(families, "barge_agents", kind="remote", state="ACTIVE") == 0
    assert value(families, "barge_agent_vcpus", use="offered") == 8
    assert value(families, "barge_agent_vcpus", use="used") == 1


def test_scheduling_histograms_count_every_placement(workload):
    batch = workload["batch"]
    jobs = [j["jobId"] for by in listed(batch, workload["queues"]).values() for v in by.values() for j in v]
    placements = 0
    for i in range(0, len(jobs), 100):
        for job in batch.describe_jobs(jobs=jobs[i:i + 100])["jobs"]:
            placements += len(job.get("attempts", []))
            placements += 1 if job["status"] in ("STARTING", "RUNNING") else 0
    # 3 ok + 2×2 failing attempts + 4 array children + 1 running.
    assert placements == 12
    families = parse(scrape(workload["server"]).text)
    _, waits, wait_sum = histogram(families, "barge_scheduling_wait_seconds")
    assert waits == placements
    assert wait_sum >= 0
    assert value(families, "barge_jobs_placed", "barge_jobs_placed_total") == placements
    buckets, passes, placed_sum = histogram(families, "barge_scheduling_pass_placed_jobs")
    assert placed_sum == placements
    assert passes >= 1
    assert value(families, "barge_scheduling_passes", "barge_scheduling_passes_total") >= passes
    _, durations, _ = histogram(families, "barge_scheduling_pass_duration_seconds")
    assert durations == passes


def test_commit_histograms_are_filled(workload):
    families = parse(scrape(workload["server"]).text)
    _, commits, commit_seconds = histogram(families, "barge_store_commit_duration_seconds")
    assert commits > 0 and commit_seconds > 0
    _, batches, commands = histogram(families, "barge_store_commit_commands")
    assert batches == commits and commands >= commits
    _, change_batches, changes = histogram(families, "barge_store_commit_changes")
    # A commit of log events alone changes no row, so only the total is bounded below.
    assert change_batches == commits and changes > 0
    assert value(families, "barge_store_commit_failures", "barge_store_commit_failures_total") == 0
    assert value(families, "barge_leader") == 1
    assert value(families, "barge_uptime_seconds") > 0
    assert families["barge_build_info"].samples[0].labels["version"]


def test_the_scrape_is_prometheus_text(workload):
    r = scrape(workload["server"])
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    # Every family is announced once, before its samples.
    seen = set()
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in seen, name
            seen.add(name)


# --------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(server_factory, tmp_path_factory):
    """Signatures required; the metrics token in a file, as an operator would give it."""
    d: pathlib.Path = tmp_path_factory.mktemp("metrics-auth")
    creds = d / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n")
    creds.chmod(0o600)
    token = d / "metrics-token"
    token.write_text(TOKEN + "\n")
    return server_factory(name=uniq("metrics-auth"), extra_args=[
        "--credentials-file", str(creds), "--metrics-token-file", str(token)])


def test_with_keys_a_scrape_needs_the_token_or_a_signature(secured):
    # No credentials: refused as any unsigned request is.
    r = scrape(secured)
    assert r.status_code == 403, r.text
    assert "barge_job_queue" not in r.text
    # A wrong token: 401, with the scheme to use.
    r = scrape(secured, headers={"Authorization": "Bearer not-the-token"})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    # The token, as Prometheus's authorization/bearer_token sends it.
    r = scrape(secured, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    families = parse(r.text)
    assert value(families, "barge_job_queue_QueueSize", job_queue="default") == 0
    # A SigV4 signature works too (the aws tooling can scrape without the token).
    req = AWSRequest(method="GET", url=secured.endpoint + "/metrics")
    botocore.auth.SigV4Auth(Credentials(AKID, SECRET), "batch", REGION).add_auth(req)
    r = requests.get(req.url, headers=dict(req.headers.items()), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert "barge_leader 1" in r.text
    # The token opens nothing else.
    r = requests.post(secured.endpoint + "/v1/describejobqueues", data=b"{}",
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code in (400, 403), r.text


def test_without_keys_on_loopback_a_scrape_needs_nothing(workload):
    assert scrape(workload["server"]).status_code == 200
