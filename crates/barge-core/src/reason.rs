//! Why a job is waiting, derived from the current state whenever it is asked for, so it is
//! always true and never has to be written back for every queued job.

use crate::model::*;
use crate::resources::{agent_could_fit, format_vcpus};
use crate::state::State;

/// The statusReason of a job that is not running and has no reason of its own. None for jobs
/// that are not waiting.
pub fn why_waiting(state: &State, job: &Job) -> Option<String> {
    match job.status {
        JobStatus::Submitted => Some("Waiting for the scheduler to evaluate the job".into()),
        JobStatus::Runnable => Some(why_runnable(state, job)),
        JobStatus::Pending => Some(why_pending(state, job)),
        _ => None,
    }
}

fn why_pending(state: &State, job: &Job) -> String {
    let unfinished: Vec<String> = job
        .depends_on
        .iter()
        .filter_map(|d| d.job_id.as_ref())
        .filter_map(|id| state.job(id).filter(|j| !j.status.is_terminal()))
        .map(|j| format!("{} ({})", j.id, j.status.as_str()))
        .collect();
    match unfinished.as_slice() {
        [] => "Waiting for the scheduler to evaluate the job's dependencies".into(),
        [one] => format!("Waiting for dependency job {one} to succeed"),
        [first, rest @ ..] => format!(
            "Waiting for {} dependency jobs to succeed, first {first}",
            rest.len() + 1
        ),
    }
}

fn why_runnable(state: &State, job: &Job) -> String {
    let Some(queue) = state.job_queues.get(&job.queue) else {
        return format!("Job queue {} no longer exists", job.queue);
    };
    let res = job.resources;
    let need = format!(
        "{} vCPU and {} MiB of memory{}",
        format_vcpus(u64::from(res.vcpus_milli)),
        res.memory_mib,
        if res.gpus > 0 {
            format!(" and {} GPU", res.gpus)
        } else {
            String::new()
        }
    );
    let mut never = Vec::new();
    let mut disabled = Vec::new();
    let mut busy = Vec::new();
    let mut no_hosts = Vec::new();
    for entry in &queue.compute_environment_order {
        let Some(ce) = state.compute_environments.get(&entry.compute_environment) else {
            continue;
        };
        let hosts: Vec<&Agent> = state
            .agents
            .values()
            .map(|a| &**a)
            .filter(|a| a.serves(ce))
            .collect();
        if let Some(max) = ce.max_vcpus_milli() {
            if u64::from(res.vcpus_milli) > max {
                never.push(format!(
                    "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE - compute environment {} allows at most {} vCPU (maxvCpus) and the job needs {}",
                    ce.name,
                    format_vcpus(max),
                    format_vcpus(u64::from(res.vcpus_milli))
                ));
                continue;
            }
        }
        if !hosts.is_empty() && !hosts.iter().any(|a| agent_could_fit(a, res)) {
            let largest_mem = hosts.iter().map(|a| a.memory_mib).max().unwrap_or(0);
            let largest_cpu = hosts.iter().map(|a| a.vcpus_milli).max().unwrap_or(0);
            never.push(format!(
                "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - the job needs {need}, and the largest host in compute environment {} has {} vCPU and {} MiB{}",
                ce.name,
                format_vcpus(largest_cpu),
                largest_mem,
                if res.gpus > 0 { " and no GPU" } else { "" }
            ));
            continue;
        }
        if ce.state != ResourceState::Enabled {
            disabled.push(ce.name.clone());
            continue;
        }
        if hosts.is_empty() {
            no_hosts.push(ce.name.clone());
            continue;
        }
        let used = state.ce_used_vcpus_milli(&ce.name);
        if crate::resources::ce_has_room(ce, used, res)
            && hosts
                .iter()
                .any(|a| crate::resources::agent_has_room(a, res))
        {
            return format!(
                "Waiting for the scheduler to place the job on compute environment {}",
                ce.name
            );
        }
        let cap = ce.max_vcpus_milli().map_or_else(
            || format!("{} vCPU in use", format_vcpus(used)),
            |m| format!("{} of {} vCPU in use", format_vcpus(used), format_vcpus(m)),
        );
        busy.push(format!("{} ({cap})", ce.name));
    }
    let total = queue.compute_environment_order.len();
    if never.len() == total && total > 0 {
        return never.join("; ");
    }
    if !busy.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - waiting for {need} to free up on compute environment {}",
            busy.join(", ")
        );
    }
    if !no_hosts.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - no agent has joined compute environment {}; start `barge agent` for it",
            no_hosts.join(", ")
        );
    }
    if !disabled.is_empty() {
        return format!(
            "Waiting: compute environment {} of job queue {} is DISABLED; enable it to run this job",
            disabled.join(", "),
            queue.name
        );
    }
    never.join("; ")
}
