"""Issue 6, job state change events: GET /barge/v1/events (server-sent events, resumable with
Last-Event-ID or ?after=) and webhooks (HMAC-signed, retried, in order). A 100-job workload's
every transition is seen exactly once and in order per job, across a disconnect; a resume from
an id no longer held, or from an earlier start, is told so with a `missed` event."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import subprocess
import threading
import time

import pytest
import requests

from barge_helpers import (
    TERMINAL,
    batch_client,
    raw_job,
    register_jobdef,
    submit,
    uniq,
    wait_all,
    wait_until,
)

SECRET = "webhook-secret-for-the-test"
# The job state machine (JobStatus::may_become); a change may pass through several statuses
# within one command, so consecutive events need only be reachable in order.
STEP = {
    "SUBMITTED": {"PENDING", "RUNNABLE", "FAILED"},
    "PENDING": {"RUNNABLE", "FAILED"},
    "RUNNABLE": {"STARTING", "FAILED"},
    "STARTING": {"RUNNING", "RUNNABLE", "FAILED", "SUCCEEDED"},
    "RUNNING": {"SUCCEEDED", "FAILED", "RUNNABLE"},
    "SUCCEEDED": set(),
    "FAILED": set(),
}


def reachable(a: str) -> set[str]:
    seen, todo = set(), [a]
    while todo:
        for b in STEP[todo.pop()]:
            if b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


class Stream:
    """One SSE connection, parsed: (id, event name, data) per event; comments kept apart."""

    def __init__(self, url: str, headers: dict | None = None, params: dict | None = None):
        self.resp = requests.get(url, headers=headers or {}, params=params or {}, stream=True,
                                 timeout=(5, 60))
        self.buf = ""
        self.comments: list[str] = []
        self.chunks = self.resp.iter_content(chunk_size=None, decode_unicode=True)

    def next_event(self) -> tuple[str | None, str | None, str] | None:
        """The next event (None at the end of the stream)."""
        while True:
            if "\n\n" in self.buf:
                block, self.buf = self.buf.split("\n\n", 1)
                fields: dict[str, str] = {}
                for line in block.split("\n"):
                    if line.startswith(":"):
                        self.comments.append(line)
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
                if "data" in fields or "event" in fields:
                    return fields.get("id"), fields.get("event"), fields.get("data", "")
                continue
            try:
                chunk = next(self.chunks)
            except StopIteration:
                return None
            self.buf += chunk

    def close(self) -> None:
        self.resp.close()


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver: verifies each delivery's signature and answers 500 to the first
    `fail_first` valid ones."""

    def __init__(self, fail_first: int):
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.accepted: list[tuple[str, dict]] = []
        self.rejected = 0
        self.bad_signatures = 0
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        srv: Receiver = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        sig = dict(p.split("=", 1) for p in self.headers["X-Barge-Signature"].split(","))
        t = int(sig["t"])
        want = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - t) < 300
        with srv.lock:
            if not hmac.compare_digest(want, sig["v1"]) or not fresh:
                srv.bad_signatures += 1
                code = 401
            elif srv.fail_first > 0:
                srv.fail_first -= 1
                srv.rejected += 1
                code = 500
            else:
                srv.accepted.append((self.headers["X-Barge-Event-Id"], json.loads(body)))
                code = 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


def seq(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def test_every_transition_of_a_100_job_workload_once_and_in_order(server_factory, tmp_path):
    receiver = Receiver(fail_first=3)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    config = tmp_path / "barge.toml"
    config.write_text(
        f'[[webhooks]]\nurl = "http://127.0.0.1:{receiver.server_address[1]}/hook"\n'
        f'secret_file = "{secret_file}"\n'
    )
    srv = server_factory(uniq("events"), extra_args=["--config", str(config)])
    batch = batch_client(srv)
    url = f"{srv.endpoint}/barge/v1/events"
    try:
        ok = register_jobdef(batch, ["true"])["jobDefinitionArn"]
        bad = register_jobdef(batch, ["false"])["jobDefinitionArn"]
        retry = register_jobdef(batch, ["sh", "-c", '[ "$AWS_BATCH_JOB_ATTEMPT" -ge 2 ]'],
                                retryStrategy={"attempts": 2})["jobDefinitionArn"]

        stream = Stream(url)
        # The stream is open (its greeting came) before anything is submitted.
        assert stream.resp.status_code == 200
        assert stream.resp.headers["content-type"] == "text/event-stream"
        events: list[tuple[str, str, str]] = []

        jobs: dict[str, str] = {}  # job id -> kind
        for _ in range(60):
            jobs[submit(batch, "default", ok)["jobId"]] = "ok"
        failing = []
        for _ in range(15):
            j = submit(batch, "default", bad)["jobId"]
            jobs[j] = "fail"
            failing.append(j)
        for _ in range(10):
            jobs[submit(batch, "default", retry)["jobId"]] = "retry"
        ok_ids = [j for j, k in jobs.items() if k == "ok"]
        for i in range(5):
            jobs[submit(batch, "default", ok, dependsOn=[{"jobId": ok_ids[i]}])["jobId"]] = "after-ok"
        for i in range(5):
            jobs[submit(batch, "default", ok, dependsOn=[{"jobId": failing[i]}])["jobId"]] = "after-fail"
        parent = submit(batch, "default", ok, arrayProperties={"size": 4})["jobId"]
        jobs[parent] = "array"
        for i in range(4):
            jobs[f"{parent}:{i}"] = "child"
        assert len(jobs) == 100

        def read(s: Stream, until) -> None:
            while not until():
                e = s.next_event()
                assert e is not None, "the stream ended early"
                events.append(e)

        def final_seen() -> bool:
            last: dict[str, str] = {}
            for _, name, data in events:
                if name == "job-state-change":
                    d = json.loads(data)["detail"]
                    last[d["jobId"]] = d["status"]
            return all(last.get(j) in TERMINAL for j in jobs)

        # Part of the workload, then a disconnect; a resume with Last-Event-ID, another
        # disconnect, and a resume with ?after= (for clients that cannot set headers).
        read(stream, lambda: len(events) >= 120)
        stream.close()
        time.sleep(0.5)
        stream = Stream(url, headers={"Last-Event-ID": events[-1][0]})
        read(stream, lambda: len(events) >= 240 or final_seen())
        stream.close()
        stream = Stream(url, params={"after": events[-1][0]})
        deadline = time.monotonic() + 60
        read(stream, lambda: final_seen() or time.monotonic() > deadline)
        stream.close()
        final = wait_all(batch, list(jobs), TERMINAL, timeout_s=60)

        names = {name for _, name, _ in events}
        assert names == {"job-state-change"}, names  # nothing missed on a resume within history
        ids = [seq(i) for i, _, _ in events]
        assert ids == sorted(set(ids)), "event ids must strictly increase, without duplicates"
        assert ids == list(range(ids[0], ids[0] + len(ids))), "no gaps across the resumes"
        bodies = [json.loads(d) for _, _, d in events]
        assert len({b["id"] for b in bodies}) == len(bodies)
        chains: dict[str, list[str]] = {}
        for b in bodies:
            assert b["version"] == "0" and b["source"] == "aws.batch"
            assert b["detail-type"] == "Batch Job State Change"
            assert b["account"] == "000000000000" and b["region"] == "us-east-1"
            assert b["time"].endswith("Z") and "T" in b["time"]
            assert b["resources"] == [b["detail"]["jobArn"]]
            chains.setdefault(b["detail"]["jobId"], []).append(b["detail"]["status"])
        assert set(chains) == set(jobs), set(jobs) ^ set(chains)
        for job_id, chain in chains.items():
            prev = "SUBMITTED"
            for status in chain:
                assert status in reachable(prev), f"{job_id}: {prev} -> {status} in {chain}"
                prev = status
            assert chain[-1] == final[job_id]["status"], (job_id, chain)
            assert all(s not in TERMINAL for s in chain[:-1]), (job_id, chain)
            kind = jobs[job_id]
            want = {"ok": "SUCCEEDED", "fail": "FAILED", "retry": "SUCCEEDED", "after-ok": "SUCCEEDED",
                    "after-fail": "FAILED", "array": "SUCCEEDED", "child": "SUCCEEDED"}[kind]
            assert chain[-1] == want, (job_id, kind, chain)
            if kind == "retry":
                assert "RUNNABLE" in chain, chain  # the retry is seen going back to RUNNABLE
        # The last event's detail is the job as DescribeJobs returns it.
        last_detail = {}
        for b in bodies:
            last_detail[b["detail"]["jobId"]] = b["detail"]
        for job_id in final:
            assert last_detail[job_id] == raw_job(srv, job_id), job_id

        # A filtered stream: one array job and its children, from the start of the history.
        first_id = events[0][0]
        want = [(i, d) for i, _, d in events
                if json.loads(d)["detail"]["jobId"].split(":")[0] == parent]
        s = Stream(url, params={"after": first_id.rsplit("-", 1)[0] + "-" + str(seq(first_id) - 1),
                                "jobId": parent})
        got = []
        while len(got) < len(want):
            e = s.next_event()
            assert e is not None
            got.append((e[0], e[2]))
        s.close()
        assert got == want

        # Webhooks: every event exactly once, in order, each signature valid, after 3 refusals.
        wait_until(lambda: len(receiver.accepted) >= len(events), timeout_s=60,
                   what="every event delivered to the webhook")
        time.sleep(0.5)
        with receiver.lock:
            assert receiver.bad_signatures == 0
            assert receiver.rejected == 3
            assert [i for i, _ in receiver.accepted] == [i for i, _, _ in events]
            assert [b for _, b in receiver.accepted] == bodies
    finally:
        receiver.shutdown()


def test_resuming_from_an_id_no_longer_held_or_of_an_earlier_start_says_events_were_missed(
        server_factory, tmp_path):
    config = tmp_path / "barge.toml"
    config.write_text("[events]\nhistory_events = 10\n")
    srv = server_factory(uniq("events-small"), extra_args=["--config", str(config)])
    batch = batch_client(srv)
    url = f"{srv.endpoint}/barge/v1/events"
    ok = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    live = Stream(url)
    ids = [submit(batch, "default", ok)["jobId"] for _ in range(8)]
    wait_all(batch, ids, TERMINAL)
    done: set[str] = set()
    while len(done) < len(ids):
        e = live.next_event()
        assert e is not None and e[1] == "job-state-change", e
        detail = json.loads(e[2])["detail"]
        if detail["status"] in TERMINAL:
            done.add(detail["jobId"])
    live.close()
    boot = e[0].split("-")[0]
    assert live.comments[0] == f": job state change events of barge boot {boot}"
    assert seq(e[0]) > 10  # more than the history holds

    # An id of another start (boot 0): told so, then this start's events.
    s = Stream(url, params={"after": "0-0"})
    e = s.next_event()
    assert e is not None and e[1] == "missed", e
    assert json.loads(e[2])["reason"] == "restarted"
    s.close()

    s = Stream(url, headers={"Last-Event-ID": f"{boot}-1"})
    e = s.next_event()
    assert e is not None and e[1] == "missed", e
    info = json.loads(e[2])
    assert info["reason"] == "notHeld" and info["firstMissedId"] == f"{boot}-2", info
    last_missed = seq(info["lastMissedId"])
    nxt = s.next_event()
    assert nxt is not None and nxt[1] == "job-state-change" and seq(nxt[0]) == last_missed + 1
    s.close()

    # Ids it cannot have sent are refused, naming the field.
    r = requests.get(url, headers={"Last-Event-ID": "yesterday"}, timeout=10)
    assert r.status_code == 400 and "Last-Event-ID" in r.json()["message"], r.text
    r = requests.get(url, params={"after": f"{boot}-999999"}, timeout=10)
    assert r.status_code == 400 and "after" in r.json()["message"], r.text

    # After a restart, an id of the earlier start is recognised as such.
    srv.restart(kill=False)
    s = Stream(url, headers={"Last-Event-ID": f"{boot}-{last_missed + 1}"})
    e = s.next_event()
    assert e is not None and e[1] == "missed" and json.loads(e[2])["reason"] == "restarted", e
    assert s.comments[0].rsplit(" ", 1)[1] != boot
    s.close()


def test_a_follower_passes_the_leaders_stream_through(server_factory):
    """With several servers on PostgreSQL, a follower forwards the stream as it comes (it is
    never complete, so it cannot be collected first). Needs BARGE_TEST_DATABASE_URL, as
    test_30 does (scripts/test.sh starts a throwaway PostgreSQL)."""

    base = os.environ.get("BARGE_TEST_DATABASE_URL")
    if not base:
        pytest.fail("BARGE_TEST_DATABASE_URL is not set: run scripts/test.sh, which starts PostgreSQL, "
                    "or eval \"$(scripts/test-postgres.sh start)\" first")
    name = uniq("ev").replace("-", "_")
    subprocess.run(["psql", base, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    servers = []
    try:
        args = ["--database-url", base.rsplit("/", 1)[0] + "/" + name, "--lease-ttl-seconds", "2"]
        leader = server_factory(subcommand="server", extra_args=args)
        servers.append(leader)
        wait_until(lambda: "following" not in requests.get(leader.endpoint + "/health", timeout=2).text,
                   timeout_s=20, what="the first server to lead")
        follower = server_factory(subcommand="server", extra_args=args)
        servers.append(follower)
        assert "following" in requests.get(follower.endpoint + "/health", timeout=2).text
        batch = batch_client(follower)
        ce, queue = uniq("ce"), uniq("q")
        batch.create_compute_environment(computeEnvironmentName=ce, type="UNMANAGED", state="ENABLED")
        batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1,
                               computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
        jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]

        s = Stream(f"{follower.endpoint}/barge/v1/events", params={"jobQueue": queue})
        assert s.resp.headers["content-type"] == "text/event-stream"
        job = submit(batch, queue, jd)["jobId"]
        # No agent joins: the job waits RUNNABLE until it is cancelled.
        wait_until(lambda: batch.describe_jobs(jobs=[job])["jobs"][0]["status"] == "RUNNABLE",
                   what="the job to be RUNNABLE")
        batch.cancel_job(jobId=job, reason="done")
        statuses = []
        while not statuses or statuses[-1] != "FAILED":
            e = s.next_event()
            assert e is not None and e[1] == "job-state-change", e
            statuses.append(json.loads(e[2])["detail"]["status"])
        s.close()
        assert statuses == ["RUNNABLE", "FAILED"], statuses
    finally:
        for srv in servers:
            srv.close()
        subprocess.run(["psql", base, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                       capture_output=True)
