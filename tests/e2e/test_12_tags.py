"""Issue 2, point 2: tags on every resource through GET/POST/DELETE
/v1/tags/{percent-encoded ARN} (boto3 and raw HTTP)."""

from __future__ import annotations

import urllib.parse

import pytest
import requests

from barge_helpers import (
    arn,
    assert_client_exception,
    assert_refused,
    create_ce,
    create_queue,
    register_jobdef,
    submit,
    uniq,
)


@pytest.fixture(scope="module")
def resources(batch):
    ce = create_ce(batch, max_vcpus=1, name=uniq("ce-tags"))["computeEnvironmentArn"]
    q = create_queue(batch, [ce])["jobQueueArn"]
    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    job = submit(batch, "default", jd)["jobArn"]
    return {"compute-environment": ce, "job-queue": q, "job-definition": jd, "job": job}


@pytest.mark.parametrize("kind", ["compute-environment", "job-queue", "job-definition", "job"])
def test_tag_list_untag(batch, resources, kind):
    res = resources[kind]
    assert batch.list_tags_for_resource(resourceArn=res)["tags"] == {}
    resp = batch.tag_resource(resourceArn=res, tags={"team": "barge", "env": "e2e", "x": "1"})
    assert set(resp) == {"ResponseMetadata"}
    assert batch.list_tags_for_resource(resourceArn=res)["tags"] == {"team": "barge", "env": "e2e", "x": "1"}
    batch.tag_resource(resourceArn=res, tags={"env": "changed"})
    assert batch.list_tags_for_resource(resourceArn=res)["tags"] == {"team": "barge", "env": "changed", "x": "1"}
    batch.untag_resource(resourceArn=res, tagKeys=["team", "x"])
    assert batch.list_tags_for_resource(resourceArn=res)["tags"] == {"env": "changed"}


def test_tags_appear_in_describe(batch, resources):
    batch.tag_resource(resourceArn=resources["job-queue"], tags={"shown": "yes"})
    q = batch.describe_job_queues(jobQueues=[resources["job-queue"]])["jobQueues"][0]
    assert q.get("tags", {}).get("shown") == "yes"
    batch.tag_resource(resourceArn=resources["job-definition"], tags={"shown": "yes"})
    d = batch.describe_job_definitions(jobDefinitions=[resources["job-definition"]])["jobDefinitions"][0]
    assert d.get("tags", {}).get("shown") == "yes"


def test_raw_percent_encoded_paths(server, resources):
    res = resources["job-definition"]  # contains ':' and '/'
    enc = urllib.parse.quote(res, safe="")
    url = f"{server.endpoint}/v1/tags/{enc}"
    r = requests.post(url, json={"tags": {"a": "1", "b": "2", "c": "3"}}, timeout=20)
    assert r.status_code == 200, r.text
    r = requests.get(url, timeout=20)
    assert r.status_code == 200, r.text
    assert {"a": "1", "b": "2", "c": "3"}.items() <= r.json()["tags"].items()
    r = requests.delete(url + "?tagKeys=a&tagKeys=b", timeout=20)
    assert r.status_code == 200, r.text
    tags = requests.get(url, timeout=20).json()["tags"]
    assert "a" not in tags and "b" not in tags and tags.get("c") == "3"


def test_bad_tag_requests(batch, server, resources):
    missing = arn("job-queue", uniq("no-such-q"))
    assert_refused(batch.list_tags_for_resource, "not", missing.rsplit("/", 1)[1], resourceArn=missing)
    assert_refused(batch.tag_resource, "not", missing.rsplit("/", 1)[1], resourceArn=missing, tags={"a": "b"})
    assert_refused(batch.tag_resource, "tags", "50",
                   resourceArn=resources["job-queue"], tags={f"k{i}": "v" for i in range(51)})
    url = f"{server.endpoint}/v1/tags/{urllib.parse.quote('not-an-arn', safe='')}"
    assert_client_exception(requests.get(url, timeout=20), ["arn", "not-an-arn"])
    good = f"{server.endpoint}/v1/tags/{urllib.parse.quote(resources['job-queue'], safe='')}"
    assert_client_exception(requests.post(good, data=b"{", timeout=20), ["json", "parse", "expected", "invalid"])
    assert_client_exception(requests.post(good, json={"tags": ["a"]}, timeout=20), ["tags"])


def test_tag_limits(batch, server, resources):
    res = resources["compute-environment"]
    assert_refused(batch.tag_resource, "key", "128", resourceArn=res, tags={"k" * 129: "v"})
    assert_refused(batch.tag_resource, "value", "256", resourceArn=res, tags={"k": "v" * 257})
    url = f"{server.endpoint}/v1/tags/{urllib.parse.quote(res, safe='')}"
    assert_client_exception(requests.delete(url, timeout=20), ["tagKeys"])
    # 50 tags in all is the most a resource can hold
    current = list(batch.list_tags_for_resource(resourceArn=res)["tags"])
    if current:
        batch.untag_resource(resourceArn=res, tagKeys=current)
    batch.tag_resource(resourceArn=res, tags={f"t{i}": "v" for i in range(50)})
    assert_refused(batch.tag_resource, "tags", "50", resourceArn=res, tags={"one-more": "v"})
