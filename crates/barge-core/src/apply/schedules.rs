//! Schedules: create, update, delete, and fire the due ones (docs/schedules.md).
//!
//! Two clocks meet here. `clock_ms` is the schedules' clock, read by the server's firing loop
//! (the wall clock, or a test's injected one): it decides what is due and the next fire time.
//! `now` is the command's time, as for every command: it stamps the jobs a fire submits.
//!
//! Catch-up: a schedule fires at most once per FireSchedules, however many of its fire times
//! have passed (the server was down, or the loop was late); its next fire time is then the
//! first one after `clock_ms`. Missed times are not replayed.

use std::sync::Arc;

use super::jobs::{submit_job, terminate_job};
use crate::command::*;
use crate::limits::{SCHEDULES_MAX, SCHEDULE_ACTIVE_JOBS_MAX};
use crate::model::*;
use crate::schedule::{
    parse_expression, parse_time_zone, Expression, JobTemplate, OverlapPolicy, Schedule,
};
use crate::state::State;

/// The id a template is tried with when checked; never stored.
const CHECK_JOB_ID: &str = "schedule-template-check";

fn find(state: &State, name: &str) -> Result<Schedule, CoreError> {
    state
        .schedules
        .get(name)
        .map(|s| (**s).clone())
        .ok_or_else(|| CoreError::NotFound(format!("schedule {name} does not exist")))
}

/// The expression and time zone, checked; and, when ENABLED, that the schedule fires at
/// least once more.
fn check_timing(s: &Schedule, clock_ms: i64) -> Result<(), CoreError> {
    let e = parse_expression(&s.expression)
        .map_err(|m| CoreError::Invalid(format!("scheduleExpression {m}")))?;
    let tz = parse_time_zone(&s.time_zone)
        .map_err(|m| CoreError::Invalid(format!("scheduleExpressionTimezone {m}")))?;
    if s.state == ResourceState::Enabled && e.next_after(&tz, s.anchor_ms, clock_ms).is_none() {
        let what = match e {
            Expression::At(_) => "names a time that has already passed",
            _ => "never fires again",
        };
        return Err(CoreError::Invalid(format!(
            "scheduleExpression {} {what} (in {})",
            s.expression, s.time_zone
        )));
    }
    Ok(())
}

/// The template is checked exactly as a SubmitJob would be now (queue, definition, share
/// identifier, array size…), on a copy of the state that is thrown away.
fn check_template(
    state: &State,
    name: &str,
    template: &JobTemplate,
    now: i64,
) -> Result<(), CoreError> {
    let mut scratch = state.clone();
    let mut changes = Changes::default();
    let submit = template.to_submit(CHECK_JOB_ID.to_string(), name);
    let prefix = |m: String| format!("jobTemplate: {m}");
    match submit_job(&mut scratch, submit, now, &mut changes) {
        Ok(_) => Ok(()),
        Err(CoreError::NotFound(m)) => Err(CoreError::NotFound(prefix(m))),
        Err(CoreError::Conflict(m)) => Err(CoreError::Conflict(prefix(m))),
        Err(CoreError::Invalid(m)) => Err(CoreError::Invalid(prefix(m))),
        Err(CoreError::LimitExceeded(m)) => Err(CoreError::LimitExceeded(prefix(m))),
    }
}

pub(super) fn create_schedule(
    state: &mut State,
    mut s: Schedule,
    clock_ms: i64,
    now: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    if state.schedules.contains_key(&s.name) {
        return Err(CoreError::Conflict(format!(
            "schedule {} already exists; update it or choose another scheduleName",
            s.name
        )));
    }
    if state.schedules.len() >= SCHEDULES_MAX {
        return Err(CoreError::LimitExceeded(format!(
            "this server already holds {SCHEDULES_MAX} schedules, the most it allows; delete one first"
        )));
    }
    s.arn = state.identity.schedule_arn(&s.name);
    s.created_at = now;
    s.updated_at = now;
    s.anchor_ms = clock_ms;
    check_timing(&s, clock_ms)?;
    check_template(state, &s.name, &s.template, now)?;
    s.next_fire_at = s.next_after(clock_ms);
    let name = s.name.clone();
    state.schedules.insert(name.clone(), Arc::new(s));
    changes.dirty.push(Key::Schedule(name.clone()));
    Ok(Reply::Schedule { name })
}

pub(super) fn update_schedule(
    state: &mut State,
    u: ScheduleUpdate,
    clock_ms: i64,
    now: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let mut s = find(state, &u.name)?;
    let timing_changed = u.expression.as_ref().is_some_and(|e| *e != s.expression)
        || u.time_zone.as_ref().is_some_and(|t| *t != s.time_zone)
        || u.state.is_some_and(|st| st != s.state);
    if let Some(d) = u.description {
        s.description = Some(d);
    }
    if let Some(e) = u.expression {
        s.expression = e;
    }
    if let Some(t) = u.time_zone {
        s.time_zone = t;
    }
    if let Some(st) = u.state {
        s.state = st;
    }
    if let Some(p) = u.overlap_policy {
        s.overlap_policy = p;
    }
    if let Some(tags) = u.tags {
        s.tags = tags;
    }
    if let Some(t) = u.template {
        check_template(state, &s.name, &t, now)?;
        s.template = t;
    }
    if timing_changed {
        // A changed expression counts its rate from now, and a re-enabled schedule does not
        // catch up on what it missed while disabled.
        s.anchor_ms = clock_ms;
        check_timing(&s, clock_ms)?;
        s.next_fire_at = s.next_after(clock_ms);
    }
    s.updated_at = now;
    let name = s.name.clone();
    state.schedules.insert(name.clone(), Arc::new(s));
    changes.dirty.push(Key::Schedule(name.clone()));
    Ok(Reply::Schedule { name })
}

/// Deleting a schedule leaves the jobs it submitted alone.
pub(super) fn delete_schedule(
    state: &mut State,
    name: &str,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    find(state, name)?;
    state.schedules.remove(name);
    changes.dirty.push(Key::Schedule(name.to_string()));
    Ok(Reply::Done)
}

/// Whether a schedule's run has finished (or is gone): it no longer counts as overlapping.
pub fn finished(state: &State, job_id: &str) -> bool {
    state
        .jobs
        .get(job_id)
        .is_none_or(|j| matches!(j.status, JobStatus::Succeeded | JobStatus::Failed))
}

/// The reason a CANCEL_PREVIOUS fire gives the runs it stops.
pub fn cancel_previous_reason(schedule: &str) -> String {
    format!("Terminated by schedule {schedule}: a new run started (overlapPolicy CANCEL_PREVIOUS)")
}

pub(super) fn fire_schedules(
    state: &mut State,
    clock_ms: i64,
    fires: Vec<(String, String)>,
    now: i64,
    changes: &mut Changes,
) -> Reply {
    for (name, job_id) in fires {
        // Re-checked: it may have been fired, disabled or deleted since the loop looked.
        let Some(s) = state.schedules.get(&name) else {
            continue;
        };
        if s.state != ResourceState::Enabled || s.next_fire_at.is_none_or(|t| t > clock_ms) {
            continue;
        }
        let mut s = (**s).clone();
        s.active_job_ids.retain(|id| !finished(state, id));
        s.last_fired_at = Some(clock_ms);
        s.next_fire_at = s.next_after(clock_ms);
        let overlapping = !s.active_job_ids.is_empty();
        match s.overlap_policy {
            OverlapPolicy::Skip if overlapping => {
                s.skipped += 1;
            }
            policy => {
                if policy == OverlapPolicy::CancelPrevious {
                    for id in std::mem::take(&mut s.active_job_ids) {
                        // A job that cannot be stopped any more is left as it is.
                        let _ =
                            terminate_job(state, &id, cancel_previous_reason(&name), now, changes);
                    }
                }
                submit_from(state, &mut s, job_id, now, changes);
            }
        }
        state.schedules.insert(name.clone(), Arc::new(s));
        changes.dirty.push(Key::Schedule(name));
    }
    Reply::Done
}

/// One fire's submit. A refused submit (the queue was deleted or disabled since) changes
/// nothing but the schedule's failure count and last error.
fn submit_from(
    state: &mut State,
    s: &mut Schedule,
    job_id: String,
    now: i64,
    changes: &mut Changes,
) {
    let before = state.clone();
    let mark = changes.mark();
    let submit = s.template.to_submit(job_id.clone(), &s.name);
    match submit_job(state, submit, now, changes) {
        Ok(_) => {
            s.fired += 1;
            s.last_error = None;
            s.last_job_id = Some(job_id.clone());
            s.active_job_ids.push(job_id);
            if s.active_job_ids.len() > SCHEDULE_ACTIVE_JOBS_MAX {
                s.active_job_ids.remove(0);
            }
        }
        Err(e) => {
            *state = before;
            changes.rollback(mark);
            s.failed += 1;
            s.last_error = Some(e.to_string());
        }
    }
}
