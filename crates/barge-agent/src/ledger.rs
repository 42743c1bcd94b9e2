//! The ledger of process groups this agent has running, kept on disk so that an agent that
//! died without stopping them (SIGKILL, a crash, a power cut of the control process only) can
//! stop them when it starts again. The control plane fails such attempts and retries them; if
//! their processes lived on, two attempts of one job would run at once.
//!
//! One file per attempt, `<dir>/<attempt id>`, holding the group id and the leader's start time
//! (from /proc), so a recycled pid is never mistaken for ours.
//!
//! Where attempts have cgroups, the same start-up (`Runner::recover`) also empties and removes
//! the cgroups of this agent's home (see [`crate::cgroup::Limits::remove_leftovers`]): they hold
//! even the processes that left their group.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long start-up waits for leftover groups to die after SIGKILL.
const LEFTOVER_KILL_WAIT_MS: u64 = 5_000;

#[derive(Debug, Default)]
pub struct Ledger {
    dir: Option<PathBuf>,
}

/// The start time of a process, in clock ticks since boot (field 22 of /proc/<pid>/stat).
fn start_time(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether any process of the group is still alive. Zombies do not count: they are dead, and
/// on hosts whose PID 1 does not reap they would otherwise look alive forever.
fn group_alive(pgid: libc::pid_t) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<libc::pid_t>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

impl Ledger {
    /// A ledger in `dir` (created when needed). Without a directory nothing is recorded.
    pub fn new(dir: Option<&Path>) -> Ledger {
        if let Some(d) = dir {
            if let Err(err) = std::fs::create_dir_all(d) {
                tracing::warn!(%err, dir = %d.display(), "cannot keep the attempt ledger; leftovers of a crash will not be stopped");
                return Ledger { dir: None };
            }
        }
        Ledger {
            dir: dir.map(Path::to_path_buf),
        }
    }

    pub fn record(&self, attempt_id: &str, pgid: libc::pid_t) {
        let Some(dir) = &self.dir else { return };
        let Some(started) = start_time(pgid) else {
            return;
        };
        if let Err(err) = std::fs::write(dir.join(attempt_id), format!("{pgid} {started}\n")) {
            tracing::warn!(%err, attempt_id, "cannot record the attempt in the ledger");
        }
    }

    pub fn forget(&self, attempt_id: &str) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(attempt_id));
        }
    }

    /// Kills every process group a previous run of this agent left behind, waits (bounded) for
    /// them to go, and empties the ledger. Returns the attempt ids it stopped.
    pub fn kill_leftovers(&self) -> Vec<String> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut killed = Vec::new();
        let mut groups = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let recorded = std::fs::read_to_string(&path).ok().and_then(|s| {
                let mut parts = s.split_whitespace();
                Some((
                    parts.next()?.parse::<libc::pid_t>().ok()?,
                    parts.next()?.parse::<u64>().ok()?,
                ))
            });
            if let Some((pgid, started)) = recorded {
                if pgid > 1 && start_time(pgid) == Some(started) {
                    // SAFETY: kill has no memory-safety preconditions; -pgid names the group.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    groups.push(pgid);
                    killed.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        let deadline = Instant::now() + Duration::from_millis(LEFTOVER_KILL_WAIT_MS);
        while groups.iter().any(|g| group_alive(*g)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn leftover_groups_are_killed_and_recycled_pids_spared() {
        let dir = tempfile_dir();
        let ledger = Ledger::new(Some(&dir));
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as libc::pid_t;
        ledger.record("att-1", pgid);
        // A record whose start time does not match (a recycled pid) is left alone.
        std::fs::write(dir.join("att-2"), format!("{} 1\n", std::process::id())).unwrap();
        let killed = Ledger::new(Some(&dir)).kill_leftovers();
        assert_eq!(killed, vec!["att-1".to_string()]);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the ledger is emptied"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("barge-ledger-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
