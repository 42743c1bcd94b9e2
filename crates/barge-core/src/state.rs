//! The whole of Barge's state as one value. Every map is persistent (structural sharing), so a
//! clone is O(1): the writer mutates a private copy and publishes it after the commit, readers
//! and the scheduler work on snapshots without locks.
//!
//! Job indexes are derived from the jobs and kept in step by `put_job`, the only way a job
//! changes; `rebuild_indexes` recomputes them after a load.

use std::sync::Arc;

use imbl::{HashMap, OrdMap, OrdSet};

use crate::arn::Identity;
use crate::fairshare::{ShareIndex, ShareUsage};
use crate::limits::{
    ARRAY_SIZE_MAX_DEFAULT, DEPENDS_ON_MAX_DEFAULT, RUNNER_TAG, STOP_GRACE_MS,
    STOP_GRACE_SECONDS_MAX, STOP_GRACE_TAG,
};
use crate::model::*;

/// (seq, job id): orders an index by submission.
pub type JobKey = (u64, String);

/// Derived bookkeeping of one array parent's born children (rebuilt on load).
#[derive(Clone, Debug, Default)]
pub struct ArrayIndex {
    /// Indexes of the children that exist as job rows.
    pub born: OrdSet<u32>,
    /// Born children per status, in `JobStatus::ALL` order.
    pub counts: [u32; 7],
    /// The lowest index not born: where the scheduler takes the next child from.
    pub cursor: u32,
    /// The latest time any born child changed (statusSummaryLastUpdatedAt).
    pub last_update_ms: i64,
}

impl ArrayIndex {
    pub fn count(&self, status: JobStatus) -> u32 {
        self.counts[status_slot(status)]
    }
}

/// A `barge:stop-grace-seconds` value: whole seconds, 0 to `STOP_GRACE_SECONDS_MAX`.
pub fn parse_stop_grace_seconds(value: &str) -> Option<u64> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| *s <= STOP_GRACE_SECONDS_MAX)
}

/// The latest of a job's own timestamps: when it last changed, as far as its row tells.
fn latest_time(job: &Job) -> i64 {
    [
        Some(job.created_at),
        job.runnable_at,
        job.started_at,
        job.stopped_at,
        job.current.as_ref().map(|a| a.placed_at),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0)
}

fn status_slot(status: JobStatus) -> usize {
    JobStatus::ALL
        .iter()
        .position(|s| *s == status)
        .expect("ALL lists every status")
}

/// Limits that Barge lifts above AWS's and lets the operator choose; not stored.
#[derive(Clone, Debug, PartialEq)]
pub struct CoreConfig {
    pub array_size_max: u32,
    pub depends_on_max: usize,
    /// The configuration file's instance providers and instance types (`scaling`). Behind an
    /// Arc: the state is cloned for every command, the catalog never changes while running.
    pub scaling: Arc<crate::scaling::ScalingCatalog>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            array_size_max: ARRAY_SIZE_MAX_DEFAULT,
            depends_on_max: DEPENDS_ON_MAX_DEFAULT,
            scaling: Arc::default(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct State {
    pub identity: Identity,
    pub compute_environments: OrdMap<String, Arc<ComputeEnvironment>>,
    pub job_queues: OrdMap<String, Arc<JobQueue>>,
    pub job_definitions: OrdMap<(String, u32), Arc<JobDefinition>>,
    pub jobs: HashMap<String, Arc<Job>>,
    pub log_streams: OrdMap<String, Arc<LogStream>>,
    pub agents: OrdMap<String, Arc<Agent>>,
    pub scheduling_policies: OrdMap<String, Arc<SchedulingPolicy>>,
    /// Fair-share usage per queue with a scheduling policy (stored; see `fairshare`).
    pub share_usage: OrdMap<String, Arc<ShareUsage>>,
    /// Schedules (stored; see `schedule`), by name.
    pub schedules: OrdMap<String, Arc<crate::schedule::Schedule>>,
    /// The `now` of the latest command applied. Fair-share usage is read as of this time,
    /// since `plan` and the waiting reasons have no clock of their own. Not stored: the first
    /// command after a load sets it again.
    pub latest_command_ms: i64,
    pub next_job_seq: u64,
    pub next_log_stream_number: u64,
    /// Jobs per (queue, status), in submission order.
    by_queue_status: HashMap<(String, JobStatus), OrdSet<JobKey>>,
    /// Jobs per queue, in submission order (filtered listing walks it newest first).
    by_queue: HashMap<String, OrdSet<JobKey>>,
    /// vCPUs in use per compute environment, in thousandths.
    ce_used_vcpus_milli: HashMap<String, u64>,
    /// Reverse dependency edges: job id → the jobs that depend on it.
    dependents: HashMap<String, OrdSet<String>>,
    /// Per array parent: its born children.
    arrays: HashMap<String, ArrayIndex>,
    /// Per queue: array parents whose unborn children are RUNNABLE (see `arrays`), in
    /// submission order. The scheduler takes children from them as it takes RUNNABLE jobs.
    arrays_with_unborn_runnable: HashMap<String, OrdSet<JobKey>>,
    /// Bounds an operator may change at start (`barge up --array-size-max …`).
    pub config: CoreConfig,
    /// Jobs that became SUCCEEDED or FAILED since `apply` last settled their dependents.
    /// Transient: always empty between commands.
    pub(crate) newly_finished: Vec<String>,
    /// Fair-share indexes derived from the jobs (RUNNABLE jobs and load per share).
    pub(crate) shares: ShareIndex,
}

impl State {
    pub fn new(identity: Identity) -> State {
        State {
            identity,
            next_job_seq: 1,
            next_log_stream_number: 1,
            ..State::default()
        }
    }

    pub fn job(&self, id: &str) -> Option<&Arc<Job>> {
        self.jobs.get(id)
    }

    /// Inserts or replaces a job, keeping every index in step.
    pub fn put_job(&mut self, job: Job) {
        let key: JobKey = (job.seq, job.id.clone());
        // Array children are listed through their parent, not among their queue's jobs.
        let listed = job.array_child.is_none();
        let old = self.jobs.get(&job.id).cloned();
        crate::fairshare::on_put_job(self, old.as_deref(), &job);
        if let Some(old) = &old {
            if !old.status.is_terminal() && job.status.is_terminal() {
                self.newly_finished.push(job.id.clone());
            }
            if old.status != job.status || old.queue != job.queue {
                self.index_remove(&old.queue, old.status, &key);
                self.index_insert(&job.queue, job.status, key.clone());
            }
            if old.queue != job.queue && listed {
                if let Some(set) = self.by_queue.get_mut(&old.queue) {
                    set.remove(&key);
                }
                self.by_queue
                    .entry(job.queue.clone())
                    .or_default()
                    .insert(key);
            }
        } else {
            // A child can be born already finished (cancelled by id, or failed by its
            // dependency): it has just finished all the same.
            if job.status.is_terminal() {
                self.newly_finished.push(job.id.clone());
            }
            self.index_insert(&job.queue, job.status, key.clone());
            if listed {
                self.by_queue
                    .entry(job.queue.clone())
                    .or_default()
                    .insert(key);
            }
            self.next_job_seq = self.next_job_seq.max(job.seq + 1);
            self.add_dependency_edges(&job);
        }
        let child = job.array_child.clone();
        let parent_id = job.array.as_ref().map(|_| job.id.clone());
        let new_status = job.status;
        let latest = child.as_ref().map(|_| latest_time(&job));
        self.jobs.insert(job.id.clone(), Arc::new(job));
        if let (Some(child), Some(latest)) = (child, latest) {
            self.count_child(&child, old.map(|o| o.status), new_status, latest);
            self.refresh_unborn_runnable(&child.parent);
        }
        if let Some(parent_id) = parent_id {
            self.refresh_unborn_runnable(&parent_id);
        }
    }

    /// Books a child's status change (or birth) on its parent's array index.
    fn count_child(
        &mut self,
        child: &ArrayChild,
        old: Option<JobStatus>,
        new: JobStatus,
        latest_ms: i64,
    ) {
        let index = self.arrays.entry(child.parent.clone()).or_default();
        index.last_update_ms = index.last_update_ms.max(latest_ms);
        if let Some(old) = old {
            let slot = &mut index.counts[status_slot(old)];
            *slot = slot.saturating_sub(1);
        } else {
            index.born.insert(child.index);
            while index.born.contains(&index.cursor) {
                index.cursor += 1;
            }
        }
        index.counts[status_slot(new)] += 1;
    }

    /// Keeps `arrays_with_unborn_runnable` in step with one parent.
    fn refresh_unborn_runnable(&mut self, parent_id: &str) {
        let Some(parent) = self.jobs.get(parent_id).cloned() else {
            return;
        };
        let key: JobKey = (parent.seq, parent.id.clone());
        let cursor = self.arrays.get(parent_id).map_or(0, |a| a.cursor);
        let wanted = parent.array.as_ref().is_some_and(|a| {
            crate::arrays::unborn_status(&parent) == JobStatus::Runnable
                && !a.has_child_dependencies()
                && cursor < a.size
        });
        let set = self
            .arrays_with_unborn_runnable
            .entry(parent.queue.clone())
            .or_default();
        if wanted {
            set.insert(key);
        } else {
            set.remove(&key);
            if set.is_empty() {
                self.arrays_with_unborn_runnable.remove(&parent.queue);
            }
        }
    }

    /// The born children of an array parent.
    pub fn array_index(&self, parent_id: &str) -> Option<&ArrayIndex> {
        self.arrays.get(parent_id)
    }

    /// Array parents of `queue` whose unborn children are RUNNABLE, in submission order.
    pub fn arrays_with_unborn_runnable(&self, queue: &str) -> Option<&OrdSet<JobKey>> {
        self.arrays_with_unborn_runnable.get(queue)
    }

    /// A job's dependencies never change after submission, so edges are added once.
    fn add_dependency_edges(&mut self, job: &Job) {
        for dep in job.depends_on.iter().filter_map(|d| d.job_id.as_ref()) {
            self.dependents
                .entry(dep.clone())
                .or_default()
                .insert(job.id.clone());
        }
    }

    /// The jobs that depend on `job_id`.
    /// The first `max` jobs (by id) that depend on `job_id`, and how many there are in all,
    /// without copying the rest: what a page shows of a job with a million dependents.
    pub fn dependents_first(&self, job_id: &str, max: usize) -> (Vec<String>, usize) {
        self.dependents.get(job_id).map_or((Vec::new(), 0), |s| {
            (s.iter().take(max).cloned().collect(), s.len())
        })
    }

    pub fn dependents_of(&self, job_id: &str) -> Vec<String> {
        self.dependents
            .get(job_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn index_insert(&mut self, queue: &str, status: JobStatus, key: JobKey) {
        self.by_queue_status
            .entry((queue.to_string(), status))
            .or_default()
            .insert(key);
    }

    fn index_remove(&mut self, queue: &str, status: JobStatus, key: &JobKey) {
        let k = (queue.to_string(), status);
        if let Some(set) = self.by_queue_status.get_mut(&k) {
            set.remove(key);
            if set.is_empty() {
                self.by_queue_status.remove(&k);
            }
        }
    }

    /// Jobs of one queue in one status, in submission order.
    pub fn jobs_in(&self, queue: &str, status: JobStatus) -> Option<&OrdSet<JobKey>> {
        self.by_queue_status.get(&(queue.to_string(), status))
    }

    pub fn count_in(&self, queue: &str, status: JobStatus) -> usize {
        self.jobs_in(queue, status).map_or(0, |s| s.len())
    }

    /// All jobs of one queue, in submission order.
    pub fn jobs_of_queue(&self, queue: &str) -> Option<&OrdSet<JobKey>> {
        self.by_queue.get(queue)
    }

    /// Queue names that have jobs in `status`.
    pub fn queues_with(&self, status: JobStatus) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_queue_status
            .keys()
            .filter(|(_, s)| *s == status)
            .map(|(q, _)| q.clone())
            .collect();
        names.sort();
        names
    }

    pub fn ce_used_vcpus_milli(&self, ce: &str) -> u64 {
        self.ce_used_vcpus_milli.get(ce).copied().unwrap_or(0)
    }

    /// Books (or, with `sign` false, releases) an attempt's resources on its environment and
    /// agent. An agent that is gone has nothing to release.
    pub fn account(&mut self, ce: &str, agent_id: &str, resources: Resources, book: bool) {
        let vcpus = u64::from(resources.vcpus_milli);
        let used = self.ce_used_vcpus_milli.entry(ce.to_string()).or_insert(0);
        *used = if book {
            *used + vcpus
        } else {
            used.saturating_sub(vcpus)
        };
        if let Some(agent) = self.agents.get_mut(agent_id) {
            let agent = Arc::make_mut(agent);
            if book {
                agent.used_vcpus_milli += vcpus;
                agent.used_memory_mib += resources.memory_mib;
                agent.used_gpus += resources.gpus;
            } else {
                agent.used_vcpus_milli = agent.used_vcpus_milli.saturating_sub(vcpus);
                agent.used_memory_mib = agent.used_memory_mib.saturating_sub(resources.memory_mib);
                agent.used_gpus = agent.used_gpus.saturating_sub(resources.gpus);
            }
        }
    }

    /// Recomputes every derived index and counter from the jobs (after loading from the store).
    pub fn rebuild_indexes(&mut self) {
        self.by_queue_status = HashMap::new();
        self.by_queue = HashMap::new();
        self.ce_used_vcpus_milli = HashMap::new();
        self.dependents = HashMap::new();
        self.arrays = HashMap::new();
        self.arrays_with_unborn_runnable = HashMap::new();
        self.newly_finished = Vec::new();
        let agent_ids: Vec<String> = self.agents.keys().cloned().collect();
        for id in agent_ids {
            if let Some(agent) = self.agents.get_mut(&id) {
                let agent = Arc::make_mut(agent);
                agent.used_vcpus_milli = 0;
                agent.used_memory_mib = 0;
                agent.used_gpus = 0;
            }
        }
        let jobs: Vec<Arc<Job>> = self.jobs.values().cloned().collect();
        for job in jobs {
            let key: JobKey = (job.seq, job.id.clone());
            self.index_insert(&job.queue, job.status, key.clone());
            if job.array_child.is_none() {
                self.by_queue
                    .entry(job.queue.clone())
                    .or_default()
                    .insert(key);
            }
            if let Some(child) = &job.array_child {
                self.count_child(child, None, job.status, latest_time(&job));
            }
            self.next_job_seq = self.next_job_seq.max(job.seq + 1);
            self.add_dependency_edges(&job);
            if let Some(attempt) = &job.current {
                self.account(
                    &attempt.compute_environment,
                    &attempt.agent_id,
                    job.resources,
                    true,
                );
            }
        }
        let parents: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.array.is_some())
            .map(|j| j.id.clone())
            .collect();
        for id in parents {
            self.refresh_unborn_runnable(&id);
        }
        for stream in self.log_streams.values() {
            self.next_log_stream_number = self.next_log_stream_number.max(stream.number + 1);
        }
        crate::fairshare::rebuild_index(self);
    }

    /// How long a stopped attempt on compute environment `ce` gets between SIGTERM and
    /// SIGKILL: its `barge:stop-grace-seconds` tag, else AWS's 30 s.
    pub fn stop_grace_ms(&self, ce: &str) -> u64 {
        self.compute_environments
            .get(ce)
            .and_then(|c| c.tags.get(STOP_GRACE_TAG))
            .and_then(|v| parse_stop_grace_seconds(v))
            .map_or(STOP_GRACE_MS, |s| s * 1000)
    }

    /// The compute environments of `queue` that exist, in the queue's order.
    pub fn environments_of<'a>(
        &'a self,
        queue: &'a JobQueue,
    ) -> impl Iterator<Item = &'a ComputeEnvironment> + 'a {
        queue
            .compute_environment_order
            .iter()
            .filter_map(|entry| self.compute_environments.get(&entry.compute_environment))
            .map(|ce| &**ce)
    }

    /// Compute environment `ce`, if it exists and job queue `queue` places jobs on it: what a
    /// placement proposed on an older snapshot is re-checked against.
    pub fn environment_of_queue(&self, queue: &str, ce: &str) -> Option<&ComputeEnvironment> {
        let listed = self
            .job_queues
            .get(queue)?
            .compute_environment_order
            .iter()
            .any(|o| o.compute_environment == ce);
        listed
            .then(|| self.compute_environments.get(ce).map(|c| &**c))
            .flatten()
    }

    /// The agents that run attempts of compute environment `ce`.
    pub fn hosts_of<'a>(&'a self, ce: &'a ComputeEnvironment) -> Vec<&'a Agent> {
        self.agents
            .values()
            .map(|a| &**a)
            .filter(|a| a.serves(ce))
            .collect()
    }

    /// The runner compute environment `ce` asks for with its `barge:runner` tag, if any.
    pub fn runner_of(&self, ce: &str) -> Option<crate::agent::RunnerKind> {
        self.compute_environments
            .get(ce)
            .and_then(|c| c.tags.get(RUNNER_TAG))
            .and_then(|v| crate::agent::RunnerKind::parse(v))
    }

    /// The latest ACTIVE revision of a definition.
    pub fn latest_active_definition(&self, name: &str) -> Option<&Arc<JobDefinition>> {
        self.definitions_named(name)
            .rev()
            .find(|d| d.status == DefinitionStatus::Active)
    }

    pub fn definitions_named<'a>(
        &'a self,
        name: &str,
    ) -> impl DoubleEndedIterator<Item = &'a Arc<JobDefinition>> + 'a {
        let name = name.to_string();
        self.job_definitions
            .range((name.clone(), 0)..=(name, u32::MAX))
            .map(|(_, d)| d)
    }

    pub fn latest_revision(&self, name: &str) -> u32 {
        self.definitions_named(name)
            .next_back()
            .map_or(0, |d| d.revision)
    }
}
