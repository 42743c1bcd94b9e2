//! Resource limits for the process runner: a cgroup per attempt where the host allows it,
//! rlimits where it does not.
//!
//! The cgroup files are written directly rather than through a crate or systemd: the interface
//! is a handful of text files (mkdir, write a number, rmdir), the same on every distribution, and
//! writing them ourselves keeps what Barge does to the host visible in one place. Both layouts
//! are supported:
//!
//! - **cgroup v2** (modern hosts): one unified hierarchy at `/sys/fs/cgroup` with a
//!   `cgroup.controllers` file. Attempts live in `/sys/fs/cgroup/barge/<name>`; `+cpu +memory`
//!   are enabled in the root's and `barge`'s `cgroup.subtree_control` so that the attempt
//!   cgroups get `memory.max` and `cpu.max`. No process ever lives in `barge` itself (v2 forbids
//!   processes in a cgroup whose controllers are handed to children).
//! - **cgroup v1** (older hosts, and these machines): one hierarchy per controller,
//!   `/sys/fs/cgroup/memory` and `/sys/fs/cgroup/cpu`; an attempt has a directory
//!   `barge/<name>` in each and its processes are placed in both.
//!
//! An attempt's cgroup is named `<home id>.<attempt id>`: the home id (see
//! [`crate::runner::docker::home_id`]) is stable for a data directory, so an agent starting again
//! finds the cgroups its crashed predecessor left, and two agents on one host (different data
//! directories) never touch each other's.
//!
//! Where no cgroup can be used (not mounted, read-only, no permission, controller missing), the
//! memory limit falls back to RLIMIT_DATA per process, and CPU is not limited: no rlimit caps a
//! rate of CPU use (RLIMIT_CPU ends a process after a total of CPU seconds, which is a
//! timeout, not a quota). Limits that cannot be set up never fail a job: the agent logs it and
//! runs the job, and `barge up` says at start what is enforced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::limits::{
    CGROUP_CPU_PERIOD_US, CGROUP_CPU_QUOTA_MIN_US, CGROUP_EMPTY_POLL_MS, CGROUP_EMPTY_WAIT_MS,
    RLIMIT_DATA_HEADROOM_MIB,
};

/// Where cgroup filesystems are mounted on every Linux distribution.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// The directory under which every Barge cgroup lives (in each v1 hierarchy, or the v2 root).
const PARENT: &str = "barge";

const MIB: u64 = 1024 * 1024;

/// How this host's process runner enforces limits, found once when the agent starts.
#[derive(Debug)]
pub(crate) struct Limits {
    mode: Mode,
    /// Prefix of this agent's cgroup names (`<home>.<attempt id>`).
    home: String,
}

#[derive(Debug)]
enum Mode {
    /// The `barge` directory of the unified hierarchy, and which controllers it hands down.
    V2 {
        parent: PathBuf,
        memory: bool,
        cpu: bool,
        missing: Option<String>,
    },
    /// The `barge` directories in the memory and cpu hierarchies that could be used.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        missing: Option<String>,
    },
    /// No cgroup: memory as RLIMIT_DATA, CPU not enforced, for the reason given.
    Rlimits { why: String },
}

/// What a new process of an attempt is placed in, prepared before the fork.
pub(crate) struct Placement {
    /// The attempt's cgroup, when it has one.
    pub(crate) cgroup: Option<AttemptCgroup>,
    /// `cgroup.procs` of each of the attempt's cgroup directories, opened before the fork so
    /// that the child only has to write to them (see [`Placement::enter`]).
    procs: Vec<File>,
    /// Their paths, for the launcher (see `crate::launcher`), which opens them itself.
    pub(crate) procs_paths: Vec<PathBuf>,
    /// RLIMIT_DATA in bytes for the rlimit fallback.
    pub(crate) data_limit_bytes: Option<u64>,
}

/// One attempt's cgroup: a directory in each hierarchy used (one on v2).
#[derive(Clone, Debug)]
pub(crate) struct AttemptCgroup {
    dirs: Vec<PathBuf>,
    /// Where the OOM kill counter is read: the memory directory, if memory is limited.
    memory: Option<PathBuf>,
    v2: bool,
}

impl Limits {
    /// Finds what this host allows and prepares Barge's parent cgroups. Never fails: what cannot
    /// be used is named in [`Limits::note`].
    pub(crate) fn detect(home: &str) -> Limits {
        let mount = Path::new(CGROUP_MOUNT);
        let mode = if mount.join("cgroup.controllers").exists() {
            detect_v2(mount)
        } else if mount.join("memory").is_dir() || mount.join("cpu").is_dir() {
            detect_v1(mount)
        } else {
            Mode::Rlimits {
                why: format!("no cgroup filesystem is mounted at {CGROUP_MOUNT}"),
            }
        };
        Limits {
            mode,
            home: home.to_owned(),
        }
    }

    /// The rlimit fallback, whatever the host offers (tests of the fallback).
    #[cfg(test)]
    pub(crate) fn rlimits_only(home: &str, why: &str) -> Limits {
        Limits {
            mode: Mode::Rlimits {
                why: why.to_owned(),
            },
            home: home.to_owned(),
        }
    }

    /// One line for `barge up`: which limits are enforced, how, and why not the others.
    pub(crate) fn note(&self) -> String {
        let (how, memory, cpu, missing) = match &self.mode {
            Mode::V2 {
                memory,
                cpu,
                missing,
                ..
            } => ("cgroup v2", *memory, *cpu, missing.clone()),
            Mode::V1 {
                memory,
                cpu,
                missing,
            } => (
                "cgroup v1",
                memory.is_some(),
                cpu.is_some(),
                missing.clone(),
            ),
            Mode::Rlimits { why } => {
                return format!("limits: rlimits only (memory); CPU not enforced: {why}")
            }
        };
        let enforced: Vec<&str> = [(memory, "memory"), (cpu, "cpu")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        let mut note = format!("limits: {how} ({})", enforced.join(", "));
        if !memory {
            note.push_str("; memory as rlimits only");
        }
        if let Some(why) = missing {
            note.push_str(&format!("; not enforced: {why}"));
        }
        note
    }

    /// Creates the attempt's cgroup with its limits and opens what the child needs to enter it.
    /// Whatever fails is logged and left out: the job runs with the limits that could be set.
    pub(crate) fn prepare(&self, attempt_id: &str, vcpus_milli: u32, memory_mib: u64) -> Placement {
        let name = format!("{}.{attempt_id}", self.home);
        let memory_bytes = memory_mib.saturating_mul(MIB);
        let quota_us =
            (u64::from(vcpus_milli) * CGROUP_CPU_PERIOD_US / 1000).max(CGROUP_CPU_QUOTA_MIN_US);
        let rlimit = Some(
            memory_mib
                .saturating_add(RLIMIT_DATA_HEADROOM_MIB)
                .saturating_mul(MIB),
        );
        let no_cgroup = |data_limit_bytes| Placement {
            cgroup: None,
            procs: Vec::new(),
            procs_paths: Vec::new(),
            data_limit_bytes,
        };
        let cgroup = match &self.mode {
            Mode::Rlimits { .. } => return no_cgroup(rlimit),
            Mode::V2 {
                parent,
                memory,
                cpu,
                ..
            } => {
                let dir = parent.join(&name);
                let made = create(&dir).and_then(|()| {
                    if *memory {
                        write(&dir, "memory.max", &memory_bytes.to_string())?;
                        // No swap beyond the limit, so exceeding it is an OOM kill, as on AWS.
                        // Absent where swap is not accounted, and then there is nothing to cap.
                        write_if_present(&dir, "memory.swap.max", "0")?;
                    }
                    if *cpu {
                        write(
                            &dir,
                            "cpu.max",
                            &format!("{quota_us} {CGROUP_CPU_PERIOD_US}"),
                        )?;
                    }
                    Ok(())
                });
                made.map(|()| AttemptCgroup {
                    memory: memory.then(|| dir.clone()),
                    dirs: vec![dir],
                    v2: true,
                })
            }
            Mode::V1 { memory, cpu, .. } => {
                let mut cgroup = AttemptCgroup {
                    dirs: Vec::new(),
                    memory: None,
                    v2: false,
                };
                let made = (|| {
                    if let Some(parent) = memory {
                        let dir = parent.join(&name);
                        create(&dir)?;
                        cgroup.dirs.push(dir.clone());
                        // The memory limit first: memsw may never be below it.
                        write(&dir, "memory.limit_in_bytes", &memory_bytes.to_string())?;
                        // Memory plus swap equal to memory: no swap beyond the limit. Absent
                        // where the kernel does not account swap.
                        write_if_present(
                            &dir,
                            "memory.memsw.limit_in_bytes",
                            &memory_bytes.to_string(),
                        )?;
                        cgroup.memory = Some(dir);
                    }
                    if let Some(parent) = cpu {
                        let dir = parent.join(&name);
                        create(&dir)?;
                        cgroup.dirs.push(dir.clone());
                        write(&dir, "cpu.cfs_period_us", &CGROUP_CPU_PERIOD_US.to_string())?;
                        write(&dir, "cpu.cfs_quota_us", &quota_us.to_string())?;
                    }
                    Ok(())
                })();
                match made {
                    Ok(()) => Ok(cgroup),
                    Err(err) => {
                        cgroup.remove();
                        Err(err)
                    }
                }
            }
        };
        let cgroup = match cgroup {
            Ok(cgroup) => cgroup,
            Err(err) => {
                tracing::warn!(%err, attempt_id, "cannot set up the attempt's cgroup; it runs with rlimits only (memory), CPU not enforced");
                return no_cgroup(rlimit);
            }
        };
        let procs: io::Result<Vec<File>> = cgroup
            .dirs
            .iter()
            .map(|dir| {
                OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
            })
            .collect();
        let procs_paths = cgroup
            .dirs
            .iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect();
        match procs {
            Ok(procs) => Placement {
                procs_paths,
                // Memory not limited by the cgroup (v1 without the memory hierarchy) is limited
                // by the rlimit.
                data_limit_bytes: cgroup.memory.is_none().then_some(rlimit).flatten(),
                cgroup: Some(cgroup),
                procs,
            },
            Err(err) => {
                tracing::warn!(%err, attempt_id, "cannot open the attempt's cgroup.procs; it runs with rlimits only (memory), CPU not enforced");
                cgroup.remove();
                no_cgroup(rlimit)
            }
        }
    }

    /// Kills whatever is in this agent's cgroups (those of its home) and removes them: a
    /// previous run that crashed left them. Returns the attempt ids found.
    pub(crate) fn remove_leftovers(&self) -> Vec<String> {
        let parents: Vec<(&Path, bool)> = match &self.mode {
            Mode::V2 { parent, .. } => vec![(parent.as_path(), true)],
            Mode::V1 { memory, cpu, .. } => [memory, cpu]
                .into_iter()
                .flatten()
                .map(|parent| (parent.as_path(), false))
                .collect(),
            Mode::Rlimits { .. } => Vec::new(),
        };
        let prefix = format!("{}.", self.home);
        let mut found = Vec::new();
        for (parent, v2) in parents {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(attempt_id) = name.strip_prefix(&prefix) else {
                    continue;
                };
                let cgroup = AttemptCgroup {
                    dirs: vec![entry.path()],
                    memory: None,
                    v2,
                };
                cgroup.empty();
                cgroup.remove();
                if !found.iter().any(|known| known == attempt_id) {
                    found.push(attempt_id.to_owned());
                }
            }
        }
        found
    }
}

impl Placement {
    /// Runs in the child between fork and exec: moves it into the attempt's cgroup and sets the
    /// rlimit fallback. Writing "0" to `cgroup.procs` moves the writing process itself. This is
    /// what makes placement race-free: the job's program has not started yet, so nothing it
    /// forks or allocates can escape the cgroup or be left unaccounted, and a failure here fails
    /// the spawn before any of the job ran (the runner then starts it again without the
    /// cgroup). Only async-signal-safe calls (write, setrlimit) on descriptors opened before the
    /// fork.
    pub(crate) fn enter_fn(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let fds: Vec<RawFd> = self.procs.iter().map(AsRawFd::as_raw_fd).collect();
        let data_limit = self.data_limit_bytes;
        move || {
            for fd in &fds {
                // SAFETY: the descriptor stays open until the spawn returns (`Placement` outlives
                // it); write only reads the one-byte buffer.
                if unsafe { libc::write(*fd, b"0".as_ptr().cast(), 1) } != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(bytes) = data_limit {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                // SAFETY: setrlimit reads the struct only. Lowering a limit cannot fail for lack
                // of privilege; any failure leaves the job unlimited rather than not run.
                unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
            }
            Ok(())
        }
    }

    /// Whether the child has to run the pre-exec step at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.procs.is_empty() && self.data_limit_bytes.is_none()
    }
}

impl AttemptCgroup {
    /// The pids in the attempt's cgroup (in any of its hierarchies).
    pub(crate) fn pids(&self) -> Vec<libc::pid_t> {
        let mut pids: Vec<libc::pid_t> = self
            .dirs
            .iter()
            .filter_map(|dir| fs::read_to_string(dir.join("cgroup.procs")).ok())
            .flat_map(|procs| {
                procs
                    .lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends `signal` to every process in the cgroup, including those that left the job's
    /// process group (setsid).
    pub(crate) fn signal_all(&self, signal: libc::c_int) {
        for pid in self.pids() {
            // SAFETY: kill has no memory-safety preconditions. A pid read from cgroup.procs is
            // in the cgroup, i.e. of this attempt, until it is reaped.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Kills everything in the cgroup and waits (bounded by `CGROUP_EMPTY_WAIT_MS`) until it is
    /// empty: with v2's `cgroup.kill` where the kernel has it (one write, no race with forks),
    /// else SIGKILL to every pid listed, again until none is left, since a process may fork
    /// between the read and the kill. Returns the pids it signalled, to be reaped. Blocking.
    pub(crate) fn empty(&self) -> Vec<libc::pid_t> {
        let mut signalled = Vec::new();
        let kill_file = self.dirs.first().map(|dir| dir.join("cgroup.kill"));
        let one_write = self.v2
            && kill_file
                .as_ref()
                .is_some_and(|file| fs::write(file, "1").is_ok());
        let deadline = Instant::now() + Duration::from_millis(CGROUP_EMPTY_WAIT_MS);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return signalled;
            }
            if Instant::now() >= deadline {
                tracing::warn!(cgroup = ?self.dirs, left = ?pids, "processes of the attempt survive SIGKILL; its cgroup is left for the next start");
                return signalled;
            }
            if !one_write {
                for pid in pids {
                    // SAFETY: as in `signal_all`.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    if !signalled.contains(&pid) {
                        signalled.push(pid);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(CGROUP_EMPTY_POLL_MS));
        }
    }

    /// Whether the kernel's OOM killer killed a process of the attempt: v2's `oom_kill` in
    /// memory.events, v1's `oom_kill` in memory.oom_control (kernel 4.13 and later; before it,
    /// a limit hit recorded in memory.failcnt while the cgroup was under OOM).
    pub(crate) fn oom_killed(&self) -> bool {
        let Some(dir) = &self.memory else {
            return false;
        };
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let Ok(text) = fs::read_to_string(dir.join(file)) else {
            return false;
        };
        let field = |name: &str| {
            text.lines().find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse::<u64>().ok())?
            })
        };
        match field("oom_kill") {
            Some(kills) => kills > 0,
            None => {
                field("under_oom").is_some_and(|n| n > 0)
                    || fs::read_to_string(dir.join("memory.failcnt"))
                        .ok()
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
            }
        }
    }

    /// Removes the cgroup's directories. Only empty cgroups can be removed; one that is not
    /// (see [`AttemptCgroup::empty`]) is logged and left for the next start.
    pub(crate) fn remove(&self) {
        for dir in &self.dirs {
            if let Err(err) = fs::remove_dir(dir) {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(%err, dir = %dir.display(), "cannot remove the attempt's cgroup; the next start of the agent removes it");
                }
            }
        }
    }
}

fn detect_v2(mount: &Path) -> Mode {
    let available = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    let has = |name: &str| available.split_whitespace().any(|c| c == name);
    let parent = mount.join(PARENT);
    if let Err(err) = create(&parent) {
        return Mode::Rlimits {
            why: format!(
                "cannot create {} ({err}); run barge as root or give it a delegated cgroup",
                parent.display()
            ),
        };
    }
    let mut missing = Vec::new();
    let mut enable = |controller: &str| -> bool {
        if !has(controller) {
            missing.push(format!(
                "{controller} controller not available in {CGROUP_MOUNT}/cgroup.controllers"
            ));
            return false;
        }
        let on = format!("+{controller}");
        // The root hands the controller to `barge`, which hands it to the attempts.
        let enabled = write(mount, "cgroup.subtree_control", &on)
            .and_then(|()| write(&parent, "cgroup.subtree_control", &on));
        if let Err(err) = enabled {
            missing.push(format!(
                "cannot enable {controller} in cgroup.subtree_control ({err})"
            ));
            return false;
        }
        true
    };
    let memory = enable("memory");
    let cpu = enable("cpu");
    if !memory && !cpu {
        return Mode::Rlimits {
            why: missing.join("; "),
        };
    }
    Mode::V2 {
        parent,
        memory,
        cpu,
        missing: (!missing.is_empty()).then(|| missing.join("; ")),
    }
}

fn detect_v1(mount: &Path) -> Mode {
    let mut missing = Vec::new();
    let mut usable = |controller: &str, probe: &str| -> Option<PathBuf> {
        let hierarchy = mount.join(controller);
        if !hierarchy.join(probe).exists() {
            missing.push(format!(
                "no {controller} hierarchy at {}",
                hierarchy.display()
            ));
            return None;
        }
        let parent = hierarchy.join(PARENT);
        match create(&parent) {
            Ok(()) => Some(parent),
            Err(err) => {
                missing.push(format!(
                    "cannot create {} ({err}); run barge as root",
                    parent.display()
                ));
                None
            }
        }
    };
    let memory = usable("memory", "memory.limit_in_bytes");
    let cpu = usable("cpu", "cpu.cfs_quota_us");
    if memory.is_none() && cpu.is_none() {
        return Mode::Rlimits {
            why: missing.join("; "),
        };
    }
    Mode::V1 {
        memory,
        cpu,
        missing: (!missing.is_empty()).then(|| missing.join("; ")),
    }
}

/// Creates a cgroup directory; one that exists already is fine (a parent made by an earlier run).
fn create(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Writes one value to a cgroup file, naming the file in the error.
fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut handle| handle.write_all(value.as_bytes()))
        .map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("writing {value:?} to {}: {err}", path.display()),
            )
        })
}

fn write_if_present(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    if dir.join(file).exists() {
        write(dir, file, value)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// A fresh home id, so that tests never touch each other's cgroups or an agent's.
    fn home() -> String {
        format!("test{}", uuid::Uuid::new_v4().simple())
    }

    fn spawn_in(placement: &Placement, script: &str) -> std::process::Child {
        let mut command = std::process::Command::new("sh");
        command.args(["-c", script]);
        // SAFETY: the hook only makes async-signal-safe calls.
        unsafe { command.pre_exec(placement.enter_fn()) };
        command.spawn().unwrap()
    }

    #[test]
    fn the_rlimit_fallback_refuses_memory_beyond_the_job_and_its_headroom() {
        let limits = Limits::rlimits_only(&home(), "test");
        assert_eq!(
            limits.note(),
            "limits: rlimits only (memory); CPU not enforced: test"
        );
        let placement = limits.prepare("rl", 1000, 32);
        assert!(placement.cgroup.is_none());
        // 200 MB held by tail is far beyond 32 MiB plus the headroom: its allocation fails.
        let over = spawn_in(
            &placement,
            "head -c 200000000 /dev/zero | tail -c 200000000 >/dev/null",
        )
        .wait()
        .unwrap();
        assert!(!over.success(), "tail got 200 MB under a 32 MiB rlimit");
        let within = spawn_in(
            &placement,
            "head -c 1000000 /dev/zero | tail -c 1000000 >/dev/null",
        )
        .wait()
        .unwrap();
        assert!(within.success(), "1 MB refused under a 32 MiB rlimit");
    }

    #[test]
    fn leftover_cgroups_of_this_home_are_emptied_and_removed_and_others_spared() {
        let (mine, theirs) = (home(), home());
        let limits = Limits::detect(&mine);
        if !limits.note().contains("cgroup") {
            eprintln!("skipped: no usable cgroups here ({})", limits.note());
            return;
        }
        let placement = limits.prepare("left", 1000, 64);
        let cgroup = placement.cgroup.clone().unwrap();
        // A process that left its group, as a crashed agent's job may have.
        let mut child = spawn_in(&placement, "exec setsid sleep 300");
        let other = Limits::detect(&theirs).prepare("spared", 1000, 64);
        let spared = other.cgroup.clone().unwrap();
        while cgroup.pids().is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            Limits::detect(&mine).remove_leftovers(),
            vec!["left".to_string()]
        );
        assert!(child.wait().is_ok());
        assert!(cgroup.pids().is_empty());
        assert!(
            cgroup.dirs.iter().all(|dir| !dir.exists()),
            "{:?}",
            cgroup.dirs
        );
        assert!(
            spared.dirs.iter().all(|dir| dir.exists()),
            "another home's cgroup went"
        );
        spared.remove();
    }
}
