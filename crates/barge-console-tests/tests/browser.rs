//! The web console in a real headless Chromium against the real `barge` binary: pages load,
//! forms create resources through the API (and show its validation messages next to their
//! fields), a job submitted from the form runs and its log appears live, cancel works from
//! the job page, sign-in is required when the server has keys, job lists page across a queue
//! of hundreds, and a schedule created from its form fires on an injected clock.
//! Screenshots land in target/console-screenshots/.

mod harness;

use fantoccini::Locator;
use harness::{http, Barge, Browser, SERIAL};
use serde_json::json;

/// Every main page answers 200 with a heading and without an error box, in the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_pages_load() {
    let _serial = SERIAL.lock().await;
    let barge = Barge::start();
    let b = Browser::start().await;
    for (path, heading, shot) in [
        ("/console", "Overview", Some("overview")),
        (
            "/console/queues/default",
            "Job queue default",
            Some("job-queue"),
        ),
        ("/console/job-definitions", "Job definitions", None),
        ("/console/new", "Create", None),
        (
            "/console/new/compute-environment",
            "Create compute environment",
            Some("form-compute-environment"),
        ),
        (
            "/console/new/job-queue",
            "Create job queue",
            Some("form-job-queue"),
        ),
        (
            "/console/new/job-definition",
            "Register job definition",
            Some("form-job-definition"),
        ),
        ("/console/new/job", "Submit job", Some("form-submit-job")),
        ("/console/schedules", "Schedules", None),
        (
            "/console/new/schedule",
            "Create schedule",
            Some("form-schedule"),
        ),
    ] {
        // The server's own answer, then the page as the browser shows it.
        let (status, _, _) = http(barge.addr, "GET", path, "");
        assert_eq!(status, 200, "GET {path}");
        b.goto(&barge.url(path)).await;
        assert_eq!(b.text("h1").await, heading, "{path}");
        assert!(!b.exists(".form-error").await, "{path} shows an error");
        if let Some(name) = shot {
            b.screenshot(name).await;
        }
    }
    // The overview shows barge up's default queue and compute environment with its capacity.
    b.goto(&barge.url("/console")).await;
    let queues = b.text("table.queues").await;
    assert!(queues.contains("default"), "{queues}");
    let envs = b.text("table.environments").await;
    assert!(
        envs.contains("default") && envs.contains("MANAGED (EC2)"),
        "{envs}"
    );
    assert!(b.exists("table.environments meter").await);
    // Unknown pages are a 404 page, not an error.
    assert_eq!(http(barge.addr, "GET", "/console/nope", "").0, 404);
    b.close().await;
}

/// Create a compute environment, a job queue and a job definition through the forms; a
/// value the API refuses is shown next to its field with the input kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_create_resources_and_show_validation_next_to_the_field() {
    let _serial = SERIAL.lock().await;
    let barge = Barge::start();
    let b = Browser::start().await;

    // A validation error: maxvCpus that is not a number.
    b.goto(&barge.url("/console/new/compute-environment")).await;
    b.fill("computeEnvironmentName", "fleet<b>").await;
    b.fill("maxvCpus", "lots").await;
    b.click("form.api-form button[type=submit]").await;
    let err = b.text("#error-maxvCpus").await;
    assert!(err.contains("computeResources.maxvCpus"), "{err}");
    assert!(b.exists(".field.has-error #f-maxvCpus").await);
    assert_eq!(b.value("#f-maxvCpus").await, "lots", "input kept");
    assert_eq!(
        b.value("#f-computeEnvironmentName").await,
        "fleet<b>",
        "input kept"
    );
    b.screenshot("form-validation-error").await;

    // The name is the next thing the API refuses; then a good one.
    b.fill("maxvCpus", "2").await;
    b.click("form.api-form button[type=submit]").await;
    let err = b.text("#error-computeEnvironmentName").await;
    assert!(err.contains("computeEnvironmentName"), "{err}");
    b.fill("computeEnvironmentName", "fleet").await;
    b.click("form.api-form button[type=submit]").await;
    b.wait_text("h1", "Overview").await;
    assert!(b.text("table.environments").await.contains("fleet"));

    // A job queue on it.
    b.goto(&barge.url("/console/new/job-queue")).await;
    b.fill("jobQueueName", "batch-q").await;
    b.fill("priority", "5").await;
    b.fill("computeEnvironments", "fleet").await;
    b.click("form.api-form button[type=submit]").await;
    b.wait_text("h1", "Job queue batch-q").await;
    let q = barge.api("describejobqueues", json!({"jobQueues": ["batch-q"]}));
    assert_eq!(q["jobQueues"][0]["priority"], 5);

    // A refused queue: a priority that is not a number, said at the field.
    b.goto(&barge.url("/console/new/job-queue")).await;
    b.fill("jobQueueName", "other-q").await;
    b.fill("priority", "high").await;
    b.fill("computeEnvironments", "fleet").await;
    b.click("form.api-form button[type=submit]").await;
    let err = b.text("#error-priority").await;
    assert!(err.contains("priority"), "{err}");
    assert_eq!(b.value("#f-jobQueueName").await, "other-q");
    assert_eq!(b.value("#f-priority").await, "high");

    // A job definition.
    b.goto(&barge.url("/console/new/job-definition")).await;
    b.fill("jobDefinitionName", "hello").await;
    b.fill("command", "echo 'hello there'").await;
    b.fill("memory", "128").await;
    b.click("form.api-form button[type=submit]").await;
    b.wait_text("h1", "Job definitions").await;
    let row = b.text("table.definitions").await;
    assert!(
        row.contains("hello") && row.contains("echo hello there"),
        "{row}"
    );
    b.screenshot("job-definitions").await;
    let d = barge.api(
        "describejobdefinitions",
        json!({"jobDefinitionName": "hello"}),
    );
    assert_eq!(
        d["jobDefinitions"][0]["containerProperties"]["command"],
        json!(["echo", "hello there"])
    );
    b.close().await;
}

/// A job submitted from the form runs, and its log lines appear on its page while the page
/// stays open (no reload: a marker set in the page survives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_from_the_form_runs_and_its_log_streams_live() {
    let _serial = SERIAL.lock().await;
    let barge = Barge::start();
    barge.api(
        "registerjobdefinition",
        json!({"jobDefinitionName": "talk", "type": "container",
               "containerProperties": {"image": "busybox", "command": ["true"],
               "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]}}),
    );
    let b = Browser::start().await;
    b.goto(&barge.url("/console/new/job?queue=default")).await;
    assert_eq!(b.value("#f-jobQueue").await, "default");
    b.fill("jobName", "talker").await;
    b.fill("jobDefinition", "talk").await;
    b.fill(
        "command",
        "sh -c 'echo first-line; sleep 3; echo \"<b>second</b> line\"'",
    )
    .await;
    b.click("form.api-form button[type=submit]").await;
    b.wait_text("h1", "Job talker").await;
    assert!(b.path().await.starts_with("/console/jobs/"));
    b.client
        .execute("window.bargeMarker = 42; return null;", vec![])
        .await
        .expect("set marker");
    b.wait_text("#log", "first-line").await;
    b.screenshot("job-page-running").await;
    // The second line arrives later, as text (its markup is not markup).
    b.wait_text("#log", "<b>second</b> line").await;
    b.wait_text("#log-state", "complete").await;
    b.wait_text("h1 .status", "SUCCEEDED").await;
    let marker = b
        .client
        .execute("return window.bargeMarker;", vec![])
        .await
        .expect("read marker");
    assert_eq!(marker, json!(42), "the page was reloaded");
    assert!(
        !b.exists("#log b").await,
        "log lines must be text, not HTML"
    );
    // After a reload the page shows the finished job: timeline, attempt and exit code.
    b.client.refresh().await.expect("reload");
    let attempts = b.text("table.attempts").await;
    assert!(attempts.contains('0'), "{attempts}");
    assert!(b
        .text("table.timeline")
        .await
        .contains("Attempt 1: started"));
    b.wait_text("#log", "first-line").await;
    b.screenshot("job-page").await;
    b.close().await;
}

/// Cancel from the job page, with a reason; the page shows why the job waited before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_the_job_page() {
    let _serial = SERIAL.lock().await;
    let barge = Barge::start();
    // A queue whose environment has no hosts: its jobs wait in RUNNABLE.
    barge.api(
        "createcomputeenvironment",
        json!({"computeEnvironmentName": "empty", "type": "UNMANAGED"}),
    );
    barge.api(
        "createjobqueue",
        json!({"jobQueueName": "waiting", "priority": 1,
               "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "empty"}]}),
    );
    barge.api(
        "registerjobdefinition",
        json!({"jobDefinitionName": "idle", "type": "container",
               "containerProperties": {"image": "busybox", "command": ["true"],
               "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]}}),
    );
    let job = barge.api(
        "submitjob",
        json!({"jobName": "stuck", "jobQueue": "waiting", "jobDefinition": "idle"}),
    );
    let id = job["jobId"].as_str().unwrap().to_string();
    let b = Browser::start().await;
    b.goto(&barge.url(&format!("/console/jobs/{id}"))).await;
    assert!(b.text("section.why h2").await.starts_with("Why it is"));
    b.screenshot("job-page-waiting").await;
    b.fill("reason", "no longer needed").await;
    b.click("button[value=cancel]").await;
    b.wait_text("h1 .status", "FAILED").await;
    b.wait_text("#status-reason", "no longer needed").await;
    let d = barge.api("describejobs", json!({"jobs": [id]}));
    assert_eq!(d["jobs"][0]["status"], "FAILED");
    assert_eq!(d["jobs"][0]["isCancelled"], true);
    b.close().await;
}

/// With access keys on, the console needs a sign-in: a wrong secret is refused, the right one
/// admitted; a form without the session's token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_required_when_the_server_has_keys() {
    let _serial = SERIAL.lock().await;
    let barge = Barge::start_with_keys(Some(("AKIACONSOLE", "console-secret-1")));
    // Without a session: redirected to sign in; the API itself still wants signatures.
    let (status, head, _) = http(barge.addr, "GET", "/console/queues/default", "");
    assert_eq!(status, 303);
    assert!(
        head.to_ascii_lowercase()
            .contains("location: /console/login"),
        "{head}"
    );
    assert_eq!(
        http(barge.addr, "POST", "/v1/describejobqueues", "{}").0,
        403
    );
    assert_eq!(
        http(barge.addr, "POST", "/console/new/job", "jobName=x").0,
        403
    );

    let b = Browser::start().await;
    b.goto(&barge.url("/console/queues/default")).await;
    b.wait_text("h1", "Sign in").await;
    b.screenshot("sign-in").await;
    b.fill("accessKeyId", "AKIACONSOLE").await;
    b.fill("secretAccessKey", "wrong").await;
    b.click("form.api-form button[type=submit]").await;
    b.wait_text("#form-error", "not one of this server's keys")
        .await;
    assert_eq!(b.text("h1").await, "Sign in");
    assert_eq!(b.value("#f-accessKeyId").await, "AKIACONSOLE");
    assert_eq!(
        b.value("#f-secretAccessKey").await,
        "",
        "the secret is never sent back"
    );
    b.fill("secretAccessKey", "console-secret-1").await;
    b.click("form.api-form button[type=submit]").await;
    // Back where it was going.
    b.wait_text("h1", "Job queue default").await;
    assert!(b.text("header").await.contains("AKIACONSOLE"));
    // The session cookie is not readable by scripts.
    let cookies = b
        .client
        .execute("return document.cookie;", vec![])
        .await
        .expect("document.cookie");
    assert_eq!(cookies, json!(""));
    b.goto(&barge.url("/console")).await;
    b.wait_text("h1", "Overview").await;
    b.click("form.signout button").await;
    b.wait_text("h1", "Sign in").await;
    b.goto(&barge.url("/console")).await;
    b.wait_text("h1", "Sign in").await;
    b.close().await;
}

/// A queue of a few hundred jobs pages 50 at a time, newest first, every job once; Newer
/// goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_lists_page_across_a_queue_of_hundreds() {
    let _serial = SERIAL.lock().await;
    let barge = Barge::start();
    barge.api(
        "createcomputeenvironment",
        json!({"computeEnvironmentName": "empty", "type": "UNMANAGED"}),
    );
    barge.api(
        "createjobqueue",
        json!({"jobQueueName": "many", "priority": 1,
               "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "empty"}]}),
    );
    barge.api(
        "registerjobdefinition",
        json!({"jobDefinitionName": "idle", "type": "container",
               "containerProperties": {"image": "busybox", "command": ["true"],
               "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]}}),
    );
    const JOBS: usize = 230;
    const FIRST_ROW: &str = "table.jobs tbody tr td:first-child a";
    for i in 0..JOBS {
        barge.api(
            "submitjob",
            json!({"jobName": format!("job-{i:03}"), "jobQueue": "many", "jobDefinition": "idle"}),
        );
    }
    let b = Browser::start().await;
    // All statuses: the jobs move from SUBMITTED to RUNNABLE meanwhile, the list holds still.
    b.goto(&barge.url("/console/queues/many?status=")).await;
    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        let cells = b
            .client
            .find_all(Locator::Css("table.jobs tbody tr td:first-child a"))
            .await
            .expect("rows");
        for c in cells {
            seen.push(c.text().await.expect("name"));
        }
        if pages == 2 {
            b.screenshot("job-queue-page-2").await;
        }
        if !b.exists("a[rel=next]").await {
            break;
        }
        b.click_and_wait_change("a[rel=next]", FIRST_ROW).await;
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(pages, JOBS.div_ceil(50));
    let expected: Vec<String> = (0..JOBS).rev().map(|i| format!("job-{i:03}")).collect();
    assert_eq!(seen, expected);
    // Back one page from the last.
    b.click_and_wait_change("a[rel=prev]", FIRST_ROW).await;
    let first = b.text(FIRST_ROW).await;
    assert_eq!(first, "job-079");
    // A name prefix narrows the list.
    b.goto(&barge.url("/console/queues/many")).await;
    b.fill("prefix", "job-12").await;
    b.click_and_wait_change("form.filter button", FIRST_ROW)
        .await;
    let names = b.text("table.jobs tbody").await;
    assert!(names.contains("job-129") && names.contains("job-120") && !names.contains("job-130"));
    b.close().await;
}

/// A schedule made from the form: a bad expression is refused next to its field, with what was
/// typed kept; on the injected schedules' clock it fires, and its job, reached through the
/// schedule page's link, runs to SUCCEEDED; then it is disabled and deleted from its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_created_from_the_form_fires_and_is_disabled_and_deleted() {
    let _serial = SERIAL.lock().await;
    // The schedules' clock (docs/schedules.md), written atomically: another file, renamed.
    let clock_dir =
        std::env::temp_dir().join(format!("barge-console-clock-{}", std::process::id()));
    std::fs::create_dir_all(&clock_dir).expect("clock dir");
    let clock = clock_dir.join("schedule-clock");
    let set_clock = |ms: i64| {
        let tmp = clock_dir.join("schedule-clock.tmp");
        std::fs::write(&tmp, ms.to_string()).expect("write clock");
        std::fs::rename(&tmp, &clock).expect("rename clock");
    };
    // 2030-01-01T00:00:00Z.
    const START_MS: i64 = 1_893_456_000_000;
    set_clock(START_MS);
    let barge = Barge::start_with_env(&[(
        "BARGE_TEST_SCHEDULE_CLOCK_FILE",
        clock.to_str().expect("utf-8 path"),
    )]);
    barge.api(
        "registerjobdefinition",
        json!({"jobDefinitionName": "say", "type": "container",
               "containerProperties": {"image": "busybox", "command": ["true"],
               "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]}}),
    );
    let describe = || {
        let (status, _, text) = http(barge.addr, "GET", "/barge/v1/schedules/half-hourly", "");
        (
            status,
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
        )
    };
    let b = Browser::start().await;

    // From the (empty) list to the form; a cron minute of 61 is refused at the expression.
    b.goto(&barge.url("/console/schedules")).await;
    b.wait_text("table.schedules", "No schedules yet").await;
    b.click("p a.button[href='/console/new/schedule']").await;
    b.wait_text("h1", "Create schedule").await;
    b.fill("scheduleName", "half-hourly").await;
    b.fill("scheduleExpression", "cron(61 * * * ? *)").await;
    b.fill("jobName", "tick").await;
    b.fill("jobDefinition", "say").await;
    b.fill("command", "sh -c 'echo scheduled-run'").await;
    assert_eq!(b.value("#f-jobQueue").await, "default", "the queue select");
    b.click("form.api-form button[type=submit]").await;
    let err = b.text("#error-scheduleExpression").await;
    assert!(err.contains("scheduleExpression"), "{err}");
    assert!(b.exists(".field.has-error #f-scheduleExpression").await);
    assert_eq!(b.value("#f-scheduleExpression").await, "cron(61 * * * ? *)");
    assert_eq!(b.value("#f-jobName").await, "tick", "input kept");
    assert_eq!(b.value("#f-command").await, "sh -c 'echo scheduled-run'");
    b.screenshot("form-schedule-error").await;
    assert_eq!(describe().0, 404, "nothing was created");

    b.fill("scheduleExpression", "rate(30 minutes)").await;
    b.click("form.api-form button[type=submit]").await;
    b.wait_text("h1", "Schedule half-hourly").await;
    assert_eq!(b.path().await, "/console/schedules/half-hourly");
    let (status, s) = describe();
    assert_eq!(status, 200);
    assert_eq!(s["state"], "ENABLED");
    assert_eq!(
        s["jobTemplate"]["containerOverrides"]["command"],
        json!(["sh", "-c", "echo scheduled-run"])
    );
    let next = s["nextFireAt"].as_i64().expect("nextFireAt");
    assert_eq!(next, START_MS + 30 * 60 * 1000);
    assert!(b.text("#next-fire").await.contains("2030-01-01 00:30:00"));

    // The list and the overview show it.
    b.goto(&barge.url("/console/schedules")).await;
    let row = b.text("table.schedules tbody").await;
    assert!(
        row.contains("half-hourly") && row.contains("rate(30 minutes)") && row.contains("ENABLED"),
        "{row}"
    );
    b.goto(&barge.url("/console")).await;
    let panel = b.text("section.schedules").await;
    assert!(
        panel.contains("1 schedule") && panel.contains("half-hourly"),
        "{panel}"
    );

    // The clock reaches the fire time: the loop fires it; the page shows its job.
    set_clock(next);
    b.goto(&barge.url("/console/schedules/half-hourly")).await;
    let deadline = std::time::Instant::now() + harness::WAIT;
    while !b.exists("#last-job a").await {
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule did not fire within {:?}",
            harness::WAIT
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        b.client.refresh().await.expect("reload");
    }
    assert_eq!(b.text("#fired").await, "1");
    b.screenshot("schedule").await;
    b.click("#last-job a").await;
    b.wait_text("h1", "Job tick").await;
    b.wait_text("h1 .status", "SUCCEEDED").await;
    b.wait_text("#log", "scheduled-run").await;
    let (_, s) = describe();
    assert_eq!(s["firedCount"], 1);
    assert!(b.path().await.ends_with(s["lastJobId"].as_str().unwrap()));
    // The list now links its last job.
    b.goto(&barge.url("/console/schedules")).await;
    assert!(b.exists("table.schedules a[href^='/console/jobs/']").await);
    b.screenshot("schedules").await;

    // Disable, then delete, from its page.
    b.goto(&barge.url("/console/schedules/half-hourly")).await;
    b.click("#toggle-state").await;
    b.wait_text("#schedule-state", "DISABLED").await;
    assert_eq!(describe().1["state"], "DISABLED");
    assert_eq!(b.text("#toggle-state").await, "Enable");
    b.click("#delete").await;
    b.wait_text("h1", "Schedules").await;
    b.wait_text("table.schedules", "No schedules yet").await;
    assert_eq!(describe().0, 404);
    b.close().await;
    let _ = std::fs::remove_dir_all(&clock_dir);
}
