//! The one place state changes: `apply(state, command, now)`. Each command either applies
//! whole or not at all (the state is restored on error; clones are O(1)).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::agent::{AgentInstruction, AgentReport, AttemptSpec, LogLine};
use crate::arn::{name_from_reference, parse_batch_arn, ResourceKind};
use crate::arrays;
use crate::command::*;
use crate::dependencies::{
    self, check_depends_on, dependencies, Dependencies, REASON_DEPENDENCY_FAILED,
};
use crate::limits::*;
use crate::model::*;
use crate::resources::{agent_has_room, ce_has_room, check_requirements, resources_of};
use crate::state::State;

mod attempts;
mod definitions;
mod environments;
mod jobs;
mod multinode;
mod policies;
mod queues;
mod reconcile;
pub mod schedules;
mod tags;

use attempts::*;
use definitions::*;
use environments::*;
use jobs::*;
use policies::*;
use queues::*;
use tags::*;

pub use attempts::{due_state_time_limits, due_timeouts, log_stream_name, pattern_matches};
pub use jobs::substitute_parameters;
pub use reconcile::{reconcile, HeldAttempt};

/// The statusReason AWS gives a job whose container exited on its own.
pub const REASON_CONTAINER_EXITED: &str = "Essential container in task exited";

/// The statusReason AWS gives a job stopped by its timeout.
pub const REASON_TIMEOUT: &str = "Job attempt duration exceeded timeout";

/// The statusReason AWS gives attempts on a host that went away.
pub fn host_terminated_reason(agent_id: &str) -> String {
    format!("Host EC2 (instance {agent_id}) terminated.")
}

/// Applies one command. On error nothing in `state` or `changes` is touched.
pub fn apply(
    state: &mut State,
    command: Command,
    now_ms: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let before = state.clone();
    let mark = changes.mark();
    // Fair-share usage is booked at the times of the commands that change it.
    state.latest_command_ms = state.latest_command_ms.max(now_ms);
    let result = apply_inner(state, command, now_ms, changes);
    if result.is_ok() {
        multinode::settle(state, changes);
        dependencies::settle(state, now_ms, changes);
        for queue in crate::fairshare::take_touched(state) {
            changes.dirty.push(Key::ShareUsage(queue));
        }
    }
    if result.is_err() {
        *state = before;
        changes.rollback(mark);
    }
    result
}

fn apply_inner(
    state: &mut State,
    command: Command,
    now: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    match command {
        Command::CreateComputeEnvironment(ce) => create_compute_environment(state, ce, changes),
        Command::UpdateComputeEnvironment(u) => update_compute_environment(state, u, changes),
        Command::DeleteComputeEnvironment { reference } => {
            delete_compute_environment(state, &reference, changes)
        }
        Command::CreateJobQueue(q) => create_job_queue(state, q, changes),
        Command::UpdateJobQueue(u) => update_job_queue(state, u, changes),
        Command::DeleteJobQueue { reference } => delete_job_queue(state, &reference, now, changes),
        Command::RegisterJobDefinition(d) => register_job_definition(state, d, changes),
        Command::DeregisterJobDefinition { reference } => {
            deregister_job_definition(state, &reference, changes)
        }
        Command::SubmitJob(s) => submit_job(state, *s, now, changes),
        Command::CancelJob { job_id, reason } => cancel_job(state, &job_id, reason, now, changes),
        Command::TerminateJob { job_id, reason } => {
            terminate_job(state, &job_id, reason, now, changes)
        }
        Command::TagResource { arn, tags } => tag_resource(state, &arn, tags, changes),
        Command::UntagResource { arn, keys } => untag_resource(state, &arn, &keys, changes),
        Command::RegisterAgent {
            id,
            vcpus_milli,
            memory_mib,
            scope,
            private_ipv4,
            gpus,
            runner,
            running,
        } => {
            let known = state.agents.contains_key(&id);
            // An instance being terminated stays drained if its agent comes back meanwhile.
            let draining = state.agents.get(&id).is_some_and(|a| a.draining);
            let (used_vcpus_milli, used_memory_mib, used_gpus) =
                state.agents.get(&id).map_or((0, 0, 0), |a| {
                    (a.used_vcpus_milli, a.used_memory_mib, a.used_gpus)
                });
            let agent = Agent {
                id: id.clone(),
                vcpus_milli,
                memory_mib,
                scope,
                private_ipv4,
                used_vcpus_milli,
                used_memory_mib,
                gpus,
                used_gpus,
                runner,
                draining,
            };
            state.agents.insert(id.clone(), Arc::new(agent));
            if known {
                fail_lost_on_reregister(state, &id, &running, now, changes);
            }
            changes.dirty.push(Key::Agent(id));
            changes.schedule = true;
            Ok(Reply::Done)
        }
        Command::AgentLost { id } => {
            if state.agents.remove(&id).is_some() {
                changes.dirty.push(Key::Agent(id));
            }
            fail_orphans(state, now, changes);
            Ok(Reply::Done)
        }
        Command::FailOrphans => {
            fail_orphans(state, now, changes);
            Ok(Reply::Done)
        }
        Command::DrainAgent { id } => crate::scaling::drain_agent(state, &id, changes),
        Command::SetDesiredVcpus {
            compute_environment,
            desired_vcpus,
        } => crate::scaling::set_desired_vcpus(state, &compute_environment, desired_vcpus, changes),
        Command::AgentReports { agent_id, reports } => {
            let mut refused = 0;
            for report in reports {
                if !apply_report(state, &agent_id, report, now, changes) {
                    refused += 1;
                }
            }
            Ok(Reply::Reports { refused })
        }
        Command::SchedulerPass(plan) => Ok(scheduler_pass(state, plan, now, changes)),
        Command::CreateSchedulingPolicy(p) => create_scheduling_policy(state, p, changes),
        Command::UpdateSchedulingPolicy {
            reference,
            fairshare_policy,
        } => update_scheduling_policy(state, &reference, fairshare_policy, changes),
        Command::DeleteSchedulingPolicy { reference } => {
            delete_scheduling_policy(state, &reference, changes)
        }
        Command::CreateSchedule { schedule, clock_ms } => {
            schedules::create_schedule(state, *schedule, clock_ms, now, changes)
        }
        Command::UpdateSchedule { update, clock_ms } => {
            schedules::update_schedule(state, *update, clock_ms, now, changes)
        }
        Command::DeleteSchedule { name } => schedules::delete_schedule(state, &name, changes),
        Command::FireSchedules { clock_ms, fires } => Ok(schedules::fire_schedules(
            state, clock_ms, fires, now, changes,
        )),
        Command::EnforceStateTimeLimits => {
            for (id, reason) in due_state_time_limits(state, now) {
                let reason_text =
                    format!("Canceled by JobStateTimeLimit action due to reason: {reason}");
                if state.job(&id).is_some_and(|j| j.array.is_some()) {
                    // The array's unborn children are the ones waiting: cancel them all.
                    arrays::close(state, &id, reason_text, arrays::Stop::Cancel, now, changes);
                    continue;
                }
                let mut job = (**state.job(&id).expect("due jobs exist")).clone();
                job.status = JobStatus::Failed;
                job.is_cancelled = true;
                job.status_reason = Some(reason_text);
                state.put_job(job);
                changes.dirty.push(Key::Job(id));
            }
            Ok(Reply::Done)
        }
        Command::EnforceTimeouts => {
            for id in due_timeouts(state, now) {
                if state.jobs[&id].multinode.is_some() {
                    multinode::stop_gang(state, &id, REASON_TIMEOUT.to_string(), changes);
                    continue;
                }
                let mut job = (**state.job(&id).expect("due jobs exist")).clone();
                let attempt = job.current.as_ref().expect("a RUNNING job has an attempt");
                changes.effects.push(Effect::Agent {
                    agent_id: attempt.agent_id.clone(),
                    instruction: AgentInstruction::Stop {
                        job_id: id.clone(),
                        attempt_id: attempt.id.clone(),
                        grace_ms: state.stop_grace_ms(&attempt.compute_environment),
                    },
                });
                job.stop_reason = Some(REASON_TIMEOUT.to_string());
                state.put_job(job);
                changes.dirty.push(Key::Job(id));
            }
            Ok(Reply::Done)
        }
    }
}
