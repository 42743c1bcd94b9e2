//! Starting a job's process without forking the agent. Entering the attempt's cgroup (and
//! setting the rlimit fallback) must happen between fork and exec, and a hook there makes the
//! standard library fork the whole agent instead of using posix_spawn; in `barge up` the agent
//! is the server, with every job in memory, and copying its page tables (then faulting every
//! page it writes afterwards) cost more than the jobs themselves. So where the binary can run
//! itself as a launcher, the job is started as `barge __exec-limited … -- PROGRAM ARGS` with
//! posix_spawn: the small launcher enters the cgroup, sets the rlimit and execs the job, keeping
//! its pid, process group, environment and pipes. Without a launcher (the agent crate's own
//! tests), the fork-and-hook path is used.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The first argument that makes the binary a launcher.
pub const LAUNCHER_ARG: &str = "__exec-limited";

static LAUNCHER: OnceLock<PathBuf> = OnceLock::new();

/// Says which binary runs as the launcher (the `barge` binary itself; see [`exec_limited`]).
pub fn set_launcher(binary: PathBuf) {
    let _ = LAUNCHER.set(binary);
}

pub(crate) fn launcher() -> Option<&'static Path> {
    LAUNCHER.get().map(PathBuf::as_path)
}

/// The launcher's arguments before the job's program.
pub(crate) fn launcher_args(procs: &[PathBuf], data_limit_bytes: Option<u64>) -> Vec<OsString> {
    let mut args = vec![OsString::from(LAUNCHER_ARG)];
    for path in procs {
        args.push("--cgroup-procs".into());
        args.push(path.into());
    }
    if let Some(bytes) = data_limit_bytes {
        args.push("--rlimit-data".into());
        args.push(bytes.to_string().into());
    }
    args.push("--".into());
    args
}

/// Whether `program` can be started: found on `path` (or as given, when it names a file), so
/// that a missing program fails the start, as it does without the launcher, instead of
/// starting a launcher that can only exit 127.
pub(crate) fn resolves(program: &str, path: Option<&OsStr>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    let path = path
        .map(OsStr::to_os_string)
        .or_else(|| std::env::var_os("PATH"));
    path.is_some_and(|p| std::env::split_paths(&p).any(|dir| executable(&dir.join(program))))
}

/// The launcher (`barge __exec-limited [--cgroup-procs FILE]… [--rlimit-data BYTES] -- PROGRAM
/// ARGS…`): enters each cgroup by writing "0" to its `cgroup.procs`, lowers RLIMIT_DATA, and
/// execs the program. A cgroup it cannot enter is said on the job's stderr and the job runs
/// without it (as the fork path runs it again without the cgroup). Never returns.
pub fn exec_limited(args: &[OsString]) -> ! {
    let mut procs: Vec<&OsStr> = Vec::new();
    let mut data_limit: Option<u64> = None;
    let mut rest = args.iter();
    let program = loop {
        match rest.next().map(|a| a.as_bytes()) {
            Some(b"--cgroup-procs") => match rest.next() {
                Some(path) => procs.push(path),
                None => fail("--cgroup-procs needs a file"),
            },
            Some(b"--rlimit-data") => {
                data_limit = rest.next().and_then(|v| v.to_str()?.parse().ok());
                if data_limit.is_none() {
                    fail("--rlimit-data needs a number of bytes");
                }
            }
            Some(b"--") => match rest.next() {
                Some(program) => break program,
                None => fail("no program after --"),
            },
            _ => fail("usage: barge __exec-limited [--cgroup-procs FILE]... [--rlimit-data BYTES] -- PROGRAM [ARGS]..."),
        }
    };
    for path in procs {
        if let Err(err) = std::fs::write(path, b"0") {
            eprintln!(
                "barge: this job runs without its cgroup's limits: cannot enter {}: {err}",
                Path::new(path).display()
            );
            break;
        }
    }
    if let Some(bytes) = data_limit {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        // SAFETY: setrlimit reads the struct only; lowering a limit needs no privilege, and a
        // failure leaves the job unlimited rather than not run.
        unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
    }
    let err = std::process::Command::new(program).args(rest).exec();
    eprintln!("barge: cannot run {}: {err}", Path::new(program).display());
    std::process::exit(127)
}

fn fail(message: &str) -> ! {
    eprintln!("barge __exec-limited: {message}");
    std::process::exit(126)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_arguments_round_trip_what_the_launcher_parses() {
        let args = launcher_args(&[PathBuf::from("/a/cgroup.procs")], Some(1024));
        assert_eq!(
            args,
            [
                "__exec-limited",
                "--cgroup-procs",
                "/a/cgroup.procs",
                "--rlimit-data",
                "1024",
                "--"
            ]
            .map(OsString::from)
        );
        assert_eq!(
            launcher_args(&[], None),
            ["__exec-limited", "--"].map(OsString::from)
        );
    }

    #[test]
    fn programs_resolve_on_the_path_or_as_files() {
        assert!(resolves("sh", Some(OsStr::new("/bin:/usr/bin"))));
        assert!(!resolves(
            "no-such-program-here",
            Some(OsStr::new("/bin:/usr/bin"))
        ));
        assert!(resolves("/bin/sh", None));
        assert!(!resolves("/nonexistent/sh", None));
        assert!(!resolves("sh", Some(OsStr::new("/nonexistent"))));
    }
}
