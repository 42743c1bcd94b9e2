//! The official Rust SDK (`aws-sdk-batch`) against the real `barge` binary: every test starts
//! its own `barge up` and talks to it the way a Rust program pointed at AWS Batch would.

mod harness;

use std::collections::{HashMap, HashSet};

use aws_sdk_batch::error::ProvideErrorMetadata;
use aws_sdk_batch::operation::submit_job::SubmitJobError;
use aws_sdk_batch::types::{
    CeState, CeStatus, CeType, ComputeEnvironmentOrder, ComputeResource, ContainerProperties,
    CrType, JobDefinitionType, JobStatus, JqState, JqStatus, KeyValuesPair, ResourceRequirement,
    ResourceType, RetryStrategy,
};
use aws_sdk_batch::Client;
use harness::{arn, describe_job, now_ms, wait_all_done, wait_for_status, Barge};

/// A registered job definition, as RegisterJobDefinition answered.
struct Registered {
    arn: String,
    revision: i32,
}

/// Registers a small container job definition (1 vCPU, 128 MiB) running `command`.
async fn register(client: &Client, name: &str, command: &[&str]) -> Registered {
    let requirement = |kind, value| {
        ResourceRequirement::builder()
            .r#type(kind)
            .value(value)
            .build()
    };
    let container = ContainerProperties::builder()
        .image("busybox")
        .set_command(Some(command.iter().map(|s| s.to_string()).collect()))
        .resource_requirements(requirement(ResourceType::Vcpu, "1"))
        .resource_requirements(requirement(ResourceType::Memory, "128"))
        .build();
    let out = client
        .register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(container)
        .send()
        .await
        .unwrap_or_else(|e| panic!("RegisterJobDefinition {name}: {e:?}"));
    assert_eq!(out.job_definition_name(), Some(name));
    Registered {
        arn: out
            .job_definition_arn()
            .expect("jobDefinitionArn")
            .to_string(),
        revision: out.revision().expect("revision"),
    }
}

async fn submit(client: &Client, queue: &str, definition: &str, name: &str) -> String {
    let out = client
        .submit_job()
        .job_name(name)
        .job_queue(queue)
        .job_definition(definition)
        .send()
        .await
        .unwrap_or_else(|e| panic!("SubmitJob {name} to {queue}: {e:?}"));
    assert_eq!(out.job_name(), Some(name));
    let job_id = out.job_id().expect("jobId").to_string();
    assert_eq!(out.job_arn(), Some(arn("job", &job_id).as_str()));
    job_id
}

/// Creates a MANAGED EC2 compute environment (settings as in the AWS docs' example) and a queue
/// on it, both by name.
async fn create_ce_and_queue(client: &Client, ce: &str, queue: &str, state: CeState) {
    let resources = ComputeResource::builder()
        .r#type(CrType::Ec2)
        .minv_cpus(0)
        .maxv_cpus(4)
        .desiredv_cpus(0)
        .instance_types("optimal")
        .subnets("subnet-220c0e0a")
        .subnets("subnet-1a95556d")
        .security_group_ids("sg-cf5093b2")
        .instance_role("ecsInstanceRole")
        .tags("Name", format!("Batch Instance - {ce}"))
        .build();
    let out = client
        .create_compute_environment()
        .compute_environment_name(ce)
        .r#type(CeType::Managed)
        .state(state)
        .compute_resources(resources)
        .service_role("arn:aws:iam::012345678910:role/AWSBatchServiceRole")
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateComputeEnvironment {ce}: {e:?}"));
    assert_eq!(out.compute_environment_name(), Some(ce));
    assert_eq!(
        out.compute_environment_arn(),
        Some(arn("compute-environment", ce).as_str())
    );

    let order = ComputeEnvironmentOrder::builder()
        .order(1)
        .compute_environment(ce)
        .build();
    let out = client
        .create_job_queue()
        .job_queue_name(queue)
        .state(JqState::Enabled)
        .priority(10)
        .compute_environment_order(order)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateJobQueue {queue}: {e:?}"));
    assert_eq!(out.job_queue_name(), Some(queue));
    assert_eq!(out.job_queue_arn(), Some(arn("job-queue", queue).as_str()));
}

#[tokio::test]
async fn managed_compute_environment_and_queue() {
    let barge = Barge::start();
    let client = barge.client();
    create_ce_and_queue(&client, "sdk-ce", "sdk-queue", CeState::Enabled).await;

    let out = client
        .describe_compute_environments()
        .compute_environments("sdk-ce")
        .send()
        .await
        .unwrap();
    let [ce] = out.compute_environments() else {
        panic!("one CE expected: {out:?}")
    };
    assert_eq!(ce.compute_environment_name(), Some("sdk-ce"));
    assert_eq!(
        ce.compute_environment_arn(),
        Some(arn("compute-environment", "sdk-ce").as_str())
    );
    assert_eq!(ce.r#type(), Some(&CeType::Managed));
    assert_eq!(ce.state(), Some(&CeState::Enabled));
    assert_eq!(ce.status(), Some(&CeStatus::Valid));
    assert_eq!(
        ce.service_role(),
        Some("arn:aws:iam::012345678910:role/AWSBatchServiceRole")
    );
    let res = ce.compute_resources().expect("computeResources echoed");
    assert_eq!(res.r#type(), Some(&CrType::Ec2));
    assert_eq!(res.maxv_cpus(), Some(4));
    assert_eq!(res.subnets(), ["subnet-220c0e0a", "subnet-1a95556d"]);
    assert_eq!(res.security_group_ids(), ["sg-cf5093b2"]);
    assert_eq!(res.instance_role(), Some("ecsInstanceRole"));
    assert_eq!(
        res.tags().and_then(|t| t.get("Name")).map(String::as_str),
        Some("Batch Instance - sdk-ce")
    );

    // By ARN as well as by name.
    let out = client
        .describe_job_queues()
        .job_queues(arn("job-queue", "sdk-queue"))
        .send()
        .await
        .unwrap();
    let [queue] = out.job_queues() else {
        panic!("one queue expected: {out:?}")
    };
    assert_eq!(queue.job_queue_name(), Some("sdk-queue"));
    assert_eq!(
        queue.job_queue_arn(),
        Some(arn("job-queue", "sdk-queue").as_str())
    );
    assert_eq!(queue.state(), Some(&JqState::Enabled));
    assert_eq!(queue.status(), Some(&JqStatus::Valid));
    assert_eq!(queue.priority(), Some(10));
    let [order] = queue.compute_environment_order() else {
        panic!("one CE in the queue: {queue:?}")
    };
    assert_eq!(order.order(), Some(1));
    assert_eq!(
        order.compute_environment(),
        Some(arn("compute-environment", "sdk-ce").as_str()),
        "CE given by name, described by ARN"
    );

    // The queue runs jobs.
    register(&client, "sdk-true", &["true"]).await;
    let job_id = submit(&client, "sdk-queue", "sdk-true", "through-sdk-queue").await;
    let job = wait_for_status(&client, &job_id, &[JobStatus::Succeeded, JobStatus::Failed]).await;
    assert_eq!(job.status(), Some(&JobStatus::Succeeded), "{job:?}");
    assert_eq!(
        job.job_queue(),
        Some(arn("job-queue", "sdk-queue").as_str())
    );
}

#[tokio::test]
async fn job_definition_revisions() {
    let barge = Barge::start();
    let client = barge.client();
    let first = register(&client, "sdk-def", &["echo", "one"]).await;
    let second = register(&client, "sdk-def", &["echo", "two"]).await;
    assert_eq!((first.revision, second.revision), (1, 2));
    assert_eq!(first.arn, arn("job-definition", "sdk-def:1"));
    assert_eq!(second.arn, arn("job-definition", "sdk-def:2"));

    let out = client
        .describe_job_definitions()
        .job_definitions("sdk-def")
        .send()
        .await
        .unwrap();
    let mut revisions: Vec<Option<i32>> =
        out.job_definitions().iter().map(|d| d.revision()).collect();
    revisions.sort();
    assert_eq!(revisions, [Some(1), Some(2)], "by name: every revision");

    let out = client
        .describe_job_definitions()
        .job_definitions("sdk-def:1")
        .send()
        .await
        .unwrap();
    let [def] = out.job_definitions() else {
        panic!("one definition for sdk-def:1: {out:?}")
    };
    assert_eq!(def.job_definition_name(), Some("sdk-def"));
    assert_eq!(def.revision(), Some(1));
    assert_eq!(
        def.job_definition_arn(),
        Some(arn("job-definition", "sdk-def:1").as_str())
    );
    assert_eq!(def.r#type(), Some("container"));
    assert_eq!(def.status(), Some("ACTIVE"));
    let container = def.container_properties().expect("containerProperties");
    assert_eq!(container.image(), Some("busybox"));
    assert_eq!(container.command(), ["echo", "one"]);

    let out = client
        .describe_job_definitions()
        .job_definitions("sdk-def:2")
        .send()
        .await
        .unwrap();
    let [def] = out.job_definitions() else {
        panic!("one definition for sdk-def:2: {out:?}")
    };
    assert_eq!(def.revision(), Some(2));
    assert_eq!(
        def.container_properties().map(|c| c.command()),
        Some(&["echo".to_string(), "two".to_string()][..])
    );
}

#[tokio::test]
async fn job_runs_to_success() {
    let barge = Barge::start();
    let client = barge.client();
    let before_ms = now_ms();
    let def = register(
        &client,
        "sdk-hello",
        &["sh", "-c", "echo hello-sdk; exit 0"],
    )
    .await;
    let job_id = submit(&client, "default", &def.arn, "hello").await;

    // At once, before it can have started. The model marks JobDetail.startedAt required; the
    // Rust SDK must still parse a job without it (it "corrects" the absent member to 0).
    let early = describe_job(&client, &job_id).await;
    let status = early.status().cloned().expect("status");
    if matches!(
        status,
        JobStatus::Submitted | JobStatus::Pending | JobStatus::Runnable | JobStatus::Starting
    ) {
        assert_eq!(
            early.started_at().unwrap_or(0),
            0,
            "not started yet: {early:?}"
        );
        assert!(early.stopped_at().is_none(), "{early:?}");
    }
    assert_eq!(early.job_name(), Some("hello"));
    assert_eq!(
        early.job_queue(),
        Some(arn("job-queue", "default").as_str())
    );
    assert_eq!(early.job_definition(), Some(def.arn.as_str()));

    let job = wait_for_status(&client, &job_id, &[JobStatus::Succeeded, JobStatus::Failed]).await;
    assert_eq!(job.status(), Some(&JobStatus::Succeeded), "{job:?}");
    let container = job.container().expect("container");
    assert_eq!(container.exit_code(), Some(0));
    let stream = container
        .log_stream_name()
        .expect("container.logStreamName");
    assert!(
        stream.starts_with("sdk-hello/default/"),
        "log stream {stream}"
    );

    let [attempt] = job.attempts() else {
        panic!("one attempt: {job:?}")
    };
    let attempt_container = attempt.container().expect("attempts[0].container");
    assert_eq!(attempt_container.exit_code(), Some(0));
    assert_eq!(attempt_container.log_stream_name(), Some(stream));

    // Epoch milliseconds (not seconds), in order.
    let created = job.created_at().expect("createdAt");
    let started = job.started_at().expect("startedAt");
    let stopped = job.stopped_at().expect("stoppedAt");
    assert!(
        created >= before_ms - 60_000 && stopped <= now_ms() + 60_000,
        "epoch ms: {created} {stopped}"
    );
    assert!(
        created <= started && started <= stopped,
        "created {created} ≤ started {started} ≤ stopped {stopped}"
    );
    let (a_started, a_stopped) = (
        attempt.started_at().expect("attempt startedAt"),
        attempt.stopped_at().expect("attempt stoppedAt"),
    );
    assert!(
        created <= a_started && a_started <= a_stopped,
        "attempt {a_started}..{a_stopped}"
    );
}

#[tokio::test]
async fn failing_job_is_retried_then_fails() {
    let barge = Barge::start();
    let client = barge.client();
    register(&client, "sdk-fail", &["sh", "-c", "echo failing; exit 3"]).await;
    let out = client
        .submit_job()
        .job_name("fails-twice")
        .job_queue("default")
        .job_definition("sdk-fail")
        .retry_strategy(RetryStrategy::builder().attempts(2).build())
        .send()
        .await
        .unwrap();
    let job = wait_for_status(
        &client,
        out.job_id().expect("jobId"),
        &[JobStatus::Succeeded, JobStatus::Failed],
    )
    .await;
    assert_eq!(job.status(), Some(&JobStatus::Failed), "{job:?}");
    assert_eq!(job.retry_strategy().and_then(|r| r.attempts()), Some(2));
    let codes: Vec<Option<i32>> = job
        .attempts()
        .iter()
        .map(|a| a.container().and_then(|c| c.exit_code()))
        .collect();
    assert_eq!(
        codes,
        [Some(3), Some(3)],
        "two attempts, each exit 3: {job:?}"
    );
    assert_eq!(job.container().and_then(|c| c.exit_code()), Some(3));
    assert!(
        job.is_cancelled() != Some(true) && job.is_terminated() != Some(true),
        "{job:?}"
    );
}

#[tokio::test]
async fn list_jobs_paginates_every_job_once() {
    let barge = Barge::start();
    let client = barge.client();
    register(&client, "sdk-page", &["true"]).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(submit(&client, "default", "sdk-page", &format!("page-{i}")).await);
    }
    let want: HashSet<String> = ids.iter().cloned().collect();

    // With a JOB_NAME filter every status is listed, so this can run at once.
    let filter = KeyValuesPair::builder()
        .name("JOB_NAME")
        .values("page-*")
        .build();
    let listed: Vec<String> = client
        .list_jobs()
        .job_queue("default")
        .filters(filter)
        .max_results(5)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ListJobs (JOB_NAME filter) pages")
        .iter()
        .map(|s| s.job_id().expect("jobId").to_string())
        .collect();
    assert_once(&listed, &want);

    wait_all_done(&client, &ids).await;
    let pages = client
        .list_jobs()
        .job_queue("default")
        .job_status(JobStatus::Succeeded)
        .max_results(5)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("ListJobs (SUCCEEDED) pages");
    assert!(
        pages.len() >= 3,
        "12 jobs in pages of at most 5 need 3 pages, got {}",
        pages.len()
    );
    let mut listed = Vec::new();
    for page in &pages {
        assert!(
            page.job_summary_list().len() <= 5,
            "page of {} > maxResults 5",
            page.job_summary_list().len()
        );
        for summary in page.job_summary_list() {
            assert_eq!(summary.status(), Some(&JobStatus::Succeeded));
            assert!(
                summary.job_name().is_some_and(|n| n.starts_with("page-")),
                "{summary:?}"
            );
            listed.push(summary.job_id().expect("jobId").to_string());
        }
    }
    assert!(
        pages.last().unwrap().next_token().is_none(),
        "the last page has no nextToken"
    );
    assert_once(&listed, &want);
}

fn assert_once(listed: &[String], want: &HashSet<String>) {
    let mut seen = HashSet::new();
    for id in listed {
        assert!(
            seen.insert(id.clone()),
            "job {id} listed twice in {listed:?}"
        );
    }
    assert_eq!(&seen, want, "every submitted job, exactly once");
}

#[tokio::test]
async fn errors_are_client_exceptions() {
    let barge = Barge::start();
    let client = barge.client();
    register(&client, "sdk-err", &["true"]).await;

    let err = client
        .submit_job()
        .job_name("nowhere")
        .job_queue("no-such-queue")
        .job_definition("sdk-err")
        .send()
        .await
        .expect_err("submit to a missing queue must fail");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    match err.into_service_error() {
        SubmitJobError::ClientException(e) => {
            let message = e.message().unwrap_or_default();
            assert!(
                message.contains("no-such-queue"),
                "message names the queue: {message:?}"
            );
        }
        other => panic!("expected SubmitJobError::ClientException, got {other:?}"),
    }

    // A validation error, through the generic error metadata.
    let err = client
        .register_job_definition()
        .job_definition_name("sdk-err")
        .r#type(JobDefinitionType::Container)
        .container_properties(ContainerProperties::builder().image("busybox").build())
        .retry_strategy(RetryStrategy::builder().attempts(11).build())
        .send()
        .await
        .expect_err("11 attempts is over AWS's 10");
    let err = err.into_service_error();
    assert_eq!(err.code(), Some("ClientException"), "{err:?}");
    assert!(
        err.message().is_some_and(|m| m.contains("attempts")),
        "message names the member: {err:?}"
    );

    // Unknown ids are simply absent.
    let out = client
        .describe_jobs()
        .jobs("00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .unwrap();
    assert!(out.jobs().is_empty());
}

#[tokio::test]
async fn tags_on_a_job_definition() {
    let barge = Barge::start();
    let client = barge.client();
    let def = register(&client, "sdk-tags", &["true"]).await;
    // ':' and '/' in the ARN: the SDK percent-encodes it into the /v1/tags/{resourceArn} path.
    let def_arn = def.arn.as_str();

    client
        .tag_resource()
        .resource_arn(def_arn)
        .tags("team", "batch")
        .tags("cost-center", "42")
        .send()
        .await
        .unwrap();
    let tags = list_tags(&client, def_arn).await;
    assert_eq!(
        tags,
        HashMap::from([
            ("team".into(), "batch".into()),
            ("cost-center".into(), "42".into())
        ])
    );

    client
        .untag_resource()
        .resource_arn(def_arn)
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    let tags = list_tags(&client, def_arn).await;
    assert_eq!(tags, HashMap::from([("cost-center".into(), "42".into())]));

    // The tags show on the definition too.
    let out = client
        .describe_job_definitions()
        .job_definitions(def_arn)
        .send()
        .await
        .unwrap();
    let [described] = out.job_definitions() else {
        panic!("one definition: {out:?}")
    };
    assert_eq!(
        described
            .tags()
            .and_then(|t| t.get("cost-center"))
            .map(String::as_str),
        Some("42")
    );
}

async fn list_tags(client: &Client, resource_arn: &str) -> HashMap<String, String> {
    let out = client
        .list_tags_for_resource()
        .resource_arn(resource_arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListTagsForResource {resource_arn}: {e:?}"));
    out.tags().cloned().unwrap_or_default()
}

#[tokio::test]
async fn cancel_runnable_and_terminate_running() {
    let barge = Barge::start();
    let client = barge.client();
    // A queue whose only compute environment is DISABLED: its jobs stay RUNNABLE.
    create_ce_and_queue(&client, "parked-ce", "parked-queue", CeState::Disabled).await;
    register(&client, "sdk-sleep", &["sleep", "300"]).await;

    let parked = submit(&client, "parked-queue", "sdk-sleep", "parked").await;
    let job = wait_for_status(&client, &parked, &[JobStatus::Runnable]).await;
    // A RUNNABLE job has no startedAt on the wire; the SDK parses it anyway (as 0).
    assert_eq!(job.started_at().unwrap_or(0), 0, "{job:?}");
    assert!(
        job.status_reason().is_some_and(|r| !r.is_empty()),
        "a waiting job says why: {job:?}"
    );
    client
        .cancel_job()
        .job_id(&parked)
        .reason("no longer needed")
        .send()
        .await
        .unwrap();
    let job = wait_for_status(&client, &parked, &[JobStatus::Failed, JobStatus::Succeeded]).await;
    assert_eq!(job.status(), Some(&JobStatus::Failed), "{job:?}");
    assert_eq!(job.is_cancelled(), Some(true), "{job:?}");
    assert_eq!(job.status_reason(), Some("no longer needed"));
    assert!(job.attempts().is_empty(), "never started: {job:?}");

    let running = submit(&client, "default", "sdk-sleep", "sleeper").await;
    wait_for_status(&client, &running, &[JobStatus::Running]).await;
    client
        .terminate_job()
        .job_id(&running)
        .reason("stop the sleeper")
        .send()
        .await
        .unwrap();
    let job = wait_for_status(
        &client,
        &running,
        &[JobStatus::Failed, JobStatus::Succeeded],
    )
    .await;
    assert_eq!(job.status(), Some(&JobStatus::Failed), "{job:?}");
    assert_eq!(job.is_terminated(), Some(true), "{job:?}");
    assert_eq!(job.status_reason(), Some("stop the sleeper"));
    let [attempt] = job.attempts() else {
        panic!("one attempt: {job:?}")
    };
    assert!(attempt.stopped_at().is_some(), "{attempt:?}");
}

#[tokio::test]
async fn array_job_with_children_listed_and_summarised() {
    use aws_sdk_batch::types::{ArrayJobDependency, ArrayProperties, JobDependency};
    let barge = Barge::start();
    let client = barge.client();
    let def = register(
        &client,
        "sdk-array",
        &["sh", "-c", "test -n \"$AWS_BATCH_JOB_ARRAY_INDEX\""],
    )
    .await;
    let parent = client
        .submit_job()
        .job_name("arr")
        .job_queue("default")
        .job_definition(&def.arn)
        .array_properties(ArrayProperties::builder().size(4).build())
        .depends_on(
            JobDependency::builder()
                .r#type(ArrayJobDependency::Sequential)
                .build(),
        )
        .send()
        .await
        .expect("SubmitJob with arrayProperties")
        .job_id()
        .expect("jobId")
        .to_string();
    let job = wait_for_status(&client, &parent, &[JobStatus::Succeeded, JobStatus::Failed]).await;
    assert_eq!(job.status(), Some(&JobStatus::Succeeded), "{job:?}");
    let props = job.array_properties().expect("arrayProperties");
    assert_eq!(props.size(), Some(4));
    let summary = props.status_summary().expect("statusSummary");
    assert_eq!(summary.get("SUCCEEDED"), Some(&4), "{summary:?}");
    assert_eq!(summary.get("FAILED"), Some(&0), "{summary:?}");

    let listed = client
        .list_jobs()
        .array_job_id(&parent)
        .job_status(JobStatus::Succeeded)
        .send()
        .await
        .expect("ListJobs arrayJobId");
    let ids: Vec<&str> = listed
        .job_summary_list()
        .iter()
        .filter_map(|j| j.job_id())
        .collect();
    let want: Vec<String> = (0..4).map(|i| format!("{parent}:{i}")).collect();
    assert_eq!(ids, want.iter().map(String::as_str).collect::<Vec<_>>());
    let child = describe_job(&client, &want[2]).await;
    assert_eq!(child.array_properties().and_then(|p| p.index()), Some(2));
}

#[tokio::test]
async fn sigv4_from_the_rust_sdk_is_verified() {
    const KEY_ID: &str = "AKIASDKTESTS";
    const SECRET: &str = "sdk/secret+key";
    let barge = Barge::start_with(|dir| {
        let file = dir.join("credentials");
        std::fs::write(
            &file,
            format!("[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"),
        )
        .expect("write the credentials file");
        vec!["--credentials-file".into(), file.display().to_string()]
    });
    let client = barge.client_with_key(KEY_ID, SECRET);
    // A body, and the tag path whose ARN the SDK encodes on the wire and again when signing.
    let def = register(&client, "sdk-signed", &["true"]).await;
    client
        .tag_resource()
        .resource_arn(&def.arn)
        .tags("signed", "yes")
        .send()
        .await
        .expect("TagResource, signed");
    client
        .untag_resource()
        .resource_arn(&def.arn)
        .tag_keys("signed")
        .tag_keys("absent key")
        .send()
        .await
        .expect("UntagResource (a DELETE with a query), signed");
    assert!(list_tags(&client, &def.arn).await.is_empty());

    let refused = |client: Client| async move {
        let err = client
            .describe_job_queues()
            .send()
            .await
            .expect_err("refused");
        (
            err.code().map(str::to_string),
            err.raw_response().map(|r| r.status().as_u16()),
        )
    };
    assert_eq!(
        refused(barge.client_with_key(KEY_ID, "wrong")).await,
        (Some("InvalidSignatureException".into()), Some(403))
    );
    assert_eq!(
        refused(barge.client_with_key("AKIAUNKNOWN", SECRET)).await,
        (Some("UnrecognizedClientException".into()), Some(403))
    );
}
