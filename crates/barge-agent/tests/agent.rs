//! The agent running real processes, with a recording stand-in for the control plane.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use barge_agent::{AgentConfig, ControlPlane, ReportError};
use barge_core::agent::{AgentInstruction, AgentReport, AttemptSpec};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Only guards against a hung test; no test relies on anything being fast.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// Records every report it is given, after failing the first `failures_left` calls.
struct Recorder {
    reports: watch::Sender<Vec<AgentReport>>,
    failures_left: AtomicUsize,
}

impl ControlPlane for Recorder {
    fn report(
        &self,
        reports: Vec<AgentReport>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReportError>> + Send + '_>> {
        let fail = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if !fail {
            self.reports.send_modify(|all| all.extend(reports));
        }
        Box::pin(async move {
            if fail {
                Err(ReportError::Unavailable("test says no".into()))
            } else {
                Ok(())
            }
        })
    }
}

struct Harness {
    recorder: Arc<Recorder>,
    instructions: mpsc::UnboundedSender<AgentInstruction>,
    agent: JoinHandle<()>,
}

fn start() -> Harness {
    start_failing(0)
}

fn start_failing(failures: usize) -> Harness {
    let recorder = Arc::new(Recorder {
        reports: watch::Sender::new(Vec::new()),
        failures_left: AtomicUsize::new(failures),
    });
    let (instructions, rx) = mpsc::unbounded_channel();
    let config = AgentConfig {
        agent_id: "test-agent".into(),
        state_dir: None,
        runner: Arc::new(barge_agent::Runner::process()),
        held: Default::default(),
        adopt: false,
        recovered: None,
    };
    let agent = tokio::spawn(barge_agent::run(config, recorder.clone(), rx));
    Harness {
        recorder,
        instructions,
        agent,
    }
}

fn spec(attempt_id: &str, command: &[&str]) -> AttemptSpec {
    AttemptSpec {
        job_id: format!("job-{attempt_id}"),
        attempt_id: attempt_id.into(),
        attempt_number: 1,
        image: None,
        command: command.iter().map(|part| part.to_string()).collect(),
        environment: Vec::new(),
        vcpus_milli: 1000,
        memory_mib: 128,
        log_stream_name: format!("stream-{attempt_id}"),
        user: None,
        host: Default::default(),
        runner: None,
    }
}

fn attempt_of(report: &AgentReport) -> &str {
    match report {
        AgentReport::Running { attempt_id, .. }
        | AgentReport::Logs { attempt_id, .. }
        | AgentReport::Exited { attempt_id, .. } => attempt_id,
    }
}

fn is_exit_of(report: &AgentReport, attempt: &str) -> bool {
    matches!(report, AgentReport::Exited { attempt_id, .. } if attempt_id == attempt)
}

impl Harness {
    fn send(&self, instruction: AgentInstruction) {
        self.instructions.send(instruction).unwrap();
    }

    fn launch(&self, spec: AttemptSpec) {
        self.send(AgentInstruction::Launch(spec));
    }

    fn stop(&self, attempt: &str, grace_ms: u64) {
        self.send(AgentInstruction::Stop {
            job_id: format!("job-{attempt}"),
            attempt_id: attempt.into(),
            grace_ms,
        });
    }

    /// Waits until `done` holds for the reports of `attempt`, and returns them.
    async fn wait_for(
        &self,
        attempt: &str,
        done: impl Fn(&[AgentReport]) -> bool,
    ) -> Vec<AgentReport> {
        let of_attempt = |all: &[AgentReport]| -> Vec<AgentReport> {
            all.iter()
                .filter(|report| attempt_of(report) == attempt)
                .cloned()
                .collect()
        };
        let mut rx = self.recorder.reports.subscribe();
        let waited = tokio::time::timeout(WAIT_MAX, rx.wait_for(|all| done(&of_attempt(all))));
        let all = waited
            .await
            .expect("timed out waiting for reports")
            .unwrap();
        of_attempt(&all)
    }

    /// Waits for the attempt's `Exited` and checks the report order: Running, Logs…, Exited.
    async fn finished(&self, attempt: &str) -> Finished {
        let reports = self
            .wait_for(attempt, |reports| {
                reports.iter().any(|r| is_exit_of(r, attempt))
            })
            .await;
        let Some((
            AgentReport::Exited {
                exit_code, reason, ..
            },
            before,
        )) = reports.split_last()
        else {
            panic!("Exited is not the last report of {attempt}: {reports:?}");
        };
        let mut lines = Vec::new();
        for (n, report) in before.iter().enumerate() {
            match report {
                AgentReport::Running { .. } => assert_eq!(n, 0, "Running not first: {reports:?}"),
                AgentReport::Logs { lines: batch, .. } => {
                    assert!(n > 0, "Logs before Running: {reports:?}");
                    lines.extend(batch.iter().map(|line| line.message.clone()));
                }
                AgentReport::Exited { .. } => panic!("two exits: {reports:?}"),
            }
        }
        Finished {
            ran: matches!(before.first(), Some(AgentReport::Running { .. })),
            lines,
            exit_code: *exit_code,
            reason: reason.clone(),
        }
    }

    /// Waits for the first log line of the attempt and returns it.
    async fn first_line(&self, attempt: &str) -> String {
        let reports = self
            .wait_for(attempt, |reports| {
                reports
                    .iter()
                    .any(|r| matches!(r, AgentReport::Logs { .. }))
            })
            .await;
        reports
            .iter()
            .find_map(|report| match report {
                AgentReport::Logs { lines, .. } => Some(lines[0].message.clone()),
                _ => None,
            })
            .unwrap()
    }

    async fn shut_down(self) -> Arc<Recorder> {
        drop(self.instructions);
        tokio::time::timeout(WAIT_MAX, self.agent)
            .await
            .expect("agent did not shut down")
            .unwrap();
        self.recorder
    }
}

#[derive(Debug)]
struct Finished {
    ran: bool,
    lines: Vec<String>,
    exit_code: Option<i32>,
    reason: Option<String>,
}

fn pids(line: &str) -> Vec<libc::pid_t> {
    line.split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect()
}

/// True once the process is gone entirely: dead and reaped, not a zombie.
fn gone(pid: libc::pid_t) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// True if `pid` is not an unreaped child of this test process.
fn reaped(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waitpid only writes to `status`.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

#[tokio::test]
async fn output_of_both_streams_arrives_in_order_before_a_zero_exit() {
    let agent = start();
    let script = "echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf 'no newline'";
    agent.launch(spec("a1", &["sh", "-c", script]));
    let done = agent.finished("a1").await;
    assert!(done.ran);
    assert_eq!((done.exit_code, done.reason), (Some(0), None));
    let mut sorted = done.lines.clone();
    sorted.sort();
    assert_eq!(sorted, ["err1", "err2", "no newline", "out1", "out2"]);
    // Lines of one stream keep their order; across streams, order is the order of reading,
    // which is not fixed, so each stream is checked on its own.
    let (stderr, stdout): (Vec<&String>, Vec<&String>) =
        done.lines.iter().partition(|line| line.starts_with("err"));
    assert_eq!(stdout, ["out1", "out2", "no newline"]);
    assert_eq!(stderr, ["err1", "err2"]);
    agent.shut_down().await;
}

#[tokio::test]
async fn many_lines_arrive_complete_and_in_order() {
    let agent = start();
    agent.launch(spec("many", &["seq", "1", "20000"]));
    let done = agent.finished("many").await;
    let expected: Vec<String> = (1..=20000).map(|n| n.to_string()).collect();
    assert_eq!(done.lines, expected);
    assert_eq!(done.exit_code, Some(0));
    agent.shut_down().await;
}

#[tokio::test]
async fn a_non_zero_exit_code_is_reported() {
    let agent = start();
    agent.launch(spec("a3", &["sh", "-c", "exit 3"]));
    let done = agent.finished("a3").await;
    assert!(done.ran);
    assert_eq!((done.exit_code, done.reason), (Some(3), None));
    agent.shut_down().await;
}

#[tokio::test]
async fn an_attempt_that_asks_for_docker_on_an_agent_without_it_fails_saying_why() {
    let agent = start();
    let mut asks = spec("a-docker", &["true"]);
    asks.runner = Some(barge_core::agent::RunnerKind::Docker);
    agent.launch(asks);
    let done = agent.finished("a-docker").await;
    assert!(!done.ran, "nothing ran");
    assert_eq!(done.exit_code, None);
    assert_eq!(done.reason.as_deref(), Some(barge_agent::NO_DOCKER_REASON));
    // The process runner still takes attempts that ask for it, or for nothing.
    let mut asks = spec("a-process", &["sh", "-c", "exit 4"]);
    asks.runner = Some(barge_core::agent::RunnerKind::Process);
    agent.launch(asks);
    assert_eq!(agent.finished("a-process").await.exit_code, Some(4));
    agent.shut_down().await;
}

#[tokio::test]
async fn the_spec_environment_overlays_the_agents() {
    let agent = start();
    let mut with_env = spec(
        "env",
        &["sh", "-c", "echo \"$BARGE_TEST_FOO\"; echo \"$HOME\""],
    );
    with_env.environment = vec![
        ("BARGE_TEST_FOO".into(), "bar baz".into()),
        ("HOME".into(), "/overridden".into()),
    ];
    agent.launch(with_env);
    let done = agent.finished("env").await;
    assert_eq!(done.lines, ["bar baz", "/overridden"]);
    // `sh` was found through the agent's own PATH, which the job inherits.
    assert_eq!(done.exit_code, Some(0));
    agent.shut_down().await;
}

#[tokio::test]
async fn stop_terminates_the_whole_process_tree() {
    let agent = start();
    agent.launch(spec(
        "tree",
        &["sh", "-c", "sleep 300 & sleep 300 & echo $$ $!; wait"],
    ));
    let tree = pids(&agent.first_line("tree").await);
    agent.stop("tree", 30_000);
    let done = agent.finished("tree").await;
    assert!(matches!(done.exit_code, Some(143) | Some(137)), "{done:?}");
    assert_eq!(done.reason, None);
    assert!(reaped(tree[0]), "the shell was not reaped");
    assert!(
        gone(tree[1]),
        "the background sleep survived the stop, or is a zombie"
    );
    agent.shut_down().await;
}

#[tokio::test]
async fn what_a_job_leaves_behind_dies_with_it_and_is_reaped() {
    let agent = start();
    // The background sleep keeps stdout open; the exit is still reported, once it is gone.
    agent.launch(spec("leftover", &["sh", "-c", "sleep 300 & echo $!"]));
    let done = agent.finished("leftover").await;
    assert_eq!(done.exit_code, Some(0));
    let orphan = pids(&done.lines[0])[0];
    assert!(
        gone(orphan),
        "the orphaned sleep {orphan} is still running or a zombie"
    );
    agent.shut_down().await;
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_grace() {
    let agent = start();
    // Both the shell and its child ignore SIGTERM (an ignored signal stays ignored across exec).
    let script = "trap '' TERM; sleep 300 & echo $$ $!; wait";
    agent.launch(spec("stubborn", &["sh", "-c", script]));
    let tree = pids(&agent.first_line("stubborn").await);
    agent.stop("stubborn", 100);
    let done = agent.finished("stubborn").await;
    assert_eq!(done.exit_code, Some(137));
    assert!(reaped(tree[0]));
    assert!(gone(tree[1]));
    agent.shut_down().await;
}

#[tokio::test]
async fn a_missing_program_cannot_start() {
    let agent = start();
    agent.launch(spec(
        "missing",
        &["/nonexistent/barge-no-such-program", "arg"],
    ));
    let done = agent.finished("missing").await;
    assert!(
        !done.ran,
        "Running reported for a process that never existed"
    );
    assert_eq!(done.exit_code, None);
    let reason = done.reason.unwrap();
    assert!(
        reason.starts_with("CannotStartContainerError: "),
        "{reason}"
    );
    assert!(reason.contains("No such file"), "{reason}");
    agent.shut_down().await;
}

#[tokio::test]
async fn an_empty_command_cannot_start() {
    let agent = start();
    agent.launch(spec("empty", &[]));
    let done = agent.finished("empty").await;
    assert!(!done.ran);
    assert_eq!(done.exit_code, None);
    assert_eq!(
        done.reason.as_deref(),
        Some(
            "CannotStartContainerError: the job has no command, and the process runner has no \
             image default command to run"
        )
    );
    agent.shut_down().await;
}

#[tokio::test]
async fn stopping_an_unknown_attempt_reports_it_exited() {
    let agent = start();
    agent.stop("ghost", 1_000);
    let done = agent.finished("ghost").await;
    assert!(!done.ran);
    assert_eq!((done.exit_code, done.reason), (None, None));
    agent.shut_down().await;
}

#[tokio::test]
async fn reports_survive_a_failing_control_plane() {
    let agent = start_failing(2);
    agent.launch(spec("retry", &["sh", "-c", "echo hello; exit 5"]));
    let done = agent.finished("retry").await;
    assert!(done.ran);
    assert_eq!(done.lines, ["hello"]);
    assert_eq!(done.exit_code, Some(5));
    agent.shut_down().await;
}

#[tokio::test]
async fn shutdown_stops_everything_and_leaves_no_child() {
    let agent = start();
    let script = "sleep 300 & echo $$ $!; wait";
    agent.launch(spec("s1", &["sh", "-c", script]));
    agent.launch(spec("s2", &["sh", "-c", script]));
    let mut trees = vec![
        pids(&agent.first_line("s1").await),
        pids(&agent.first_line("s2").await),
    ];
    // Never launched before shutdown: it must not leave anything behind either.
    agent.launch(spec("s3", &["sh", "-c", script]));

    let recorder = agent.shut_down().await;

    // Everything that was reported exited, and the agent returned only after reaping.
    let reports = recorder.reports.borrow().clone();
    for attempt in ["s1", "s2"] {
        let exit = reports
            .iter()
            .find(|r| is_exit_of(r, attempt))
            .expect("no exit reported");
        let AgentReport::Exited { exit_code, .. } = exit else {
            unreachable!()
        };
        assert!(
            matches!(exit_code, Some(143) | Some(137)),
            "{attempt}: {exit_code:?}"
        );
    }
    if let Some(AgentReport::Logs { lines, .. }) = reports
        .iter()
        .find(|r| attempt_of(r) == "s3" && matches!(r, AgentReport::Logs { .. }))
    {
        trees.push(pids(&lines[0].message));
    }
    for tree in trees {
        assert!(reaped(tree[0]), "shell {} left unreaped", tree[0]);
        assert!(gone(tree[1]), "sleep {} still running", tree[1]);
    }
}

// ---- Limits: a cgroup per attempt (see barge-agent's cgroup.rs). These need a host where the
// process runner can use cgroups (root, cgroup v1 or v2 mounted); elsewhere they say so and
// pass, since the runner then falls back to rlimits, which cgroup.rs's own tests cover.

/// The runner's limits note when cgroups limit both memory and CPU; None (with a printed reason)
/// where they cannot, and the test is skipped.
fn cgroups_usable() -> bool {
    let note = barge_agent::Runner::process().limits_note().unwrap();
    let usable = note.contains("cgroup") && note.contains("memory") && note.contains("cpu");
    if !usable {
        eprintln!("skipped: the process runner cannot limit with cgroups here ({note})");
    }
    usable
}

/// Every directory where Barge keeps attempt cgroups on this host (v2, or v1's memory and cpu).
fn barge_cgroup_parents() -> Vec<std::path::PathBuf> {
    [
        "/sys/fs/cgroup/barge",
        "/sys/fs/cgroup/memory/barge",
        "/sys/fs/cgroup/cpu/barge",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .filter(|dir| dir.is_dir())
    .collect()
}

/// The attempt's cgroups still on the host (named `<home>.<attempt id>`).
fn cgroups_of(attempt: &str) -> Vec<std::path::PathBuf> {
    let suffix = format!(".{attempt}");
    barge_cgroup_parents()
        .into_iter()
        .flat_map(|parent| std::fs::read_dir(parent).unwrap().flatten())
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with(&suffix))
        .collect()
}

/// The directory of the cgroup holding CPU limits, from a `/proc/<pid>/cgroup` listing: v1's
/// `cpu` hierarchy (alone or mounted with cpuacct), else v2's unified one.
fn cpu_cgroup_dir(listing: &[String]) -> std::path::PathBuf {
    let entries: Vec<(&str, &str)> = listing
        .iter()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            fields.next()?;
            Some((fields.next()?, fields.next()?))
        })
        .collect();
    let v1 = entries
        .iter()
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "cpu"));
    match v1 {
        Some((_, path)) => std::path::PathBuf::from(format!("/sys/fs/cgroup/cpu{path}")),
        None => {
            let (_, path) = entries
                .iter()
                .find(|(c, _)| c.is_empty())
                .expect("a cgroup line");
            std::path::PathBuf::from(format!("/sys/fs/cgroup{path}"))
        }
    }
}

fn throttled_periods(cpu_dir: &std::path::Path) -> u64 {
    let stat = std::fs::read_to_string(cpu_dir.join("cpu.stat")).unwrap();
    stat.lines()
        .find_map(|line| line.strip_prefix("nr_throttled "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_job_over_its_memory_is_killed_and_reported_as_out_of_memory() {
    if !cgroups_usable() {
        return;
    }
    let agent = start();
    let mut hog = spec(
        "memhog",
        // tail keeps the last 200 MB it reads: 200 MB held by a job allowed 32 MiB. The shell
        // exits as its last command did: 128 + SIGKILL.
        &[
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tail -c 200000000 >/dev/null",
        ],
    );
    hog.memory_mib = 32;
    agent.launch(hog);
    let done = agent.finished("memhog").await;
    assert_eq!(done.exit_code, Some(137), "{done:?}");
    assert_eq!(
        done.reason.as_deref(),
        Some("OutOfMemoryError: Container killed due to memory usage")
    );
    assert!(
        cgroups_of("memhog").is_empty(),
        "cgroup left: {:?}",
        cgroups_of("memhog")
    );
    agent.shut_down().await;
}

#[tokio::test]
async fn a_job_within_its_memory_is_not_reported_as_out_of_memory() {
    if !cgroups_usable() {
        return;
    }
    let agent = start();
    let mut fits = spec(
        "memfits",
        &[
            "sh",
            "-c",
            "head -c 20000000 /dev/zero | tail -c 20000000 | wc -c",
        ],
    );
    fits.memory_mib = 64;
    agent.launch(fits);
    let done = agent.finished("memfits").await;
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    assert_eq!(done.reason, None);
    assert_eq!(done.lines, vec!["20000000".to_string()]);
    agent.shut_down().await;
}

#[tokio::test]
async fn a_job_runs_under_its_cpu_quota_and_is_throttled_to_it() {
    if !cgroups_usable() {
        return;
    }
    let agent = start();
    let mut busy = spec(
        "cpuquota",
        &[
            "sh",
            "-c",
            "cat /proc/self/cgroup; echo listed; while :; do :; done",
        ],
    );
    busy.vcpus_milli = 500;
    agent.launch(busy);
    let listing = agent
        .wait_for("cpuquota", |reports| {
            reports.iter().any(|r| matches!(r, AgentReport::Logs { lines, .. } if lines.iter().any(|l| l.message == "listed")))
        })
        .await
        .iter()
        .flat_map(|r| match r {
            AgentReport::Logs { lines, .. } => lines.iter().map(|l| l.message.clone()).collect(),
            _ => Vec::new(),
        })
        .take_while(|line| line != "listed")
        .collect::<Vec<_>>();
    let dir = cpu_cgroup_dir(&listing);
    assert!(
        dir.to_string_lossy().ends_with(".cpuquota"),
        "not the attempt's cgroup: {listing:?}"
    );
    // Half a vCPU: 50 ms of every 100 ms period.
    match std::fs::read_to_string(dir.join("cpu.max")) {
        Ok(max) => assert_eq!(max.trim(), "50000 100000"),
        Err(_) => {
            let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap();
            let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).unwrap();
            assert_eq!((quota.trim(), period.trim()), ("50000", "100000"));
        }
    }
    // The busy loop wants a whole CPU: the kernel throttles it in (nearly) every period. Waited
    // for rather than timed, so a loaded host only makes it slower.
    let deadline = std::time::Instant::now() + WAIT_MAX;
    while throttled_periods(&dir) < 3 {
        assert!(std::time::Instant::now() < deadline, "never throttled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop("cpuquota", 1_000);
    agent.finished("cpuquota").await;
    assert!(
        !dir.exists(),
        "the attempt's cgroup {} was not removed",
        dir.display()
    );
    agent.shut_down().await;
}

#[tokio::test]
async fn stop_kills_through_the_cgroup_what_left_the_group_and_ignores_sigterm() {
    if !cgroups_usable() {
        return;
    }
    let agent = start();
    // setsid takes the grandchild out of the job's process group (and session), where a signal
    // to the group no longer reaches it; it ignores SIGTERM too. Only the cgroup still holds it.
    let script = "setsid sh -c 'trap \"\" TERM; echo $$; exec sleep 300' & wait";
    agent.launch(spec("escapee", &["sh", "-c", script]));
    let escapee = pids(&agent.first_line("escapee").await)[0];
    agent.stop("escapee", 500);
    agent.finished("escapee").await;
    assert!(
        gone(escapee),
        "the grandchild {escapee} that left the group survived, or is a zombie"
    );
    assert!(
        cgroups_of("escapee").is_empty(),
        "cgroup left: {:?}",
        cgroups_of("escapee")
    );
    agent.shut_down().await;
}
