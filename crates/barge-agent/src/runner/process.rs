//! The process runner: an attempt is a host process tree in a process group of its own, so that
//! stopping it reaches everything it started, and, where the host allows it, in a cgroup of its
//! own (see [`crate::cgroup`]) that limits its memory and CPU, reaches the processes that left
//! the group, and tells an OOM kill apart.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use barge_core::agent::{AgentReport, AttemptSpec};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use std::sync::Arc;

use crate::cgroup::{AttemptCgroup, Limits};
use crate::ledger::Ledger;
use crate::limits::{CGROUP_EMPTY_WAIT_MS, ORPHAN_REAP_POLL_MS};
use crate::runner::docker::{OOM_EXIT_CODE, OOM_REASON};
use crate::{epoch_ms, logs};

/// What AWS Batch says when a job has no command and no image default to fall back on.
const NO_COMMAND_REASON: &str = "CannotStartContainerError: the job has no command, and the \
                                 process runner has no image default command to run";

/// Starts the job's process in its own group, in its cgroup (or under rlimits) when the host
/// allows; a start that fails in the cgroup is tried once more without it. Blocking: forks.
fn spawn_limited(
    program: &str,
    args: &[String],
    environment: &[(String, String)],
    limits: &Limits,
    attempt_id: &str,
    vcpus_milli: u32,
    memory_mib: u64,
) -> (io::Result<Child>, Option<AttemptCgroup>) {
    // The job's program, or the launcher that starts it (see `crate::launcher`).
    let command_of = |exe: &std::ffi::OsStr, before: Vec<std::ffi::OsString>| {
        let mut command = Command::new(exe);
        command
            .args(before)
            .args(args)
            .envs(environment.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own, whose id is the child's pid: a stop signals the whole tree.
            .process_group(0)
            // Only matters if this task is dropped mid-run (the runtime shutting down): tokio
            // then kills the leader and reaps it in the background.
            .kill_on_drop(true);
        command
    };
    let command = || command_of(program.as_ref(), Vec::new());
    let placement = limits.prepare(attempt_id, vcpus_milli, memory_mib);
    if let (Some(launcher), false) = (crate::launcher::launcher(), placement.is_empty()) {
        let cgroup = placement.cgroup.clone();
        let path = environment
            .iter()
            .find(|(name, _)| name == "PATH")
            .map(|(_, value)| std::ffi::OsStr::new(value));
        if !crate::launcher::resolves(program, path) {
            return (Err(io::Error::from_raw_os_error(libc::ENOENT)), cgroup);
        }
        let mut before =
            crate::launcher::launcher_args(&placement.procs_paths, placement.data_limit_bytes);
        before.push(program.into());
        return (command_of(launcher.as_os_str(), before).spawn(), cgroup);
    }
    let mut limited = command();
    if !placement.is_empty() {
        // SAFETY: the hook only makes async-signal-safe calls (see `Placement::enter_fn`).
        unsafe { limited.pre_exec(placement.enter_fn()) };
    }
    let mut cgroup = placement.cgroup.clone();
    let spawned = match limited.spawn() {
        Err(err) if cgroup.is_some() => {
            // The hook failed before exec, or the program cannot be started at all: nothing of
            // the job ran either way, so it is started once more without the cgroup, and a
            // missing program fails the same way again.
            tracing::warn!(%err, "the job did not start in its cgroup (its program may be missing, or the cgroup refused it); trying once more without the cgroup");
            if let Some(failed) = cgroup.take() {
                failed.remove();
            }
            command().spawn()
        }
        spawned => spawned,
    };
    // The child is in its cgroup or gone: the descriptors it wrote to are no longer needed.
    drop(placement);
    (spawned, cgroup)
}

/// How an attempt ended, as reported in `Exited`.
struct Exit {
    at_ms: i64,
    exit_code: Option<i32>,
    reason: Option<String>,
}

/// Runs one attempt to its end and reports it: `Running` once the process exists, its output as
/// `Logs`, then `Exited`. `stop` carries the grace in ms of a requested stop. `live` is held for
/// as long as a child process of this attempt may exist; shutdown waits for every such token to
/// be dropped.
pub(crate) async fn run(
    spec: AttemptSpec,
    reports: mpsc::Sender<AgentReport>,
    mut stop: watch::Receiver<Option<u64>>,
    live: mpsc::Sender<()>,
    ledger: Arc<Ledger>,
    limits: Arc<Limits>,
) {
    let exited = |exit: Exit| AgentReport::Exited {
        job_id: spec.job_id.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: exit.at_ms,
        exit_code: exit.exit_code,
        reason: exit.reason,
    };
    let cannot_start = |reason: String| {
        exited(Exit {
            at_ms: epoch_ms(),
            exit_code: None,
            reason: Some(reason),
        })
    };

    let Some((program, args)) = spec.command.split_first() else {
        // No process will exist; release the token before a send that may wait on backpressure.
        drop(live);
        let _ = reports
            .send(cannot_start(NO_COMMAND_REASON.to_owned()))
            .await;
        return;
    };
    // Forking is done on the blocking pool. With the cgroup (or rlimit) hook between fork and
    // exec, the child is a real fork, not posix_spawn: the kernel copies the page tables of
    // this whole process, which in `barge up` is the server with every job in memory. On an
    // async worker that stalled the API for every job started (issue 2's end-to-end rate fell
    // to a fifth); here it only costs the fork.
    let (spawned, cgroup) = {
        let (program, args) = (program.clone(), args.to_vec());
        let environment = spec.environment.clone();
        let (attempt_id, vcpus_milli, memory_mib) =
            (spec.attempt_id.clone(), spec.vcpus_milli, spec.memory_mib);
        tokio::task::spawn_blocking(move || {
            spawn_limited(
                &program,
                &args,
                &environment,
                &limits,
                &attempt_id,
                vcpus_milli,
                memory_mib,
            )
        })
        .await
        .unwrap_or_else(|_| {
            (
                Err(io::Error::other("the task starting the job failed")),
                None,
            )
        })
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            if let Some(cgroup) = &cgroup {
                cgroup.remove();
            }
            drop(live);
            let _ = reports
                .send(cannot_start(format!("CannotStartContainerError: {err}")))
                .await;
            return;
        }
    };
    let running_at_ms = epoch_ms();
    // tokio forgets the pid only once the child is reaped, which cannot have happened yet.
    let Some(pgid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) else {
        drop(child);
        if let Some(cgroup) = cgroup {
            let _ = tokio::task::spawn_blocking(move || {
                cgroup.empty();
                cgroup.remove();
            })
            .await;
        }
        drop(live);
        let _ = reports
            .send(cannot_start("CannotStartContainerError: no pid".to_owned()))
            .await;
        return;
    };
    ledger.record(&spec.attempt_id, pgid);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let (exited_tx, exited_rx) = watch::channel(false);
    // The supervisor runs beside the log pump, so a stop is acted on even while reports wait on
    // backpressure.
    let (exit, ()) = tokio::join!(
        supervise(child, pgid, cgroup, &mut stop, live, exited_tx),
        async {
            let running = AgentReport::Running {
                job_id: spec.job_id.clone(),
                attempt_id: spec.attempt_id.clone(),
                at_ms: running_at_ms,
            };
            let _ = reports.send(running).await;
            logs::ship(
                stdout,
                stderr,
                &spec.job_id,
                &spec.attempt_id,
                &reports,
                exited_rx,
            )
            .await;
        }
    );
    // The group is dead and reaped: nothing of this attempt is left to stop after a crash.
    ledger.forget(&spec.attempt_id);
    let _ = reports.send(exited(exit)).await;
    // `stop` lives until here so that a Stop arriving while the output drains is not mistaken
    // by the agent for a Stop of an attempt it does not know.
    drop(stop);
}

/// Waits for the process, acting on stop requests: SIGTERM to the group (and every process in
/// the attempt's cgroup), then SIGKILL once the earliest grace requested has passed. Reaps the
/// child and what it left before returning, and removes the cgroup.
async fn supervise(
    mut child: Child,
    pgid: libc::pid_t,
    cgroup: Option<AttemptCgroup>,
    stop: &mut watch::Receiver<Option<u64>>,
    live: mpsc::Sender<()>,
    exited: watch::Sender<bool>,
) -> Exit {
    let mut term_sent = false;
    let mut kill_at: Option<Instant> = None;
    let mut stop_open = true;
    // A stop may have been requested before the process existed.
    let mut request = *stop.borrow_and_update();
    let status = loop {
        if let Some(grace_ms) = request.take() {
            if !term_sent {
                signal_group(pgid, libc::SIGTERM);
                if let Some(cgroup) = &cgroup {
                    cgroup.signal_all(libc::SIGTERM);
                }
                term_sent = true;
            }
            let at = Instant::now() + Duration::from_millis(grace_ms);
            kill_at = Some(kill_at.map_or(at, |earlier| earlier.min(at)));
        }
        let deadline = kill_at;
        tokio::select! {
            status = child.wait() => break status,
            changed = stop.changed(), if stop_open => match changed {
                Ok(()) => request = *stop.borrow_and_update(),
                Err(_) => stop_open = false,
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                signal_group(pgid, libc::SIGKILL);
                if let Some(cgroup) = &cgroup {
                    cgroup.signal_all(libc::SIGKILL);
                }
                kill_at = None;
            }
        }
    };
    // The attempt ends with its main process, as a container does: whatever it left running in
    // its group goes too, which also closes the pipes those processes held. The group id cannot
    // have been handed to a new group in the instant since the reap unless the pid space wrapped
    // around in between.
    signal_group(pgid, libc::SIGKILL);
    // The cgroup also holds what left the group (setsid, daemons): emptied until nothing is
    // left, then read for an OOM kill and removed.
    let mut oom_killed = false;
    let mut outside_group = Vec::new();
    if let Some(cgroup) = cgroup {
        let emptied = tokio::task::spawn_blocking(move || {
            let killed = cgroup.empty();
            let oom_killed = cgroup.oom_killed();
            cgroup.remove();
            (killed, oom_killed)
        })
        .await;
        if let Ok((killed, oom)) = emptied {
            outside_group = killed;
            oom_killed = oom;
        }
    }
    reap_orphans(pgid).await;
    reap_pids(outside_group).await;
    let at_ms = epoch_ms();
    let exit = match status {
        // The kernel killed a process of the attempt for exceeding its memory limit: reported
        // as the Docker runner does (and AWS), so evaluateOnExit matches it the same way.
        Ok(status) if oom_killed => Exit {
            at_ms,
            exit_code: Some(exit_code(status).unwrap_or(OOM_EXIT_CODE)),
            reason: Some(OOM_REASON.to_owned()),
        },
        Ok(status) => Exit {
            at_ms,
            exit_code: exit_code(status),
            reason: None,
        },
        Err(err) => {
            tracing::error!(%err, "waiting for the job's process failed");
            Exit {
                at_ms,
                exit_code: None,
                reason: Some(format!("agent lost the process: {err}")),
            }
        }
    };
    drop(child);
    drop(live);
    let _ = exited.send(true);
    exit
}

/// Reaps the processes of the group that were orphaned to the agent (see
/// [`crate::agent::become_subreaper`]), waiting for them to die of the SIGKILL just sent. Without
/// this they would stay zombies, since PID 1 does not reap on every host.
async fn reap_orphans(pgid: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid only writes `status`. A negative pid waits only for children in that
        // group, and its leader is already reaped, so no child that tokio waits for is taken.
        let rc = unsafe { libc::waitpid(-pgid, &mut status, libc::WNOHANG) };
        if rc > 0 {
            continue;
        }
        if rc == 0 {
            // Orphans of ours are still dying.
            tokio::time::sleep(Duration::from_millis(ORPHAN_REAP_POLL_MS)).await;
            continue;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // ECHILD: no child of ours is left in the group.
            return;
        }
    }
}

/// Reaps processes that were killed through the cgroup outside the job's process group (those
/// that became the agent's children as orphans); the others answer ECHILD at once. Bounded by
/// `CGROUP_EMPTY_WAIT_MS`: a pid that is somebody else's child is never waited for.
async fn reap_pids(mut pids: Vec<libc::pid_t>) {
    let deadline = Instant::now() + Duration::from_millis(CGROUP_EMPTY_WAIT_MS);
    while !pids.is_empty() && Instant::now() < deadline {
        pids.retain(|pid| {
            let mut status = 0;
            // SAFETY: waitpid only writes `status`. These pids were in the attempt's cgroup, not
            // tokio's children: the leader is reaped already.
            let rc = unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) };
            // 0: ours and still dying; anything else is reaped or not ours.
            rc == 0
        });
        if !pids.is_empty() {
            tokio::time::sleep(Duration::from_millis(ORPHAN_REAP_POLL_MS)).await;
        }
    }
}

/// Docker's convention, which AWS Batch reports: a death by signal N is exit code 128 + N.
fn exit_code(status: ExitStatus) -> Option<i32> {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; a negative pid names the process group.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // ESRCH: the group is already gone, which is what we wanted.
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(%err, pgid, signal, "signalling the job's process group failed");
        }
    }
}
