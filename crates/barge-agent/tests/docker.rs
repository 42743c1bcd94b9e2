//! The agent with the Docker runner against the real Docker Engine. Every test prints SKIPPED
//! and returns when no Docker socket answers; anything else that goes wrong fails it. The image
//! is built locally (no registry is needed): `docker import` of a rootfs holding the host's
//! static busybox (Debian package busybox-static).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use barge_agent::{AgentConfig, ControlPlane, ReportError, Runner, RunnerChoice};
use barge_core::agent::{AgentInstruction, AgentReport, AttemptSpec};
use tokio::sync::{mpsc, watch};

/// Its own tag: the end-to-end suite builds a fuller image (applets, a default command).
const IMAGE: &str = "barge-test/busybox:agent-tests";
const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
/// Only guards against a hung test.
const WAIT_MAX: Duration = Duration::from_secs(60);

struct Recorder(watch::Sender<Vec<AgentReport>>);

impl ControlPlane for Recorder {
    fn report(
        &self,
        reports: Vec<AgentReport>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReportError>> + Send + '_>> {
        self.0.send_modify(|all| all.extend(reports));
        Box::pin(async { Ok(()) })
    }
}

/// Builds the test image once per test binary (and not at all when it exists).
fn ensure_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if docker(&["image", "inspect", IMAGE]).status.success() {
            return;
        }
        let busybox = PathBuf::from("/bin/busybox");
        assert!(
            busybox.exists(),
            "the Docker tests need a static busybox at /bin/busybox: apt-get install busybox-static"
        );
        let root = std::env::temp_dir().join(format!("barge-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "sleep", "echo", "cat", "head", "tr", "id", "env", "true",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let script = format!(
            "tar -C {} -c . | docker import -c 'ENV PATH=/bin' - {IMAGE}",
            root.display()
        );
        let built = Command::new("sh").args(["-c", &script]).output().unwrap();
        let _ = std::fs::remove_dir_all(&root);
        assert!(built.status.success(), "docker import failed: {built:?}");
    });
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI")
}

fn containers_labelled(label: &str) -> Vec<String> {
    let out = docker(&["ps", "-aq", "--filter", &format!("label={label}")]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

struct Harness {
    reports: watch::Receiver<Vec<AgentReport>>,
    instructions: mpsc::UnboundedSender<AgentInstruction>,
    agent: tokio::task::JoinHandle<()>,
}

/// The agent with the Docker runner, or None (after printing why) when Docker does not answer.
async fn start(state_dir: Option<PathBuf>) -> Option<Harness> {
    let runner = match Runner::choose(RunnerChoice::Docker, "test-agent", state_dir.as_deref())
        .await
    {
        Ok(runner) => runner,
        Err(err) => {
            eprintln!("SKIPPED: no Docker socket answers, the Docker runner is not tested: {err}");
            return None;
        }
    };
    ensure_image();
    let (tx, rx) = watch::channel(Vec::new());
    let (instructions, instructions_rx) = mpsc::unbounded_channel();
    let config = AgentConfig {
        agent_id: "test-agent".into(),
        state_dir,
        runner: Arc::new(runner),
        held: Default::default(),
        adopt: false,
        recovered: None,
    };
    let agent = tokio::spawn(barge_agent::run(
        config,
        Arc::new(Recorder(tx)),
        instructions_rx,
    ));
    Some(Harness {
        reports: rx,
        instructions,
        agent,
    })
}

fn spec(attempt_id: &str, image: &str, command: &[&str]) -> AttemptSpec {
    // Unique per test process, so that parallel test runs never share names.
    let attempt_id = format!("{attempt_id}-{}", std::process::id());
    AttemptSpec {
        job_id: format!("job-{attempt_id}"),
        attempt_id,
        attempt_number: 1,
        image: Some(image.into()),
        command: command.iter().map(|part| part.to_string()).collect(),
        environment: vec![("GREETING".into(), "hello from the env".into())],
        vcpus_milli: 500,
        memory_mib: 64,
        log_stream_name: "stream".into(),
        user: None,
        host: Default::default(),
        runner: None,
    }
}

impl Harness {
    /// Launches `spec` and returns its reports once it has exited.
    async fn run(&mut self, spec: &AttemptSpec) -> Vec<AgentReport> {
        self.instructions
            .send(AgentInstruction::Launch(spec.clone()))
            .unwrap();
        self.wait_exit(&spec.attempt_id).await
    }

    async fn wait_exit(&mut self, attempt: &str) -> Vec<AgentReport> {
        let of_attempt = |all: &Vec<AgentReport>| -> Vec<AgentReport> {
            all.iter()
                .filter(|report| report.ids().1 == attempt)
                .cloned()
                .collect()
        };
        let done = tokio::time::timeout(
            WAIT_MAX,
            self.reports.wait_for(|all| {
                of_attempt(all)
                    .iter()
                    .any(|r| matches!(r, AgentReport::Exited { .. }))
            }),
        )
        .await
        .expect("the attempt did not exit in time")
        .expect("agent alive");
        of_attempt(&done)
    }

    async fn shutdown(self) {
        drop(self.instructions);
        self.agent.await.unwrap();
    }
}

fn exit_of(reports: &[AgentReport]) -> (Option<i32>, Option<String>) {
    match reports.last() {
        Some(AgentReport::Exited {
            exit_code, reason, ..
        }) => (*exit_code, reason.clone()),
        other => panic!("the last report is not Exited: {other:?}"),
    }
}

fn log_lines(reports: &[AgentReport]) -> Vec<String> {
    reports
        .iter()
        .filter_map(|report| match report {
            AgentReport::Logs { lines, .. } => Some(lines.iter().map(|l| l.message.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

#[tokio::test]
async fn a_container_runs_with_its_env_limits_and_exit_code_and_is_removed() {
    let Some(mut agent) = start(None).await else {
        return;
    };
    let spec = spec(
        "plain",
        IMAGE,
        &[
            "sh",
            "-c",
            "echo \"$GREETING\"; echo to-stderr >&2; \
             cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null; \
             cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; \
             exit 7",
        ],
    );
    let reports = agent.run(&spec).await;
    assert!(
        matches!(reports.first(), Some(AgentReport::Running { .. })),
        "{reports:?}"
    );
    assert_eq!(exit_of(&reports), (Some(7), None));
    let lines = log_lines(&reports);
    assert!(
        lines.contains(&"hello from the env".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"to-stderr".to_owned()), "{lines:?}");
    // 0.5 vCPU: a CFS quota of half the period (v1: 50000 of 100000 µs; v2: "50000 100000").
    assert!(
        lines.iter().any(|l| l == "50000" || l == "50000 100000"),
        "{lines:?}"
    );
    assert!(lines.contains(&(64 * 1024 * 1024).to_string()), "{lines:?}");
    assert!(containers_labelled(&format!("barge.attempt-id={}", spec.attempt_id)).is_empty());
    agent.shutdown().await;
}

#[tokio::test]
async fn a_container_over_its_memory_reports_the_oom_reason_and_137() {
    let Some(mut agent) = start(None).await else {
        return;
    };
    let mut spec = spec(
        "oom",
        IMAGE,
        &["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"],
    );
    spec.memory_mib = 16;
    let reports = agent.run(&spec).await;
    assert_eq!(exit_of(&reports), (Some(137), Some(OOM_REASON.to_owned())));
    assert!(containers_labelled(&format!("barge.attempt-id={}", spec.attempt_id)).is_empty());
    agent.shutdown().await;
}

#[tokio::test]
async fn a_stop_terms_then_kills_the_container_and_removes_it() {
    let Some(mut agent) = start(None).await else {
        return;
    };
    // PID 1 of a container ignores SIGTERM without a handler: only SIGKILL ends `sleep`.
    let spec = spec("stop", IMAGE, &["sleep", "300"]);
    agent
        .instructions
        .send(AgentInstruction::Launch(spec.clone()))
        .unwrap();
    let attempt = spec.attempt_id.clone();
    agent
        .reports
        .wait_for(|all| {
            all.iter().any(
                |r| matches!(r, AgentReport::Running { attempt_id, .. } if *attempt_id == attempt),
            )
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    agent
        .instructions
        .send(AgentInstruction::Stop {
            job_id: spec.job_id.clone(),
            attempt_id: spec.attempt_id.clone(),
            grace_ms: 500,
        })
        .unwrap();
    let reports = agent.wait_exit(&spec.attempt_id).await;
    assert_eq!(exit_of(&reports), (Some(137), None));
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(containers_labelled(&format!("barge.attempt-id={}", spec.attempt_id)).is_empty());
    agent.shutdown().await;
}

#[tokio::test]
async fn a_missing_image_fails_with_cannot_pull_container_error() {
    let Some(mut agent) = start(None).await else {
        return;
    };
    let spec = spec("missing", "barge-test/no-such-image:404", &["true"]);
    let (exit_code, reason) = exit_of(&agent.run(&spec).await);
    assert_eq!(exit_code, None);
    let reason = reason.unwrap_or_default();
    assert!(
        reason.starts_with("CannotPullContainerError: image barge-test/no-such-image:404"),
        "{reason}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn an_agent_starting_removes_the_containers_an_earlier_run_left() {
    let state_dir = std::env::temp_dir().join(format!("barge-docker-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    std::fs::create_dir_all(&state_dir).unwrap();
    let home = format!("test-home-{}", std::process::id());
    std::fs::write(state_dir.join("home-id"), &home).unwrap();
    let Some(probe) = start(Some(state_dir.clone())).await else {
        return;
    };
    probe.shutdown().await;

    // What a crashed run leaves: a running container with this home's labels, and one of
    // another home that must be left alone.
    let leftover = docker(&[
        "run",
        "-d",
        "--label",
        &format!("barge.agent-home={home}"),
        "--label",
        "barge.attempt-id=leftover",
        IMAGE,
        "sleep",
        "300",
    ]);
    assert!(leftover.status.success(), "{leftover:?}");
    let other_home = format!("barge.agent-home=other-{}", std::process::id());
    let other = docker(&["run", "-d", "--label", &other_home, IMAGE, "sleep", "300"]);
    assert!(other.status.success(), "{other:?}");

    let mut agent = start(Some(state_dir.clone())).await.unwrap();
    // Recovery runs before the first attempt; once one has run, it is done.
    let spec = spec("after-restart", IMAGE, &["true"]);
    assert_eq!(exit_of(&agent.run(&spec).await), (Some(0), None));
    assert!(containers_labelled(&format!("barge.agent-home={home}")).is_empty());
    assert_eq!(containers_labelled(&other_home).len(), 1);
    agent.shutdown().await;

    let other_id = String::from_utf8_lossy(&other.stdout).trim().to_owned();
    assert!(docker(&["rm", "-f", &other_id]).status.success());
    let _ = std::fs::remove_dir_all(&state_dir);
}
