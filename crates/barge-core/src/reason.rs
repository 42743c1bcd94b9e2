//! Why a job is waiting, derived from the current state whenever it is asked for, so it is
//! always true and never has to be written back for every queued job.

use crate::fairshare;
use crate::model::*;
use crate::resources::{agent_could_fit, agent_has_room, ce_has_room, format_vcpus};
use crate::state::State;

/// The statusReason of a job that is not running and has no reason of its own. None for jobs
/// that are not waiting.
pub fn why_waiting(state: &State, job: &Job) -> Option<String> {
    match job.status {
        JobStatus::Submitted => Some("Waiting for the scheduler to evaluate the job".into()),
        JobStatus::Runnable if job.multinode.is_some() || job.node.is_some() => {
            Some(crate::multinode::why_waiting(state, job))
        }
        JobStatus::Runnable => Some(why_runnable(state, job)),
        JobStatus::Pending => Some(why_pending(state, job)),
        _ => None,
    }
}

fn why_pending(state: &State, job: &Job) -> String {
    if let Some(array) = &job.array {
        if array.released_at.is_some() || array.closed.is_some() {
            return array_progress(state, job);
        }
    }
    if job.array_child.is_some() {
        return why_child_pending(state, job);
    }
    let unfinished: Vec<String> = job
        .depends_on
        .iter()
        .filter(|d| crate::dependencies::is_whole_job(d))
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

/// A parent whose children may run: where they stand.
fn array_progress(state: &State, parent: &Job) -> String {
    let counts = crate::arrays::status_summary(state, parent);
    let n = |s: JobStatus| {
        counts
            .iter()
            .find(|(st, _)| *st == s)
            .map_or(0, |(_, n)| *n)
    };
    let size = parent.array.as_ref().map_or(0, |a| a.size);
    format!(
        "Array job: {} of {size} children finished ({} succeeded, {} failed); {} running or starting, {} runnable, {} pending",
        n(JobStatus::Succeeded) + n(JobStatus::Failed),
        n(JobStatus::Succeeded),
        n(JobStatus::Failed),
        n(JobStatus::Running) + n(JobStatus::Starting),
        n(JobStatus::Runnable),
        n(JobStatus::Pending) + n(JobStatus::Submitted),
    )
}

/// The sibling (SEQUENTIAL) or counterpart (N_TO_N) an unborn PENDING child waits for, if
/// any; None when it waits for its parent's own dependencies.
fn why_child_pending_on(state: &State, job: &Job) -> Option<String> {
    let child = job.array_child.as_ref()?;
    let parent = state.job(&child.parent)?;
    let array = parent.array.as_ref()?;
    array.released_at?;
    let unfinished = |parent_id: &str, index: u32| {
        let id = crate::arrays::child_id(parent_id, index);
        let status = crate::arrays::job_view(state, &id).map(|j| j.status);
        (status != Some(JobStatus::Succeeded)).then_some(id)
    };
    if array.sequential && child.index > 0 {
        if let Some(id) = unfinished(&parent.id, child.index - 1) {
            return Some(id);
        }
    }
    array
        .n_to_n
        .iter()
        .find_map(|other| unfinished(other, child.index))
}

/// A PENDING child waits for its parent's dependencies, its previous sibling (SEQUENTIAL) or
/// its counterpart in another array (N_TO_N).
fn why_child_pending(state: &State, job: &Job) -> String {
    let Some(child) = &job.array_child else {
        return why_pending(state, job);
    };
    let Some(parent) = state.job(&child.parent) else {
        return format!("Array job {} no longer exists", child.parent);
    };
    if parent
        .array
        .as_ref()
        .is_some_and(|a| a.released_at.is_none())
    {
        return format!(
            "Waiting for array job {} to start its children: {}",
            parent.id,
            why_pending(state, parent)
        );
    }
    match why_child_pending_on(state, job) {
        Some(id) => {
            let status =
                crate::arrays::job_view(state, &id).map_or("missing", |j| j.status.as_str());
            let kind = if id.starts_with(&format!("{}:", parent.id)) {
                "SEQUENTIAL"
            } else {
                "N_TO_N"
            };
            format!("Waiting for array child {id} ({status}) to succeed ({kind})")
        }
        None => "Waiting for the scheduler to evaluate the job's dependencies".into(),
    }
}

/// RUNNABLE work ahead of `job` in its queue, in submission order: born jobs and the unborn
/// children of arrays submitted before it (or, for an unborn child, its lower siblings).
pub fn runnable_ahead(state: &State, job: &Job) -> usize {
    let key = (job.seq, job.id.clone());
    let born = state
        .jobs_in(&job.queue, JobStatus::Runnable)
        .map_or(0, |set| set.range(..key.clone()).count());
    let unborn: usize = state
        .arrays_with_unborn_runnable(&job.queue)
        .into_iter()
        .flatten()
        .filter(|(seq, id)| {
            *seq < job.seq || (Some(id) == job.array_child.as_ref().map(|c| &c.parent))
        })
        .filter_map(|(_, id)| {
            let parent = state.job(id)?;
            let size = parent.array.as_ref()?.size;
            let index = state.array_index(id);
            let below = job
                .array_child
                .as_ref()
                .filter(|c| c.parent == *id)
                .map_or(size, |c| c.index);
            let born_below = index.map_or(0, |i| i.born.range(..below).count() as u32);
            Some(below.saturating_sub(born_below) as usize)
        })
        .sum();
    born + unborn
}

/// What stands between a RUNNABLE job and one compute environment of its queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Obstacle {
    /// Never: the job asks for more vCPUs than the environment's maxvCpus.
    MaxVcpus {
        ce: String,
        max_milli: u64,
    },
    /// Never: no host of the environment is big enough.
    HostTooSmall {
        ce: String,
        largest_vcpus_milli: u64,
        largest_memory_mib: u64,
        most_gpus: u32,
    },
    Disabled {
        ce: String,
    },
    NoAgents {
        ce: String,
    },
    /// Everything it needs is in use now.
    Busy {
        ce: String,
        used_milli: u64,
        max_milli: Option<u64>,
    },
    /// Nothing: there is room now, the next scheduling pass places it.
    None {
        ce: String,
    },
    /// An instance provider scales the environment, and its instances have no room yet.
    ScalingUp {
        ce: String,
        /// What to say (see `scaling::describe_scaling`).
        detail: String,
    },
    /// The environment names a provider (tag `barge:provider`) this server does not have.
    NoProvider {
        ce: String,
        provider: String,
    },
}

impl Obstacle {
    fn never(&self) -> bool {
        matches!(
            self,
            Obstacle::MaxVcpus { .. } | Obstacle::HostTooSmall { .. }
        )
    }
}

/// One obstacle per compute environment of the job's queue, in the queue's order.
pub fn obstacles(state: &State, queue: &JobQueue, res: Resources) -> Vec<Obstacle> {
    let mut out = Vec::new();
    for ce in state.environments_of(queue) {
        if crate::scaling::provider_of(ce).is_some() && ce.kind == ComputeEnvironmentType::Managed {
            out.push(scaled_obstacle(state, ce, res));
            continue;
        }
        let name = ce.name.clone();
        let hosts = state.hosts_of(ce);
        // A host too small is the more fundamental of the two "never"s: raising maxvCpus
        // would not help it.
        let obstacle = match ce.max_vcpus_milli() {
            _ if !hosts.is_empty() && !hosts.iter().any(|a| agent_could_fit(a, res)) => {
                Obstacle::HostTooSmall {
                    ce: name,
                    largest_vcpus_milli: hosts.iter().map(|a| a.vcpus_milli).max().unwrap_or(0),
                    largest_memory_mib: hosts.iter().map(|a| a.memory_mib).max().unwrap_or(0),
                    most_gpus: hosts.iter().map(|a| a.gpus).max().unwrap_or(0),
                }
            }
            Some(max) if u64::from(res.vcpus_milli) > max => Obstacle::MaxVcpus {
                ce: name,
                max_milli: max,
            },
            _ if ce.state != ResourceState::Enabled => Obstacle::Disabled { ce: name },
            _ if hosts.is_empty() => Obstacle::NoAgents { ce: name },
            _ => {
                let used = state.ce_used_vcpus_milli(&ce.name);
                if ce_has_room(ce, used, res) && hosts.iter().any(|a| agent_has_room(a, res)) {
                    Obstacle::None { ce: name }
                } else {
                    Obstacle::Busy {
                        ce: name,
                        used_milli: used,
                        max_milli: ce.max_vcpus_milli(),
                    }
                }
            }
        };
        out.push(obstacle);
    }
    out
}

/// What stands between a job and an environment an instance provider scales: its capacity
/// is the instance types it may launch, not the hosts it has now.
fn scaled_obstacle(state: &State, ce: &ComputeEnvironment, res: Resources) -> Obstacle {
    let name = ce.name.clone();
    let provider = crate::scaling::provider_of(ce).unwrap_or_default();
    if crate::scaling::scaled_by(&state.config.scaling, ce).is_none() {
        return Obstacle::NoProvider {
            ce: name,
            provider: provider.to_string(),
        };
    }
    let types = crate::scaling::allowed_types(&state.config.scaling, ce);
    if !types.iter().any(|t| t.fits(res)) {
        return Obstacle::HostTooSmall {
            ce: name,
            largest_vcpus_milli: types.iter().map(|t| t.vcpus_milli()).max().unwrap_or(0),
            largest_memory_mib: types.iter().map(|t| t.memory_mib).max().unwrap_or(0),
            most_gpus: types.iter().map(|t| t.gpus).max().unwrap_or(0),
        };
    }
    let used = state.ce_used_vcpus_milli(&ce.name);
    match ce.max_vcpus_milli() {
        Some(max) if u64::from(res.vcpus_milli) > max => Obstacle::MaxVcpus {
            ce: name,
            max_milli: max,
        },
        _ if ce.state != ResourceState::Enabled => Obstacle::Disabled { ce: name },
        _ if !ce_has_room(ce, used, res) => Obstacle::Busy {
            ce: name,
            used_milli: used,
            max_milli: ce.max_vcpus_milli(),
        },
        _ if state.hosts_of(ce).iter().any(|a| agent_has_room(a, res)) => {
            Obstacle::None { ce: name }
        }
        _ => Obstacle::ScalingUp {
            detail: crate::scaling::describe_scaling(state, ce),
            ce: name,
        },
    }
}

/// Whether an instance provider scales compute environment `ce`.
fn is_scaled(state: &State, ce: &str) -> bool {
    state
        .compute_environments
        .get(ce)
        .is_some_and(|c| crate::scaling::scaled_by(&state.config.scaling, c).is_some())
}

fn describe_need(res: Resources) -> String {
    format!(
        "{} vCPU and {} MiB of memory{}",
        format_vcpus(u64::from(res.vcpus_milli)),
        res.memory_mib,
        if res.gpus > 0 {
            format!(" and {} GPU", res.gpus)
        } else {
            String::new()
        }
    )
}

/// In a fair-share queue, where the job's share stands comes after the capacity reason (which
/// stays first: jobStateTimeLimitActions match its prefix).
fn why_runnable(state: &State, job: &Job) -> String {
    let capacity = why_runnable_capacity(state, job);
    let Some(standing) = fairshare::standing(state, job) else {
        return capacity;
    };
    let share = standing.describe();
    if standing.reserved.is_empty() {
        return format!("{capacity}; fair share: {share}");
    }
    let held: Vec<String> = standing
        .reserved
        .iter()
        .map(|(ce, held)| format!("{} vCPU of {ce}", format_vcpus(*held)))
        .collect();
    format!(
        "Waiting for fair share: computeReservation holds back {} for share identifiers that run nothing yet, and {share}",
        held.join(", ")
    )
}

fn why_runnable_capacity(state: &State, job: &Job) -> String {
    let Some(queue) = state.job_queues.get(&job.queue) else {
        return format!("Job queue {} no longer exists", job.queue);
    };
    let res = job.resources;
    let need = describe_need(res);
    let found = obstacles(state, queue, res);
    let names = |pick: &dyn Fn(&Obstacle) -> Option<String>| {
        found.iter().filter_map(pick).collect::<Vec<_>>()
    };
    if let Some(Obstacle::None { ce }) = found.iter().find(|o| matches!(o, Obstacle::None { .. })) {
        return format!("Waiting for the scheduler to place the job on compute environment {ce}");
    }
    if !found.is_empty() && found.iter().all(Obstacle::never) {
        let parts = names(&|o| {
            match o {
            Obstacle::MaxVcpus { ce, max_milli } => Some(format!(
                "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE - compute environment {ce} allows at most {} vCPU (maxvCpus) and the job needs {}",
                format_vcpus(*max_milli),
                format_vcpus(u64::from(res.vcpus_milli))
            )),
            Obstacle::HostTooSmall { ce, largest_vcpus_milli, largest_memory_mib, most_gpus } => Some(format!(
                "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - the job needs {need}, and the largest {} compute environment {ce} has {} vCPU and {largest_memory_mib} MiB{}",
                if is_scaled(state, ce) { "instance type of" } else { "host in" },
                format_vcpus(*largest_vcpus_milli),
                if res.gpus > 0 { format!(", and the most GPUs any host there has is {most_gpus}") } else { String::new() }
            )),
            _ => None,
        }
        });
        return parts.join("; ");
    }
    // Scaling comes before busy: it is what will move the job on.
    let scaling = names(&|o| match o {
        Obstacle::ScalingUp { detail, .. } => Some(detail.clone()),
        _ => None,
    });
    if !scaling.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - {}",
            scaling.join("; ")
        );
    }
    let busy = names(&|o| match o {
        Obstacle::Busy {
            ce,
            used_milli,
            max_milli,
        } => Some(match max_milli {
            Some(m) => format!(
                "{ce} ({} of {} vCPU in use)",
                format_vcpus(*used_milli),
                format_vcpus(*m)
            ),
            None => format!("{ce} ({} vCPU in use)", format_vcpus(*used_milli)),
        }),
        _ => None,
    });
    if !busy.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - waiting for {need} to free up on compute environment {}",
            busy.join(", ")
        );
    }
    let no_agents = names(&|o| match o {
        Obstacle::NoAgents { ce } => Some(ce.clone()),
        _ => None,
    });
    if !no_agents.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - no agent has joined compute environment {}; start `barge agent` for it",
            no_agents.join(", ")
        );
    }
    let no_provider = names(&|o| match o {
        Obstacle::NoProvider { ce, provider } => Some(format!(
            "{ce} names provider {provider:?} (tag {})",
            crate::limits::PROVIDER_TAG
        )),
        _ => None,
    });
    if !no_provider.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - compute environment {}, which this server's configuration does not define; start it with --config naming that provider, or remove the tag",
            no_provider.join(", ")
        );
    }
    let disabled = names(&|o| match o {
        Obstacle::Disabled { ce } => Some(ce.clone()),
        _ => None,
    });
    format!(
        "Waiting: compute environment {} of job queue {} is DISABLED; enable it to run this job",
        disabled.join(", "),
        queue.name
    )
}

/// `barge why`: the job's status, the reason it is where it is, how many jobs are ahead of it,
/// and what would move it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub status: JobStatus,
    pub reason: Option<String>,
    /// RUNNABLE jobs ahead of it in its queue (submission order; dispatch order in a
    /// fair-share queue).
    pub jobs_ahead: Option<usize>,
    pub unblock: Vec<String>,
}

pub fn diagnose(state: &State, job: &Job) -> Diagnosis {
    let reason = job
        .status_reason
        .clone()
        .or_else(|| why_waiting(state, job));
    let mut unblock = Vec::new();
    let mut jobs_ahead = None;
    match job.status {
        JobStatus::Pending if job.array.as_ref().is_some_and(|a| a.released_at.is_some()) => {
            unblock.push(format!(
                "an array job finishes when its children do; `aws batch list-jobs --array-job-id {} --job-status RUNNABLE` lists the ones waiting, and `barge why {}:<index>` explains one",
                job.id, job.id
            ));
        }
        JobStatus::Pending if job.array_child.is_some() => {
            unblock.push(match why_child_pending_on(state, job) {
                Some(waits_for) => format!(
                    "job {waits_for} must succeed; `barge why {waits_for}` says what it waits for"
                ),
                None => "the array job's own dependencies must succeed".to_string(),
            });
        }
        JobStatus::Pending => {
            for id in job
                .depends_on
                .iter()
                .filter(|d| crate::dependencies::is_whole_job(d))
                .filter_map(|d| d.job_id.as_ref())
            {
                if let Some(dep) = state.job(id).filter(|d| !d.status.is_terminal()) {
                    unblock.push(format!(
                        "job {id} ({}) must succeed; `barge why {id}` says what it waits for",
                        dep.status.as_str()
                    ));
                }
            }
        }
        JobStatus::Runnable => {
            jobs_ahead =
                fairshare::jobs_ahead(state, job).or_else(|| Some(runnable_ahead(state, job)));
            if let Some(s) = fairshare::standing(state, job) {
                unblock.push(format!(
                    "fair share: {}; the share with the lowest usage × weightFactor dispatches first",
                    s.describe()
                ));
            }
            if job.multinode.is_some() || job.node.is_some() {
                unblock.extend(crate::multinode::unblock(state, job));
            } else if let Some(queue) = state.job_queues.get(&job.queue) {
                let res = job.resources;
                for o in obstacles(state, queue, res) {
                    unblock.push(match o {
                        Obstacle::MaxVcpus { ce, .. } => format!(
                            "raise maxvCpus of compute environment {ce} to at least {} (aws batch update-compute-environment --compute-environment {ce} --compute-resources maxvCpus=N), or ask for fewer vCPUs",
                            (u64::from(res.vcpus_milli)).div_ceil(1000)
                        ),
                        Obstacle::HostTooSmall { ce, .. } if is_scaled(state, &ce) => format!(
                            "ask for at most the largest instance type compute environment {ce} may launch, or allow a bigger one (its computeResources.instanceTypes, and [[instance_types]] in the server's configuration file)"
                        ),
                        Obstacle::HostTooSmall { ce, .. } => format!(
                            "ask for at most the largest host of compute environment {ce}, or add a bigger host to it (barge up --agent-vcpus / --agent-memory-mib)"
                        ),
                        Obstacle::Disabled { ce } => format!(
                            "enable compute environment {ce} (aws batch update-compute-environment --compute-environment {ce} --state ENABLED)"
                        ),
                        Obstacle::NoAgents { ce } => format!("start an agent for compute environment {ce}"),
                        Obstacle::Busy { ce, .. } => format!(
                            "wait for jobs running on compute environment {ce} to finish, or raise its maxvCpus"
                        ),
                        Obstacle::None { ce } => format!(
                            "nothing: compute environment {ce} has room, the next scheduling pass places it"
                        ),
                        Obstacle::ScalingUp { ce, .. } => format!(
                            "wait for compute environment {ce}'s new instances to start and join; if none do, the server's log says why its provider's launches fail"
                        ),
                        Obstacle::NoProvider { ce, provider } => format!(
                            "start the server with --config FILE defining [providers.{provider}], or untag compute environment {ce} (aws batch untag-resource --tag-keys {})",
                            crate::limits::PROVIDER_TAG
                        ),
                    });
                }
            }
        }
        _ => {}
    }
    Diagnosis {
        status: job.status,
        reason,
        jobs_ahead,
        unblock,
    }
}
