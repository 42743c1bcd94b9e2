//! One `barge up` under test: a free loopback port, a fresh data directory, its output in a
//! log file beside the data directory, stopped with SIGTERM then SIGKILL, and everything removed
//! at the end.

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
/// Between two `GET /health` attempts while waiting for readiness.
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// From SIGTERM to SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of the server's log shown when something went wrong.
pub const LOG_TAIL_LINES: usize = 30;

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub barge: PathBuf,
    pub agent_vcpus: u64,
    pub agent_memory_mib: u64,
    /// `barge up --runner`: `process` for the scenarios that run host commands (`true`),
    /// `docker` for the container scenario.
    pub runner: &'static str,
}

pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    root: PathBuf,
    log_path: PathBuf,
}

impl Server {
    /// Starts `barge up` and waits until `GET /health` answers 200.
    pub async fn start(config: &ServerConfig) -> Result<Server> {
        let root = fresh_temp_dir()?;
        let data_dir = root.join("data");
        let log_path = root.join("server.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let port = free_loopback_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&config.barge)
            .arg("up")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--agent-vcpus")
            .arg(config.agent_vcpus.to_string())
            .arg("--agent-memory-mib")
            .arg(config.agent_memory_mib.to_string())
            .arg("--runner")
            .arg(config.runner)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&root);
                return Err(e).with_context(|| format!("starting {}", config.barge.display()));
            }
        };
        let mut server = Server {
            addr,
            child,
            root,
            log_path,
        };
        if let Err(e) = server.wait_ready().await {
            let tail = server.log_tail();
            server.stop().await;
            bail!("barge up did not become ready: {e:#}\n--- the last lines of the server's log ---\n{tail}");
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("the barge server exited early ({status})"),
        }
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
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        if lines.is_empty() {
            return "(the server printed nothing)".to_string();
        }
        lines[start..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `STOP_GRACE`; then removes the data directory.
    pub async fn stop(mut self) {
        self.terminate().await;
        let _ = fs::remove_dir_all(&self.root);
    }

    async fn terminate(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "barge-bench: the server (pid {}) ignored SIGTERM for {STOP_GRACE:?}; sending SIGKILL",
            self.pid()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    /// The safety net when a scenario unwinds without `stop`: never leave a server behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
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

    #[test]
    fn temp_dirs_are_fresh() {
        let a = fresh_temp_dir().unwrap();
        let b = fresh_temp_dir().unwrap();
        assert_ne!(a, b);
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }
}
