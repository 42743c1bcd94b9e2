//! Schedules through `apply`: create/update/delete checks, firing, the overlap policies, the
//! catch-up rule and the stored form.

mod common;

use barge_core::command::{Key, ScheduleUpdate};
use barge_core::limits::SCHEDULE_TAG;
use barge_core::model::*;
use barge_core::schedule::{due_schedules, JobTemplate, OverlapPolicy, Schedule};
use barge_core::{stored, Command, CoreError, Reply, State};
use common::World;

const MIN: i64 = 60_000;
/// 2026-11-21T00:00:00Z: the schedules' clock in these tests.
const T0: i64 = 1_795_219_200_000;

fn template() -> JobTemplate {
    JobTemplate {
        job_name: "nightly".into(),
        job_queue: "q".into(),
        job_definition: "d".into(),
        parameters: Default::default(),
        container_overrides: None,
        node_overrides: None,
        retry_strategy: None,
        timeout: None,
        propagate_tags: None,
        tags: Tags::from([("team".into(), "data".into())]),
        share_identifier: None,
        scheduling_priority_override: None,
        array_properties: None,
    }
}

fn schedule(name: &str, expression: &str, overlap: OverlapPolicy) -> Schedule {
    Schedule {
        name: name.into(),
        arn: String::new(),
        description: None,
        expression: expression.into(),
        time_zone: "UTC".into(),
        state: ResourceState::Enabled,
        overlap_policy: overlap,
        template: template(),
        tags: Tags::new(),
        created_at: 0,
        updated_at: 0,
        anchor_ms: 0,
        next_fire_at: None,
        last_fired_at: None,
        last_job_id: None,
        active_job_ids: Vec::new(),
        fired: 0,
        skipped: 0,
        failed: 0,
        last_error: None,
    }
}

fn world() -> World {
    let mut w = World::new(4, 4, 8192);
    w.define("d", "1", "512", None);
    w
}

fn create(w: &mut World, s: Schedule, clock_ms: i64) -> Result<Reply, CoreError> {
    w.run(Command::CreateSchedule {
        schedule: Box::new(s),
        clock_ms,
    })
    .0
}

/// What the firing loop does: fire every due schedule at `clock`, job ids from a counter.
fn tick(w: &mut World, clock: i64) -> Vec<String> {
    let due = due_schedules(&w.state, clock);
    let fires: Vec<(String, String)> = due
        .iter()
        .map(|n| {
            w.next_id += 1;
            (n.clone(), format!("sched-job-{}", w.next_id))
        })
        .collect();
    let ids = fires.iter().map(|(_, id)| id.clone()).collect();
    w.ok(Command::FireSchedules {
        clock_ms: clock,
        fires,
    });
    ids
}

fn get(w: &World, name: &str) -> Schedule {
    (*w.state.schedules[name]).clone()
}

#[test]
fn create_computes_the_next_fire_and_checks_everything() {
    let mut w = world();
    let changes = w.ok(Command::CreateSchedule {
        schedule: Box::new(schedule("s", "cron(0/15 * * * ? *)", OverlapPolicy::Allow)),
        clock_ms: T0 + 1,
    });
    assert!(changes.dirty.contains(&Key::Schedule("s".into())));
    let s = get(&w, "s");
    assert_eq!(s.next_fire_at, Some(T0 + 15 * MIN));
    assert_eq!(s.arn, w.state.identity.schedule_arn("s"));
    assert!(s.arn.ends_with(":schedule/s"), "{}", s.arn);

    let err = |w: &mut World, s: Schedule| create(w, s, T0).unwrap_err().to_string();
    assert!(
        err(&mut w, schedule("s", "rate(1 day)", OverlapPolicy::Skip)).contains("already exists")
    );
    assert!(
        err(&mut w, schedule("b", "cron(0 12 * *)", OverlapPolicy::Skip))
            .starts_with("scheduleExpression cron(0 12 * *) has 4 fields")
    );
    let mut bad_zone = schedule("b", "rate(1 day)", OverlapPolicy::Skip);
    bad_zone.time_zone = "Europe/Atlantis".into();
    assert!(err(&mut w, bad_zone)
        .starts_with("scheduleExpressionTimezone \"Europe/Atlantis\" is not an IANA"));
    assert!(err(
        &mut w,
        schedule("b", "at(2026-11-20T00:00:00)", OverlapPolicy::Skip)
    )
    .contains("names a time that has already passed"));
    assert!(err(
        &mut w,
        schedule("b", "cron(0 0 1 1 ? 2025)", OverlapPolicy::Skip)
    )
    .contains("never fires again"));
    let mut no_queue = schedule("b", "rate(1 day)", OverlapPolicy::Skip);
    no_queue.template.job_queue = "nope".into();
    let e = err(&mut w, no_queue);
    assert!(e.starts_with("jobTemplate: ") && e.contains("nope"), "{e}");
    let mut no_def = schedule("b", "rate(1 day)", OverlapPolicy::Skip);
    no_def.template.job_definition = "missing".into();
    assert!(err(&mut w, no_def).starts_with("jobTemplate: "));
    // The check submitted nothing.
    assert_eq!(w.state.jobs.len(), 0);
    assert_eq!(w.state.schedules.len(), 1);
}

#[test]
fn a_due_schedule_submits_its_template_tagged_with_its_name() {
    let mut w = world();
    create(
        &mut w,
        schedule("s", "rate(5 minutes)", OverlapPolicy::Allow),
        T0,
    )
    .unwrap();
    assert!(due_schedules(&w.state, T0 + 5 * MIN - 1).is_empty());
    let ids = tick(&mut w, T0 + 5 * MIN);
    assert_eq!(ids.len(), 1);
    let job = w.job(&ids[0]).clone();
    assert_eq!(job.name, "nightly");
    assert_eq!(job.queue, "q");
    assert_eq!(job.tags.get(SCHEDULE_TAG).map(String::as_str), Some("s"));
    assert_eq!(job.tags.get("team").map(String::as_str), Some("data"));
    let s = get(&w, "s");
    assert_eq!(s.fired, 1);
    assert_eq!(s.last_fired_at, Some(T0 + 5 * MIN));
    assert_eq!(s.last_job_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(s.next_fire_at, Some(T0 + 10 * MIN));
    // Fired once: the same clock again finds nothing due, and a stale fire is ignored.
    assert!(due_schedules(&w.state, T0 + 5 * MIN).is_empty());
    w.ok(Command::FireSchedules {
        clock_ms: T0 + 5 * MIN,
        fires: vec![("s".into(), "late".into())],
    });
    assert!(w.state.job("late").is_none());
}

#[test]
fn catch_up_fires_once_and_moves_past_the_clock() {
    let mut w = world();
    create(
        &mut w,
        schedule("s", "rate(1 minute)", OverlapPolicy::Allow),
        T0,
    )
    .unwrap();
    // The server was down for an hour and a half.
    let ids = tick(&mut w, T0 + 90 * MIN + 30_000);
    assert_eq!(ids.len(), 1);
    let s = get(&w, "s");
    assert_eq!(s.fired, 1);
    assert_eq!(s.next_fire_at, Some(T0 + 91 * MIN));
}

#[test]
fn skip_waits_for_the_previous_run() {
    let mut w = world();
    create(
        &mut w,
        schedule("s", "rate(1 minute)", OverlapPolicy::Skip),
        T0,
    )
    .unwrap();
    let first = tick(&mut w, T0 + MIN);
    assert!(tick(&mut w, T0 + 2 * MIN).len() == 1);
    let s = get(&w, "s");
    assert_eq!((s.fired, s.skipped), (1, 1));
    assert_eq!(w.state.jobs.len(), 1);
    // The first run ends: the next fire submits.
    let launches = w.schedule();
    assert_eq!(launches.len(), 1);
    w.exit(&launches[0], 0);
    assert_eq!(w.job(&first[0]).status, JobStatus::Succeeded);
    let third = tick(&mut w, T0 + 3 * MIN);
    let s = get(&w, "s");
    assert_eq!((s.fired, s.skipped), (2, 1));
    assert_eq!(s.active_job_ids, third);
    assert!(w.state.job(&third[0]).is_some());
}

#[test]
fn cancel_previous_terminates_the_runs_it_replaces() {
    let mut w = world();
    create(
        &mut w,
        schedule("s", "rate(1 minute)", OverlapPolicy::CancelPrevious),
        T0,
    )
    .unwrap();
    let first = tick(&mut w, T0 + MIN);
    let launches = w.schedule();
    assert_eq!(launches.len(), 1);
    let second = tick(&mut w, T0 + 2 * MIN);
    // The running first job is being stopped with a reason naming the schedule; it ends when
    // its agent reports the exit.
    let j = w.job(&first[0]).clone();
    assert_eq!(
        j.stop_reason.as_deref(),
        Some("Terminated by schedule s: a new run started (overlapPolicy CANCEL_PREVIOUS)")
    );
    w.exit(&launches[0], 137);
    assert_eq!(w.job(&first[0]).status, JobStatus::Failed);
    let s = get(&w, "s");
    assert_eq!(s.active_job_ids, second);
    assert_eq!(s.fired, 2);
    // A queued (not yet started) previous run is failed at once.
    let third = tick(&mut w, T0 + 3 * MIN);
    assert_eq!(w.job(&second[0]).status, JobStatus::Failed);
    assert_eq!(get(&w, "s").active_job_ids, third);
}

#[test]
fn allow_lets_runs_pile_up() {
    let mut w = world();
    create(
        &mut w,
        schedule("s", "rate(1 minute)", OverlapPolicy::Allow),
        T0,
    )
    .unwrap();
    for k in 1..=3 {
        tick(&mut w, T0 + k * MIN);
    }
    let s = get(&w, "s");
    assert_eq!(s.fired, 3);
    assert_eq!(s.active_job_ids.len(), 3);
    assert_eq!(w.state.jobs.len(), 3);
}

#[test]
fn a_refused_submit_counts_as_failed_and_changes_nothing_else() {
    let mut w = world();
    create(
        &mut w,
        schedule("s", "rate(1 minute)", OverlapPolicy::Allow),
        T0,
    )
    .unwrap();
    create(
        &mut w,
        schedule("t", "rate(1 minute)", OverlapPolicy::Allow),
        T0,
    )
    .unwrap();
    // Queue q disabled after the schedules were made.
    w.ok(Command::UpdateJobQueue(
        barge_core::command::JobQueueUpdate {
            reference: "q".into(),
            state: Some(ResourceState::Disabled),
            ..Default::default()
        },
    ));
    let ids = tick(&mut w, T0 + MIN);
    assert_eq!(ids.len(), 2);
    assert_eq!(w.state.jobs.len(), 0);
    let s = get(&w, "s");
    assert_eq!((s.fired, s.failed), (0, 1));
    assert!(s.last_error.unwrap().contains("DISABLED"));
    assert_eq!(s.next_fire_at, Some(T0 + 2 * MIN));
}

#[test]
fn update_disable_and_delete() {
    let mut w = world();
    create(
        &mut w,
        schedule("s", "rate(10 minutes)", OverlapPolicy::Allow),
        T0,
    )
    .unwrap();
    let update = |w: &mut World, u: ScheduleUpdate, clock| {
        w.run(Command::UpdateSchedule {
            update: Box::new(u),
            clock_ms: clock,
        })
        .0
    };
    // Disabled: no next fire, never due.
    update(
        &mut w,
        ScheduleUpdate {
            name: "s".into(),
            state: Some(ResourceState::Disabled),
            ..Default::default()
        },
        T0 + MIN,
    )
    .unwrap();
    assert_eq!(get(&w, "s").next_fire_at, None);
    assert!(due_schedules(&w.state, T0 + 100 * MIN).is_empty());
    // Enabled again: counts from then, no catch-up.
    update(
        &mut w,
        ScheduleUpdate {
            name: "s".into(),
            state: Some(ResourceState::Enabled),
            ..Default::default()
        },
        T0 + 100 * MIN,
    )
    .unwrap();
    assert_eq!(get(&w, "s").next_fire_at, Some(T0 + 110 * MIN));
    // A new expression in another zone.
    update(
        &mut w,
        ScheduleUpdate {
            name: "s".into(),
            expression: Some("cron(0 9 * * ? *)".into()),
            time_zone: Some("Asia/Tokyo".into()),
            overlap_policy: Some(OverlapPolicy::Skip),
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    let s = get(&w, "s");
    // 09:00 in Tokyo is 00:00 UTC: strictly after T0 is the next day's.
    assert_eq!(s.next_fire_at, Some(T0 + 24 * 60 * MIN));
    assert_eq!(s.overlap_policy, OverlapPolicy::Skip);
    // Bad updates change nothing.
    let before = get(&w, "s");
    let e = update(
        &mut w,
        ScheduleUpdate {
            name: "s".into(),
            expression: Some("rate(fast)".into()),
            ..Default::default()
        },
        T0,
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("scheduleExpression rate(fast)"),
        "{e}"
    );
    let mut t = template();
    t.job_queue = "gone".into();
    assert!(update(
        &mut w,
        ScheduleUpdate {
            name: "s".into(),
            template: Some(t),
            ..Default::default()
        },
        T0
    )
    .unwrap_err()
    .to_string()
    .starts_with("jobTemplate: "));
    assert_eq!(get(&w, "s"), before);
    assert!(update(
        &mut w,
        ScheduleUpdate {
            name: "x".into(),
            ..Default::default()
        },
        T0
    )
    .unwrap_err()
    .to_string()
    .contains("does not exist"));
    // Deleted, and its key is dirty so the store removes the row.
    let changes = w.ok(Command::DeleteSchedule { name: "s".into() });
    assert!(changes.dirty.contains(&Key::Schedule("s".into())));
    assert!(w.state.schedules.is_empty());
}

#[test]
fn the_stored_form_round_trips() {
    let mut w = world();
    create(
        &mut w,
        schedule(
            "s",
            "cron(0 9 ? * MON-FRI *)",
            OverlapPolicy::CancelPrevious,
        ),
        T0,
    )
    .unwrap();
    tick(&mut w, T0 + 10_000 * MIN);
    let (kind, key, body) = stored::entity_row(&w.state, &Key::Schedule("s".into()));
    assert_eq!((kind, key.as_str()), (stored::KIND_SCHEDULE, "s"));
    let mut back = State::new(Default::default());
    stored::put_entity(&mut back, kind, &body.unwrap()).unwrap();
    assert_eq!(back.schedules["s"], w.state.schedules["s"]);
}
