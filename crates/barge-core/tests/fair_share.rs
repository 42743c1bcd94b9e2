//! Fair share through `apply` and `plan`, as the server drives them: policy and queue rules,
//! shareIdentifier rules, dispatch order by weighted usage, priority within a share, wildcard
//! shares, computeReservation, usage decay, and what `why` says.

mod common;

use barge_core::agent::{AgentInstruction, AgentReport, AttemptSpec};
use barge_core::command::*;
use barge_core::fairshare::ShareUsage;
use barge_core::limits::ACTIVE_SHARE_IDENTIFIERS_PER_QUEUE_MAX;
use barge_core::model::*;
use barge_core::reason::{diagnose, why_waiting};
use barge_core::{apply, scheduler, Changes, Command, Effect, State};
use serde_json::Map;

struct World {
    state: State,
    now: i64,
    next_id: u64,
}

const ARN: &str = "arn:aws:batch:us-east-1:000000000000:scheduling-policy/";

impl World {
    /// One 1-vCPU-per-job definition, an agent of `vcpus`, an environment of `vcpus`, a policy
    /// "p" with `weights`, a fair-share queue "fq" and a FIFO queue "q", both on it.
    fn new(vcpus: i64, weights: &[(&str, Option<u32>)], reservation: Option<i64>) -> World {
        let mut w = World {
            state: State::new(Default::default()),
            now: 1_000_000,
            next_id: 0,
        };
        w.ok(Command::RegisterAgent {
            id: "i-1".into(),
            vcpus_milli: vcpus as u64 * 1000,
            memory_mib: 1 << 20,
            scope: AgentScope::AllManaged,
            private_ipv4: None,
            gpus: 0,
            runner: None,
            running: Vec::new(),
        });
        w.ok(Command::CreateComputeEnvironment(common::ce("ce", vcpus)));
        w.ok(Command::CreateSchedulingPolicy(policy(
            "p",
            weights,
            reservation,
        )));
        w.ok(Command::CreateJobQueue(queue(
            "fq",
            Some(&format!("{ARN}p")),
        )));
        w.ok(Command::CreateJobQueue(queue("q", None)));
        w.ok(Command::RegisterJobDefinition(JobDefinition {
            name: "d".into(),
            revision: 0,
            status: DefinitionStatus::Active,
            kind: "container".into(),
            parameters: Default::default(),
            scheduling_priority: None,
            container_properties: Some(ContainerProperties {
                command: Some(vec!["true".into()]),
                resource_requirements: Some(vec![ResourceRequirement {
                    kind: "VCPU".into(),
                    value: "1".into(),
                }]),
                memory: Some(16),
                ..Default::default()
            }),
            node_properties: None,
            retry_strategy: None,
            timeout: None,
            propagate_tags: None,
            platform_capabilities: None,
            tags: Tags::new(),
            other: Map::new(),
        }));
        w
    }

    fn run(&mut self, command: Command) -> (Result<Reply, CoreError>, Changes) {
        self.now += 1;
        let mut changes = Changes::default();
        let r = apply(&mut self.state, command, self.now, &mut changes);
        (r, changes)
    }

    fn ok(&mut self, command: Command) -> Changes {
        let (r, changes) = self.run(command);
        r.expect("command should succeed");
        changes
    }

    fn refused(&mut self, command: Command) -> CoreError {
        self.run(command).0.expect_err("command should be refused")
    }

    fn submission(&mut self, queue: &str, share: Option<&str>, priority: Option<i64>) -> Command {
        self.next_id += 1;
        Command::SubmitJob(Box::new(SubmitJob {
            job_id: format!("job-{}", self.next_id),
            name: "j".into(),
            queue: queue.into(),
            definition: "d".into(),
            share_identifier: share.map(str::to_string),
            scheduling_priority_override: priority,
            ..Default::default()
        }))
    }

    fn submit(&mut self, queue: &str, share: Option<&str>, priority: Option<i64>) -> String {
        let c = self.submission(queue, share, priority);
        let Reply::Job { id, .. } = self.ok_reply(c) else {
            unreachable!()
        };
        id
    }

    fn ok_reply(&mut self, command: Command) -> Reply {
        self.run(command).0.expect("command should succeed")
    }

    fn schedule(&mut self) -> Vec<AttemptSpec> {
        let mut n = 0;
        let now = self.now;
        let plan = scheduler::plan(&self.state, &mut || {
            n += 1;
            format!("att-{n}-{now}")
        });
        self.ok(Command::SchedulerPass(plan))
            .effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Agent {
                    instruction: AgentInstruction::Launch(spec),
                    ..
                } => Some(spec),
                _ => None,
            })
            .collect()
    }

    /// The attempt ends after `ms` of simulated time.
    fn finish(&mut self, spec: &AttemptSpec, ms: i64) -> Changes {
        self.now += ms;
        let (r, changes) = self.run(Command::AgentReports {
            agent_id: "i-1".into(),
            reports: vec![AgentReport::Exited {
                job_id: spec.job_id.clone(),
                attempt_id: spec.attempt_id.clone(),
                at_ms: self.now,
                exit_code: Some(0),
                reason: None,
            }],
        });
        r.unwrap();
        changes
    }

    fn share_of(&self, job_id: &str) -> String {
        self.state
            .job(job_id)
            .unwrap()
            .share_identifier
            .clone()
            .unwrap()
    }

    fn usage(&self, queue: &str) -> ShareUsage {
        (**self.state.share_usage.get(queue).expect("a usage record")).clone()
    }
}

fn policy(
    name: &str,
    weights: &[(&str, Option<u32>)],
    reservation: Option<i64>,
) -> SchedulingPolicy {
    SchedulingPolicy {
        name: name.into(),
        fairshare_policy: Some(FairsharePolicy {
            share_decay_seconds: None,
            compute_reservation: reservation,
            share_distribution: weights
                .iter()
                .map(|(id, w)| ShareWeight {
                    share_identifier: id.to_string(),
                    weight_factor_e4: *w,
                })
                .collect(),
        }),
        tags: Tags::new(),
    }
}

fn queue(name: &str, policy_arn: Option<&str>) -> JobQueue {
    JobQueue {
        name: name.into(),
        state: ResourceState::Enabled,
        priority: 1,
        compute_environment_order: vec![ComputeEnvironmentOrder {
            order: 1,
            compute_environment: "ce".into(),
        }],
        scheduling_policy_arn: policy_arn.map(str::to_string),
        job_state_time_limit_actions: Vec::new(),
        tags: Tags::new(),
        other: Map::new(),
    }
}

fn update_policy_of(queue: &str, arn: &str) -> Command {
    Command::UpdateJobQueue(JobQueueUpdate {
        reference: queue.into(),
        scheduling_policy_arn: Some(arn.into()),
        ..Default::default()
    })
}

#[test]
fn queues_keep_their_policy_rules() {
    let mut w = World::new(2, &[], None);
    w.ok(Command::CreateSchedulingPolicy(policy("p2", &[], None)));
    // A policy is named by an existing ARN (or name), and stored as its ARN.
    let e = w.refused(Command::CreateJobQueue(queue(
        "x",
        Some(&format!("{ARN}nope")),
    )));
    assert!(e.to_string().contains("schedulingPolicyArn"), "{e}");
    w.ok(Command::CreateJobQueue(queue("by-name", Some("p2"))));
    assert_eq!(
        w.state.job_queues["by-name"]
            .scheduling_policy_arn
            .as_deref(),
        Some(&*format!("{ARN}p2"))
    );
    // Replaced, never removed; a FIFO queue never gains one.
    w.ok(update_policy_of("fq", &format!("{ARN}p2")));
    assert!(w
        .refused(update_policy_of("fq", ""))
        .to_string()
        .contains("not removed"));
    let e = w.refused(update_policy_of("q", &format!("{ARN}p2")));
    assert!(e.to_string().contains("cannot gain one"), "{e}");
    // A policy in use cannot be deleted; one no queue uses can.
    let e = w.refused(Command::DeleteSchedulingPolicy {
        reference: format!("{ARN}p2"),
    });
    assert!(
        e.to_string().contains("fq") && e.to_string().contains("by-name"),
        "{e}"
    );
    w.ok(Command::DeleteSchedulingPolicy {
        reference: format!("{ARN}p"),
    });
    assert!(matches!(
        w.refused(Command::CreateSchedulingPolicy(policy("p2", &[], None))),
        CoreError::Conflict(_)
    ));
    let e = w.refused(Command::CreateSchedulingPolicy(policy(
        "bad",
        &[("A*", None), ("AB", None)],
        None,
    )));
    assert!(e.to_string().contains("overlap"), "{e}");
}

#[test]
fn share_identifier_is_required_exactly_on_fair_share_queues() {
    let mut w = World::new(2, &[], None);
    let c = w.submission("fq", None, None);
    let e = w.refused(c);
    assert!(e.to_string().contains("shareIdentifier is required"), "{e}");
    let c = w.submission("q", Some("a"), None);
    let e = w.refused(c);
    assert!(
        e.to_string().contains("shareIdentifier") && e.to_string().contains("FIFO"),
        "{e}"
    );
    let c = w.submission("fq", Some("a b"), None);
    assert!(w.refused(c).to_string().contains("shareIdentifier"));
    w.submit("fq", Some("a"), Some(3));
    w.submit("q", None, Some(3));
}

#[test]
fn a_queue_holds_at_most_so_many_active_share_identifiers() {
    let mut w = World::new(2, &[], None);
    let mut first = String::new();
    for i in 0..ACTIVE_SHARE_IDENTIFIERS_PER_QUEUE_MAX {
        let id = w.submit("fq", Some(&format!("s{i}")), None);
        if i == 0 {
            first = id;
        }
    }
    let c = w.submission("fq", Some("one-more"), None);
    assert!(matches!(w.refused(c), CoreError::LimitExceeded(_)));
    // An identifier already active is fine, and one freed makes room.
    w.submit("fq", Some("s7"), None);
    w.ok(Command::CancelJob {
        job_id: first,
        reason: "r".into(),
    });
    w.submit("fq", Some("one-more"), None);
}

/// Runs a saturated queue (every share always has work waiting) for `rounds` dispatches of
/// 1-vCPU jobs that each hold their vCPU for 10 s; returns dispatches per share identifier.
fn saturate(w: &mut World, queue: &str, shares: &[&str], rounds: usize) -> Vec<(String, usize)> {
    let mut dispatched: Vec<(String, usize)> = shares.iter().map(|s| (s.to_string(), 0)).collect();
    for s in shares {
        for _ in 0..4 {
            w.submit(queue, Some(s), None);
        }
    }
    let mut running: Vec<AttemptSpec> = Vec::new();
    let mut total = 0;
    loop {
        let placed = w.schedule();
        for spec in &placed {
            let share = w.share_of(&spec.job_id);
            dispatched.iter_mut().find(|(s, _)| *s == share).unwrap().1 += 1;
            // Keep the share's backlog topped up.
            w.submit(queue, Some(&share), None);
        }
        total += placed.len();
        running.extend(placed);
        if total >= rounds {
            break;
        }
        let done = running.remove(0);
        w.finish(&done, 10_000);
    }
    dispatched
}

#[test]
fn the_share_with_the_lowest_weighted_usage_dispatches_next() {
    let mut w = World::new(2, &[("light", Some(2500)), ("heavy", None)], None);
    let got = saturate(&mut w, "fq", &["heavy", "light"], 400);
    let heavy = got[0].1 as f64;
    let light = got[1].1 as f64;
    // Weight 0.25 against 1: four times the vCPU-time, within 10%.
    assert!((3.6..=4.4).contains(&(light / heavy)), "{got:?}");
}

#[test]
fn a_wildcard_entry_pools_its_identifiers_under_one_weight() {
    let mut w = World::new(2, &[("team*", None)], None);
    let got = saturate(&mut w, "fq", &["team1", "team2", "solo"], 600);
    let team = (got[0].1 + got[1].1) as f64;
    let solo = got[2].1 as f64;
    // team1 and team2 together are one share of weight 1, as is solo: half each.
    assert!((0.9..=1.1).contains(&(team / solo)), "{got:?}");
}

#[test]
fn within_a_share_higher_priority_goes_first_then_submission_order() {
    let mut w = World::new(1, &[], None);
    let low = w.submit("fq", Some("a"), Some(1));
    let high = w.submit("fq", Some("a"), Some(9));
    let low2 = w.submit("fq", Some("a"), Some(1));
    let mut order = Vec::new();
    for _ in 0..3 {
        let spec = w.schedule().pop().expect("one placement");
        order.push(spec.job_id.clone());
        w.finish(&spec, 1_000);
    }
    assert_eq!(order, [high, low, low2]);
}

#[test]
fn fifo_queues_keep_submission_order_and_ignore_priority() {
    let mut w = World::new(1, &[], None);
    let a = w.submit("q", None, Some(1));
    let b = w.submit("q", None, Some(9));
    let first = w.schedule().pop().unwrap();
    assert_eq!(first.job_id, a);
    w.finish(&first, 1_000);
    assert_eq!(w.schedule().pop().unwrap().job_id, b);
    assert!(w.state.share_usage.get("q").is_none());
}

#[test]
fn compute_reservation_keeps_room_for_shares_not_yet_running() {
    // 50% with one share running: of 4 vCPUs, 2 are held back from it.
    let mut w = World::new(4, &[], Some(50));
    for _ in 0..4 {
        w.submit("fq", Some("a"), None);
    }
    assert_eq!(w.schedule().len(), 2);
    let waiting = w
        .state
        .jobs
        .values()
        .find(|j| j.status == JobStatus::Runnable)
        .unwrap()
        .clone();
    let reason = why_waiting(&w.state, &waiting).unwrap();
    assert!(
        reason.contains("computeReservation holds back 2 vCPU of ce"),
        "{reason}"
    );
    // A share with nothing running may use the reserve. Then two shares run: 25% (1 vCPU) is
    // held back, and both already run, so the fourth vCPU stays free.
    let b = w.submit("fq", Some("b"), None);
    let placed = w.schedule();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].job_id, b);
    w.submit("fq", Some("b"), None);
    assert!(w.schedule().is_empty());
    assert_eq!(w.state.ce_used_vcpus_milli("ce"), 3000);
}

#[test]
fn usage_is_booked_stored_and_decays_with_the_half_life() {
    let mut w = World::new(1, &[], None);
    let id = w.submit("fq", Some("a"), None);
    let spec = w.schedule().pop().unwrap();
    assert_eq!(spec.job_id, id);
    // The attempt holds 1 vCPU for 60 s: the store is told about the usage record.
    let changes = w.finish(&spec, 60_000);
    assert!(changes.dirty.contains(&Key::ShareUsage("fq".into())));
    let used = w.usage("fq").usage_mvcpu_ms["a"] as f64;
    // 60 vCPU-s decayed over 60 s with a 600 s half-life: a little under 60.
    assert!((57.0e6..60.0e6).contains(&used), "{used}");
    // One half-life later (booked when anything in the queue changes), half is left.
    w.now += 600_000;
    w.submit("fq", Some("b"), None);
    let spec = w.schedule().pop().unwrap();
    let later = w.usage("fq");
    let halved = later.usage_mvcpu_ms["a"] as f64;
    assert!((halved / used - 0.5).abs() < 0.01, "{used} -> {halved}");
    assert_eq!(later.as_of_ms, w.now);
    w.finish(&spec, 1_000);
}

#[test]
fn why_tells_where_the_share_stands() {
    let mut w = World::new(1, &[("b", Some(5000))], None);
    let a1 = w.submit("fq", Some("a"), None);
    w.submit("fq", Some("a"), None);
    let b1 = w.submit("fq", Some("b"), None);
    let spec = w.schedule().pop().unwrap();
    assert_eq!(spec.job_id, a1);
    w.finish(&spec, 10_000);
    // a has used ~10 vCPU-s; b, nothing: b is next, a waits one share behind.
    let a2 = w
        .state
        .jobs
        .values()
        .find(|j| j.status == JobStatus::Runnable && j.share_identifier.as_deref() == Some("a"))
        .unwrap()
        .clone();
    let reason = why_waiting(&w.state, &a2).unwrap();
    assert!(
        reason.contains("fair share: share a has used 9.9"),
        "{reason}"
    );
    assert!(reason.ends_with("(weight 1), 1 share ahead"), "{reason}");
    let b = w.state.job(&b1).unwrap().clone();
    assert!(why_waiting(&w.state, &b)
        .unwrap()
        .contains("share b has used 0 vCPU-s (weight 0.5), next to dispatch"));
    let d = diagnose(&w.state, &a2);
    assert_eq!(d.jobs_ahead, Some(1));
    assert!(
        d.unblock.iter().any(|u| u.contains("fair share")),
        "{:?}",
        d.unblock
    );
}

#[test]
fn array_children_are_dispatched_by_their_share() {
    let mut w = World::new(2, &[("light", Some(2500)), ("heavy", None)], None);
    // One big array per share: their unborn children wait in the share's order by the parent.
    for share in ["heavy", "light"] {
        w.next_id += 1;
        w.ok(Command::SubmitJob(Box::new(SubmitJob {
            job_id: format!("arr-{share}"),
            name: "a".into(),
            queue: "fq".into(),
            definition: "d".into(),
            share_identifier: Some(share.into()),
            array_size: Some(10_000),
            ..Default::default()
        })));
    }
    let mut dispatched = std::collections::BTreeMap::<String, usize>::new();
    let mut running: Vec<AttemptSpec> = Vec::new();
    while dispatched.values().sum::<usize>() < 400 {
        for spec in w.schedule() {
            let parent = spec.job_id.split(':').next().unwrap().to_string();
            assert_eq!(
                w.share_of(&spec.job_id),
                w.share_of(&parent),
                "children keep the share"
            );
            *dispatched.entry(parent).or_default() += 1;
            running.push(spec);
        }
        if !running.is_empty() {
            let done = running.remove(0);
            w.finish(&done, 10_000);
        }
    }
    let heavy = dispatched["arr-heavy"] as f64;
    let light = dispatched["arr-light"] as f64;
    assert!((3.6..=4.4).contains(&(light / heavy)), "{dispatched:?}");
}
