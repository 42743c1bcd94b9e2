//! The `command` provider: the operator's own programs, as Slurm's ResumeProgram and
//! SuspendProgram. `launch` runs with the instance in its environment and exits 0 once it has
//! arranged for `barge agent --agent-id $BARGE_INSTANCE_ID …` to start somewhere; `terminate`
//! runs with BARGE_INSTANCE_ID and exits 0 once the instance is gone (also when it was gone
//! already). Each run is bounded (`timeout_seconds`; its process group is killed after it), and
//! its output is kept in a file (never a pipe, so a background process it leaves cannot hold
//! Barge up) and copied into the server's log.
//!
//! Environment: BARGE_INSTANCE_ID, BARGE_INSTANCE_TYPE, BARGE_VCPUS, BARGE_MEMORY_MIB,
//! BARGE_GPUS, BARGE_COMPUTE_ENVIRONMENT, BARGE_PROVIDER, BARGE_SERVER_URL and, when the server
//! has one, BARGE_AGENT_TOKEN (the names `barge agent` itself reads for the same settings).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use barge_core::scaling::Instance;

use super::{clean_env, ProviderContext};
use crate::limits::COMMAND_PROVIDER_OUTPUT_BYTES_MAX;

pub struct CommandProvider {
    name: String,
    launch: PathBuf,
    terminate: PathBuf,
    server_url: String,
    timeout_ms: u64,
    ctx: ProviderContext,
}

impl CommandProvider {
    pub fn new(
        name: &str,
        launch: &Path,
        terminate: &Path,
        server_url: Option<&str>,
        timeout_ms: u64,
        ctx: &ProviderContext,
    ) -> CommandProvider {
        CommandProvider {
            name: name.to_string(),
            launch: launch.to_path_buf(),
            terminate: terminate.to_path_buf(),
            server_url: server_url.map_or_else(|| ctx.local_server_url.clone(), str::to_string),
            timeout_ms,
            ctx: ctx.clone(),
        }
    }

    pub async fn launch(&self, instance: &Instance) -> Result<(), String> {
        self.run(&self.launch, "launch", instance).await
    }

    pub async fn terminate(&self, instance: &Instance) -> Result<(), String> {
        self.run(&self.terminate, "terminate", instance).await
    }

    async fn run(&self, program: &Path, action: &str, instance: &Instance) -> Result<(), String> {
        let dir = self.ctx.instances_dir.join(&instance.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let out_path = dir.join(format!("{action}.log"));
        let out = std::fs::File::create(&out_path)
            .map_err(|e| format!("cannot create {}: {e}", out_path.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", out_path.display()))?;
        let t = &instance.instance_type;
        let mut command = tokio::process::Command::new(program);
        clean_env(&mut command);
        command
            .env("BARGE_INSTANCE_ID", &instance.id)
            .env("BARGE_INSTANCE_TYPE", &t.name)
            .env("BARGE_VCPUS", t.vcpus.to_string())
            .env("BARGE_MEMORY_MIB", t.memory_mib.to_string())
            .env("BARGE_GPUS", t.gpus.to_string())
            .env("BARGE_COMPUTE_ENVIRONMENT", &instance.compute_environment)
            .env("BARGE_PROVIDER", &self.name)
            .env("BARGE_SERVER_URL", &self.server_url)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(token) = &self.ctx.agent_token {
            command.env("BARGE_AGENT_TOKEN", token);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {} ({action}): {e}", program.display()))?;
        let waited =
            tokio::time::timeout(Duration::from_millis(self.timeout_ms), child.wait()).await;
        let status = match waited {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("waiting for {}: {e}", program.display())),
            Err(_) => {
                // The whole group: a program that started helpers does not leave them behind.
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    // SAFETY: kill(2) of the process group we created for the program.
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                }
                let _ = child.wait().await;
                Err(format!(
                    "{} ({action}) did not finish within {} s (timeout_seconds) and was killed",
                    program.display(),
                    self.timeout_ms / 1000
                ))
            }
        };
        let output = read_bounded(&out_path);
        if !output.trim().is_empty() {
            tracing::info!(provider = %self.name, instance_id = %instance.id, action, "{}: {}", program.display(), output.trim_end());
        }
        let status = status?;
        if status.success() {
            Ok(())
        } else {
            let tail: String = output.trim_end().lines().last().unwrap_or("").to_string();
            Err(format!(
                "{} ({action}) exited with {status}{}",
                program.display(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            ))
        }
    }
}

/// The start of a file, at most `COMMAND_PROVIDER_OUTPUT_BYTES_MAX` bytes, as text.
fn read_bounded(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f
            .take(COMMAND_PROVIDER_OUTPUT_BYTES_MAX as u64)
            .read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}
