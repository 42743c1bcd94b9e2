//! Remote agents: level-triggered instructions (`apply::reconcile`) and what a registration
//! under a known id does to the attempts the agent no longer holds.

mod common;

use barge_core::agent::{AgentInstruction, AgentReport};
use barge_core::apply::{reconcile, HeldAttempt};
use barge_core::command::Key;
use barge_core::model::*;
use barge_core::Command;
use common::World;

fn held(spec: &barge_core::agent::AttemptSpec) -> HeldAttempt {
    HeldAttempt {
        job_id: spec.job_id.clone(),
        attempt_id: spec.attempt_id.clone(),
    }
}

fn reregister(w: &mut World, running: Vec<String>) {
    w.ok(Command::RegisterAgent {
        id: "i-1".into(),
        vcpus_milli: 4000,
        memory_mib: 4096,
        scope: AgentScope::AllManaged,
        private_ipv4: None,
        gpus: 0,
        runner: None,
        running,
    });
}

#[test]
fn an_agent_is_told_to_launch_what_it_was_given_until_it_holds_it() {
    let mut w = World::new(4, 4, 4096);
    w.define("d", "1", "128", None);
    let id = w.submit("q", "d");
    let specs = w.schedule();
    assert_eq!(specs.len(), 1);
    // The launch effect was lost: the next poll says it again, with the same spec.
    let told = reconcile(&w.state, "i-1", &[]);
    assert_eq!(told, vec![AgentInstruction::Launch(specs[0].clone())]);
    // Another agent is told nothing about it.
    assert!(reconcile(&w.state, "i-2", &[]).is_empty());
    // Once held, nothing more is said.
    assert!(reconcile(&w.state, "i-1", &[held(&specs[0])]).is_empty());
    w.exit(&specs[0], 0);
    assert_eq!(w.job(&id).status, JobStatus::Succeeded);
    // An attempt it still holds after its end was taken is stopped at once.
    assert_eq!(
        reconcile(&w.state, "i-1", &[held(&specs[0])]),
        vec![AgentInstruction::Stop {
            job_id: id,
            attempt_id: specs[0].attempt_id.clone(),
            grace_ms: 0,
        }]
    );
}

#[test]
fn a_terminated_attempt_is_stopped_with_its_grace_whether_held_or_not() {
    let mut w = World::new(4, 4, 4096);
    w.define("d", "1", "128", None);
    let id = w.submit("q", "d");
    let specs = w.schedule();
    w.ok(Command::TerminateJob {
        job_id: id.clone(),
        reason: "enough".into(),
    });
    let stop = AgentInstruction::Stop {
        job_id: id.clone(),
        attempt_id: specs[0].attempt_id.clone(),
        grace_ms: w.state.stop_grace_ms("ce"),
    };
    assert_eq!(
        reconcile(&w.state, "i-1", &[held(&specs[0])]),
        vec![stop.clone()]
    );
    // Not held (the launch never arrived): no launch, only the stop, which the agent answers
    // with the attempt's end.
    assert_eq!(reconcile(&w.state, "i-1", &[]), vec![stop]);
}

#[test]
fn a_registration_under_a_known_id_fails_only_the_running_attempts_it_no_longer_holds() {
    let mut w = World::new(4, 4, 4096);
    w.define("d", "1", "128", Some(2));
    let a = w.submit("q", "d");
    let b = w.submit("q", "d");
    let c = w.submit("q", "d");
    let specs = w.schedule();
    assert_eq!(specs.len(), 3);
    for s in &specs[..2] {
        w.report(AgentReport::Running {
            job_id: s.job_id.clone(),
            attempt_id: s.attempt_id.clone(),
            at_ms: w.now,
        });
    }
    // The agent restarted and recovered only `a`'s attempt; `c` had not started yet.
    reregister(&mut w, vec![specs[0].attempt_id.clone()]);
    assert_eq!(w.job(&a).status, JobStatus::Running);
    let lost = w.job(&b);
    assert_eq!(lost.status, JobStatus::Runnable, "retried: attempts remain");
    assert_eq!(
        lost.attempts.last().unwrap().status_reason.as_deref(),
        Some("Host EC2 (instance i-1) terminated.")
    );
    assert_eq!(w.job(&c).status, JobStatus::Starting, "launched again");
    assert_eq!(
        reconcile(&w.state, "i-1", &[held(&specs[0])]),
        vec![AgentInstruction::Launch(specs[2].clone())]
    );
}

#[test]
fn agents_are_stored_when_they_register_and_when_they_are_lost() {
    let mut w = World::new(4, 4, 4096);
    let changes = w.ok(Command::RegisterAgent {
        id: "i-9".into(),
        vcpus_milli: 2000,
        memory_mib: 1024,
        scope: AgentScope::ComputeEnvironment("ce".into()),
        private_ipv4: Some("10.0.0.9".into()),
        gpus: 0,
        runner: Some(barge_core::agent::RunnerKind::Docker),
        running: Vec::new(),
    });
    assert!(changes.dirty.contains(&Key::Agent("i-9".into())));
    let changes = w.ok(Command::AgentLost { id: "i-9".into() });
    assert!(changes.dirty.contains(&Key::Agent("i-9".into())));
    assert!(!w.state.agents.contains_key("i-9"));
    // Losing an agent that is already gone changes nothing.
    let changes = w.ok(Command::AgentLost { id: "i-9".into() });
    assert!(!changes.dirty.contains(&Key::Agent("i-9".into())));
}
