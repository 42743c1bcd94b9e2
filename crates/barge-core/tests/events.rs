//! Job state changes (`events::transitions`): what each command moved, from the state before
//! and after it and the keys it dirtied.

mod common;

use barge_core::agent::{AgentReport, AttemptSpec};
use barge_core::command::*;
use barge_core::events::transitions;
use barge_core::model::JobStatus::{self, *};
use barge_core::{scheduler, Command};
use common::*;

type Moved = Vec<(String, JobStatus, JobStatus)>;

/// Runs `command` as the writer does and returns what it moved.
fn moved(w: &mut World, command: Command) -> Moved {
    let before = w.state.clone();
    let changes = w.ok(command);
    transitions(&before, &w.state, &changes.dirty)
        .into_iter()
        .map(|t| (t.job_id, t.from, t.to))
        .collect()
}

/// One scheduling pass: what it moved and the launches it made.
fn schedule(w: &mut World) -> (Moved, Vec<AttemptSpec>) {
    let mut n = 0;
    let now = w.now;
    let plan = scheduler::plan(&w.state, &mut || {
        n += 1;
        format!("att-{n}-{now}")
    });
    let before = w.state.clone();
    let changes = w.ok(Command::SchedulerPass(plan));
    let moved = transitions(&before, &w.state, &changes.dirty)
        .into_iter()
        .map(|t| (t.job_id, t.from, t.to))
        .collect();
    let launches = changes
        .effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Agent {
                instruction: barge_core::agent::AgentInstruction::Launch(spec),
                ..
            } => Some(spec),
            _ => None,
        })
        .collect();
    (moved, launches)
}

fn running(spec: &AttemptSpec, at: i64) -> AgentReport {
    AgentReport::Running {
        job_id: spec.job_id.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: at,
    }
}

fn exited(spec: &AttemptSpec, at: i64, code: i32) -> AgentReport {
    AgentReport::Exited {
        job_id: spec.job_id.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: at,
        exit_code: Some(code),
        reason: None,
    }
}

fn reports(reports: Vec<AgentReport>) -> Command {
    Command::AgentReports {
        agent_id: "i-1".into(),
        reports,
    }
}

fn m(id: &str, from: JobStatus, to: JobStatus) -> (String, JobStatus, JobStatus) {
    (id.to_string(), from, to)
}

#[test]
fn a_job_that_succeeds_changes_once_per_status_and_not_at_submission() {
    let mut w = World::new(4, 4, 4096);
    w.define("d", "1", "16", None);
    let before = w.state.clone();
    let changes = w.ok(Command::SubmitJob(Box::new(SubmitJob {
        job_id: "j".into(),
        name: "j".into(),
        queue: "q".into(),
        definition: "d".into(),
        ..Default::default()
    })));
    assert!(changes.dirty.contains(&Key::Job("j".into())));
    assert_eq!(transitions(&before, &w.state, &changes.dirty), vec![]);

    // One scheduling pass admits and places it: RUNNABLE is passed through within the
    // command, so the one change is SUBMITTED to STARTING.
    let (moved, launches) = schedule(&mut w);
    assert_eq!(moved, vec![m("j", Submitted, Starting)]);
    let at = w.now;
    assert_eq!(
        moved_by(&mut w, reports(vec![running(&launches[0], at)])),
        vec![m("j", Starting, Running)]
    );
    assert_eq!(
        moved_by(&mut w, reports(vec![exited(&launches[0], at + 1, 0)])),
        vec![m("j", Running, Succeeded)]
    );
}

fn moved_by(w: &mut World, command: Command) -> Moved {
    moved(w, command)
}

#[test]
fn statuses_passed_through_within_one_command_collapse_into_one_legal_change() {
    let mut w = World::new(4, 4, 4096);
    w.define("d", "1", "16", None);
    w.submit("q", "d");
    let (_, launches) = schedule(&mut w);
    let at = w.now;
    let moved = moved(
        &mut w,
        reports(vec![
            running(&launches[0], at),
            exited(&launches[0], at + 1, 0),
        ]),
    );
    assert_eq!(moved, vec![m("job-1", Starting, Succeeded)]);
    assert!(Starting.may_become(Succeeded));
}

#[test]
fn a_retry_goes_back_to_runnable_and_a_failure_cascades_to_dependents_in_the_same_command() {
    let mut w = World::new(4, 4, 4096);
    w.define("retry", "1", "16", Some(2));
    w.define("once", "1", "16", None);
    let a = w.submit("q", "retry");
    let b = w.submit_after("q", "once", &[&a]);
    let (first, launches) = schedule(&mut w);
    assert_eq!(
        first,
        vec![m(&a, Submitted, Starting), m(&b, Submitted, Pending)]
    );
    let at = w.now;
    moved(&mut w, reports(vec![running(&launches[0], at)]));
    assert_eq!(
        moved(&mut w, reports(vec![exited(&launches[0], at + 1, 1)])),
        vec![m(&a, Running, Runnable)]
    );
    let (moved_now, launches) = schedule(&mut w);
    assert_eq!(moved_now, vec![m(&a, Runnable, Starting)]);
    let at = w.now;
    let mut last = moved(
        &mut w,
        reports(vec![
            running(&launches[0], at),
            exited(&launches[0], at + 1, 1),
        ]),
    );
    last.sort();
    let mut want = vec![m(&a, Starting, Failed), m(&b, Pending, Failed)];
    want.sort();
    assert_eq!(last, want);
}

#[test]
fn an_array_child_born_by_placement_changes_from_its_unborn_status() {
    let mut w = World::new(4, 4, 4096);
    w.define("d", "1", "16", None);
    w.next_id += 1;
    let before = w.state.clone();
    let changes = w.ok(Command::SubmitJob(Box::new(SubmitJob {
        job_id: "arr".into(),
        name: "a".into(),
        queue: "q".into(),
        definition: "d".into(),
        array_size: Some(2),
        ..Default::default()
    })));
    assert_eq!(transitions(&before, &w.state, &changes.dirty), vec![]);
    let (admitted, launches) = schedule(&mut w);
    assert!(
        admitted.contains(&m("arr", Submitted, Pending)),
        "{admitted:?}"
    );
    let placed = if launches.is_empty() {
        schedule(&mut w)
    } else {
        (admitted, launches)
    };
    let (placed, launches) = placed;
    assert_eq!(launches.len(), 2);
    // Born by this command: RUNNABLE (as it was unborn) to STARTING, never "new".
    assert!(
        placed.contains(&m("arr:0", Runnable, Starting)),
        "{placed:?}"
    );
    assert!(
        placed.contains(&m("arr:1", Runnable, Starting)),
        "{placed:?}"
    );
    let at = w.now;
    moved(&mut w, reports(vec![running(&launches[0], at)]));
    moved(&mut w, reports(vec![running(&launches[1], at)]));
    moved(&mut w, reports(vec![exited(&launches[0], at + 1, 0)]));
    let last = moved(&mut w, reports(vec![exited(&launches[1], at + 1, 0)]));
    assert!(last.contains(&m("arr:1", Running, Succeeded)), "{last:?}");
    assert!(last.contains(&m("arr", Pending, Succeeded)), "{last:?}");
}

#[test]
fn keys_dirtied_twice_or_of_other_kinds_yield_one_change_or_none() {
    let mut w = World::new(4, 4, 4096);
    w.define("d", "1", "16", None);
    let id = w.submit("q", "d");
    let before = w.state.clone();
    schedule(&mut w);
    let dirty = vec![
        Key::JobQueue("q".into()),
        Key::Job(id.clone()),
        Key::Job(id.clone()),
        Key::Job("no-such-job".into()),
    ];
    assert_eq!(
        transitions(&before, &w.state, &dirty),
        vec![barge_core::events::Transition {
            job_id: id,
            from: Submitted,
            to: Starting
        }]
    );
    // A job whose status did not change (dirtied for its tags, say) yields nothing.
    assert_eq!(transitions(&w.state, &w.state, &dirty), vec![]);
}
