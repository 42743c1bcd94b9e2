//! Attempts: one live attempt per job, attempts accounting and retries, stale reports refused.

use std::collections::HashSet;
use std::sync::Arc;

use barge_core::agent::{AgentInstruction, AgentReport};
use barge_core::apply::REASON_CONTAINER_EXITED;
use barge_core::command::Effect;
use barge_core::model::{Attempt, Job, JobStatus};
use barge_core::State;

use super::{fail, over_jobs, Violation, ATTEMPTS, ONE_LIVE_ATTEMPT, STALE_REPORTS};

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
        // A multi-node parent runs nothing itself: its nodes hold the live attempts.
        if job.multinode.is_some() {
            if job.current.is_some() {
                return fail(
                    ONE_LIVE_ATTEMPT,
                    format!("multi-node job {} has an attempt of its own", job.id),
                );
            }
            continue;
        }
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
        if job.array.is_some() {
            // A parent never runs (see `check_arrays`): its children make the attempts.
            continue;
        }
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
            // A node runs again with every attempt of its job, whatever its own last result
            // (`check_gangs` holds nodes to their job instead).
            if job.node.is_some() {
                continue;
            }
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
        if job.node.is_some() {
            continue;
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
pub(super) fn timed_out(attempt: &Attempt) -> bool {
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
            .is_some_and(|a| {
                a.id == attempt_id && a.agent_id == agent_id && a.stopped_at.is_none()
            })
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
            // A node that exits while its job runs on keeps the ended attempt as its current
            // one until the job ends.
            let recorded = next.job(job_id).is_some_and(|j| {
                j.attempts
                    .iter()
                    .chain(j.current.as_ref().filter(|a| a.stopped_at.is_some()))
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
            // Stale Running reports are answered with an immediate stop (no grace); a multi-node
            // job whose attempt ended stops its other nodes with the usual grace.
            matches!(e, Effect::Agent { agent_id: a, instruction: AgentInstruction::Stop { grace_ms: 0, .. } } if a == agent_id)
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
