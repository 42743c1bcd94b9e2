//! Array jobs: lazy children, statusSummary, SEQUENTIAL and N_TO_N dependencies, cascades.

mod common;

use barge_core::agent::AttemptSpec;
use barge_core::arrays::{job_view, status_summary};
use barge_core::command::*;
use barge_core::model::*;
use barge_core::reason::why_waiting;
use barge_core::Command;
use common::*;

fn dep(job_id: Option<&str>, kind: &str) -> JobDependency {
    JobDependency {
        job_id: job_id.map(str::to_string),
        kind: Some(kind.to_string()),
    }
}

fn submit_array(w: &mut World, size: u32, depends_on: Vec<JobDependency>) -> String {
    let (r, _) = try_submit_array(w, size, depends_on);
    r.expect("array submit should succeed");
    format!("arr-{}", w.next_id)
}

fn try_submit_array(
    w: &mut World,
    size: u32,
    depends_on: Vec<JobDependency>,
) -> (Result<Reply, CoreError>, barge_core::Changes) {
    w.next_id += 1;
    w.run(Command::SubmitJob(Box::new(SubmitJob {
        job_id: format!("arr-{}", w.next_id),
        name: "a".into(),
        queue: "q".into(),
        definition: "d".into(),
        depends_on,
        array_size: Some(size),
        ..Default::default()
    })))
}

fn summary(w: &World, id: &str) -> Vec<(JobStatus, u32)> {
    status_summary(&w.state, w.state.job(id).unwrap())
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn status_of(w: &World, id: &str) -> JobStatus {
    job_view(&w.state, id).expect("job exists").status
}

fn env<'a>(spec: &'a AttemptSpec, name: &str) -> Option<&'a str> {
    spec.environment
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Runs passes until nothing launches, finishing every launched attempt with `code(job id)`.
fn drain(w: &mut World, code: impl Fn(&str) -> i32) {
    loop {
        let mut launched = w.schedule();
        if launched.is_empty() {
            // An admission pass places nothing; one more tells whether anything is left.
            launched = w.schedule();
            if launched.is_empty() {
                return;
            }
        }
        for spec in launched {
            w.exit(&spec, code(&spec.job_id));
        }
    }
}

#[test]
fn children_are_born_as_they_are_placed_and_the_parent_keeps_the_books() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let p = submit_array(&mut w, 5, vec![]);
    assert_eq!(w.state.jobs.len(), 1, "submitting an array writes one row");
    assert_eq!(summary(&w, &p), vec![(JobStatus::Submitted, 5)]);

    // First pass admits the parent (PENDING, as AWS shows it); the next places two children.
    assert!(w.schedule().is_empty());
    assert_eq!(w.job(&p).status, JobStatus::Pending);
    assert_eq!(summary(&w, &p), vec![(JobStatus::Runnable, 5)]);
    assert_eq!(status_of(&w, &format!("{p}:4")), JobStatus::Runnable);
    let launched = w.schedule();
    let ids: Vec<&str> = launched.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(ids, vec![format!("{p}:0"), format!("{p}:1")]);
    assert_eq!(env(&launched[1], "AWS_BATCH_JOB_ARRAY_INDEX"), Some("1"));
    assert_eq!(env(&launched[1], "AWS_BATCH_JOB_ARRAY_SIZE"), Some("5"));
    assert_eq!(w.state.jobs.len(), 3, "only the placed children were born");
    assert_eq!(
        summary(&w, &p),
        vec![(JobStatus::Runnable, 3), (JobStatus::Starting, 2)]
    );
    assert_eq!(
        w.job(&format!("{p}:1")).array_child.as_ref().unwrap().index,
        1
    );

    for spec in &launched {
        w.exit(spec, 0);
    }
    drain(&mut w, |_| 0);
    assert_eq!(summary(&w, &p), vec![(JobStatus::Succeeded, 5)]);
    assert_eq!(w.job(&p).status, JobStatus::Succeeded);
}

#[test]
fn a_million_children_cost_one_row_until_they_run() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let p = submit_array(&mut w, 1_000_000, vec![]);
    w.schedule();
    w.schedule();
    assert_eq!(w.state.jobs.len(), 3);
    assert_eq!(
        summary(&w, &p),
        vec![(JobStatus::Runnable, 999_998), (JobStatus::Starting, 2)]
    );
    assert_eq!(status_of(&w, &format!("{p}:999999")), JobStatus::Runnable);
    assert!(job_view(&w.state, &format!("{p}:1000000")).is_none());
    let child = job_view(&w.state, &format!("{p}:999999")).unwrap();
    assert!(why_waiting(&w.state, &child)
        .unwrap()
        .starts_with("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"));
    let d = barge_core::reason::diagnose(&w.state, &child);
    assert_eq!(d.jobs_ahead, Some(999_997));
}

#[test]
fn a_failed_child_fails_the_parent_but_not_its_siblings() {
    let mut w = World::new(256, 4, 8192);
    w.define("d", "1", "512", None);
    let p = submit_array(&mut w, 4, vec![]);
    let bad = format!("{p}:2");
    drain(&mut w, |id| if id == bad { 1 } else { 0 });
    assert_eq!(
        summary(&w, &p),
        vec![(JobStatus::Succeeded, 3), (JobStatus::Failed, 1)]
    );
    assert_eq!(w.job(&p).status, JobStatus::Failed);
}

#[test]
fn sequential_children_run_one_after_another_and_a_failure_stops_the_rest() {
    let mut w = World::new(256, 4, 8192);
    w.define("d", "1", "512", None);
    let p = submit_array(&mut w, 4, vec![dep(None, "SEQUENTIAL")]);
    w.schedule();
    assert_eq!(
        w.state.jobs.len(),
        2,
        "only child 0 is RUNNABLE, so only it is born"
    );
    let first = w.schedule();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].job_id, format!("{p}:0"));
    let waiting = job_view(&w.state, &format!("{p}:1")).unwrap();
    assert_eq!(waiting.status, JobStatus::Pending);
    assert!(why_waiting(&w.state, &waiting)
        .unwrap()
        .contains(&format!("{p}:0 (STARTING) to succeed (SEQUENTIAL)")));
    w.exit(&first[0], 0);
    let second = w.schedule();
    assert_eq!(second[0].job_id, format!("{p}:1"));
    w.exit(&second[0], 3);
    assert_eq!(status_of(&w, &format!("{p}:2")), JobStatus::Failed);
    assert_eq!(status_of(&w, &format!("{p}:3")), JobStatus::Failed);
    assert!(w.schedule().is_empty());
    assert_eq!(w.job(&p).status, JobStatus::Failed);
    assert_eq!(
        w.job(&p).status_reason.as_deref(),
        Some("Dependent Job failed")
    );
}

#[test]
fn n_to_n_children_wait_for_their_counterparts_and_failures_cascade_by_index() {
    let mut w = World::new(256, 8, 16384);
    w.define("d", "1", "512", None);
    let a = submit_array(&mut w, 3, vec![]);
    let b = submit_array(&mut w, 3, vec![dep(Some(&a), "N_TO_N")]);
    let c = submit_array(&mut w, 3, vec![dep(Some(&b), "N_TO_N")]);
    w.schedule();
    assert_eq!(w.job(&b).status, JobStatus::Pending);
    assert_eq!(status_of(&w, &format!("{b}:0")), JobStatus::Pending);
    let launched = w.schedule();
    assert!(launched.iter().all(|s| s.job_id.starts_with(&a)));
    assert_eq!(launched.len(), 3);
    // a:0 succeeds → b:0 is born RUNNABLE; a:1 fails → b:1 and c:1 fail.
    w.exit(&launched[0], 0);
    w.exit(&launched[1], 1);
    assert_eq!(status_of(&w, &format!("{b}:0")), JobStatus::Runnable);
    assert_eq!(status_of(&w, &format!("{b}:1")), JobStatus::Failed);
    assert_eq!(status_of(&w, &format!("{c}:1")), JobStatus::Failed);
    assert_eq!(
        job_view(&w.state, &format!("{c}:1"))
            .unwrap()
            .status_reason
            .as_deref(),
        Some("Dependent Job failed")
    );
    assert_eq!(status_of(&w, &format!("{c}:0")), JobStatus::Pending);
    let next = w.schedule();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].job_id, format!("{b}:0"));
    w.exit(&next[0], 0);
    w.exit(&launched[2], 0);
    drain(&mut w, |_| 0);
    for p in [&a, &b, &c] {
        assert_eq!(
            summary(&w, p),
            vec![(JobStatus::Succeeded, 2), (JobStatus::Failed, 1)],
            "array {p}"
        );
        assert_eq!(w.job(p).status, JobStatus::Failed);
    }
}

#[test]
fn a_plain_dependency_on_an_array_waits_for_the_whole_array() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let p = submit_array(&mut w, 3, vec![]);
    let after = w.submit_after("q", "d", &[&p]);
    let launched = w.schedule();
    assert!(launched.is_empty());
    let launched = w.schedule();
    assert_eq!(launched.len(), 2);
    assert_eq!(w.job(&after).status, JobStatus::Pending);
    for spec in &launched {
        w.exit(spec, 0);
    }
    assert_eq!(w.job(&after).status, JobStatus::Pending);
    drain(&mut w, |_| 0);
    assert_eq!(w.job(&after).status, JobStatus::Succeeded);
}

#[test]
fn cancelling_the_parent_fails_waiting_children_and_lets_running_ones_finish() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let p = submit_array(&mut w, 10, vec![]);
    w.schedule();
    let running = w.schedule();
    assert_eq!(running.len(), 2);
    w.ok(Command::CancelJob {
        job_id: p.clone(),
        reason: "no longer needed".into(),
    });
    let tail = job_view(&w.state, &format!("{p}:9")).unwrap();
    assert_eq!(tail.status, JobStatus::Failed);
    assert!(tail.is_cancelled);
    assert_eq!(tail.status_reason.as_deref(), Some("no longer needed"));
    assert_eq!(
        w.job(&p).status,
        JobStatus::Pending,
        "two children still run"
    );
    assert!(w.schedule().is_empty(), "no new child is placed");
    for spec in &running {
        w.exit(spec, 0);
    }
    assert_eq!(w.job(&p).status, JobStatus::Failed);
    assert!(w.job(&p).is_cancelled);
    assert_eq!(
        summary(&w, &p),
        vec![(JobStatus::Succeeded, 2), (JobStatus::Failed, 8)]
    );
}

#[test]
fn terminating_the_parent_stops_running_children() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let p = submit_array(&mut w, 4, vec![]);
    w.schedule();
    let running = w.schedule();
    let changes = w.ok(Command::TerminateJob {
        job_id: p.clone(),
        reason: "stop".into(),
    });
    let stops = changes
        .effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                barge_core::Effect::Agent {
                    instruction: barge_core::agent::AgentInstruction::Stop { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(stops, 2);
    for spec in &running {
        w.exit(spec, 143);
    }
    assert_eq!(w.job(&p).status, JobStatus::Failed);
    assert!(w.job(&p).is_terminated);
    assert_eq!(summary(&w, &p), vec![(JobStatus::Failed, 4)]);
}

#[test]
fn cancelling_one_unborn_child_gives_birth_to_it_failed() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let p = submit_array(&mut w, 3, vec![]);
    w.schedule();
    w.ok(Command::CancelJob {
        job_id: format!("{p}:2"),
        reason: "skip".into(),
    });
    assert_eq!(status_of(&w, &format!("{p}:2")), JobStatus::Failed);
    drain(&mut w, |_| 0);
    assert_eq!(
        summary(&w, &p),
        vec![(JobStatus::Succeeded, 2), (JobStatus::Failed, 1)]
    );
    assert_eq!(w.job(&p).status, JobStatus::Failed);
}

#[test]
fn array_submissions_are_checked() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let plain = w.submit("q", "d");
    let a = submit_array(&mut w, 3, vec![]);
    let cases: Vec<(u32, Vec<JobDependency>, &str)> = vec![
        (
            1,
            vec![],
            "arrayProperties.size must be between 2 and 1000000",
        ),
        (1_000_001, vec![], "--array-size-max"),
        (4, vec![dep(Some(&a), "N_TO_N")], "must have the same size"),
        (3, vec![dep(Some(&plain), "N_TO_N")], "to be an array job"),
        (
            3,
            vec![dep(Some(&format!("{a}:1")), "N_TO_N")],
            "is a child of an array job",
        ),
        (
            3,
            vec![dep(Some(&a), "ALL")],
            "must be N_TO_N or SEQUENTIAL",
        ),
    ];
    for (size, deps, message) in cases {
        let (r, _) = try_submit_array(&mut w, size, deps);
        let err = r.expect_err("should be refused").to_string();
        assert!(err.contains(message), "{err:?} should say {message:?}");
    }
    // SEQUENTIAL and N_TO_N order children; a plain job has none.
    w.next_id += 1;
    let (r, _) = w.run(Command::SubmitJob(Box::new(SubmitJob {
        job_id: "plain-seq".into(),
        name: "p".into(),
        queue: "q".into(),
        definition: "d".into(),
        depends_on: vec![dep(None, "SEQUENTIAL")],
        ..Default::default()
    })));
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("has no arrayProperties"));
    // The operator's bound applies.
    w.state.config.array_size_max = 10;
    let (r, _) = try_submit_array(&mut w, 11, vec![]);
    assert!(r.unwrap_err().to_string().contains("between 2 and 10"));
}

#[test]
fn indexes_rebuilt_after_a_restart_match_the_live_ones() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let p = submit_array(&mut w, 6, vec![]);
    w.schedule();
    let launched = w.schedule();
    w.exit(&launched[0], 0);
    w.ok(Command::CancelJob {
        job_id: format!("{p}:4"),
        reason: "skip".into(),
    });
    let before = summary(&w, &p);
    let cursor = w.state.array_index(&p).unwrap().cursor;
    let mut reloaded = w.state.clone();
    reloaded.rebuild_indexes();
    w.state = reloaded;
    assert_eq!(summary(&w, &p), before);
    assert_eq!(w.state.array_index(&p).unwrap().cursor, cursor);
    let next = w.schedule();
    let ids: Vec<String> = next.iter().map(|s| s.job_id.clone()).collect();
    assert_eq!(
        ids,
        vec![format!("{p}:2")],
        "child 1 still runs, 4 was cancelled"
    );
}

#[test]
fn a_failed_counterpart_fails_only_its_own_index_and_what_follows_under_sequential() {
    let mut w = World::new(256, 8, 16384);
    w.define("d", "1", "512", None);
    let a = submit_array(&mut w, 4, vec![]);
    let bad = format!("{a}:2");
    drain(&mut w, |id| if id == bad { 1 } else { 0 });
    assert_eq!(w.job(&a).status, JobStatus::Failed);
    // Submitted after its partner failed: child 2 (and so 3) can never run, 0 and 1 can.
    let b = submit_array(
        &mut w,
        4,
        vec![dep(None, "SEQUENTIAL"), dep(Some(&a), "N_TO_N")],
    );
    w.schedule();
    assert_eq!(status_of(&w, &format!("{b}:0")), JobStatus::Runnable);
    assert_eq!(status_of(&w, &format!("{b}:1")), JobStatus::Pending);
    assert_eq!(status_of(&w, &format!("{b}:2")), JobStatus::Failed);
    assert_eq!(status_of(&w, &format!("{b}:3")), JobStatus::Failed);
    drain(&mut w, |_| 0);
    assert_eq!(
        summary(&w, &b),
        vec![(JobStatus::Succeeded, 2), (JobStatus::Failed, 2)]
    );
}
