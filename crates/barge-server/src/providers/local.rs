//! The `local` provider: each instance is a `barge agent` child process of the server (this
//! same binary), with its data directory under `<data-dir>/instances/<id>/agent` and its output
//! in `<data-dir>/instances/<id>/agent.log`. It joins at `http://127.0.0.1:PORT`. Children are
//! reaped when asked which are gone, stopped at shutdown, and found again by pid (checked
//! against the instance id on its command line) after a crash of the server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use barge_core::scaling::Instance;

use super::{agent_args, clean_env, Launched, ProviderContext};
use crate::config_file::AgentRunner;
use crate::limits::INSTANCE_STOP_GRACE_MS;

enum Proc {
    Child(tokio::process::Child),
    /// Started by an earlier run of the server: not our child, known by pid.
    Adopted(u32),
}

pub struct LocalProvider {
    exe: PathBuf,
    runner: AgentRunner,
    ctx: ProviderContext,
    procs: Mutex<HashMap<String, Proc>>,
}

impl LocalProvider {
    pub fn new(runner: AgentRunner, ctx: &ProviderContext) -> anyhow::Result<LocalProvider> {
        let exe = std::env::current_exe().map_err(|e| {
            anyhow::anyhow!("the local provider runs this binary as `barge agent`, and its path cannot be found: {e}")
        })?;
        Ok(LocalProvider {
            exe,
            runner,
            ctx: ctx.clone(),
            procs: Mutex::new(HashMap::new()),
        })
    }

    pub async fn launch(&self, instance: &Instance) -> Result<Launched, String> {
        let dir = self.ctx.instances_dir.join(&instance.id);
        let data_dir = dir.join("agent");
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut command = tokio::process::Command::new(&self.exe);
        clean_env(&mut command);
        if let Some(token) = &self.ctx.agent_token {
            command.env("BARGE_AGENT_TOKEN", token);
        }
        command
            .args(agent_args(
                instance,
                &self.ctx.local_server_url,
                self.runner.as_str(),
                &data_dir.to_string_lossy(),
            ))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: a Ctrl-C at the server's terminal is the server's to
            // handle (it stops its instances in order), not each child's.
            .process_group(0)
            .kill_on_drop(false);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {} agent: {e}", self.exe.display()))?;
        let pid = child.id();
        self.procs
            .lock()
            .expect("local instances")
            .insert(instance.id.clone(), Proc::Child(child));
        Ok(Launched { pid })
    }

    pub fn adopt(&self, instance: &Instance, pid: Option<u32>) {
        if let Some(pid) = pid {
            self.procs
                .lock()
                .expect("local instances")
                .insert(instance.id.clone(), Proc::Adopted(pid));
        }
    }

    /// Reaps children that exited; an adopted process is gone when its pid no longer runs
    /// the agent of that instance.
    pub fn gone(&self, instances: &[Instance]) -> Vec<String> {
        let mut procs = self.procs.lock().expect("local instances");
        let mut out = Vec::new();
        for instance in instances {
            let alive = match procs.get_mut(&instance.id) {
                Some(Proc::Child(child)) => matches!(child.try_wait(), Ok(None)),
                Some(Proc::Adopted(pid)) => runs_agent(*pid, &instance.id),
                None => false,
            };
            if !alive {
                procs.remove(&instance.id);
                out.push(instance.id.clone());
            }
        }
        out
    }

    /// SIGTERM (the agent stops its attempts and leaves), then SIGKILL after the grace.
    pub async fn terminate(&self, instance: &Instance) -> Result<(), String> {
        let proc = self
            .procs
            .lock()
            .expect("local instances")
            .remove(&instance.id);
        stop(proc).await;
        Ok(())
    }

    pub async fn shutdown(&self) -> Vec<String> {
        let all: Vec<(String, Proc)> = self
            .procs
            .lock()
            .expect("local instances")
            .drain()
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for (id, proc) in all {
            set.spawn(async move {
                stop(Some(proc)).await;
                id
            });
        }
        let mut stopped = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(id) = r {
                stopped.push(id);
            }
        }
        stopped
    }
}

async fn stop(proc: Option<Proc>) {
    let grace = Duration::from_millis(INSTANCE_STOP_GRACE_MS);
    match proc {
        None => {}
        Some(Proc::Child(mut child)) => {
            if let Some(pid) = child.id() {
                signal(pid, libc::SIGTERM);
            }
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        Some(Proc::Adopted(pid)) => {
            signal(pid, libc::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while process_alive(pid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if process_alive(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid we started (or checked runs our agent) and a signal.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Whether `pid` runs and is not a zombie.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Whether `pid` is alive and is the agent of instance `id` (a pid may be reused).
fn runs_agent(pid: u32, id: &str) -> bool {
    process_alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == id.as_bytes()))
}
