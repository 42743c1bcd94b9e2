//! A real `barge up` and a real headless Chromium (through chromedriver) per test, plus the
//! few bounded waits and the screenshot store the tests share.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

/// Upper bound on every wait for a server, a page or a job. Generous: the tests assert
/// behaviour, never speed.
pub const WAIT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(150);
const LOG_TAIL_LINES: usize = 60;

/// One browser at a time: a Chromium is heavy, and the machines running the tests are small.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn barge_bin() -> PathBuf {
    match std::env::var_os("BARGE_BIN") {
        Some(path) => PathBuf::from(path),
        None => workspace().join("target/release/barge"),
    }
}

fn program(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "barge-console-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Starts `cmd` in a process group of its own, so that dropping the guard ends it and all
/// it started (chromedriver's Chromium, a job's processes).
fn spawn_group(cmd: &mut Command) -> std::io::Result<Child> {
    // SAFETY: setpgid is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn stop_group(child: &mut Child, sigterm_first: bool) {
    let pgid = child.id() as i32;
    if sigterm_first {
        // SAFETY: signals our own child's process group.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}

/// A plain HTTP/1.1 exchange (no keep-alive): (status, headers, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to barge");
    s.set_read_timeout(Some(WAIT)).ok();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read answer");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A running `barge up` (process runner, 4 vCPUs). Dropping it stops the server and removes
/// its directory; a failing test first prints the end of the server's log.
pub struct Barge {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl Barge {
    /// Without keys: the console is open, as on any loopback server without them.
    pub fn start() -> Barge {
        Barge::start_with_keys(None)
    }

    /// With one access key (BARGE_ACCESS_KEY_ID / BARGE_SECRET_ACCESS_KEY): requests must be
    /// signed and the console asks people to sign in.
    pub fn start_with_keys(key: Option<(&str, &str)>) -> Barge {
        Barge::start_with(key, &[])
    }

    /// With extra environment (e.g. `BARGE_TEST_SCHEDULE_CLOCK_FILE`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Barge {
        Barge::start_with(None, env)
    }

    fn start_with(key: Option<(&str, &str)>, env: &[(&str, &str)]) -> Barge {
        let bin = barge_bin();
        assert!(
            bin.is_file(),
            "barge binary not found at {}: run `cargo build --release -p barge` first, or set BARGE_BIN",
            bin.display()
        );
        let dir = temp_dir("server");
        let addr = free_port();
        let log = std::fs::File::create(dir.join("barge.log")).expect("create barge.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("up")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--agent-vcpus",
                "4",
                "--agent-memory-mib",
                "4096",
                "--runner",
                "process",
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("BARGE_") {
                cmd.env_remove(k);
            }
        }
        if let Some((id, secret)) = key {
            cmd.env("BARGE_ACCESS_KEY_ID", id)
                .env("BARGE_SECRET_ACCESS_KEY", secret);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = spawn_group(&mut cmd).expect("start barge");
        let mut barge = Barge { child, dir, addr };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = barge.child.try_wait().expect("try_wait") {
                panic!("barge exited ({status}) before /health answered");
            }
            if TcpStream::connect(addr).is_ok() && http(addr, "GET", "/health", "").0 == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "barge did not answer /health in {WAIT:?}"
            );
            std::thread::sleep(POLL);
        }
        barge
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An AWS Batch call, unsigned (only on a server without keys). Panics unless 200.
    pub fn api(&self, operation: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, _, text) = http(
            self.addr,
            "POST",
            &format!("/v1/{operation}"),
            &body.to_string(),
        );
        assert_eq!(status, 200, "{operation}: {text}");
        serde_json::from_str(&text).expect("JSON answer")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("barge.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Barge {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- end of barge's log ---\n{}", self.log_tail());
        }
        stop_group(&mut self.child, true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// chromedriver and the headless Chromium it drives (`--no-sandbox`: the tests run as root;
/// downloads disabled). Dropping it ends both.
pub struct Browser {
    driver: Child,
    dir: PathBuf,
    pub client: Client,
}

impl Browser {
    pub async fn start() -> Browser {
        let driver_bin = program("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = program("CHROMIUM", "/usr/bin/chromium");
        assert!(
            driver_bin.is_file() && chromium.is_file(),
            "chromedriver ({}) and chromium ({}) are needed: apt-get install chromium chromium-driver \
             (scripts/test.sh does), or set CHROMEDRIVER and CHROMIUM",
            driver_bin.display(),
            chromium.display()
        );
        let dir = temp_dir("browser");
        let port = free_port().port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("create log");
        let driver = spawn_group(
            Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log),
        )
        .expect("start chromedriver");
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen in {WAIT:?}"
            );
            std::thread::sleep(POLL);
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", dir.join("profile").display()),
                ],
                // 3: no downloads at all.
                "prefs": { "download_restrictions": 3, "download.prompt_for_download": false },
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("open a Chromium session through chromedriver");
        Browser {
            driver,
            dir,
            client,
        }
    }

    /// Saves a screenshot of the page as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = workspace().join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("create target/console-screenshots");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Waits (bounded) for an element: after a click, the next page may still be loading.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) => return e,
                Err(e) if Instant::now() >= deadline => {
                    panic!("no element {css} within {WAIT:?}: {e}")
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.expect("element text")
    }

    pub async fn value(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .is_empty()
    }

    /// Clicks `css` and waits (bounded) until `watch`'s text is no longer `before`: the
    /// next page has replaced this one.
    pub async fn click_and_wait_change(&self, css: &str, watch: &str) {
        let before = self.text(watch).await;
        self.click(css).await;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(watch)).await {
                if e.text().await.is_ok_and(|t| t != before) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css} did not change {watch}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Replaces a text field's content.
    pub async fn fill(&self, name: &str, value: &str) {
        let e = self.wait_for(&format!("[name=\"{name}\"]")).await;
        e.clear().await.expect("clear");
        e.send_keys(value).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.expect("click");
    }

    /// The page's path (and query).
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Waits (bounded) until `css`'s text contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                last = e.text().await.unwrap_or_default();
                if last.contains(needle) {
                    return last;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("{css} did not come to contain {needle:?} within {WAIT:?}; last text: {last:?}");
    }

    /// Ends the browser session, then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop_group(&mut self.driver, false);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
