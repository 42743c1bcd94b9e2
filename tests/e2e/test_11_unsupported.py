"""Issue 2, point 2 (last item): the newer operations Barge does not support yet answer
400 ClientException saying so (raw HTTP, boto3 and the aws CLI)."""

from __future__ import annotations

import botocore.exceptions
import pytest

from barge_helpers import assert_client_exception, raw_post, run_aws

QUEUE_ARN = "arn:aws:batch:us-east-1:000000000000:job-queue/default"
QS_ARN = "arn:aws:batch:us-east-1:000000000000:quota-share/default/qs"
LIMITS = [{"maxCapacity": 1, "capacityUnit": "NUM_INSTANCES"}]

UNSUPPORTED = [
    ("createconsumableresource", {"consumableResourceName": "licenses", "totalQuantity": 10,
                                  "resourceType": "REPLENISHABLE"}),
    ("describeconsumableresource", {"consumableResource": "licenses"}),
    ("updateconsumableresource", {"consumableResource": "licenses", "operation": "SET", "quantity": 5}),
    ("deleteconsumableresource", {"consumableResource": "licenses"}),
    ("listconsumableresources", {}),
    ("listjobsbyconsumableresource", {"consumableResource": "licenses"}),
    ("createserviceenvironment", {"serviceEnvironmentName": "sm", "serviceEnvironmentType": "SAGEMAKER_TRAINING",
                                  "capacityLimits": LIMITS}),
    ("describeserviceenvironments", {}),
    ("updateserviceenvironment", {"serviceEnvironment": "sm", "state": "DISABLED"}),
    ("deleteserviceenvironment", {"serviceEnvironment": "sm"}),
    ("submitservicejob", {"jobName": "sm-job", "jobQueue": "default", "serviceJobType": "SAGEMAKER_TRAINING",
                          "serviceRequestPayload": "{}"}),
    ("describeservicejob", {"jobId": "0b3f2b5e-8d4c-4f65-9d8e-0123456789ab"}),
    ("listservicejobs", {"jobQueue": "default"}),
    ("updateservicejob", {"jobId": "0b3f2b5e-8d4c-4f65-9d8e-0123456789ab", "schedulingPriority": 1}),
    ("terminateservicejob", {"jobId": "0b3f2b5e-8d4c-4f65-9d8e-0123456789ab", "reason": "r"}),
    ("createquotashare", {"quotaShareName": "qs", "jobQueue": QUEUE_ARN, "capacityLimits": LIMITS,
                          "resourceSharingConfiguration": {"strategy": "RESERVE"},
                          "preemptionConfiguration": {"inSharePreemption": "DISABLED"}}),
    ("describequotashare", {"quotaShareArn": QS_ARN}),
    ("updatequotashare", {"quotaShareArn": QS_ARN}),
    ("deletequotashare", {"quotaShareArn": QS_ARN}),
    ("listquotashares", {"jobQueue": QUEUE_ARN}),
]

SAYS_SO = ["support", "not implemented", "unimplemented"]


@pytest.mark.parametrize("op,body", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_operation_raw(server, op, body):
    resp = raw_post(server, op, body)
    assert resp.status_code < 500, resp.text[:300]
    assert_client_exception(resp, SAYS_SO)


def test_unsupported_operation_boto3(batch):
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        batch.create_consumable_resource(consumableResourceName="licenses", totalQuantity=1)
    err = ei.value.response
    assert err["Error"]["Code"] == "ClientException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert any(t in err["Error"]["Message"].lower() for t in SAYS_SO), err["Error"]["Message"]
    with pytest.raises(batch.exceptions.ClientException):
        batch.list_service_jobs(jobQueue="default")


@pytest.mark.parametrize("args", [
    ["create-consumable-resource", "--consumable-resource-name", "licenses", "--total-quantity", "1"],
    ["create-service-environment", "--service-environment-name", "sm", "--service-environment-type",
     "SAGEMAKER_TRAINING", "--capacity-limits", "maxCapacity=1,capacityUnit=NUM_INSTANCES"],
    ["submit-service-job", "--job-name", "x", "--job-queue", "default", "--service-job-type",
     "SAGEMAKER_TRAINING", "--service-request-payload", "{}"],
    ["list-quota-shares", "--job-queue", QUEUE_ARN],
], ids=lambda a: a[0])
def test_unsupported_operation_cli(server, args):
    proc = run_aws(server, "batch", *args, check=False)
    if proc.returncode == 252 or "Invalid choice" in proc.stderr:
        pytest.skip(f"this aws CLI has no `{args[0]}`: {proc.stderr[:200]}")
    assert proc.returncode == 255, (proc.returncode, proc.stdout, proc.stderr)
    assert "An error occurred (ClientException)" in proc.stderr, proc.stderr
    assert any(t in proc.stderr.lower() for t in SAYS_SO), proc.stderr
