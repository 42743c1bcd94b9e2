//! The processes under test: one control plane (`barge up`, or `barge server` with extra
//! arguments such as `--database-url`) on a free loopback port with a fresh data directory, and
//! `barge agent`s joined to it. Each one's output goes to a log file beside its data directory;
//! each is stopped with SIGTERM, then SIGKILL after a bound, and its directory removed, also
//! when a scenario fails or runs past its deadline.

use std::ffi::OsString;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::StatusCode;

use crate::http::Conn;

/// From spawning the server to `GET /health` answering 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two `GET /health` attempts while waiting for readiness, and between two looks at
/// the agents' logs while waiting for them to register.
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// From spawning the agents to every one of them having registered. An agent retries with
/// backoff while the server cannot be reached, so a healthy one registers within a second.
pub const AGENT_REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// From SIGTERM to SIGKILL. A remote agent stops its attempts within 2 s of SIGTERM, reports
/// their ends and deregisters, well inside this.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Between two looks at whether the processes being stopped have exited.
pub const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Lines of a process's log shown when something went wrong.
pub const LOG_TAIL_LINES: usize = 30;
/// What agents log: warnings, and the remote loop's info lines, where "registered" is; the
/// per-attempt lines at info would cost the measurement a write per job.
pub const AGENT_LOG_FILTER: &str = "warn,barge_agent::remote=info";
/// The message the agent logs once the server has accepted it (crates/barge-agent/src/remote.rs).
pub const AGENT_REGISTERED_MESSAGE: &str = "registered";

/// Which control plane to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plane {
    /// `barge up`: the control plane and a local agent of the config's size and runner.
    Up,
    /// `barge server`: the control plane alone, whose capacity is the agents that join it,
    /// with extra arguments after the common ones (e.g. `--database-url URL`). They may hold a
    /// password, so they are never printed.
    Alone { extra_args: Vec<String> },
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub barge: PathBuf,
    /// The local agent's size (`barge up` only). The agents scenario splits it among its
    /// remote agents instead.
    pub agent_vcpus: u64,
    pub agent_memory_mib: u64,
    /// How jobs run: `process` for the scenarios that run host commands (`true`), `docker` for
    /// the container scenario. `barge up --runner`, or each remote agent's `--runner`.
    pub runner: &'static str,
    pub plane: Plane,
}

impl ServerConfig {
    /// `barge up` or `barge server`, for progress lines and errors.
    pub fn command_name(&self) -> &'static str {
        match self.plane {
            Plane::Up => "barge up",
            Plane::Alone { .. } => "barge server",
        }
    }

    /// The server's command line after the program.
    fn args(&self, addr: SocketAddr, data_dir: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = match &self.plane {
            Plane::Up => vec!["up".into()],
            Plane::Alone { .. } => vec!["server".into()],
        };
        args.extend([
            "--listen".into(),
            addr.to_string().into(),
            "--data-dir".into(),
            data_dir.into(),
        ]);
        match &self.plane {
            Plane::Up => args.extend([
                "--agent-vcpus".into(),
                self.agent_vcpus.to_string().into(),
                "--agent-memory-mib".into(),
                self.agent_memory_mib.to_string().into(),
                "--runner".into(),
                self.runner.into(),
            ]),
            Plane::Alone { extra_args } => args.extend(extra_args.iter().map(OsString::from)),
        }
        args
    }
}

/// One child process of the benchmark, its stdout and stderr in a log file. Dropping it stops
/// it (SIGTERM, then SIGKILL after `STOP_GRACE`), so that no path leaves one behind.
struct Proc {
    /// What it is, for messages: "the barge server", "agent bench-agent-2".
    what: String,
    child: Child,
    log_path: PathBuf,
}

impl Proc {
    fn spawn(
        what: String,
        program: &Path,
        args: &[OsString],
        envs: &[(&str, &str)],
        log_path: PathBuf,
    ) -> Result<Proc> {
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", what, program.display()))?;
        Ok(Proc {
            what,
            child,
            log_path,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited early ({status})", self.what),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines of its output.
    fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return format!("({} printed nothing)", self.what);
        }
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        stop_all(std::slice::from_mut(self));
    }
}

/// SIGTERM to each process still running, then SIGKILL to those still running `STOP_GRACE`
/// later; returns once all have exited. All are signalled first, so that N agents take one
/// grace, not N. Blocking: it runs in `Drop`, where nothing can be awaited; async callers go
/// through `stop_in_background`.
fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter_mut() {
        if p.running() {
            signal(p.pid(), libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while procs.iter_mut().any(Proc::running) && Instant::now() < deadline {
        std::thread::sleep(STOP_POLL_INTERVAL);
    }
    for p in procs.iter_mut() {
        if p.running() {
            eprintln!(
                "barge-bench: {} (pid {}) ignored SIGTERM for {STOP_GRACE:?}; sending SIGKILL",
                p.what,
                p.pid()
            );
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Runs a blocking stop (a `Drop` that calls `stop_all`) on tokio's blocking pool, so that the
/// runtime's workers keep serving other tasks meanwhile.
async fn stop_in_background<T: Send + 'static>(owner: T) {
    let _ = tokio::task::spawn_blocking(move || drop(owner)).await;
}

pub struct Server {
    pub addr: SocketAddr,
    proc: Proc,
    root: PathBuf,
}

impl Server {
    /// Starts the config's control plane and waits until `GET /health` answers 200.
    pub async fn start(config: &ServerConfig) -> Result<Server> {
        let root = fresh_temp_dir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()?));
        let spawned = Proc::spawn(
            "the barge server".to_string(),
            &config.barge,
            &config.args(addr, &root.join("data")),
            &[],
            root.join("server.log"),
        );
        let proc = match spawned {
            Ok(proc) => proc,
            Err(e) => {
                let _ = fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        let mut server = Server { addr, proc, root };
        if let Err(e) = server.wait_ready().await {
            let tail = server.log_tail();
            server.stop().await;
            bail!(
                "{} did not become ready: {e:#}\n--- the last lines of the server's log ---\n{tail}",
                config.command_name()
            );
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.ensure_running()?;
            if let Ok(mut conn) = Conn::connect(self.addr).await {
                if let Ok((StatusCode::OK, _)) = conn.get("/health").await {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "GET http://{}/health did not answer 200 within {READY_TIMEOUT:?}",
                    self.addr
                );
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// An error if the server process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.proc.ensure_running()
    }

    /// The server's resident memory now, from /proc/<pid>/status.
    pub fn memory(&self) -> Result<ProcMemory> {
        let path = format!("/proc/{}/status", self.pid());
        let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        ProcMemory::parse(&status).with_context(|| format!("no VmRSS/VmHWM in {path}"))
    }

    /// Waits until resident memory stops moving (two readings `interval` apart within 1 %), at
    /// most `limit`; the last reading.
    pub async fn settled_memory(
        &mut self,
        interval: Duration,
        limit: Duration,
    ) -> Result<ProcMemory> {
        let deadline = Instant::now() + limit;
        let mut last = self.memory()?;
        loop {
            tokio::time::sleep(interval).await;
            self.ensure_running()?;
            let now = self.memory()?;
            let moved = now.rss_kib.abs_diff(last.rss_kib);
            last = now;
            if moved * 100 <= now.rss_kib || Instant::now() >= deadline {
                return Ok(last);
            }
        }
    }

    /// The last lines of the server's output.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// SIGTERM, then SIGKILL after `STOP_GRACE`; then removes the data directory.
    pub async fn stop(self) {
        stop_in_background(self).await;
    }
}

impl Drop for Server {
    /// `stop`, and the safety net when a scenario unwinds without it: never leave a server or
    /// its directory behind.
    fn drop(&mut self) {
        stop_all(std::slice::from_mut(&mut self.proc));
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// How to start remote agents.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub barge: PathBuf,
    /// The server they join.
    pub server: SocketAddr,
    /// The (UNMANAGED) compute environment they are instances of.
    pub compute_environment: String,
    /// What each agent offers.
    pub vcpus: u64,
    pub memory_mib: u64,
    /// `barge agent --runner`.
    pub runner: &'static str,
}

impl FleetConfig {
    /// The id of agent `index`: fixed, so that logs and job details name it plainly.
    pub fn agent_id(index: usize) -> String {
        format!("bench-agent-{index}")
    }

    /// Agent `index`'s command line after the program.
    fn args(&self, index: usize, data_dir: &Path) -> Vec<OsString> {
        [
            "agent".into(),
            "--server".into(),
            format!("http://{}", self.server).into(),
            "--compute-environment".into(),
            self.compute_environment.clone().into(),
            "--agent-id".into(),
            Self::agent_id(index).into(),
            "--runner".into(),
            self.runner.into(),
            "--vcpus".into(),
            self.vcpus.to_string().into(),
            "--memory-mib".into(),
            self.memory_mib.to_string().into(),
            "--data-dir".into(),
            data_dir.into(),
        ]
        .into()
    }
}

/// `barge agent` processes on this host, each with its own data directory and log under one
/// fresh directory. Dropping the fleet stops them all (one grace for all) and removes it.
pub struct Fleet {
    agents: Vec<Proc>,
    root: PathBuf,
}

impl Fleet {
    /// Starts `count` agents and waits until each has logged that it registered.
    pub async fn start(config: &FleetConfig, count: usize) -> Result<Fleet> {
        let mut fleet = Fleet {
            agents: Vec::with_capacity(count),
            root: fresh_temp_dir()?,
        };
        for index in 0..count {
            let id = FleetConfig::agent_id(index);
            let spawned = Proc::spawn(
                format!("agent {id}"),
                &config.barge,
                &config.args(index, &fleet.root.join(&id)),
                // Plain text, so that the log can be searched for the registration.
                &[("BARGE_LOG", AGENT_LOG_FILTER), ("NO_COLOR", "1")],
                fleet.root.join(format!("{id}.log")),
            );
            match spawned {
                Ok(agent) => fleet.agents.push(agent),
                Err(e) => {
                    fleet.stop().await;
                    return Err(e);
                }
            }
        }
        if let Err(e) = fleet.wait_registered().await {
            let tails = fleet.log_tails();
            fleet.stop().await;
            bail!("{e:#}\n{tails}");
        }
        Ok(fleet)
    }

    async fn wait_registered(&mut self) -> Result<()> {
        let deadline = Instant::now() + AGENT_REGISTER_TIMEOUT;
        loop {
            self.ensure_running()?;
            let waiting: Vec<&str> = self
                .agents
                .iter()
                .filter(|a| !has_registered(&a.log()))
                .map(|a| a.what.as_str())
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not register with the server within {AGENT_REGISTER_TIMEOUT:?}",
                    waiting.join(", ")
                );
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// An error if any agent has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.agents.iter_mut().try_for_each(Proc::ensure_running)
    }

    /// The last lines of every agent's log, each under a heading, for error messages.
    pub fn log_tails(&self) -> String {
        self.agents
            .iter()
            .map(|a| {
                format!(
                    "--- the last lines of {}'s log ---\n{}",
                    a.what,
                    a.log_tail()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM to every agent (each stops its attempts and deregisters, so the server must
    /// still run), SIGKILL after `STOP_GRACE`; then removes their directories.
    pub async fn stop(self) {
        stop_in_background(self).await;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        stop_all(&mut self.agents);
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Whether an agent's log has the line of its registration: the message right after the
/// target, e.g. `… INFO barge_agent::remote: registered agent_id=…`. Other lines that mention
/// the word ("the server no longer knows this agent; registering again") do not count.
pub fn has_registered(log: &str) -> bool {
    let marker = format!(": {AGENT_REGISTERED_MESSAGE}");
    log.lines().any(|line| {
        line.split_once(&marker)
            .is_some_and(|(_, rest)| rest.is_empty() || rest.starts_with(' '))
    })
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, not yet
    // reaped, so it cannot have been reused.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Resident memory of a process, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcMemory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the most that was ever resident.
    pub hwm_kib: u64,
}

impl ProcMemory {
    pub fn parse(status: &str) -> Option<ProcMemory> {
        let field = |name: &str| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                let kib = rest.trim().strip_suffix("kB")?.trim();
                kib.parse::<u64>().ok()
            })
        };
        Some(ProcMemory {
            rss_kib: field("VmRSS")?,
            hwm_kib: field("VmHWM")?,
        })
    }
}

pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn free_loopback_port() -> Result<u16> {
    // The port is free when we look; the server binds it a moment later. A collision shows as
    // the server exiting early with its own message.
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A new, empty directory under the system temp dir, named after this process.
pub fn fresh_temp_dir() -> Result<PathBuf> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("barge-bench-{}-{n}-{nanos}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!(
        "could not create a fresh directory under {}",
        base.display()
    )
}

/// The barge binary to run: the one asked for, else `target/release/barge` under the current
/// directory, else `barge` beside this program (both are built into target/release).
pub fn resolve_barge(asked: Option<&Path>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match asked {
        Some(path) => vec![path.to_path_buf()],
        None => {
            let mut c = vec![PathBuf::from("target/release/barge")];
            if let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
            {
                c.push(dir.join("barge"));
            }
            c
        }
    };
    for candidate in &candidates {
        if candidate.is_file() {
            return Ok(fs::canonicalize(candidate).unwrap_or_else(|_| candidate.clone()));
        }
    }
    let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    bail!(
        "no barge binary at {}; build it with `cargo build --release -p barge` or pass --barge PATH",
        tried.join(" or ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_is_parsed() {
        let status = "Name:\tbarge\nVmPeak:\t  900000 kB\nVmHWM:\t   45678 kB\nVmRSS:\t   40000 kB\nThreads:\t9\n";
        assert_eq!(
            ProcMemory::parse(status),
            Some(ProcMemory {
                rss_kib: 40_000,
                hwm_kib: 45_678
            })
        );
        assert_eq!(ProcMemory::parse("Name:\tx\nVmRSS:\t1 kB\n"), None);
        assert_eq!(kib_to_mib(65_536), 64.0);
    }

    #[test]
    fn own_memory_is_readable() {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let m = ProcMemory::parse(&status).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let e = resolve_barge(Some(Path::new("/nonexistent/barge"))).unwrap_err();
        assert!(e.to_string().contains("--barge"), "{e}");
    }

    fn texts(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    fn config(plane: Plane) -> ServerConfig {
        ServerConfig {
            barge: PathBuf::from("/opt/barge"),
            agent_vcpus: 8,
            agent_memory_mib: 512,
            runner: "process",
            plane,
        }
    }

    #[test]
    fn up_gets_its_local_agent_and_server_gets_only_its_extra_args() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9000));
        let up = config(Plane::Up);
        assert_eq!(up.command_name(), "barge up");
        assert_eq!(
            texts(&up.args(addr, Path::new("/t/data"))),
            [
                "up",
                "--listen",
                "127.0.0.1:9000",
                "--data-dir",
                "/t/data",
                "--agent-vcpus",
                "8",
                "--agent-memory-mib",
                "512",
                "--runner",
                "process"
            ]
        );
        let alone = config(Plane::Alone {
            extra_args: vec!["--database-url".into(), "postgres://h/db".into()],
        });
        assert_eq!(alone.command_name(), "barge server");
        assert_eq!(
            texts(&alone.args(addr, Path::new("/t/data"))),
            [
                "server",
                "--listen",
                "127.0.0.1:9000",
                "--data-dir",
                "/t/data",
                "--database-url",
                "postgres://h/db"
            ]
        );
    }

    #[test]
    fn agents_join_the_server_with_their_share() {
        let fleet = FleetConfig {
            barge: PathBuf::from("/opt/barge"),
            server: SocketAddr::from(([127, 0, 0, 1], 9000)),
            compute_environment: "fleet".into(),
            vcpus: 16,
            memory_mib: 1024,
            runner: "process",
        };
        assert_eq!(
            texts(&fleet.args(2, Path::new("/t/bench-agent-2"))),
            [
                "agent",
                "--server",
                "http://127.0.0.1:9000",
                "--compute-environment",
                "fleet",
                "--agent-id",
                "bench-agent-2",
                "--runner",
                "process",
                "--vcpus",
                "16",
                "--memory-mib",
                "1024",
                "--data-dir",
                "/t/bench-agent-2"
            ]
        );
    }

    #[test]
    fn only_the_registration_line_counts() {
        let joined = "barge agent a: joining compute environment f at http://x with 1 vCPUs
            2026-01-01T00:00:00.000Z  INFO barge_agent::remote: registered agent_id=a compute_environment=f
";
        assert!(has_registered(joined));
        assert!(has_registered("INFO barge_agent::remote: registered"));
        assert!(!has_registered(
            "barge agent a: joining compute environment f at http://x with 1 vCPUs
"
        ));
        assert!(!has_registered(
            "WARN barge_agent::remote: cannot register yet e=connection refused retry_in_ms=100"
        ));
        assert!(!has_registered(
            "WARN barge_agent::remote: the server no longer knows this agent; registering again"
        ));
        assert!(!has_registered(
            "WARN barge_agent::remote: registeredness unknown"
        ));
        assert!(!has_registered(""));
    }

    #[tokio::test]
    async fn a_stopped_process_is_gone_and_one_that_exited_is_reported() {
        let dir = fresh_temp_dir().unwrap();
        let mut sleeper = Proc::spawn(
            "a sleeper".into(),
            Path::new("/bin/sleep"),
            &["60".into()],
            &[],
            dir.join("sleep.log"),
        )
        .unwrap();
        sleeper.ensure_running().unwrap();
        let pid = sleeper.pid();
        stop_in_background(sleeper).await;
        assert!(!Path::new(&format!("/proc/{pid}")).exists());

        let mut quick = Proc::spawn(
            "a quick one".into(),
            Path::new("/bin/sh"),
            &["-c".into(), "echo said; exit 3".into()],
            &[],
            dir.join("sh.log"),
        )
        .unwrap();
        let _ = quick.child.wait();
        let e = quick.ensure_running().unwrap_err().to_string();
        assert!(e.contains("a quick one exited early"), "{e}");
        assert_eq!(quick.log_tail(), "said");
        drop(quick);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn temp_dirs_are_fresh() {
        let a = fresh_temp_dir().unwrap();
        let b = fresh_temp_dir().unwrap();
        assert_ne!(a, b);
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }
}
