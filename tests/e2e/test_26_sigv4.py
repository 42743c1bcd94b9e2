"""SigV4, TLS and where Barge may listen: with access keys configured, every request (but
GET /health and the agents' /barge/agent/ paths) must carry a valid AWS Signature Version 4
from one of them, answered with AWS's error codes otherwise; without keys Barge refuses to
listen beyond loopback; --tls-cert/--tls-key serve HTTPS on the same port. Driven with the
real aws CLI v1, boto3, botocore's own signer and `barge why`."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import socket
import subprocess
from unittest import mock

import boto3
import botocore.auth
import botocore.exceptions
import pytest
import requests
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from barge_helpers import (
    HTTP_TIMEOUT_S,
    LOG_GROUP,
    REGION,
    aws_cli_path,
    barge_bin,
    cli_env,
    client_config,
    error_code,
    free_port,
    log_lines,
    register_jobdef,
    submit,
    uniq,
    wait_for,
)

AKID = "AKIABARGEE2EDEFAULT"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYE2EDEFAULT"
AKID_2 = "AKIABARGEE2ESECOND"
SECRET_2 = "second/secret+with:odd=characters"
SIGNATURE_MISMATCH = "The request signature we calculated does not match the signature you provided"


# --------------------------------------------------------------------------------------
# Fixtures and clients
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sigv4_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("sigv4")


@pytest.fixture(scope="module")
def credentials_file(sigv4_dir) -> pathlib.Path:
    """The aws CLI's own credentials format: Barge accepts every profile's key."""
    path = sigv4_dir / "credentials"
    path.write_text(
        "# Barge's access keys\n"
        f"[default]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n\n"
        "[no-keys]\nregion = eu-west-1\n\n"
        f"[second]\naws_access_key_id={AKID_2}\naws_secret_access_key={SECRET_2}\n"
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def signed(server_factory, credentials_file):
    """A Barge that requires signatures from the keys of `credentials_file`."""
    return server_factory(name=uniq("sigv4"), extra_args=["--credentials-file", str(credentials_file)])


@pytest.fixture(scope="module")
def tls_files(sigv4_dir) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made the way an operator would."""
    cert, key = sigv4_dir / "cert.pem", sigv4_dir / "key.pem"
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return cert, key


def client(service: str, server, akid: str = AKID, secret: str = SECRET, region: str = REGION, **kw):
    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name=region,
        aws_access_key_id=akid,
        aws_secret_access_key=secret,
        config=client_config(),
        **kw,
    )


def aws(server, *args: str, akid: str = AKID, secret: str = SECRET, extra: tuple[str, ...] = ()):
    """The aws CLI v1 with the given keys; returns the CompletedProcess."""
    env = cli_env()
    env.update(AWS_ACCESS_KEY_ID=akid, AWS_SECRET_ACCESS_KEY=secret)
    cmd = [aws_cli_path(), "--endpoint-url", server.endpoint, "--region", REGION, "--output", "json",
           *extra, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def aws_ok(server, *args: str, **kw):
    proc = aws(server, *args, **kw)
    assert proc.returncode == 0, f"aws {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    out = proc.stdout.strip()
    return json.loads(out) if out else None


def client_error(fn, **kw) -> tuple[str, int, str]:
    """(code, HTTP status, message) of the ClientError `fn(**kw)` must raise."""
    with pytest.raises(botocore.exceptions.ClientError) as info:
        fn(**kw)
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message", "")


def botocore_signed_post(server, when: datetime.datetime, path: str = "/v1/describejobqueues",
                         body: bytes = b"{}") -> requests.Response:
    """Signs with botocore's SigV4Auth as if the clock read `when` (naive UTC), then sends it
    with requests, so that only the time differs from what boto3 itself would send."""
    assert hasattr(botocore.auth, "get_current_datetime"), "this botocore reads the time elsewhere"
    req = AWSRequest(method="POST", url=server.endpoint + path, data=body,
                     headers={"Content-Type": "application/json"})
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        botocore.auth.SigV4Auth(Credentials(AKID, SECRET), "batch", REGION).add_auth(req)
    return requests.post(req.url, data=body, headers=dict(req.headers.items()), timeout=HTTP_TIMEOUT_S)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def why(server, job_id: str, env_keys: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    """`barge why` with only the given AWS_* variables (and no ~/.aws to fall back on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BARGE_"))}
    env["HOME"] = "/nonexistent"
    env.update(env_keys)
    return subprocess.run([barge_bin(), "why", job_id, "--endpoint", server.endpoint, *extra],
                          capture_output=True, text=True, env=env, timeout=30)


def up_must_fail(tmp: pathlib.Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`barge up` that must exit on its own, non-zero, before serving."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARGE_")}
    env.update(env_extra or {})
    data_dir = tmp / uniq("refused-data")
    proc = subprocess.run([barge_bin(), "up", "--data-dir", str(data_dir), "--runner", "process", *args],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Barge is up" not in proc.stdout
    # Refused before anything was created.
    assert not data_dir.exists(), f"{data_dir} was created"
    return proc


# --------------------------------------------------------------------------------------
# Signed requests
# --------------------------------------------------------------------------------------

def test_the_aws_cli_and_boto3_work_with_either_configured_key(signed):
    queues = aws_ok(signed, "batch", "describe-job-queues")["jobQueues"]
    assert "default" in [q["jobQueueName"] for q in queues]
    groups = aws_ok(signed, "logs", "describe-log-groups", akid=AKID_2, secret=SECRET_2)["logGroups"]
    assert LOG_GROUP in [g["logGroupName"] for g in groups]

    batch = client("batch", signed)
    assert "default" in [q["jobQueueName"] for q in batch.describe_job_queues()["jobQueues"]]
    logs = client("logs", signed, akid=AKID_2, secret=SECRET_2)
    assert LOG_GROUP in [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]


def test_a_job_runs_and_its_tags_and_logs_are_reachable_signed(signed):
    """Every kind of request Barge takes: JSON bodies, the tag path whose ARN botocore encodes
    (and signs encoded twice), DELETE with a repeated query parameter, a Logs read."""
    batch, logs = client("batch", signed), client("logs", signed)
    jd = register_jobdef(batch, ["echo", "signed hello"])
    job_id = submit(batch, "default", jd["jobDefinitionArn"])["jobId"]
    job = wait_for(batch, job_id, "SUCCEEDED")
    assert "signed hello" in log_lines(logs, job["container"]["logStreamName"])

    arn = jd["jobDefinitionArn"]
    aws_ok(signed, "batch", "tag-resource", "--resource-arn", arn, "--tags", "team=a,env=b c,keep=1")
    assert aws_ok(signed, "batch", "list-tags-for-resource", "--resource-arn", arn)["tags"] == {
        "team": "a", "env": "b c", "keep": "1"}
    batch.untag_resource(resourceArn=arn, tagKeys=["team", "env"])
    assert batch.list_tags_for_resource(resourceArn=arn)["tags"] == {"keep": "1"}


def test_a_wrong_secret_is_invalid_signature(signed):
    proc = aws(signed, "batch", "describe-job-queues", secret="not-the-secret")
    assert proc.returncode == 255, proc.stderr
    assert "An error occurred (InvalidSignatureException) when calling the DescribeJobQueues operation" in proc.stderr
    assert SIGNATURE_MISMATCH in proc.stderr
    code, status, message = client_error(client("logs", signed, secret="not-the-secret").describe_log_groups)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert message.startswith(SIGNATURE_MISMATCH)
    # One key's id with the other key's secret is no better.
    code, status, _ = client_error(client("batch", signed, akid=AKID_2, secret=SECRET).describe_job_queues)
    assert (code, status) == ("InvalidSignatureException", 403)


def test_an_unknown_access_key_is_unrecognized_client(signed):
    proc = aws(signed, "batch", "describe-job-queues", akid="AKIANOBODY", secret=SECRET)
    assert proc.returncode == 255
    assert "(UnrecognizedClientException)" in proc.stderr
    assert "The security token included in the request is invalid." in proc.stderr
    code, status, _ = client_error(client("logs", signed, akid="AKIANOBODY").describe_log_groups)
    assert (code, status) == ("UnrecognizedClientException", 403)


def test_a_wrong_region_is_refused(signed):
    code, status, message = client_error(client("batch", signed, region="eu-west-1").describe_job_queues)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert "Credential should be scoped to a valid region, not 'eu-west-1'." in message
    assert REGION in message


def test_stale_and_future_signatures_are_refused_with_aws_s_wording(signed):
    # The same signer at the right time is accepted, so only the time is at fault below.
    fresh = botocore_signed_post(signed, utc_now())
    assert fresh.status_code == 200, fresh.text

    stale = botocore_signed_post(signed, utc_now() - datetime.timedelta(minutes=20))
    assert stale.status_code == 403, stale.text
    assert error_code(stale) == "InvalidSignatureException"
    message = stale.json()["message"]
    assert message.startswith("Signature expired: "), message
    assert "is now earlier than" in message and "- 5 min.)" in message

    future = botocore_signed_post(signed, utc_now() + datetime.timedelta(minutes=20))
    assert future.status_code == 403
    assert error_code(future) == "InvalidSignatureException"
    assert future.json()["message"].startswith("Signature not yet current: ")


def test_a_signed_body_cannot_be_swapped(signed):
    """A request signed for one body and sent with another: the payload hash is signed."""
    req = AWSRequest(method="POST", url=signed.endpoint + "/v1/describejobqueues", data=b"{}",
                     headers={"Content-Type": "application/json"})
    botocore.auth.SigV4Auth(Credentials(AKID, SECRET), "batch", REGION).add_auth(req)
    headers = dict(req.headers.items())
    r = requests.post(req.url, data=b'{"jobQueues":["default"]}', headers=headers, timeout=HTTP_TIMEOUT_S)
    assert (r.status_code, error_code(r)) == (403, "InvalidSignatureException")
    assert requests.post(req.url, data=b"{}", headers=headers, timeout=HTTP_TIMEOUT_S).status_code == 200


def test_unsigned_requests_are_missing_authentication_token(signed):
    for method, path, headers in [
        ("POST", "/v1/describejobqueues", {"Content-Type": "application/json"}),
        ("POST", "/", {"Content-Type": "application/x-amz-json-1.1",
                       "X-Amz-Target": "Logs_20140328.DescribeLogGroups"}),
        ("GET", "/barge/v1/jobs/anything/why", {}),
        ("GET", "/no/such/path", {}),
    ]:
        r = requests.request(method, signed.endpoint + path, data=b"{}" if method == "POST" else None,
                             headers=headers, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert error_code(r) == "MissingAuthenticationTokenException", (path, r.text)
        assert r.json()["message"].startswith("Missing Authentication Token")
    # A bearer token or any other scheme is not SigV4.
    r = requests.post(signed.endpoint + "/v1/describejobqueues", data=b"{}",
                      headers={"Authorization": "Bearer abc"}, timeout=HTTP_TIMEOUT_S)
    assert (r.status_code, error_code(r)) == (400, "IncompleteSignatureException")
    # Probes and agents do not sign.
    assert requests.get(signed.endpoint + "/health", timeout=HTTP_TIMEOUT_S).status_code == 200
    r = requests.post(signed.endpoint + "/barge/agent/poll", data=b"{}", timeout=HTTP_TIMEOUT_S)
    assert error_code(r) != "MissingAuthenticationTokenException", r.text


def test_barge_why_signs_with_the_aws_cli_s_environment(signed):
    batch = client("batch", signed)
    jd = register_jobdef(batch, ["true"])["jobDefinitionArn"]
    job_id = submit(batch, "default", jd)["jobId"]
    keys = {"AWS_ACCESS_KEY_ID": AKID_2, "AWS_SECRET_ACCESS_KEY": SECRET_2, "AWS_DEFAULT_REGION": REGION}
    out = why(signed, job_id, keys, "--output", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["jobId"] == job_id

    unsigned = why(signed, job_id, {})
    assert unsigned.returncode == 1
    assert "Missing Authentication Token" in unsigned.stderr
    assert "AWS_ACCESS_KEY_ID" in unsigned.stderr

    wrong = why(signed, job_id, {**keys, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert wrong.returncode == 1 and SIGNATURE_MISMATCH in wrong.stderr

    # The shared credentials file and a named profile, as the aws CLI reads them.
    profile = why(signed, job_id, {"AWS_SHARED_CREDENTIALS_FILE": str(signed_credentials(signed)),
                                   "AWS_PROFILE": "second"})
    assert profile.returncode == 0, profile.stderr


def signed_credentials(server) -> str:
    """The --credentials-file a server was started with."""
    args = server.extra_args
    return args[args.index("--credentials-file") + 1]


# --------------------------------------------------------------------------------------
# Keys from the environment, and where Barge may listen
# --------------------------------------------------------------------------------------

def test_keys_from_the_environment_allow_listening_beyond_loopback(server_factory):
    port = free_port()
    srv = server_factory(
        name=uniq("sigv4-env"), port=port, use_env_vars=True,
        extra_args=["--listen", f"0.0.0.0:{port}"],
        extra_env={"BARGE_ACCESS_KEY_ID": "AKIAFROMENV", "BARGE_SECRET_ACCESS_KEY": "env-secret"},
    )
    log = srv.log_text()
    assert f"at http://0.0.0.0:{port}" in log
    assert "over plain HTTP" in log and "--tls-cert" in log, log
    batch = client("batch", srv, akid="AKIAFROMENV", secret="env-secret")
    assert batch.describe_job_queues()["jobQueues"]
    code, status, _ = client_error(client("batch", srv).describe_job_queues)
    assert (code, status) == ("UnrecognizedClientException", 403)


@pytest.mark.parametrize("listen", ["0.0.0.0", "[::]"])
def test_no_credentials_no_listening_beyond_loopback(sigv4_dir, listen):
    port = free_port()
    proc = up_must_fail(sigv4_dir, "--listen", f"{listen}:{port}")
    assert f"refusing to listen on {listen}:{port} without credentials" in proc.stderr, proc.stderr
    assert "--credentials-file" in proc.stderr and "BARGE_ACCESS_KEY_ID" in proc.stderr
    # Nothing was bound either.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_bad_security_settings_stop_barge_at_start(sigv4_dir, tls_files):
    cert, key = tls_files
    partial = sigv4_dir / "partial"
    partial.write_text("[default]\naws_access_key_id = AKIAHALF\n")
    proc = up_must_fail(sigv4_dir, "--listen", f"127.0.0.1:{free_port()}", "--credentials-file", str(partial))
    assert "has aws_access_key_id but no aws_secret_access_key" in proc.stderr, proc.stderr

    proc = up_must_fail(sigv4_dir, "--listen", f"127.0.0.1:{free_port()}",
                        env_extra={"BARGE_ACCESS_KEY_ID": "AKIAHALF"})
    assert "BARGE_SECRET_ACCESS_KEY is not" in proc.stderr

    junk = sigv4_dir / "junk.pem"
    junk.write_text("not a certificate\n")
    proc = up_must_fail(sigv4_dir, "--listen", f"127.0.0.1:{free_port()}", "--tls-cert", str(junk), "--tls-key", str(key))
    assert "holds no certificate" in proc.stderr, proc.stderr

    other_key = sigv4_dir / "other-key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(other_key)], check=True, capture_output=True, timeout=60)
    proc = up_must_fail(sigv4_dir, "--listen", f"127.0.0.1:{free_port()}", "--tls-cert", str(cert), "--tls-key", str(other_key))
    assert "cannot be used together" in proc.stderr, proc.stderr

    proc = up_must_fail(sigv4_dir, "--listen", f"127.0.0.1:{free_port()}", "--tls-cert", str(cert))
    assert "--tls-key" in proc.stderr


# --------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------

def test_https_with_the_operator_s_certificate(server_factory, credentials_file, tls_files):
    cert, key = tls_files
    srv = server_factory(
        name=uniq("sigv4-tls"), tls_ca=str(cert),
        extra_args=["--credentials-file", str(credentials_file), "--tls-cert", str(cert), "--tls-key", str(key)],
    )
    assert srv.endpoint.startswith("https://")
    assert f"at {srv.endpoint}" in srv.log_text()

    batch = client("batch", srv, verify=str(cert))
    assert "default" in [q["jobQueueName"] for q in batch.describe_job_queues()["jobQueues"]]
    logs = client("logs", srv, verify=str(cert))
    assert logs.describe_log_groups()["logGroups"]
    queues = aws_ok(srv, "batch", "describe-job-queues", extra=("--ca-bundle", str(cert)))["jobQueues"]
    assert "default" in [q["jobQueueName"] for q in queues]
    assert aws_ok(srv, "logs", "describe-log-groups", extra=("--ca-bundle", str(cert)))["logGroups"]

    # Signatures are still required over TLS.
    code, status, _ = client_error(client("batch", srv, secret="wrong", verify=str(cert)).describe_job_queues)
    assert (code, status) == ("InvalidSignatureException", 403)
    # Without trusting the certificate the client refuses; plain HTTP gets no answer.
    with pytest.raises(botocore.exceptions.SSLError):
        client("batch", srv, verify=True).describe_job_queues()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{srv.port}/health", timeout=HTTP_TIMEOUT_S)

    job_id = submit(batch, "default", register_jobdef(batch, ["true"])["jobDefinitionArn"])["jobId"]
    keys = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET}
    out = why(srv, job_id, keys, "--ca-bundle", str(cert), "--output", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["jobId"] == job_id
