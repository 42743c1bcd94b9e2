//! A real `barge up` per test (own port, own temporary data directory) and an
//! `aws-sdk-batch` client pointed at it, plus the few bounded waits the tests share.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_batch::config::retry::RetryConfig;
use aws_sdk_batch::config::timeout::TimeoutConfig;
use aws_sdk_batch::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_batch::types::{JobDetail, JobStatus};
use aws_sdk_batch::Client;

/// Upper bound on every wait for a server or a job. Generous: the tests assert behaviour,
/// never speed.
pub const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// How long `barge` gets to stop after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of the server's log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

pub const REGION: &str = "us-east-1";
/// `barge up`'s default account id, which appears in every ARN.
pub const ACCOUNT: &str = "000000000000";

/// `arn:aws:batch:us-east-1:000000000000:<kind>/<name>`
pub fn arn(kind: &str, name: &str) -> String {
    format!("arn:aws:batch:{REGION}:{ACCOUNT}:{kind}/{name}")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as i64
}

/// `$BARGE_BIN`, else `<workspace>/target/release/barge`.
fn barge_bin() -> PathBuf {
    match std::env::var_os("BARGE_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/barge"),
    }
}

/// A running `barge up`. Dropping it stops the server (SIGTERM, then SIGKILL) and removes its
/// data directory; if the test is failing, the end of the server's log is printed first.
pub struct Barge {
    child: Child,
    dir: PathBuf,
    pub endpoint: String,
}

impl Barge {
    /// Starts `barge up` on a free loopback port with a 4 vCPU / 4096 MiB agent and waits
    /// (bounded) until `GET /health` answers 200.
    pub fn start() -> Barge {
        Barge::start_with(|_| Vec::new())
    }

    /// As `start`, with more arguments to `barge up`, made from the server's own temporary
    /// directory (where a test may write a file the arguments name).
    pub fn start_with(extra_args: impl FnOnce(&Path) -> Vec<String>) -> Barge {
        let bin = barge_bin();
        assert!(
            bin.is_file(),
            "barge binary not found at {}: run `cargo build --release -p barge` first \
             (scripts/test.sh does), or point BARGE_BIN at it",
            bin.display()
        );
        let dir = temp_dir();
        let addr = free_port();
        let log = std::fs::File::create(dir.join("barge.log")).expect("create barge.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("up")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--agent-vcpus", "4", "--agent-memory-mib", "4096"])
            // The tests run host commands, not images.
            .args(["--runner", "process"])
            .args(extra_args(&dir))
            // Jobs run in the directory barge was started from: keep them in the temp dir.
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BARGE_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // From here on the guard owns the process and the directory, even if we panic.
        let mut barge = Barge {
            child,
            dir,
            endpoint: format!("http://{addr}"),
        };
        barge.wait_healthy(addr);
        barge
    }

    fn wait_healthy(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + WAIT;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("barge exited ({status}) before /health answered");
            }
            match health(addr) {
                Ok(true) => return,
                Ok(false) => last = "a non-200 answer".into(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(POLL);
        }
        panic!("GET /health did not answer 200 within {WAIT:?} (last: {last})");
    }

    /// An SDK client for this server: us-east-1, static credentials, plain HTTP, no retries.
    pub fn client(&self) -> Client {
        self.client_with_key("barge", "barge")
    }

    /// `client`, signing with the given access key.
    pub fn client_with_key(&self, access_key_id: &str, secret_access_key: &str) -> Client {
        let config = aws_sdk_batch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "test",
            ))
            .endpoint_url(&self.endpoint)
            // The SDK is built without its default (TLS) client; the endpoint is http://.
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(20))
                    .build(),
            )
            .build();
        Client::from_conf(config)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("barge.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Barge {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SIGTERM lets barge stop its running jobs and shut down cleanly.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(POLL);
            }
            if self.child.try_wait().ok().flatten().is_none() {
                eprintln!("barge did not stop within {STOP_GRACE:?} of SIGTERM; sending SIGKILL");
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- barge log ({}, last {LOG_TAIL_LINES} lines) ---\n{}",
                self.endpoint,
                self.log_tail()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "barge-sdk-tests-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A port that was free a moment ago (the OS picks it; barge binds it right after).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// `GET /health` over a plain socket: Ok(true) on a 200.
fn health(addr: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200"))
}

/// The job as DescribeJobs shows it; panics if the server does not know it.
pub async fn describe_job(client: &Client, job_id: &str) -> JobDetail {
    let out = client
        .describe_jobs()
        .jobs(job_id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeJobs {job_id}: {e:?}"));
    out.jobs()
        .iter()
        .find(|j| j.job_id() == Some(job_id))
        .cloned()
        .unwrap_or_else(|| panic!("DescribeJobs does not know job {job_id}"))
}

/// Polls DescribeJobs until the job is in one of `wanted`, for at most [`WAIT`].
pub async fn wait_for_status(client: &Client, job_id: &str, wanted: &[JobStatus]) -> JobDetail {
    let deadline = Instant::now() + WAIT;
    loop {
        let job = describe_job(client, job_id).await;
        let status = job.status().cloned();
        if status.as_ref().is_some_and(|s| wanted.contains(s)) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {job_id} still {status:?} (reason {:?}) after {WAIT:?}; wanted one of {wanted:?}",
            job.status_reason()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until every job is SUCCEEDED or FAILED, for at most [`WAIT`].
pub async fn wait_all_done(client: &Client, job_ids: &[String]) -> Vec<JobDetail> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = client
            .describe_jobs()
            .set_jobs(Some(job_ids.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeJobs: {e:?}"));
        let jobs = out.jobs().to_vec();
        let done = jobs
            .iter()
            .filter(|j| matches!(j.status(), Some(JobStatus::Succeeded | JobStatus::Failed)))
            .count();
        if jobs.len() == job_ids.len() && done == jobs.len() {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} jobs finished after {WAIT:?} ({} described)",
            job_ids.len(),
            jobs.len()
        );
        tokio::time::sleep(POLL).await;
    }
}
