//! Container job overhead (issue 4): N trivial container jobs (`true` in `--image`) through
//! Barge's Docker runner, against `docker run --rm` of the same image N times, both with C
//! containers at a time, in the same invocation. Target: Barge's total within 15 % of plain
//! `docker run`.
//!
//! - Plain Docker: C workers, each running `docker run --rm <image> true` one after another
//!   until N have run; the total is from the first start to the last exit. The containers get
//!   the limits Barge gives a job of 1 vCPU and 16 MiB (`--cpus 1 --memory 16m
//!   --memory-swap 16m`), so both sides ask the engine for the same container; the CLI waits
//!   for the container's removal (`--rm`), as Barge's runner removes it before reporting the
//!   exit.
//! - Barge: one `barge up --runner docker --agent-vcpus C` for the whole scenario (started
//!   before any timing); each round submits N jobs of a definition of that image (1 vCPU,
//!   16 MiB) and times the first SubmitJob to the DescribeJobs poll that sees the last one
//!   finished (polls every `POLL_INTERVAL`).
//!
//! Fairness: one untimed warm-up container on each side first (image layers and the engine's
//! caches warm, the server's first dispatch done). Then `--container-rounds` rounds, each
//! running both sides once; the order alternates (docker, Barge; Barge, docker; ...), so with
//! an even number of rounds a drift in the machine's load (other builds on a shared host)
//! weighs on both sides alike. The idle Barge server runs during the docker side too. The
//! figures are the sums over all rounds; the per-round totals are in the overhead's note.
//!
//! Containers: the plain ones carry a label with a token of this run, Barge's carry the job id;
//! after the server has stopped, any container of this run still there is removed and counted
//! (target 0).
//!
//! Docker missing: the default run (no `--only`) includes this scenario only when a Docker
//! daemon answers `docker version`, and otherwise lists it as skipped with the reason; asked
//! for by name (`--only container`) it fails with that reason. The default image
//! (`DEFAULT_IMAGE`) is built with `docker import` from /bin/busybox (Debian's busybox-static)
//! when the engine does not have it; another `--image` must already be there (no registry is
//! reachable from these machines).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use tokio::task::JoinSet;

use super::{describe_jobs, run_token, status_histogram, Ctx, JobTimes, DEFAULT_QUEUE, DEFINITION};
use crate::http::Api;
use crate::load::{submit_jobs, SubmitPlan};
use crate::report::{Figure, Target};
use crate::server::{fresh_temp_dir, Server, ServerConfig};

/// The image used without `--image`; built from `BUSYBOX` when missing.
pub const DEFAULT_IMAGE: &str = "barge-bench/busybox:bench";
/// Debian's busybox-static puts its binary here (scripts/test.sh installs it).
pub const BUSYBOX: &str = "/bin/busybox";
/// The target: Barge's total at most this much above plain `docker run`, in percent.
pub const OVERHEAD_TARGET_PCT: f64 = 15.0;
/// What each job asks for, on both sides.
pub const JOB_VCPUS: u64 = 1;
pub const JOB_MEMORY_MIB: u64 = 16;
/// The label on the plain `docker run` containers, valued with a token of this run.
pub const RUN_LABEL: &str = "barge-bench.run";
/// The label the Docker runner puts on its containers (crates/barge-agent/src/runner/docker.rs).
pub const BARGE_JOB_LABEL: &str = "barge.job-id";
/// Limit on one docker CLI call (a `docker run` of `true` takes well under a second).
pub const DOCKER_CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Limit on `docker version` when deciding whether Docker answers.
pub const DOCKER_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two DescribeJobs polls of the round's jobs.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// No job finishing for this long means the run is stuck, not slow.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);
/// Between two progress lines on stderr.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

pub async fn run(ctx: &Ctx<'_>, figures: &mut Vec<Figure>) -> Result<()> {
    let args = ctx.args;
    let (jobs, concurrency, rounds) = (
        args.container_jobs,
        args.container_concurrency,
        args.container_rounds,
    );
    let image = args.image.as_str();
    if let Some(reason) = docker_unavailable().await {
        bail!("{reason}");
    }
    ensure_image(ctx, image).await?;
    ctx.progress(format!(
        "{rounds} rounds of {jobs} × `true` in {image}, {concurrency} at a time: `docker run --rm` \
         against barge up --runner docker --agent-vcpus {concurrency}"
    ));

    // Its own server config: the Docker runner, and as many vCPUs as containers at a time.
    let ctx = ctx.with_config(ServerConfig {
        runner: "docker",
        agent_vcpus: concurrency,
        ..ctx.server.clone()
    });
    let token = run_token();
    // Every job id submitted, kept outside the server's body so that the leftover check sees
    // them even when a round fails.
    let submitted: Mutex<Vec<String>> = Mutex::new(Vec::new());

    let measured = ctx
        .with_server(async |server: &mut Server| {
            let mut api = Api::connect(server.addr).await?;
            register_definition(&mut api, image).await?;

            // Warm-up, untimed: one container on each side.
            let warm = docker_phase(image, 1, 1, &token).await?;
            if warm.failed > 0 {
                bail!(
                    "the warm-up `docker run --rm {image} true` failed: {}",
                    warm.first_error.unwrap_or_default()
                );
            }
            let warm = barge_phase(&ctx, server, &mut api, 1, &submitted).await?;
            if let Some(job) = warm.details.iter().find(|j| j.status != "SUCCEEDED") {
                bail!(
                    "the warm-up job through Barge ended {}: {}",
                    job.status,
                    job.status_reason.as_deref().unwrap_or("(no statusReason)")
                );
            }
            ctx.progress("warm-up done (one container on each side)");

            let mut docker = Vec::new();
            let mut barge = Vec::new();
            for round in 0..rounds {
                // Alternate which side goes first: docker, Barge; Barge, docker; ...
                let barge_first = round % 2 == 1;
                for barge_side in [barge_first, !barge_first] {
                    if barge_side {
                        let phase = barge_phase(&ctx, server, &mut api, jobs, &submitted).await?;
                        ctx.progress(format!(
                            "round {}: Barge {jobs} jobs in {:.2} s ({} FAILED)",
                            round + 1,
                            phase.total.as_secs_f64(),
                            phase.failed_jobs()
                        ));
                        barge.push(phase);
                    } else {
                        let phase = docker_phase(image, jobs, concurrency, &token).await?;
                        ctx.progress(format!(
                            "round {}: docker run {jobs} containers in {:.2} s ({} failed)",
                            round + 1,
                            phase.total.as_secs_f64(),
                            phase.failed
                        ));
                        docker.push(phase);
                    }
                }
            }
            Ok((docker, barge))
        })
        .await;

    // The server has stopped: whatever of this run is still on the engine is a leftover.
    let job_ids: HashSet<String> = submitted
        .lock()
        .map(|ids| ids.iter().cloned().collect())
        .unwrap_or_default();
    let leftovers = remove_leftovers(&token, &job_ids).await;
    let (docker, barge) = measured?;
    let leftovers = leftovers?;
    if !leftovers.is_empty() {
        ctx.progress(format!(
            "{} containers were left behind, removed now: {}",
            leftovers.len(),
            leftovers.join(" ")
        ));
    }
    figures.extend(figures_of(
        &ctx,
        image,
        jobs,
        concurrency,
        &docker,
        &barge,
        &leftovers,
    ));
    Ok(())
}

/// None when a Docker daemon answers `docker version`, else why not.
pub async fn docker_unavailable() -> Option<String> {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(DOCKER_PROBE_TIMEOUT, cmd.output()).await {
        Err(_) => Some(format!(
            "the Docker daemon did not answer `docker version` within {} s",
            DOCKER_PROBE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("no docker CLI on this machine's PATH".to_string())
        }
        Ok(Err(e)) => Some(format!("cannot run the docker CLI: {e}")),
        Ok(Ok(out)) if out.status.success() => None,
        Ok(Ok(out)) => Some(format!(
            "the Docker daemon does not answer `docker version`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// One docker CLI call, bounded by `DOCKER_CLI_TIMEOUT`; killed when dropped.
async fn docker(args: &[&str]) -> Result<Output> {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(DOCKER_CLI_TIMEOUT, cmd.output()).await {
        Ok(out) => out.with_context(|| format!("running docker {}", args.join(" "))),
        Err(_) => bail!(
            "docker {} did not finish within {} s",
            args.join(" "),
            DOCKER_CLI_TIMEOUT.as_secs()
        ),
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// The image is on the local engine afterwards, or the error says how to get it there.
async fn ensure_image(ctx: &Ctx<'_>, image: &str) -> Result<()> {
    if docker(&["image", "inspect", "--format", "{{.Id}}", image])
        .await?
        .status
        .success()
    {
        return Ok(());
    }
    if image != DEFAULT_IMAGE {
        bail!(
            "image {image} is not on the local Docker engine and no registry is reachable: load \
             or build it there (docker load, docker import, docker build), or leave --image out \
             to use {DEFAULT_IMAGE}, which barge-bench builds from {BUSYBOX}"
        );
    }
    ctx.progress(format!(
        "building {image} with docker import of a rootfs holding {BUSYBOX}"
    ));
    let image = image.to_string();
    tokio::task::spawn_blocking(move || build_busybox_image(&image))
        .await
        .map_err(|e| anyhow!("building the image panicked: {e}"))?
}

/// `docker import` of a rootfs of /bin/busybox and its applet links (`true` among them), as
/// tests/e2e/test_22_docker.py builds its image.
fn build_busybox_image(image: &str) -> Result<()> {
    use std::process::Command;

    let busybox = Path::new(BUSYBOX);
    if !busybox.is_file() {
        bail!(
            "image {image} is missing and cannot be built: no {BUSYBOX}; install Debian's \
             busybox-static (`apt-get install busybox-static`; scripts/test.sh does), or pass \
             --image with a local image that has `true`"
        );
    }
    let root = fresh_temp_dir()?;
    let built = (|| -> Result<()> {
        for dir in ["bin", "tmp", "etc"] {
            std::fs::create_dir(root.join(dir))?;
        }
        std::fs::copy(busybox, root.join("bin/busybox"))
            .with_context(|| format!("copying {BUSYBOX}"))?;
        let list = Command::new(busybox)
            .arg("--list")
            .output()
            .with_context(|| format!("running {BUSYBOX} --list"))?;
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" && !applet.contains('/') {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
            }
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        )?;
        std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .context("running tar")?;
        let stdout = tar.stdout.take().context("tar has no stdout")?;
        let import = Command::new("docker")
            .args(["import", "-c", "ENV PATH=/bin", "-", image])
            .stdin(stdout)
            .output()
            .context("running docker import")?;
        let tar_status = tar.wait()?;
        if !import.status.success() {
            bail!(
                "docker import of {image} failed ({}): {}",
                import.status,
                stderr_of(&import)
            );
        }
        if !tar_status.success() {
            bail!("tar of the rootfs for {image} failed ({tar_status})");
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&root);
    built
}

/// A token naming this run's plain containers.
fn docker_run_args(label: &str, image: &str) -> Vec<String> {
    [
        "run",
        "--rm",
        "--label",
        label,
        "--cpus",
        &JOB_VCPUS.to_string(),
        "--memory",
        &format!("{JOB_MEMORY_MIB}m"),
        "--memory-swap",
        &format!("{JOB_MEMORY_MIB}m"),
        image,
        "true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One side's measurement of plain `docker run --rm`.
#[derive(Debug, Clone, Default)]
pub struct DockerPhase {
    /// From starting the first `docker run` to the last one's exit.
    pub total: Duration,
    /// How long each successful `docker run` took, CLI start to exit.
    pub runs: Vec<Duration>,
    pub failed: u64,
    pub first_error: Option<String>,
}

/// `jobs` × `docker run --rm <image> true`, `concurrency` at a time.
async fn docker_phase(
    image: &str,
    jobs: u64,
    concurrency: u64,
    token: &str,
) -> Result<DockerPhase> {
    let label = format!("{RUN_LABEL}={token}");
    let argv = Arc::new(docker_run_args(&label, image));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(jobs) {
        let (argv, next) = (argv.clone(), next.clone());
        workers.spawn(async move {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let mut phase = DockerPhase::default();
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                let t = Instant::now();
                let out = docker(&argv).await;
                let took = t.elapsed();
                let error = match out {
                    Ok(out) if out.status.success() => {
                        phase.runs.push(took);
                        continue;
                    }
                    Ok(out) => format!("docker run exited {}: {}", out.status, stderr_of(&out)),
                    Err(e) => format!("{e:#}"),
                };
                phase.failed += 1;
                phase.first_error.get_or_insert(error);
            }
            phase
        });
    }
    let mut all = DockerPhase::default();
    while let Some(worker) = workers.join_next().await {
        let phase = worker.map_err(|e| anyhow!("a docker run worker panicked: {e}"))?;
        all.runs.extend(phase.runs);
        all.failed += phase.failed;
        if all.first_error.is_none() {
            all.first_error = phase.first_error;
        }
    }
    all.total = started.elapsed();
    Ok(all)
}

async fn register_definition(api: &mut Api, image: &str) -> Result<()> {
    api.call(
        "RegisterJobDefinition",
        &json!({
            "jobDefinitionName": DEFINITION,
            "type": "container",
            "containerProperties": {
                "image": image,
                "command": ["true"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": JOB_VCPUS.to_string()},
                    {"type": "MEMORY", "value": JOB_MEMORY_MIB.to_string()}
                ]
            }
        }),
    )
    .await?;
    Ok(())
}

/// One side's measurement through Barge.
#[derive(Debug, Clone)]
pub struct BargePhase {
    /// From the first SubmitJob to the poll that saw the last job finished.
    pub total: Duration,
    /// Every accepted job as DescribeJobs showed it at the end.
    pub details: Vec<JobTimes>,
    /// Submissions not accepted, and the first answer of those.
    pub not_accepted: u64,
    pub first_error: Option<String>,
}

impl BargePhase {
    pub fn failed_jobs(&self) -> u64 {
        self.details
            .iter()
            .filter(|j| j.status != "SUCCEEDED")
            .count() as u64
            + self.not_accepted
    }
}

/// Submits `jobs` jobs of the container definition and waits until all have finished.
async fn barge_phase(
    ctx: &Ctx<'_>,
    server: &mut Server,
    api: &mut Api,
    jobs: u64,
    submitted: &Mutex<Vec<String>>,
) -> Result<BargePhase> {
    let plan = SubmitPlan {
        job_queue: DEFAULT_QUEUE.to_string(),
        job_definition: DEFINITION.to_string(),
        jobs,
        clients: ctx.args.clients.min(jobs),
    };
    let started = Instant::now();
    let load = submit_jobs(server.addr, &plan).await?;
    if let Ok(mut ids) = submitted.lock() {
        ids.extend(load.job_ids.iter().cloned());
    }
    if load.ok == 0 {
        bail!(
            "no SubmitJob was accepted; the first answer: {}",
            load.first_error.unwrap_or_default()
        );
    }
    let mut last_finished = 0;
    let mut last_change = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        server.ensure_running()?;
        let details = describe_jobs(api, &load.job_ids).await?;
        let finished = details
            .iter()
            .filter(|j| matches!(j.status.as_str(), "SUCCEEDED" | "FAILED"))
            .count();
        if finished >= load.job_ids.len() {
            return Ok(BargePhase {
                total: started.elapsed(),
                details,
                not_accepted: load.failed(),
                first_error: load.first_error,
            });
        }
        if finished != last_finished {
            last_finished = finished;
            last_change = Instant::now();
        } else if last_change.elapsed() >= STALL_LIMIT {
            bail!(
                "stuck: no container job finished for {} s; {finished} of {} done; {}",
                STALL_LIMIT.as_secs(),
                load.job_ids.len(),
                status_histogram(&details)
            );
        }
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            ctx.progress(format!(
                "Barge: {finished} of {} finished",
                load.job_ids.len()
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Removes every container of this run still on the engine: plain ones by their label, Barge's
/// by the job id in theirs (other Barge servers on the host keep theirs). Their ids.
async fn remove_leftovers(token: &str, job_ids: &HashSet<String>) -> Result<Vec<String>> {
    let plain = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label={RUN_LABEL}={token}"),
    ])
    .await?;
    if !plain.status.success() {
        bail!("docker ps failed: {}", stderr_of(&plain));
    }
    let barge = docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label={BARGE_JOB_LABEL}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{BARGE_JOB_LABEL}\"}}}}"),
    ])
    .await?;
    if !barge.status.success() {
        bail!("docker ps failed: {}", stderr_of(&barge));
    }
    let mut ids: Vec<String> = String::from_utf8_lossy(&plain.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    ids.extend(ours(&String::from_utf8_lossy(&barge.stdout), job_ids));
    if !ids.is_empty() {
        let mut argv = vec!["rm", "-f"];
        argv.extend(ids.iter().map(String::as_str));
        let removed = docker(&argv).await?;
        if !removed.status.success() {
            bail!(
                "docker rm -f of this run's leftover containers failed: {}",
                stderr_of(&removed)
            );
        }
    }
    Ok(ids)
}

/// The container ids of `docker ps --format '{{.ID}} {{.Label "barge.job-id"}}'` lines whose
/// job id is one of `job_ids`.
fn ours(ps: &str, job_ids: &HashSet<String>) -> Vec<String> {
    ps.lines()
        .filter_map(|line| line.trim().split_once(' '))
        .filter(|(_, job)| job_ids.contains(job.trim()))
        .map(|(id, _)| id.to_string())
        .collect()
}

fn mean_ms(durations: impl IntoIterator<Item = Duration>) -> f64 {
    let (sum, n) = durations
        .into_iter()
        .fold((Duration::ZERO, 0u32), |(s, n), d| (s + d, n + 1));
    if n == 0 {
        0.0
    } else {
        sum.as_secs_f64() * 1000.0 / f64::from(n)
    }
}

/// Barge's total over plain docker's, as percent more (negative: Barge was faster).
pub fn overhead_pct(barge: Duration, docker: Duration) -> f64 {
    let docker = docker.as_secs_f64();
    if docker > 0.0 {
        (barge.as_secs_f64() / docker - 1.0) * 100.0
    } else {
        0.0
    }
}

/// startedAt→stoppedAt of each SUCCEEDED job: the container run as Barge's runner sees it
/// (started, waited for, inspected, removed, its output drained).
fn barge_runs(phases: &[BargePhase]) -> Vec<Duration> {
    phases
        .iter()
        .flat_map(|p| &p.details)
        .filter(|j| j.status == "SUCCEEDED")
        .filter_map(|j| {
            let ms = u64::try_from(j.stopped_at? - j.started_at?).ok()?;
            Some(Duration::from_millis(ms))
        })
        .collect()
}

/// From the earliest createdAt to the latest stoppedAt of one round, in seconds.
fn job_clock_s(phase: &BargePhase) -> Option<f64> {
    let first = phase.details.iter().filter_map(|j| j.created_at).min()?;
    let last = phase.details.iter().filter_map(|j| j.stopped_at).max()?;
    Some((last - first) as f64 / 1000.0)
}

fn figures_of(
    ctx: &Ctx<'_>,
    image: &str,
    jobs: u64,
    concurrency: u64,
    docker: &[DockerPhase],
    barge: &[BargePhase],
    leftovers: &[String],
) -> Vec<Figure> {
    let rounds = docker.len().min(barge.len()) as u64;
    let docker_total: Duration = docker.iter().map(|p| p.total).sum();
    let barge_total: Duration = barge.iter().map(|p| p.total).sum();
    let all_jobs = (jobs * rounds).max(1);
    let per_job_ms = |total: Duration| total.as_secs_f64() * 1000.0 / all_jobs as f64;
    let per_round = docker
        .iter()
        .zip(barge)
        .enumerate()
        .map(|(i, (d, b))| {
            let order = if i % 2 == 1 {
                "Barge, docker"
            } else {
                "docker, Barge"
            };
            format!(
                "round {} ({order}): docker {:.2} s, Barge {:.2} s, {:+.1} %",
                i + 1,
                d.total.as_secs_f64(),
                b.total.as_secs_f64(),
                overhead_pct(b.total, d.total)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let job_clock: f64 = barge.iter().filter_map(job_clock_s).sum();
    let barge_run_ms = mean_ms(barge_runs(barge));
    let docker_run_ms = mean_ms(docker.iter().flat_map(|p| p.runs.iter().copied()));
    let slot_ms = |total: Duration| per_job_ms(total) * concurrency as f64;
    let docker_failed: u64 = docker.iter().map(|p| p.failed).sum();
    let barge_failed: u64 = barge.iter().map(BargePhase::failed_jobs).sum();
    let mut failed_note = Vec::new();
    if let Some(e) = docker.iter().find_map(|p| p.first_error.as_deref()) {
        failed_note.push(format!("first docker run failure: {e}"));
    }
    let barge_failures: Vec<JobTimes> = barge
        .iter()
        .flat_map(|p| &p.details)
        .filter(|j| j.status != "SUCCEEDED")
        .cloned()
        .collect();
    if !barge_failures.is_empty() {
        failed_note.push(format!("Barge: {}", status_histogram(&barge_failures)));
    }
    if let Some(e) = barge.iter().find_map(|p| p.first_error.as_deref()) {
        failed_note.push(format!("first SubmitJob refused: {e}"));
    }

    let mut out = vec![
        ctx.figure(
            "container_overhead_pct",
            format!(
                "Barge's overhead over `docker run --rm`: {jobs} trivial container jobs, \
                 {concurrency} at a time, total of {rounds} rounds"
            ),
            overhead_pct(barge_total, docker_total),
            "%",
        )
        .target(Target::at_most(OVERHEAD_TARGET_PCT))
        .note(per_round),
        ctx.figure(
            "container_docker_total_s",
            format!(
                "`docker run --rm {image} true` × {jobs}, {concurrency} at a time, summed over \
                 {rounds} rounds"
            ),
            docker_total.as_secs_f64(),
            "s",
        ),
        ctx.figure(
            "container_barge_total_s",
            format!(
                "Barge (--runner docker, {concurrency} vCPUs): {jobs} jobs of that image, first \
                 SubmitJob to last SUCCEEDED, summed over {rounds} rounds"
            ),
            barge_total.as_secs_f64(),
            "s",
        )
        .note(format!(
            "job clock, min createdAt to max stoppedAt: {job_clock:.2} s; the end is seen by \
             polling every {} ms",
            POLL_INTERVAL.as_millis()
        )),
        ctx.figure(
            "container_docker_per_job_ms",
            "`docker run --rm`: total ÷ containers",
            per_job_ms(docker_total),
            "ms",
        ),
        ctx.figure(
            "container_barge_per_job_ms",
            "Barge: total ÷ jobs",
            per_job_ms(barge_total),
            "ms",
        ),
        ctx.figure(
            "container_docker_run_mean_ms",
            "`docker run --rm`: mean of one run, CLI start to exit (create, start, wait, remove)",
            docker_run_ms,
            "ms",
        )
        .note(format!(
            "{concurrency} slots × total ÷ containers = {:.0} ms",
            slot_ms(docker_total)
        )),
        ctx.figure(
            "container_barge_run_mean_ms",
            "Barge: mean startedAt→stoppedAt (started, waited, removed, output drained)",
            barge_run_ms,
            "ms",
        )
        .note(format!(
            "{concurrency} slots × total ÷ jobs = {:.0} ms, so {:.0} ms a job outside \
             startedAt→stoppedAt (dispatch, image check, create, reporting)",
            slot_ms(barge_total),
            slot_ms(barge_total) - barge_run_ms
        )),
    ];
    let mut failed = ctx
        .figure(
            "container_failed",
            "container jobs or `docker run`s that failed",
            (docker_failed + barge_failed) as f64,
            "jobs",
        )
        .target(Target::at_most(0.0));
    if !failed_note.is_empty() {
        failed = failed.note(failed_note.join("; "));
    }
    out.push(failed);
    let mut left = ctx
        .figure(
            "container_leftovers",
            "containers of this run left on the engine after it",
            leftovers.len() as f64,
            "items",
        )
        .target(Target::at_most(0.0));
    if !leftovers.is_empty() {
        left = left.note(format!("removed by barge-bench: {}", leftovers.join(" ")));
    }
    out.push(left);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_percent_more_than_docker() {
        let s = Duration::from_secs;
        assert!((overhead_pct(s(23), s(20)) - 15.0).abs() < 1e-9);
        assert!((overhead_pct(s(18), s(20)) + 10.0).abs() < 1e-9);
        assert_eq!(overhead_pct(s(5), Duration::ZERO), 0.0);
        assert!(Target::at_most(OVERHEAD_TARGET_PCT).met_by(overhead_pct(s(23), s(20))));
        assert!(!Target::at_most(OVERHEAD_TARGET_PCT).met_by(overhead_pct(s(24), s(20))));
    }

    #[test]
    fn docker_run_asks_for_what_a_barge_job_gets() {
        let argv = docker_run_args("barge-bench.run=t", "img:1");
        assert_eq!(
            argv,
            [
                "run",
                "--rm",
                "--label",
                "barge-bench.run=t",
                "--cpus",
                "1",
                "--memory",
                "16m",
                "--memory-swap",
                "16m",
                "img:1",
                "true"
            ]
        );
    }

    #[test]
    fn only_this_runs_barge_containers_are_ours() {
        let ids: HashSet<String> = ["job-a".to_string(), "job-b".to_string()].into();
        let ps = "c1 job-a\nc2 job-z\n\nc3 job-b\n";
        assert_eq!(ours(ps, &ids), ["c1", "c3"]);
        assert!(ours("", &ids).is_empty());
    }

    fn job(status: &str, created: i64, started: i64, stopped: i64) -> JobTimes {
        JobTimes {
            job_id: "j".into(),
            status: status.into(),
            status_reason: None,
            created_at: Some(created),
            started_at: Some(started),
            stopped_at: Some(stopped),
        }
    }

    #[test]
    fn barge_times_come_from_the_jobs() {
        let phase = BargePhase {
            total: Duration::from_secs(1),
            details: vec![
                job("SUCCEEDED", 1_000, 1_100, 1_400),
                job("SUCCEEDED", 1_000, 1_200, 1_300),
                job("FAILED", 900, 1_000, 2_000),
            ],
            not_accepted: 2,
            first_error: None,
        };
        assert_eq!(phase.failed_jobs(), 3);
        assert_eq!(mean_ms(barge_runs(std::slice::from_ref(&phase))), 200.0);
        assert_eq!(job_clock_s(&phase), Some(1.1));
        assert_eq!(mean_ms([]), 0.0);
    }
}
