//! The invariant checkers. Each is a plain function over core states (and, where it needs them,
//! what a command returned), so the simulator runs them after every command and the tests can
//! feed them hand-corrupted states to show that they do fail.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use barge_core::agent::{AgentInstruction, AgentReport};
use barge_core::apply::REASON_CONTAINER_EXITED;
use barge_core::command::{Effect, Key};
use barge_core::fairshare::{self, RunnableKey, ShareLoad};
use barge_core::model::*;
use barge_core::resources::{agent_could_fit, resources_of};
use barge_core::State;

pub const LEGAL_TRANSITIONS: &str = "only legal transitions";
pub const CAPACITY: &str = "capacity never over-committed";
pub const ONE_LIVE_ATTEMPT: &str = "at most one live attempt per job";
pub const NO_JOB_LOST: &str = "no acknowledged job lost";
pub const ATTEMPTS: &str = "attempts accounting";
pub const INDEXES: &str = "derived indexes match a rebuild";
pub const ATOMIC: &str = "a refused command changes nothing";
pub const DURABLE: &str = "every change is named in Changes.dirty";
pub const RESTART: &str = "a restart loads exactly what was committed";
pub const STALE_REPORTS: &str = "reports for stale attempts are refused";
pub const PLACEMENT: &str = "placements are legal";
pub const ACCEPTED: &str = "accepted submissions are valid";
pub const ALWAYS_OK: &str = "internal commands never fail";
pub const AGENT_MODEL: &str = "agents run exactly the live attempts";
pub const LIVENESS: &str = "every job that can run finishes";
pub const WAITING_REASON: &str = "every waiting job says why";
pub const NO_PANIC: &str = "the core never panics";
pub const DEPENDENCY_ORDER: &str = "dependency order respected";
pub const QUEUE_ORDER: &str = "each queue dispatches in its order";
pub const SHARE_WEIGHTS: &str = "share weights are honoured";

/// One broken invariant: which, and what exactly was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: &'static str, detail: impl Into<String>) -> Violation {
        Violation {
            invariant,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant \"{}\" violated: {}",
            self.invariant, self.detail
        )
    }
}

fn fail<T>(invariant: &'static str, detail: impl Into<String>) -> Result<T, Violation> {
    Err(Violation::new(invariant, detail))
}

/// Jobs in submission order, so every checker reports the same first violation on every run
/// (the state's job map iterates in a per-process random order).
pub fn jobs_sorted(state: &State) -> Vec<&Arc<Job>> {
    let mut jobs: Vec<&Arc<Job>> = state.jobs.values().collect();
    jobs.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
    jobs
}

/// Runs a check over the jobs in the map's own order (fast, but random per process) and, only
/// when it fails, again in submission order, so the violation reported is the same every run.
fn over_jobs<'a>(
    state: &'a State,
    check: impl Fn(&mut dyn Iterator<Item = &'a Arc<Job>>) -> Result<(), Violation>,
) -> Result<(), Violation> {
    if check(&mut state.jobs.values()).is_ok() {
        return Ok(());
    }
    check(&mut jobs_sorted(state).into_iter())
}

/// Whether `to` is reachable from `from` in at most `hops` legal transitions.
pub fn reachable(from: JobStatus, to: JobStatus, hops: usize) -> bool {
    let mut frontier = vec![from];
    for _ in 0..hops {
        if frontier.contains(&to) {
            return true;
        }
        let mut next = Vec::new();
        for s in &frontier {
            for t in JobStatus::ALL {
                if s.may_become(t) && !next.contains(&t) {
                    next.push(t);
                }
            }
        }
        frontier = next;
    }
    frontier.contains(&to)
}

/// Invariant 1 (and 4 within a run): every job of `prev` is still in `next`, each status moved
/// only along `JobStatus::may_become` (at most `hops(job)` transitions: a scheduler pass may
/// admit and place a job, a batch of reports may move it once per report), and a terminal job
/// changes nothing but its tags. New jobs appear only as `created` (a SubmitJob), SUBMITTED.
pub fn check_transitions(
    prev: &State,
    next: &State,
    hops: &dyn Fn(&str) -> usize,
    created: Option<&str>,
) -> Result<(), Violation> {
    if prev.jobs.ptr_eq(&next.jobs) {
        return Ok(());
    }
    over_jobs(prev, |jobs| transitions_of(jobs, next, hops))?;
    if next.jobs.len() != prev.jobs.len() {
        let only_created = created.is_some_and(|id| {
            next.jobs.len() == prev.jobs.len() + 1
                && prev.job(id).is_none()
                && next.job(id).is_some()
        });
        let new_jobs: Vec<&Arc<Job>> = match created.and_then(|id| next.job(id)) {
            Some(job) if only_created => vec![job],
            _ => jobs_sorted(next),
        };
        for new in new_jobs {
            if prev.job(&new.id).is_some() {
                continue;
            }
            if created != Some(new.id.as_str()) {
                return fail(
                    LEGAL_TRANSITIONS,
                    format!("job {} appeared without a SubmitJob for it", new.id),
                );
            }
            if new.status != JobStatus::Submitted {
                return fail(
                    LEGAL_TRANSITIONS,
                    format!(
                        "job {} was created {}, not SUBMITTED",
                        new.id,
                        new.status.as_str()
                    ),
                );
            }
        }
    }
    Ok(())
}

fn transitions_of<'a>(
    jobs: &mut dyn Iterator<Item = &'a Arc<Job>>,
    next: &State,
    hops: &dyn Fn(&str) -> usize,
) -> Result<(), Violation> {
    for old in jobs {
        let Some(new) = next.job(&old.id) else {
            return fail(
                NO_JOB_LOST,
                format!("job {} ({}) disappeared", old.id, old.status.as_str()),
            );
        };
        if Arc::ptr_eq(old, new) {
            continue;
        }
        if !reachable(old.status, new.status, hops(&old.id)) {
            return fail(
                LEGAL_TRANSITIONS,
                format!(
                    "job {} went {} -> {} (allowed: {} transition(s) along JobStatus::may_become)",
                    old.id,
                    old.status.as_str(),
                    new.status.as_str(),
                    hops(&old.id)
                ),
            );
        }
        let was_live = matches!(old.status, JobStatus::Starting | JobStatus::Running);
        if was_live && new.status == JobStatus::Failed && !new.is_terminated && !new.is_cancelled {
            // It failed on its own: that is only right when no retry was due.
            if let Some(last) = new.attempts.last() {
                let retry_due = !attempt_succeeded(last)
                    && !timed_out(last)
                    && new.attempts_made() < new.max_attempts()
                    && next.job_queues.contains_key(&new.queue)
                    && retry_allowed(new, last);
                if retry_due {
                    return fail(
                        ATTEMPTS,
                        format!(
                            "job {} FAILED after attempt {} of {} although its retry strategy retries it",
                            new.id,
                            new.attempts_made(),
                            new.max_attempts()
                        ),
                    );
                }
            }
        }
        if old.status.is_terminal() {
            let mut same = (**old).clone();
            same.tags = new.tags.clone();
            if same != **new {
                return fail(
                    LEGAL_TRANSITIONS,
                    format!(
                        "terminal job {} ({}) changed beyond its tags",
                        old.id,
                        old.status.as_str()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Everything that must hold of any single state (after any committed command).
pub fn check_state(state: &State) -> Result<(), Violation> {
    check_dependencies(state)?;
    check_live_attempts(state)?;
    check_attempts(state)?;
    let u = usage(state);
    indexes_with(state, &u)?;
    capacity_with(state, &u)
}

/// Dependency order: a job runs (or ran) only after every job it depends on SUCCEEDED; a
/// PENDING job still has an unfinished dependency and none failed; a job failed for a
/// dependency has one that failed.
pub fn check_dependencies(state: &State) -> Result<(), Violation> {
    use barge_core::dependencies::{dependencies, Dependencies, REASON_DEPENDENCY_FAILED};
    for job in state.jobs.values() {
        if job.depends_on.is_empty() {
            continue;
        }
        let deps = dependencies(state, job);
        let ok = match job.status {
            JobStatus::Runnable
            | JobStatus::Starting
            | JobStatus::Running
            | JobStatus::Succeeded => deps == Dependencies::Met,
            JobStatus::Pending => matches!(deps, Dependencies::Waiting(_)),
            JobStatus::Failed if job.status_reason.as_deref() == Some(REASON_DEPENDENCY_FAILED) => {
                matches!(deps, Dependencies::Failed(_))
            }
            _ => true,
        };
        if !ok {
            return fail(
                DEPENDENCY_ORDER,
                format!(
                    "job {} is {} while its dependencies stand at {deps:?}",
                    job.id,
                    job.status.as_str()
                ),
            );
        }
    }
    Ok(())
}

/// Invariant 3, within the state: `current` is Some exactly when the job is STARTING or RUNNING,
/// it is on a registered agent (a lost agent's attempts are failed at once), and no attempt id
/// is used twice anywhere.
pub fn check_live_attempts(state: &State) -> Result<(), Violation> {
    over_jobs(state, |jobs| live_attempts_of(state, jobs))
}

fn live_attempts_of(
    state: &State,
    jobs: &mut dyn Iterator<Item = &Arc<Job>>,
) -> Result<(), Violation> {
    let mut attempt_ids: HashSet<&str> = HashSet::new();
    for job in jobs {
        let live = matches!(job.status, JobStatus::Starting | JobStatus::Running);
        if live != job.current.is_some() {
            return fail(
                ONE_LIVE_ATTEMPT,
                format!(
                    "job {} is {} but {} a current attempt",
                    job.id,
                    job.status.as_str(),
                    if job.current.is_some() {
                        "has"
                    } else {
                        "has no"
                    }
                ),
            );
        }
        if job.stop_reason.is_some() && !live {
            return fail(
                ONE_LIVE_ATTEMPT,
                format!(
                    "job {} is {} with a pending stop",
                    job.id,
                    job.status.as_str()
                ),
            );
        }
        if let Some(a) = &job.current {
            if !state.agents.contains_key(&a.agent_id) {
                return fail(
                    ONE_LIVE_ATTEMPT,
                    format!(
                        "job {} has live attempt {} on agent {}, which is not registered (it would be retried while possibly still running)",
                        job.id, a.id, a.agent_id
                    ),
                );
            }
            if job.status == JobStatus::Running && a.started_at.is_none() {
                return fail(
                    ONE_LIVE_ATTEMPT,
                    format!(
                        "job {} is RUNNING but attempt {} never started",
                        job.id, a.id
                    ),
                );
            }
        }
        for a in job.attempts.iter().chain(job.current.as_ref()) {
            if !attempt_ids.insert(a.id.as_str()) {
                return fail(
                    ONE_LIVE_ATTEMPT,
                    format!("attempt id {} is used twice (job {})", a.id, job.id),
                );
            }
        }
    }
    Ok(())
}

/// Whether a finished attempt counts as a success.
pub fn attempt_succeeded(a: &Attempt) -> bool {
    a.exit_code == Some(0)
        && a.reason.is_none()
        && a.status_reason.as_deref() == Some(REASON_CONTAINER_EXITED)
}

/// Invariant 5: attempts are numbered 1, 2, … with the live one last; never more than the retry
/// strategy allows; only a failed attempt is followed by another; a waiting job that has run
/// before has a failed last attempt and retries left; a SUCCEEDED job's last attempt succeeded.
pub fn check_attempts(state: &State) -> Result<(), Violation> {
    over_jobs(state, attempts_of)
}

fn attempts_of(jobs: &mut dyn Iterator<Item = &Arc<Job>>) -> Result<(), Violation> {
    for job in jobs {
        let made = job.attempts_made();
        if made > job.max_attempts() {
            return fail(
                ATTEMPTS,
                format!(
                    "job {} made {made} attempts but allows {}",
                    job.id,
                    job.max_attempts()
                ),
            );
        }
        for (i, a) in job.attempts.iter().chain(job.current.as_ref()).enumerate() {
            if a.number as usize != i + 1 {
                return fail(
                    ATTEMPTS,
                    format!(
                        "job {} attempt {} is numbered {} at position {}",
                        job.id,
                        a.id,
                        a.number,
                        i + 1
                    ),
                );
            }
        }
        for (i, a) in job.attempts.iter().enumerate() {
            if a.stopped_at.is_none() {
                return fail(
                    ATTEMPTS,
                    format!("job {} finished attempt {} has no stoppedAt", job.id, a.id),
                );
            }
            let last = i + 1 == job.attempts.len();
            if attempt_succeeded(a) && (!last || job.current.is_some() || !job.status.is_terminal())
            {
                return fail(
                    ATTEMPTS,
                    format!(
                        "job {} ({}) was retried after attempt {} succeeded",
                        job.id,
                        job.status.as_str(),
                        a.id
                    ),
                );
            }
        }
        if job.status.is_before_start() && !job.attempts.is_empty() {
            let last = job.attempts.last().expect("not empty");
            if attempt_succeeded(last)
                || timed_out(last)
                || job.is_cancelled
                || job.is_terminated
                || !retry_allowed(job, last)
            {
                return fail(
                    ATTEMPTS,
                    format!(
                        "job {} is {} again although attempt {} succeeded, it was stopped, or evaluateOnExit says EXIT",
                        job.id,
                        job.status.as_str(),
                        last.id
                    ),
                );
            }
        }
        if job.status == JobStatus::Succeeded && !job.attempts.last().is_some_and(attempt_succeeded)
        {
            return fail(
                ATTEMPTS,
                format!(
                    "job {} is SUCCEEDED without a successful last attempt",
                    job.id
                ),
            );
        }
    }
    Ok(())
}

/// A timed-out attempt is never retried (AWS).
fn timed_out(attempt: &Attempt) -> bool {
    attempt.status_reason.as_deref() == Some(barge_core::apply::REASON_TIMEOUT)
}

/// Whether the job's retry strategy lets a failed attempt be retried, by AWS's evaluateOnExit
/// rules (derived here from AWS's documentation, independently of the core): the first rule
/// whose given conditions all match decides, RETRY or EXIT, case-insensitively; a pattern
/// matches exactly, or by prefix when it ends in `*`; with no matching rule, retry.
pub fn retry_allowed(job: &Job, attempt: &Attempt) -> bool {
    fn matches(pattern: &Option<String>, value: Option<&str>) -> bool {
        match pattern {
            None => true,
            Some(p) => value.is_some_and(|v| match p.strip_suffix('*') {
                Some(prefix) => v.starts_with(prefix),
                None => v == p,
            }),
        }
    }
    let Some(rules) = job
        .retry_strategy
        .as_ref()
        .and_then(|r| r.evaluate_on_exit.as_ref())
    else {
        return true;
    };
    let code = attempt.exit_code.map(|c| c.to_string());
    for rule in rules {
        if matches(&rule.on_exit_code, code.as_deref())
            && matches(&rule.on_reason, attempt.reason.as_deref())
            && matches(&rule.on_status_reason, attempt.status_reason.as_deref())
        {
            return rule.action.eq_ignore_ascii_case("RETRY");
        }
    }
    true
}

/// What the live attempts add up to, recomputed from the jobs: per agent (vCPUs, MiB) and per
/// compute environment (vCPUs).
pub struct Usage {
    pub agents: BTreeMap<String, (u64, u64)>,
    pub compute_environments: BTreeMap<String, u64>,
}

pub fn usage(state: &State) -> Usage {
    let mut u = Usage {
        agents: BTreeMap::new(),
        compute_environments: BTreeMap::new(),
    };
    for job in state.jobs.values() {
        if let Some(a) = &job.current {
            let vcpus = u64::from(job.resources.vcpus_milli);
            let e = u.agents.entry(a.agent_id.clone()).or_insert((0, 0));
            e.0 += vcpus;
            e.1 += job.resources.memory_mib;
            *u.compute_environments
                .entry(a.compute_environment.clone())
                .or_insert(0) += vcpus;
        }
    }
    u
}

/// Invariant 6: the job indexes hold exactly the jobs (right queue, status and seq), and the
/// agents' and compute environments' usage counters equal a recount from the live attempts.
pub fn check_indexes(state: &State) -> Result<(), Violation> {
    indexes_with(state, &usage(state))
}

fn indexes_with(state: &State, u: &Usage) -> Result<(), Violation> {
    let mut per_status: BTreeMap<JobStatus, usize> = BTreeMap::new();
    let mut per_queue: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_queue_status: BTreeMap<(&str, JobStatus), usize> = BTreeMap::new();
    for job in state.jobs.values() {
        *per_status.entry(job.status).or_insert(0) += 1;
        *per_queue.entry(job.queue.as_str()).or_insert(0) += 1;
        *per_queue_status
            .entry((job.queue.as_str(), job.status))
            .or_insert(0) += 1;
    }
    for status in JobStatus::ALL {
        let mut indexed = 0;
        for queue in state.queues_with(status) {
            for (seq, id) in state.jobs_in(&queue, status).into_iter().flatten() {
                indexed += 1;
                let ok = state
                    .job(id)
                    .is_some_and(|j| j.queue == queue && j.status == status && j.seq == *seq);
                if !ok {
                    return fail(
                        INDEXES,
                        format!(
                            "index ({queue}, {}) lists job {id} (seq {seq}), which is not there in that queue and status",
                            status.as_str()
                        ),
                    );
                }
            }
        }
        let actual = per_status.get(&status).copied().unwrap_or(0);
        if indexed != actual {
            return fail(
                INDEXES,
                format!(
                    "the indexes hold {indexed} {} jobs but there are {actual}",
                    status.as_str()
                ),
            );
        }
    }
    for ((queue, status), n) in &per_queue_status {
        let counted = state.count_in(queue, *status);
        if counted != *n {
            return fail(
                INDEXES,
                format!(
                    "count_in({queue}, {}) is {counted} but {n} jobs have it",
                    status.as_str()
                ),
            );
        }
    }
    for (queue, n) in &per_queue {
        let listed = state.jobs_of_queue(queue).map_or(0, |s| s.len());
        if listed != *n {
            return fail(
                INDEXES,
                format!("jobs_of_queue({queue}) lists {listed} jobs but {n} are in it"),
            );
        }
    }
    for agent in state.agents.values() {
        let (vcpus, memory) = u.agents.get(&agent.id).copied().unwrap_or((0, 0));
        if agent.used_vcpus_milli != vcpus || agent.used_memory_mib != memory {
            return fail(
                INDEXES,
                format!(
                    "agent {} counts {} mvCPU / {} MiB in use but its live attempts need {vcpus} / {memory}",
                    agent.id, agent.used_vcpus_milli, agent.used_memory_mib
                ),
            );
        }
    }
    check_share_index(state)?;
    let names: BTreeSet<&String> = state
        .compute_environments
        .keys()
        .chain(u.compute_environments.keys())
        .collect();
    for name in names {
        let counted = state.ce_used_vcpus_milli(name);
        let actual = u.compute_environments.get(name).copied().unwrap_or(0);
        if counted != actual {
            return fail(
                INDEXES,
                format!(
                    "compute environment {name} counts {counted} mvCPU in use but its live attempts need {actual}"
                ),
            );
        }
    }
    Ok(())
}

/// Invariant 2, per agent: the live attempts on an agent fit its size. (The per-environment
/// maxvCpus bound is checked when placements are made, see `check_placements`, because lowering
/// maxvCpus below current use is allowed and only stops new placements.)
pub fn check_capacity(state: &State) -> Result<(), Violation> {
    capacity_with(state, &usage(state))
}

fn capacity_with(state: &State, u: &Usage) -> Result<(), Violation> {
    for (agent_id, (vcpus, memory)) in &u.agents {
        let Some(agent) = state.agents.get(agent_id) else {
            continue; // reported by check_live_attempts
        };
        if *vcpus > agent.vcpus_milli || *memory > agent.memory_mib {
            return fail(
                CAPACITY,
                format!(
                    "agent {agent_id} runs {vcpus} mvCPU / {memory} MiB but has {} / {}",
                    agent.vcpus_milli, agent.memory_mib
                ),
            );
        }
    }
    Ok(())
}

/// Invariant 2 at placement time, and the placement rules: each Launch a command emitted is for
/// a job that was waiting with no live attempt and is now STARTING with exactly that attempt, on
/// an ENABLED environment of its queue that the agent serves, and that environment's live
/// attempts stay within maxvCpus. Returns how many Launches there were.
pub fn check_placements(
    prev: &State,
    next: &State,
    effects: &[Effect],
) -> Result<usize, Violation> {
    let mut launched = 0;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for effect in effects {
        let Effect::Agent {
            agent_id,
            instruction,
        } = effect;
        let AgentInstruction::Launch(spec) = instruction else {
            continue;
        };
        launched += 1;
        let id = &spec.job_id;
        let Some(job) = next.job(id) else {
            return fail(PLACEMENT, format!("launch of unknown job {id}"));
        };
        let Some(before) = prev.job(id) else {
            return fail(
                PLACEMENT,
                format!("launch of job {id} created in the same command"),
            );
        };
        if before.current.is_some() || !before.status.is_before_start() {
            return fail(
                ONE_LIVE_ATTEMPT,
                format!(
                    "job {id} was placed again while {} with attempt {:?}",
                    before.status.as_str(),
                    before.current.as_ref().map(|a| &a.id)
                ),
            );
        }
        let Some(cur) = job.current.as_ref() else {
            return fail(
                PLACEMENT,
                format!("job {id} was launched but has no live attempt"),
            );
        };
        if cur.id != spec.attempt_id
            || cur.agent_id != *agent_id
            || job.status != JobStatus::Starting
        {
            return fail(
                PLACEMENT,
                format!(
                    "launch of {} on {agent_id} but job {id} is {} with attempt {} on {}",
                    spec.attempt_id,
                    job.status.as_str(),
                    cur.id,
                    cur.agent_id
                ),
            );
        }
        if spec.vcpus_milli != job.resources.vcpus_milli
            || spec.memory_mib != job.resources.memory_mib
            || spec.attempt_number as usize != job.attempts.len() + 1
        {
            return fail(
                PLACEMENT,
                format!("launch spec of {} disagrees with job {id}", spec.attempt_id),
            );
        }
        let ce_name = &cur.compute_environment;
        let Some(ce) = next.compute_environments.get(ce_name) else {
            return fail(
                PLACEMENT,
                format!("job {id} placed on missing environment {ce_name}"),
            );
        };
        if ce.state != ResourceState::Enabled {
            return fail(
                PLACEMENT,
                format!("job {id} placed on DISABLED environment {ce_name}"),
            );
        }
        let in_queue = next.job_queues.get(&job.queue).is_some_and(|q| {
            q.compute_environment_order
                .iter()
                .any(|o| o.compute_environment == *ce_name)
        });
        if !in_queue {
            return fail(
                PLACEMENT,
                format!(
                    "job {id} placed on {ce_name}, which its queue {} does not list",
                    job.queue
                ),
            );
        }
        match next.agents.get(agent_id) {
            Some(agent) if agent.serves(ce) => {}
            Some(_) => {
                return fail(
                    PLACEMENT,
                    format!("job {id} placed on agent {agent_id}, which does not serve {ce_name}"),
                )
            }
            None => {
                return fail(
                    PLACEMENT,
                    format!("job {id} placed on unregistered agent {agent_id}"),
                )
            }
        }
        touched.insert(ce_name.clone());
    }
    if !touched.is_empty() {
        let u = usage(next);
        for name in touched {
            let ce = &next.compute_environments[&name];
            if let Some(max) = ce.max_vcpus_milli() {
                let used = u.compute_environments.get(&name).copied().unwrap_or(0);
                if used > max {
                    return fail(
                        CAPACITY,
                        format!(
                            "a placement brought compute environment {name} to {used} mvCPU, over its maxvCpus ({max} mvCPU)"
                        ),
                    );
                }
            }
        }
    }
    Ok(launched)
}

/// A refused command leaves every part of the state as it was.
pub fn check_unchanged(before: &State, after: &State) -> Result<(), Violation> {
    let same = (before.jobs.ptr_eq(&after.jobs) || before.jobs == after.jobs)
        && (before
            .compute_environments
            .ptr_eq(&after.compute_environments)
            || before.compute_environments == after.compute_environments)
        && (before.job_queues.ptr_eq(&after.job_queues) || before.job_queues == after.job_queues)
        && (before.job_definitions.ptr_eq(&after.job_definitions)
            || before.job_definitions == after.job_definitions)
        && (before.log_streams.ptr_eq(&after.log_streams)
            || before.log_streams == after.log_streams)
        && (before.agents.ptr_eq(&after.agents) || before.agents == after.agents)
        && (before
            .scheduling_policies
            .ptr_eq(&after.scheduling_policies)
            || before.scheduling_policies == after.scheduling_policies)
        && (before.share_usage.ptr_eq(&after.share_usage)
            || before.share_usage == after.share_usage)
        && before.next_job_seq == after.next_job_seq
        && before.next_log_stream_number == after.next_log_stream_number;
    if !same {
        return fail(
            ATOMIC,
            "the state differs after a command that returned an error",
        );
    }
    Ok(())
}

/// Every entity that differs between `prev` and `next` is named in `dirty`, so the store writes
/// it: otherwise a restart would silently lose an acknowledged change.
pub fn check_dirty(prev: &State, next: &State, dirty: &[Key]) -> Result<(), Violation> {
    let dirty: HashSet<&Key> = dirty.iter().collect();
    let mut missing: Vec<Key> = Vec::new();
    if !prev.jobs.ptr_eq(&next.jobs) {
        for (id, new) in next.jobs.iter() {
            let changed = prev
                .jobs
                .get(id)
                .is_none_or(|old| !Arc::ptr_eq(old, new) && **old != **new);
            if changed {
                missing.push(Key::Job(id.clone()));
            }
        }
        for id in prev.jobs.keys() {
            if !next.jobs.contains_key(id) {
                missing.push(Key::Job(id.clone()));
            }
        }
    }
    fn diff<K: Ord + Clone, V: PartialEq>(
        prev: impl Iterator<Item = (K, Arc<V>)>,
        next: impl Iterator<Item = (K, Arc<V>)>,
        key: impl Fn(K) -> Key,
        out: &mut Vec<Key>,
    ) {
        let prev: BTreeMap<K, Arc<V>> = prev.collect();
        let next: BTreeMap<K, Arc<V>> = next.collect();
        for (k, new) in &next {
            if prev
                .get(k)
                .is_none_or(|old| !Arc::ptr_eq(old, new) && **old != **new)
            {
                out.push(key(k.clone()));
            }
        }
        for k in prev.keys() {
            if !next.contains_key(k) {
                out.push(key(k.clone()));
            }
        }
    }
    if !prev.compute_environments.ptr_eq(&next.compute_environments) {
        diff(
            prev.compute_environments
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            next.compute_environments
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            Key::ComputeEnvironment,
            &mut missing,
        );
    }
    if !prev.job_queues.ptr_eq(&next.job_queues) {
        diff(
            prev.job_queues.iter().map(|(k, v)| (k.clone(), v.clone())),
            next.job_queues.iter().map(|(k, v)| (k.clone(), v.clone())),
            Key::JobQueue,
            &mut missing,
        );
    }
    if !prev.job_definitions.ptr_eq(&next.job_definitions) {
        diff(
            prev.job_definitions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            next.job_definitions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            |(n, r)| Key::JobDefinition(n, r),
            &mut missing,
        );
    }
    if !prev.log_streams.ptr_eq(&next.log_streams) {
        diff(
            prev.log_streams.iter().map(|(k, v)| (k.clone(), v.clone())),
            next.log_streams.iter().map(|(k, v)| (k.clone(), v.clone())),
            Key::LogStream,
            &mut missing,
        );
    }
    if !prev.scheduling_policies.ptr_eq(&next.scheduling_policies) {
        diff(
            prev.scheduling_policies
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            next.scheduling_policies
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            Key::SchedulingPolicy,
            &mut missing,
        );
    }
    if !prev.share_usage.ptr_eq(&next.share_usage) {
        diff(
            prev.share_usage.iter().map(|(k, v)| (k.clone(), v.clone())),
            next.share_usage.iter().map(|(k, v)| (k.clone(), v.clone())),
            Key::ShareUsage,
            &mut missing,
        );
    }
    missing.retain(|k| !dirty.contains(k));
    missing.sort();
    match missing.first() {
        Some(k) => fail(
            DURABLE,
            format!(
                "{k:?} changed but is not in Changes.dirty ({} such)",
                missing.len()
            ),
        ),
        None => Ok(()),
    }
}

/// A batch of agent reports: exactly the reports whose attempt is (still) the job's live one on
/// this agent are accepted, every refused `Running` is answered with a Stop, and each accepted
/// `Exited` ended its attempt with the reported exit code.
pub fn check_reports(
    prev: &State,
    next: &State,
    agent_id: &str,
    reports: &[AgentReport],
    refused: usize,
    effects: &[Effect],
) -> Result<(), Violation> {
    let mut ended: HashSet<&str> = HashSet::new();
    let mut expected_refused = 0;
    let mut stale_running = 0;
    for r in reports {
        let (job_id, attempt_id) = r.ids();
        let live = prev
            .job(job_id)
            .and_then(|j| j.current.as_ref())
            .is_some_and(|a| a.id == attempt_id && a.agent_id == agent_id)
            && !ended.contains(attempt_id);
        if !live {
            expected_refused += 1;
            if matches!(r, AgentReport::Running { .. }) {
                stale_running += 1;
            }
            continue;
        }
        if let AgentReport::Exited { exit_code, .. } = r {
            ended.insert(attempt_id);
            let recorded = next.job(job_id).is_some_and(|j| {
                j.attempts
                    .iter()
                    .any(|a| a.id == attempt_id && a.exit_code == *exit_code)
            });
            if !recorded {
                return fail(
                    STALE_REPORTS,
                    format!(
                        "accepted exit of attempt {attempt_id} (job {job_id}) was not recorded"
                    ),
                );
            }
        }
    }
    if refused != expected_refused {
        return fail(
            STALE_REPORTS,
            format!(
                "agent {agent_id}: {refused} of {} reports refused, expected {expected_refused}",
                reports.len()
            ),
        );
    }
    let stops = effects
        .iter()
        .filter(|e| {
            matches!(e, Effect::Agent { agent_id: a, instruction: AgentInstruction::Stop { .. } } if a == agent_id)
        })
        .count();
    if stops != stale_running {
        return fail(
            STALE_REPORTS,
            format!(
                "agent {agent_id}: {stale_running} stale Running reports but {stops} Stops sent back"
            ),
        );
    }
    Ok(())
}

/// An accepted SubmitJob created a SUBMITTED job, new under its id, in a queue that existed and
/// was ENABLED, from an ACTIVE container definition, with resources that follow from its
/// effective container.
pub fn check_submit(prev: &State, next: &State, job_id: &str) -> Result<(), Violation> {
    if prev.job(job_id).is_some() {
        return fail(
            ACCEPTED,
            format!("SubmitJob accepted {job_id}, which already existed"),
        );
    }
    let Some(job) = next.job(job_id) else {
        return fail(
            NO_JOB_LOST,
            format!("SubmitJob acknowledged {job_id} but it is not there"),
        );
    };
    if job.status != JobStatus::Submitted {
        return fail(
            ACCEPTED,
            format!("new job {job_id} is {}", job.status.as_str()),
        );
    }
    if !prev
        .job_queues
        .get(&job.queue)
        .is_some_and(|q| q.state == ResourceState::Enabled)
    {
        return fail(
            ACCEPTED,
            format!(
                "job {job_id} accepted into missing or DISABLED queue {}",
                job.queue
            ),
        );
    }
    let def = prev
        .job_definitions
        .get(&(job.definition_name.clone(), job.definition_revision));
    if !def.is_some_and(|d| {
        d.status == DefinitionStatus::Active
            && d.kind == "container"
            && d.container_properties.is_some()
    }) {
        return fail(
            ACCEPTED,
            format!(
                "job {job_id} accepted with missing, INACTIVE or non-container definition {}:{}",
                job.definition_name, job.definition_revision
            ),
        );
    }
    match resources_of(&job.container) {
        Ok(r) if r == job.resources => {}
        other => {
            return fail(
                ACCEPTED,
                format!(
                    "job {job_id} books {:?} but its container asks for {other:?}",
                    job.resources
                ),
            )
        }
    }
    if job.seq + 1 != next.next_job_seq || prev.jobs.values().any(|j| j.seq >= job.seq) {
        return fail(
            ACCEPTED,
            format!("job {job_id} got seq {} out of order", job.seq),
        );
    }
    Ok(())
}

/// Whether a job could start now if capacity were free: its queue lists an ENABLED environment
/// whose maxvCpus bound admits it and a registered agent serving it is large enough.
pub fn could_run(state: &State, job: &Job) -> bool {
    let Some(queue) = state.job_queues.get(&job.queue) else {
        return false;
    };
    // A job waits on its dependencies: it can run only if each has SUCCEEDED or could run
    // itself (dependencies are older jobs, so this ends).
    let deps_can_succeed = job
        .depends_on
        .iter()
        .filter_map(|d| d.job_id.as_ref())
        .all(|id| {
            state.job(id).is_some_and(|dep| match dep.status {
                JobStatus::Succeeded => true,
                JobStatus::Failed => false,
                _ => could_run(state, dep),
            })
        });
    if !deps_can_succeed {
        return false;
    }
    queue.compute_environment_order.iter().any(|o| {
        let Some(ce) = state.compute_environments.get(&o.compute_environment) else {
            return false;
        };
        ce.state == ResourceState::Enabled
            && ce
                .max_vcpus_milli()
                .is_none_or(|max| max >= u64::from(job.resources.vcpus_milli))
            && state
                .agents
                .values()
                .any(|a| a.serves(ce) && agent_could_fit(a, job.resources))
    })
}

/// "Failing to place is data": every SUBMITTED, PENDING or RUNNABLE job has a non-empty reason
/// it is waiting, derived from the state.
pub fn check_waiting_reasons(state: &State) -> Result<(), Violation> {
    over_jobs(state, |jobs| waiting_reasons_of(state, jobs))
}

fn waiting_reasons_of(
    state: &State,
    jobs: &mut dyn Iterator<Item = &Arc<Job>>,
) -> Result<(), Violation> {
    for job in jobs {
        if !job.status.is_before_start() {
            continue;
        }
        let reason = barge_core::reason::why_waiting(state, job);
        if reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return fail(
                WAITING_REASON,
                format!(
                    "job {} is {} in queue {} with no reason ({reason:?})",
                    job.id,
                    job.status.as_str(),
                    job.queue
                ),
            );
        }
    }
    Ok(())
}

/// The fair-share index holds, per queue and share identifier, exactly the unfinished jobs,
/// the vCPUs their live attempts book, and the RUNNABLE jobs in (priority, submission) order,
/// recounted here from the jobs.
pub fn check_share_index(state: &State) -> Result<(), Violation> {
    type QueueShare = (String, String);
    let mut loads: BTreeMap<QueueShare, ShareLoad> = BTreeMap::new();
    let mut runnable: BTreeMap<QueueShare, Vec<RunnableKey>> = BTreeMap::new();
    for job in jobs_sorted(state) {
        let Some(id) = &job.share_identifier else {
            continue;
        };
        let key = (job.queue.clone(), id.clone());
        if !job.status.is_terminal() {
            let l = loads.entry(key.clone()).or_default();
            l.unfinished += 1;
            if job.current.is_some() {
                l.running_vcpus_milli += u64::from(job.resources.vcpus_milli);
            }
        }
        if job.status == JobStatus::Runnable {
            runnable.entry(key).or_default().push((
                std::cmp::Reverse(job.scheduling_priority.unwrap_or(0)),
                job.seq,
                job.id.clone(),
            ));
        }
    }
    for list in runnable.values_mut() {
        list.sort();
    }
    let (indexed_loads, indexed_runnable) = fairshare::index_contents(state);
    if indexed_loads != loads {
        let at = loads
            .keys()
            .chain(indexed_loads.keys())
            .find(|k| loads.get(*k) != indexed_loads.get(*k));
        return fail(
            INDEXES,
            format!(
                "the share index's load differs from a recount at {at:?}: indexed {:?}, recounted {:?}",
                at.and_then(|k| indexed_loads.get(k)),
                at.and_then(|k| loads.get(k))
            ),
        );
    }
    if indexed_runnable != runnable {
        return fail(
            INDEXES,
            "the share index's RUNNABLE jobs differ from a recount".to_string(),
        );
    }
    Ok(())
}

/// The share a job's identifier belongs to under a distribution, derived here from AWS's
/// documentation: the entry naming it exactly, else the wildcard whose prefix it starts with,
/// else itself.
pub fn share_key(distribution: &[ShareWeight], identifier: &str) -> String {
    for e in distribution {
        let hit = match e.share_identifier.strip_suffix('*') {
            Some(prefix) => identifier.starts_with(prefix),
            None => e.share_identifier == identifier,
        };
        if hit {
            return e.share_identifier.clone();
        }
    }
    identifier.to_string()
}

/// After a scheduling pass planned on exactly `prev`: in every queue, a job placed from among
/// those already RUNNABLE was not taken ahead of one that goes before it and asks for no more
/// (vCPUs, memory, GPUs), since whatever had room for the larger one had room for the smaller
/// one first. "Before" is submission order in a FIFO queue, and (priority, submission) within
/// one share of a fair-share queue. Shares are ranked by usage, which is not recomputed here;
/// queues that reserve capacity (computeReservation) are skipped, since the reservation eases
/// as more shares run within a pass.
pub fn check_queue_order(prev: &State, next: &State) -> Result<(), Violation> {
    let mut placed: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    let mut missed: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    for queue in prev.queues_with(JobStatus::Runnable) {
        for (_, id) in prev
            .jobs_in(&queue, JobStatus::Runnable)
            .into_iter()
            .flatten()
        {
            let job = &**prev.jobs.get(id).expect("indexed jobs exist");
            let now_live = next.job(id).is_some_and(|j| j.current.is_some());
            let list = if now_live { &mut placed } else { &mut missed };
            list.entry(job.queue.as_str()).or_default().push(job);
        }
    }
    for (queue_name, placed) in placed {
        let Some(queue) = prev.job_queues.get(queue_name) else {
            continue;
        };
        let policy = queue.scheduling_policy_arn.as_deref().and_then(|arn| {
            let name = arn.rsplit('/').next()?;
            prev.scheduling_policies.get(name)
        });
        let rules = policy.map(|p| p.fairshare_policy.clone().unwrap_or_default());
        if rules
            .as_ref()
            .is_some_and(|r| r.compute_reservation.unwrap_or(0) > 0)
        {
            continue;
        }
        let order_key = |j: &Job| match &rules {
            None => (String::new(), 0, j.seq),
            Some(r) => (
                share_key(
                    &r.share_distribution,
                    j.share_identifier.as_deref().unwrap_or(""),
                ),
                -j.scheduling_priority.unwrap_or(0),
                j.seq,
            ),
        };
        for y in &placed {
            let ky = order_key(y);
            for x in missed.get(queue_name).into_iter().flatten() {
                let kx = order_key(x);
                let before = kx.0 == ky.0 && (kx.1, kx.2) < (ky.1, ky.2);
                let smaller = x.resources.vcpus_milli <= y.resources.vcpus_milli
                    && x.resources.memory_mib <= y.resources.memory_mib
                    && x.resources.gpus <= y.resources.gpus;
                if before && smaller {
                    return fail(
                        QUEUE_ORDER,
                        format!(
                            "job queue {queue_name}: job {} was placed while job {}, which goes before it and needs no more, was passed over",
                            y.id, x.id
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Over a long saturated run, each share's vCPU-time relative to the others' is the inverse of
/// its weightFactor, within `tolerance` (0.1 = 10%). `used` and `weights` are per share.
pub fn check_share_weights(
    used: &BTreeMap<String, f64>,
    weights: &BTreeMap<String, f64>,
    tolerance: f64,
) -> Result<(), Violation> {
    let total_used: f64 = used.values().sum();
    let total_entitlement: f64 = weights.values().map(|w| 1.0 / w).sum();
    if total_used <= 0.0 {
        return fail(SHARE_WEIGHTS, "no share used anything");
    }
    for (share, w) in weights {
        let expected = (1.0 / w) / total_entitlement;
        let got = used.get(share).copied().unwrap_or(0.0) / total_used;
        if (got / expected - 1.0).abs() > tolerance {
            return fail(
                SHARE_WEIGHTS,
                format!(
                    "share {share} (weight {w}) got {:.1}% of the vCPU-time, expected {:.1}% ± {:.0}%",
                    got * 100.0,
                    expected * 100.0,
                    tolerance * 100.0
                ),
            );
        }
    }
    Ok(())
}
