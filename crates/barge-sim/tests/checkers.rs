//! The invariant checkers can fail: each test builds a real state through the core, corrupts it
//! by hand the way a bug would, and asserts that the checker names the broken invariant. The
//! sabotage tests do the same end to end, through whole seeded runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use barge_core::agent::{AgentInstruction, AgentReport};
use barge_core::arn::Identity;
use barge_core::command::{Key, SubmitJob};
use barge_core::model::*;
use barge_core::{apply, scheduler, Changes, Command, Effect, State};
use barge_sim::check::*;
use barge_sim::store::SimStore;
use barge_sim::{run_seed, run_seed_sabotaged, Sabotage};
use serde_json::Map;

const NOW: i64 = 1_000;

fn ok(state: &mut State, command: Command) -> Changes {
    let mut changes = Changes::default();
    apply(state, command, NOW, &mut changes).expect("command accepted");
    changes
}

fn agent(id: &str, vcpus_milli: u64) -> Command {
    Command::RegisterAgent {
        id: id.into(),
        vcpus_milli,
        memory_mib: 4096,
        scope: AgentScope::AllManaged,
        private_ipv4: None,
        gpus: 0,
        runner: None,
        running: Vec::new(),
    }
}

fn submit(id: &str) -> Command {
    Command::SubmitJob(Box::new(SubmitJob {
        job_id: id.into(),
        name: id.into(),
        queue: "q".into(),
        definition: "d".into(),
        ..Default::default()
    }))
}

/// One agent (2 vCPU), one MANAGED environment (maxvCpus 2), one queue, a 1-vCPU definition
/// with two attempts, and three jobs: j1 and j2 placed on the agent, j3 RUNNABLE.
fn base() -> State {
    let mut s = State::new(Identity::default());
    ok(&mut s, agent("a1", 2000));
    ok(
        &mut s,
        Command::CreateComputeEnvironment(ComputeEnvironment {
            name: "ce".into(),
            uuid: "u".into(),
            kind: ComputeEnvironmentType::Managed,
            state: ResourceState::Enabled,
            compute_resources: Some(ComputeResources {
                kind: Some("EC2".into()),
                max_vcpus: Some(2),
                ..Default::default()
            }),
            unmanaged_vcpus: None,
            service_role: None,
            update_policy: None,
            tags: Tags::new(),
            other: Map::new(),
        }),
    );
    ok(
        &mut s,
        Command::CreateJobQueue(JobQueue {
            name: "q".into(),
            state: ResourceState::Enabled,
            priority: 1,
            compute_environment_order: vec![ComputeEnvironmentOrder {
                order: 1,
                compute_environment: "ce".into(),
            }],
            scheduling_policy_arn: None,
            job_state_time_limit_actions: Vec::new(),
            tags: Tags::new(),
            other: Map::new(),
        }),
    );
    ok(
        &mut s,
        Command::RegisterJobDefinition(JobDefinition {
            name: "d".into(),
            revision: 0,
            status: DefinitionStatus::Active,
            kind: "container".into(),
            parameters: Default::default(),
            scheduling_priority: None,
            container_properties: Some(ContainerProperties {
                resource_requirements: Some(vec![
                    ResourceRequirement {
                        kind: "VCPU".into(),
                        value: "1".into(),
                    },
                    ResourceRequirement {
                        kind: "MEMORY".into(),
                        value: "512".into(),
                    },
                ]),
                ..Default::default()
            }),
            node_properties: None,
            retry_strategy: Some(RetryStrategy {
                attempts: Some(2),
                evaluate_on_exit: None,
            }),
            timeout: None,
            propagate_tags: None,
            platform_capabilities: None,
            tags: Tags::new(),
            other: Map::new(),
        }),
    );
    for id in ["j1", "j2", "j3"] {
        ok(&mut s, submit(id));
    }
    let mut n = 0;
    let plan = scheduler::plan(&s, &mut || {
        n += 1;
        format!("att-{n}")
    });
    ok(&mut s, Command::SchedulerPass(plan));
    assert_eq!(s.job("j1").unwrap().status, JobStatus::Starting);
    assert_eq!(s.job("j2").unwrap().status, JobStatus::Starting);
    assert_eq!(s.job("j3").unwrap().status, JobStatus::Runnable);
    check_state(&s).expect("the base state is sound");
    s
}

fn exited(job: &str, attempt: &str, exit_code: i32) -> AgentReport {
    AgentReport::Exited {
        job_id: job.into(),
        attempt_id: attempt.into(),
        at_ms: NOW,
        exit_code: Some(exit_code),
        reason: None,
    }
}

fn job(s: &State, id: &str) -> Job {
    (**s.job(id).unwrap()).clone()
}

fn violated<T: std::fmt::Debug>(r: Result<T, Violation>, invariant: &str) {
    match r {
        Err(v) => assert_eq!(v.invariant, invariant, "wrong invariant: {v}"),
        Ok(v) => panic!("expected a violation of {invariant:?}, got Ok({v:?})"),
    }
}

#[test]
fn transitions_checker_refuses_a_finished_job_that_runs_again() {
    let mut prev = base();
    ok(
        &mut prev,
        Command::AgentReports {
            agent_id: "a1".into(),
            reports: vec![exited("j1", "att-1", 0)],
        },
    );
    assert_eq!(prev.job("j1").unwrap().status, JobStatus::Succeeded);
    let mut next = prev.clone();
    let mut j1 = job(&next, "j1");
    j1.status = JobStatus::Runnable;
    next.put_job(j1);
    violated(
        check_transitions(&prev, &next, &|_| 1, None),
        LEGAL_TRANSITIONS,
    );
    // A terminal job may change its tags, and nothing else.
    let mut tagged = prev.clone();
    let mut j1 = job(&tagged, "j1");
    j1.tags.insert("k".into(), "v".into());
    tagged.put_job(j1.clone());
    check_transitions(&prev, &tagged, &|_| 1, None).expect("tags may change");
    j1.stopped_at = Some(7);
    tagged.put_job(j1);
    violated(
        check_transitions(&prev, &tagged, &|_| 1, None),
        LEGAL_TRANSITIONS,
    );
}

#[test]
fn transitions_checker_counts_hops() {
    let prev = base();
    let mut next = prev.clone();
    let mut j3 = job(&next, "j3");
    j3.status = JobStatus::Succeeded;
    next.put_job(j3);
    violated(
        check_transitions(&prev, &next, &|_| 1, None),
        LEGAL_TRANSITIONS,
    );
    check_transitions(&prev, &next, &|_| 3, None).expect("RUNNABLE→STARTING→RUNNING→SUCCEEDED");
    assert!(reachable(JobStatus::Submitted, JobStatus::Starting, 2));
    assert!(!reachable(JobStatus::Submitted, JobStatus::Starting, 1));
    assert!(!reachable(JobStatus::Failed, JobStatus::Runnable, 5));
}

#[test]
fn transitions_checker_notices_a_lost_job_and_an_unasked_one() {
    let prev = base();
    let mut next = prev.clone();
    next.jobs.remove("j3");
    violated(check_transitions(&prev, &next, &|_| 1, None), NO_JOB_LOST);
    let mut next = prev.clone();
    ok(&mut next, submit("j4"));
    violated(
        check_transitions(&prev, &next, &|_| 1, None),
        LEGAL_TRANSITIONS,
    );
    check_transitions(&prev, &next, &|_| 1, Some("j4")).expect("j4 was submitted");
}

#[test]
fn capacity_checker_catches_an_overbooked_agent() {
    let mut s = base();
    let mut j3 = job(&s, "j3");
    let mut attempt = j1_attempt(&s);
    attempt.id = "att-x".into();
    j3.current = Some(attempt);
    j3.status = JobStatus::Starting;
    s.account("ce", "a1", j3.resources, true);
    s.put_job(j3);
    // The counters were kept in step, so only the capacity rule is broken.
    check_indexes(&s).expect("indexes agree");
    violated(check_capacity(&s), CAPACITY);
    violated(check_state(&s), CAPACITY);
}

fn j1_attempt(s: &State) -> Attempt {
    s.job("j1").unwrap().current.clone().unwrap()
}

#[test]
fn placement_checker_catches_an_environment_over_max_vcpus() {
    let mut prev = base();
    ok(&mut prev, agent("a2", 2000));
    let mut next = prev.clone();
    let mut j3 = job(&next, "j3");
    let mut attempt = j1_attempt(&next);
    attempt.id = "att-9".into();
    attempt.agent_id = "a2".into();
    attempt.number = 1;
    j3.current = Some(attempt);
    j3.status = JobStatus::Starting;
    next.account("ce", "a2", j3.resources, true);
    next.put_job(j3.clone());
    let launch = Effect::Agent {
        agent_id: "a2".into(),
        instruction: AgentInstruction::Launch(barge_core::agent::AttemptSpec {
            job_id: "j3".into(),
            attempt_id: "att-9".into(),
            attempt_number: 1,
            image: None,
            command: vec![],
            environment: vec![],
            vcpus_milli: j3.resources.vcpus_milli,
            memory_mib: j3.resources.memory_mib,
            log_stream_name: "x".into(),
            user: None,
            host: Default::default(),
            runner: None,
        }),
    };
    // The agent has room; the environment's maxvCpus (2) does not: 3 vCPUs would be live.
    check_capacity(&next).expect("each agent is within its size");
    violated(
        check_placements(&prev, &next, std::slice::from_ref(&launch)),
        CAPACITY,
    );
    // Launching a job that already had a live attempt is a second live attempt.
    violated(check_placements(&next, &next, &[launch]), ONE_LIVE_ATTEMPT);
}

#[test]
fn live_attempt_checker_catches_a_waiting_job_with_an_attempt_and_an_orphan() {
    let s = base();
    let mut bad = s.clone();
    let mut j1 = job(&bad, "j1");
    j1.status = JobStatus::Runnable;
    bad.put_job(j1);
    violated(check_live_attempts(&bad), ONE_LIVE_ATTEMPT);
    let mut orphaned = s.clone();
    orphaned.agents.remove("a1");
    violated(check_live_attempts(&orphaned), ONE_LIVE_ATTEMPT);
    let mut twice = s.clone();
    let mut j2 = job(&twice, "j2");
    j2.current.as_mut().unwrap().id = "att-1".into();
    twice.put_job(j2);
    violated(check_live_attempts(&twice), ONE_LIVE_ATTEMPT);
}

#[test]
fn attempts_checker_catches_a_retry_after_success_and_too_many_attempts() {
    let mut s = base();
    ok(
        &mut s,
        Command::AgentReports {
            agent_id: "a1".into(),
            reports: vec![exited("j1", "att-1", 0), exited("j2", "att-2", 1)],
        },
    );
    assert_eq!(s.job("j2").unwrap().status, JobStatus::Runnable);
    check_attempts(&s).expect("a failed attempt may be retried");
    let mut bad = s.clone();
    let mut j1 = job(&bad, "j1");
    j1.status = JobStatus::Runnable;
    bad.put_job(j1);
    violated(check_attempts(&bad), ATTEMPTS);
    let mut bad = s.clone();
    let mut j2 = job(&bad, "j2");
    let mut again = j2.attempts[0].clone();
    again.number = 2;
    again.id = "att-y".into();
    j2.attempts.push(again);
    let mut third = j2.attempts[0].clone();
    third.number = 3;
    third.id = "att-z".into();
    j2.attempts.push(third);
    bad.put_job(j2);
    violated(check_attempts(&bad), ATTEMPTS);
}

#[test]
fn index_checker_catches_a_job_changed_behind_put_job_and_a_drifted_counter() {
    let s = base();
    let mut bad = s.clone();
    let mut j3 = job(&bad, "j3");
    j3.status = JobStatus::Failed;
    bad.jobs.insert("j3".into(), Arc::new(j3));
    violated(check_indexes(&bad), INDEXES);
    let mut drift = s.clone();
    Arc::make_mut(drift.agents.get_mut("a1").unwrap()).used_vcpus_milli += 1;
    violated(check_indexes(&drift), INDEXES);
    let mut ce_drift = s.clone();
    ce_drift.account("ce", "nobody", Resources::default(), true);
    check_indexes(&ce_drift).expect("booking nothing changes nothing");
    ce_drift.account(
        "ce",
        "nobody",
        Resources {
            vcpus_milli: 500,
            ..Default::default()
        },
        true,
    );
    violated(check_indexes(&ce_drift), INDEXES);
}

#[test]
fn dirty_checker_catches_a_change_the_store_would_not_write() {
    let prev = base();
    let mut next = prev.clone();
    let mut j3 = job(&next, "j3");
    j3.tags.insert("k".into(), "v".into());
    next.put_job(j3);
    violated(check_dirty(&prev, &next, &[]), DURABLE);
    check_dirty(&prev, &next, &[Key::Job("j3".into())]).expect("named");
    let mut gone = prev.clone();
    gone.job_queues.remove("q");
    violated(check_dirty(&prev, &gone, &[Key::Job("j3".into())]), DURABLE);
}

#[test]
fn unchanged_checker_catches_a_refused_command_that_left_traces() {
    let prev = base();
    check_unchanged(&prev, &prev.clone()).expect("same");
    let mut next = prev.clone();
    next.next_job_seq += 1;
    violated(check_unchanged(&prev, &next), ATOMIC);
}

#[test]
fn report_checker_catches_an_accepted_stale_report() {
    let prev = base();
    let mut next = prev.clone();
    let reports = vec![
        exited("j1", "att-1", 1),
        // Stale: the exit above ended att-1, so a second one must be refused.
        exited("j1", "att-1", 0),
        AgentReport::Running {
            job_id: "j2".into(),
            attempt_id: "att-old".into(),
            at_ms: NOW,
        },
    ];
    let changes = ok(
        &mut next,
        Command::AgentReports {
            agent_id: "a1".into(),
            reports: reports.clone(),
        },
    );
    check_reports(&prev, &next, "a1", &reports, 2, &changes.effects).expect("core is right");
    violated(
        check_reports(&prev, &next, "a1", &reports, 1, &changes.effects),
        STALE_REPORTS,
    );
    violated(
        check_reports(&prev, &next, "a1", &reports, 2, &[]),
        STALE_REPORTS,
    );
}

#[test]
fn simulated_store_notices_a_missed_write_and_round_trips_otherwise() {
    let s = base();
    let mut store = SimStore::default();
    let mut all = Changes::default();
    all.dirty.push(Key::ComputeEnvironment("ce".into()));
    all.dirty.push(Key::JobQueue("q".into()));
    all.dirty.push(Key::JobDefinition("d".into(), 1));
    store.commit(&s, &all).unwrap();
    assert!(store.mismatch(&s).unwrap().contains("Job"));
    for id in ["j1", "j2", "j3"] {
        all.dirty.push(Key::Job(id.into()));
    }
    store.commit(&s, &all).unwrap();
    assert!(store.mismatch(&s).unwrap().contains("Agent"));
    all.dirty.push(Key::Agent("a1".into()));
    store.commit(&s, &all).unwrap();
    assert_eq!(store.mismatch(&s), None);
    let loaded = store.load(Identity::default()).unwrap();
    assert!(loaded.jobs == s.jobs);
    assert!(
        loaded.agents == s.agents,
        "agents and their derived usage read back"
    );
    assert_eq!(loaded.ce_used_vcpus_milli("ce"), 2000);
    check_indexes(&loaded).expect("a load rebuilds the indexes");
}

#[test]
fn sabotaged_runs_fail_with_the_right_invariant() {
    for (sabotage, invariant) in [
        (Sabotage::StoreDropsJobUpdates, RESTART),
        (Sabotage::ReviveFinishedJobs, NO_JOB_LOST),
        (Sabotage::LostAgentsKeepRunning, ONE_LIVE_ATTEMPT),
        (Sabotage::BirthOutOfOrder, SEQUENTIAL_ORDER),
    ] {
        let failure = (0..40)
            .find_map(|seed| run_seed_sabotaged(seed, 200, sabotage).err())
            .unwrap_or_else(|| panic!("{sabotage:?} went unnoticed for 40 seeds"));
        assert_eq!(
            failure.violation.invariant, invariant,
            "{sabotage:?}: {failure}"
        );
        let text = failure.to_string();
        assert!(text.contains(&format!("seed {}", failure.seed)), "{text}");
        assert!(
            text.contains(&format!("SIM_SEED={}", failure.seed)),
            "{text}"
        );
        assert!(!failure.recent.is_empty() && failure.recent.len() <= 24);
    }
    run_seed(0, 200).expect("the same seeds pass unsabotaged");
}

#[test]
fn dependency_checker_catches_a_job_that_ran_before_its_dependency_succeeded() {
    let mut s = base();
    assert!(check_dependencies(&s).is_ok());
    let mut early = job(&s, "j3");
    early.id = "early".into();
    early.seq = 99;
    early.status = JobStatus::Runnable;
    // j2 is still STARTING: a job depending on it must not be RUNNABLE yet.
    early.depends_on = vec![JobDependency {
        job_id: Some("j2".into()),
        kind: None,
    }];
    s.put_job(early.clone());
    violated(check_dependencies(&s), DEPENDENCY_ORDER);
    early.status = JobStatus::Pending;
    s.put_job(early);
    assert!(check_dependencies(&s).is_ok());
}

#[test]
fn queue_order_checker_catches_a_fifo_queue_that_lets_a_later_job_jump_ahead() {
    let mut prev = base();
    ok(
        &mut prev,
        Command::AgentReports {
            agent_id: "a1".into(),
            reports: vec![exited("j1", "att-1", 0)],
        },
    );
    ok(&mut prev, submit("j4"));
    ok(
        &mut prev,
        Command::SchedulerPass(barge_core::Plan {
            admit: vec!["j4".into()],
            placements: vec![],
            gangs: vec![],
        }),
    );
    // j3 and j4 are RUNNABLE and alike, one vCPU is free: the applier re-checks capacity, not
    // order, so a plan that takes j4 first commits, and only the order checker objects.
    let placement = |job: &str| barge_core::command::Placement {
        job_id: job.into(),
        compute_environment: "ce".into(),
        agent_id: "a1".into(),
        attempt_id: format!("att-{job}"),
    };
    let mut next = prev.clone();
    ok(
        &mut next,
        Command::SchedulerPass(barge_core::Plan {
            admit: vec![],
            placements: vec![placement("j4")],
            gangs: vec![],
        }),
    );
    violated(check_queue_order(&prev, &next), QUEUE_ORDER);
    let mut right = prev.clone();
    ok(
        &mut right,
        Command::SchedulerPass(barge_core::Plan {
            admit: vec![],
            placements: vec![placement("j3")],
            gangs: vec![],
        }),
    );
    check_queue_order(&prev, &right).expect("the older job first");
}

#[test]
fn share_index_checker_catches_a_job_moved_to_another_share_behind_put_job() {
    let mut s = base();
    ok(
        &mut s,
        Command::CreateSchedulingPolicy(SchedulingPolicy {
            name: "p".into(),
            fairshare_policy: None,
            tags: Tags::new(),
        }),
    );
    let mut fair = (**s.job_queues.get("q").unwrap()).clone();
    fair.name = "fq".into();
    fair.scheduling_policy_arn = Some(Identity::default().scheduling_policy_arn("p"));
    ok(&mut s, Command::CreateJobQueue(fair));
    ok(
        &mut s,
        Command::SubmitJob(Box::new(SubmitJob {
            job_id: "f1".into(),
            name: "f1".into(),
            queue: "fq".into(),
            definition: "d".into(),
            share_identifier: Some("alice".into()),
            ..Default::default()
        })),
    );
    check_share_index(&s).expect("kept in step by put_job");
    let mut f1 = job(&s, "f1");
    f1.share_identifier = Some("bob".into());
    s.jobs.insert("f1".into(), Arc::new(f1));
    violated(check_share_index(&s), INDEXES);
    violated(check_indexes(&s), INDEXES);
}

#[test]
fn share_weights_checker_names_the_share_that_got_too_much() {
    let weights = BTreeMap::from([("a".to_string(), 1.0), ("b".to_string(), 0.25)]);
    let fair = BTreeMap::from([("a".to_string(), 20.0), ("b".to_string(), 81.0)]);
    check_share_weights(&fair, &weights, 0.1).expect("within 10% of 4:1");
    let even = BTreeMap::from([("a".to_string(), 50.0), ("b".to_string(), 50.0)]);
    let v = check_share_weights(&even, &weights, 0.1).unwrap_err();
    assert_eq!(v.invariant, SHARE_WEIGHTS);
    assert!(v.detail.contains("share a (weight 1) got 50.0%"), "{v}");
}

/// A 3-node multi-node job `p` (1 vCPU per node) RUNNING on one 8-vCPU agent: every node
/// placed, the main node started, the other two launched.
fn gang_base() -> State {
    use barge_core::multinode::{NodeProperties, NodeRangeProperty};
    let mut s = base();
    ok(&mut s, agent("a2", 8000));
    let mut ce = (*s.compute_environments["ce"]).clone();
    ce.compute_resources.as_mut().unwrap().max_vcpus = Some(16);
    s.compute_environments.insert("ce".into(), Arc::new(ce));
    let container = s.job_definitions[&("d".to_string(), 1)]
        .container_properties
        .clone()
        .map(|mut c| {
            c.image = Some("busybox".into());
            c
        });
    let mut def = (*s.job_definitions[&("d".to_string(), 1)]).clone();
    def.name = "m".into();
    def.kind = "multinode".into();
    def.container_properties = None;
    def.node_properties = Some(NodeProperties {
        num_nodes: 3,
        main_node: 0,
        node_range_properties: vec![NodeRangeProperty {
            target_nodes: ":".into(),
            container,
            other: Map::new(),
        }],
    });
    ok(&mut s, Command::RegisterJobDefinition(def));
    ok(
        &mut s,
        Command::SubmitJob(Box::new(SubmitJob {
            job_id: "p".into(),
            name: "p".into(),
            queue: "q".into(),
            definition: "m".into(),
            ..Default::default()
        })),
    );
    let mut n = 100;
    let plan = scheduler::plan(&s, &mut || {
        n += 1;
        format!("att-{n}")
    });
    assert_eq!(plan.gangs.len(), 1);
    ok(&mut s, Command::SchedulerPass(plan));
    let main = s.job("p#0").unwrap().current.clone().unwrap();
    ok(
        &mut s,
        Command::AgentReports {
            agent_id: main.agent_id.clone(),
            reports: vec![AgentReport::Running {
                job_id: "p#0".into(),
                attempt_id: main.id,
                at_ms: NOW,
            }],
        },
    );
    assert_eq!(s.job("p").unwrap().status, JobStatus::Running);
    check_state(&s).expect("the gang base state is sound");
    s
}

#[test]
fn gang_checker_catches_a_partial_gang() {
    let mut s = gang_base();
    // One node loses its place behind the core's back while its job runs.
    let mut node = job(&s, "p#2");
    let a = node.current.take().unwrap();
    s.account(&a.compute_environment, &a.agent_id, node.resources, false);
    node.attempts.push(a);
    node.status = JobStatus::Runnable;
    s.put_job(node);
    violated(check_gangs(&s), GANG);
    violated(check_state(&s), GANG);
}

#[test]
fn gang_checker_catches_two_gangs_and_a_missing_node() {
    let s = gang_base();
    // A node runs a newer attempt than its job: a second gang beside the first.
    let mut two = s.clone();
    let mut node = job(&two, "p#1");
    node.current.as_mut().unwrap().number = 2;
    node.attempts.push(node.current.clone().unwrap());
    two.put_job(node);
    violated(check_gangs(&two), GANG);
    // A node row missing: the gang was placed in part.
    let mut part = s.clone();
    part.jobs.remove("p#2");
    violated(check_gangs(&part), GANG);
}

#[test]
fn gang_checker_catches_a_job_decided_by_another_node() {
    let mut s = gang_base();
    let main = s.job("p#0").unwrap().current.clone().unwrap();
    ok(
        &mut s,
        Command::AgentReports {
            agent_id: main.agent_id.clone(),
            reports: vec![exited("p#0", &main.id, 1)],
        },
    );
    assert_eq!(s.job("p").unwrap().status, JobStatus::Runnable, "retried");
    check_state(&s).expect("the main node decided");
    // The job's attempt claims success although its main node exited 1.
    let mut p = job(&s, "p");
    p.attempts[0].exit_code = Some(0);
    s.put_job(p);
    violated(check_state(&s), GANG);
}

// ---------------------------------------------------------------------------------------------
// Array jobs

fn dependency(job_id: Option<&str>, kind: &str) -> JobDependency {
    JobDependency {
        job_id: job_id.map(str::to_string),
        kind: Some(kind.to_string()),
    }
}

fn submit_array(id: &str, size: u32, depends_on: Vec<JobDependency>) -> Command {
    Command::SubmitJob(Box::new(SubmitJob {
        job_id: id.into(),
        name: id.into(),
        queue: "q".into(),
        definition: "d".into(),
        depends_on,
        array_size: Some(size),
        ..Default::default()
    }))
}

/// One scheduler pass, its attempts named `<prefix>-1`, `<prefix>-2`, …
fn pass(s: &mut State, prefix: &str) -> Changes {
    let mut n = 0;
    let plan = scheduler::plan(s, &mut || {
        n += 1;
        format!("{prefix}-{n}")
    });
    ok(s, Command::SchedulerPass(plan))
}

/// The live attempt of `id` exits with `code`.
fn exit(s: &mut State, id: &str, code: i32) {
    let attempt = s.job(id).unwrap().current.clone().unwrap();
    ok(
        s,
        Command::AgentReports {
            agent_id: attempt.agent_id.clone(),
            reports: vec![exited(id, &attempt.id, code)],
        },
    );
}

/// The base world with room for more, and four arrays, all admitted:
/// - P (plain, size 3): P:0 and P:1 placed, P:2 unborn RUNNABLE;
/// - S (SEQUENTIAL, size 3): S:0 born RUNNABLE, S:1 and S:2 unborn PENDING;
/// - A (plain, size 2) and B (N_TO_N on A, size 2): A's children unborn RUNNABLE, B's PENDING.
///
/// j1 and j2 are done, j3 RUNNABLE. Returns the state before and after the placing pass.
fn arrays_base() -> (State, State) {
    let mut s = base();
    exit(&mut s, "j1", 0);
    exit(&mut s, "j2", 0);
    ok(&mut s, submit_array("P", 3, vec![]));
    ok(
        &mut s,
        submit_array("S", 3, vec![dependency(None, "SEQUENTIAL")]),
    );
    ok(&mut s, submit_array("A", 2, vec![]));
    ok(
        &mut s,
        submit_array("B", 2, vec![dependency(Some("A"), "N_TO_N")]),
    );
    // j3 out of the way; arrays are admitted by a pass of their own.
    let mut j3 = job(&s, "j3");
    j3.status = JobStatus::Failed;
    j3.is_cancelled = true;
    j3.status_reason = Some("out of the way".into());
    s.put_job(j3);
    pass(&mut s, "adm");
    let before = s.clone();
    pass(&mut s, "place");
    check_state(&s).expect("the array base state is sound");
    (before, s)
}

/// `id` fails every attempt its retry strategy allows (the definition allows two).
fn fail_for_good(s: &mut State, id: &str) {
    for round in 0.. {
        exit(s, id, 1);
        if s.job(id).unwrap().status == JobStatus::Failed {
            return;
        }
        pass(s, &format!("retry-{id}-{round}"));
    }
}

/// P:0 and P:1 succeed, and the next pass places P:2 and S:0, the agent's two vCPUs.
fn place_s0(s: &mut State) {
    exit(s, "P:0", 0);
    exit(s, "P:1", 0);
    pass(s, "s0");
    assert_eq!(s.job("S:0").unwrap().status, JobStatus::Starting);
}

#[test]
fn array_base_state_is_as_described() {
    let (_, s) = arrays_base();
    let status = |id: &str| {
        child_status(
            &s,
            id.split(':').next().unwrap(),
            id[id.len() - 1..].parse().unwrap(),
        )
    };
    assert_eq!(s.job("P").unwrap().status, JobStatus::Pending);
    assert_eq!(status("P:0"), Some(JobStatus::Starting));
    assert_eq!(status("P:1"), Some(JobStatus::Starting));
    assert_eq!(status("P:2"), Some(JobStatus::Runnable));
    assert!(s.job("P:2").is_none(), "P:2 is unborn");
    assert_eq!(status("S:0"), Some(JobStatus::Runnable));
    assert!(s.job("S:0").is_some(), "S:0 was born at release");
    assert_eq!(status("S:1"), Some(JobStatus::Pending));
    assert_eq!(status("A:0"), Some(JobStatus::Runnable));
    assert_eq!(status("B:0"), Some(JobStatus::Pending));
    check_cascade_causes(&s).expect("nothing failed");
}

#[test]
fn array_children_checker_catches_a_lost_child_and_stray_rows() {
    let (_, s) = arrays_base();
    // A born child's row vanishes: the index still lists it.
    let mut lost = s.clone();
    lost.jobs.remove("P:1");
    violated(check_arrays(&lost), ARRAY_CHILDREN);
    // A row written behind put_job: the index does not list it.
    let mut stray = s.clone();
    let mut p2 = job(&s, "P:1");
    p2.id = "P:2".into();
    p2.array_child.as_mut().unwrap().index = 2;
    p2.current = None;
    p2.status = JobStatus::Failed;
    stray.jobs.insert("P:2".into(), Arc::new(p2));
    violated(check_arrays(&stray), ARRAY_CHILDREN);
    // A child beyond the array's size.
    let mut beyond = s.clone();
    let mut p7 = job(&s, "P:1");
    p7.id = "P:7".into();
    p7.array_child.as_mut().unwrap().index = 7;
    p7.current = None;
    p7.status = JobStatus::Failed;
    beyond.put_job(p7);
    violated(check_arrays(&beyond), ARRAY_CHILDREN);
    // A row whose id and index disagree.
    let mut misnamed = s.clone();
    let mut p1 = job(&s, "P:1");
    p1.array_child.as_mut().unwrap().index = 2;
    misnamed.jobs.insert("P:1".into(), Arc::new(p1));
    violated(check_arrays(&misnamed), ARRAY_CHILDREN);
    // A born child that waits for a dependency (children are born when it settles).
    let mut waiting = s.clone();
    let mut s0 = job(&s, "S:0");
    s0.status = JobStatus::Pending;
    waiting.put_job(s0);
    violated(check_arrays(&waiting), ARRAY_CHILDREN);
}

#[test]
fn array_parent_checker_catches_a_parent_that_runs_or_ends_out_of_step() {
    let (_, s) = arrays_base();
    let mut running = s.clone();
    let mut p = job(&s, "P");
    p.status = JobStatus::Running;
    running.put_job(p);
    violated(check_arrays(&running), ARRAY_PARENT);
    // Done while two children run and one has not been born.
    let mut early = s.clone();
    let mut p = job(&s, "P");
    p.status = JobStatus::Succeeded;
    early.put_job(p);
    violated(check_arrays(&early), ARRAY_PARENT);
    // Every child succeeded: the parent must be SUCCEEDED, not PENDING, nor FAILED.
    let mut done = s.clone();
    exit(&mut done, "P:0", 0);
    exit(&mut done, "P:1", 0);
    pass(&mut done, "p2");
    exit(&mut done, "P:2", 0);
    assert_eq!(done.job("P").unwrap().status, JobStatus::Succeeded);
    check_arrays(&done).expect("the parent kept the books");
    for wrong in [JobStatus::Pending, JobStatus::Failed] {
        let mut bad = done.clone();
        let mut p = job(&done, "P");
        p.status = wrong;
        bad.put_job(p);
        violated(check_arrays(&bad), ARRAY_PARENT);
    }
}

#[test]
fn sequential_checker_catches_a_child_before_its_predecessor_succeeded() {
    let (_, s) = arrays_base();
    // S:1 born RUNNABLE while S:0 has not run.
    let mut early = s.clone();
    let mut s1 = job(&s, "S:0");
    s1.id = "S:1".into();
    s1.array_child.as_mut().unwrap().index = 1;
    early.put_job(s1.clone());
    violated(check_arrays(&early), SEQUENTIAL_ORDER);
    // S:1 born FAILED for a dependency although S:0 did not fail.
    let mut blamed = s.clone();
    s1.status = JobStatus::Failed;
    s1.status_reason = Some(barge_core::dependencies::REASON_DEPENDENCY_FAILED.into());
    blamed.put_job(s1);
    violated(check_arrays(&blamed), SEQUENTIAL_ORDER);
    // S:0 SUCCEEDED, yet S:1 was not born.
    let mut forgotten = s.clone();
    let mut s0 = job(&s, "S:0");
    s0.status = JobStatus::Succeeded;
    forgotten.put_job(s0);
    violated(check_arrays(&forgotten), SEQUENTIAL_ORDER);
    // Through the core, S:0 succeeding gives birth to S:1.
    let mut s = s.clone();
    place_s0(&mut s);
    exit(&mut s, "S:0", 0);
    assert_eq!(s.job("S:1").unwrap().status, JobStatus::Runnable);
    check_arrays(&s).expect("S:1 follows S:0");
}

#[test]
fn n_to_n_checker_catches_a_child_that_does_not_wait_for_its_counterpart() {
    let (_, mut s) = arrays_base();
    // S out of the way and P done, so A runs; A:0 succeeds and A:1 fails: B:0 is born
    // RUNNABLE, B:1 FAILED.
    ok(
        &mut s,
        Command::CancelJob {
            job_id: "S".into(),
            reason: "out of the way".into(),
        },
    );
    exit(&mut s, "P:0", 0);
    exit(&mut s, "P:1", 0);
    pass(&mut s, "a");
    exit(&mut s, "P:2", 0);
    pass(&mut s, "b");
    exit(&mut s, "A:0", 0);
    assert_eq!(s.job("B:0").unwrap().status, JobStatus::Runnable);
    check_arrays(&s).expect("B:0 follows A:0");
    let before_a1 = s.clone();
    fail_for_good(&mut s, "A:1");
    assert_eq!(s.job("B:1").unwrap().status, JobStatus::Failed);
    check_arrays(&s).expect("B:1 failed with A:1");
    // B:1 SUCCEEDED although A:1 FAILED.
    let mut ran = s.clone();
    let mut b1 = job(&s, "B:0");
    b1.id = "B:1".into();
    b1.array_child.as_mut().unwrap().index = 1;
    b1.status = JobStatus::Succeeded;
    ran.jobs.remove("B:1");
    ran.put_job(b1.clone());
    violated(check_arrays(&ran), N_TO_N_ORDER);
    // B:1 RUNNABLE while A:1 still runs.
    let mut early = before_a1.clone();
    b1.status = JobStatus::Runnable;
    early.put_job(b1);
    violated(check_arrays(&early), N_TO_N_ORDER);
    // A:1 FAILED, yet B:1 waits unborn.
    let mut forgotten = before_a1.clone();
    let mut a1 = job(&before_a1, "A:1");
    a1.status = JobStatus::Failed;
    a1.current = None;
    forgotten.put_job(a1);
    let mut a = job(&before_a1, "A");
    a.status = JobStatus::Failed;
    forgotten.put_job(a);
    violated(check_arrays(&forgotten), N_TO_N_ORDER);
    // N_TO_N on an array of another size.
    let mut resized = s.clone();
    let mut b = job(&s, "B");
    b.array.as_mut().unwrap().n_to_n = vec!["P".into()];
    resized.put_job(b);
    violated(check_arrays(&resized), N_TO_N_ORDER);
}

#[test]
fn cascade_checker_catches_unborn_children_failed_for_nothing() {
    let (_, s) = arrays_base();
    // S closed for a failed dependency while S:0, which S:1 waits for, is still RUNNABLE.
    let mut closed = s.clone();
    let mut parent = job(&s, "S");
    parent.array.as_mut().unwrap().closed =
        Some(barge_core::dependencies::REASON_DEPENDENCY_FAILED.into());
    closed.put_job(parent);
    violated(check_cascade_causes(&closed), SEQUENTIAL_ORDER);
    // The same for B, whose B:0 waits for A:0, which has not run.
    let mut closed = s.clone();
    let mut parent = job(&s, "B");
    parent.array.as_mut().unwrap().closed =
        Some(barge_core::dependencies::REASON_DEPENDENCY_FAILED.into());
    closed.put_job(parent);
    violated(check_cascade_causes(&closed), N_TO_N_ORDER);
    // A child that ran and failed is a cause.
    let mut failed = s.clone();
    place_s0(&mut failed);
    fail_for_good(&mut failed, "S:0");
    assert!(failed
        .job("S")
        .unwrap()
        .array
        .as_ref()
        .unwrap()
        .closed
        .is_some());
    check_cascade_causes(&failed).expect("S:1 and S:2 depend on S:0, which failed");
}

#[test]
fn transitions_checker_follows_parents_births_and_unborn_children() {
    let (before, after) = arrays_base();
    // The core's own pass: P:0 and P:1 born STARTING, counted as one transition each.
    check_transitions(&before, &after, &|_| 1, None).expect("births by placement");
    let s = after;
    let born = |status: JobStatus, id: &str, index: u32| {
        let mut next = s.clone();
        let mut child = job(&s, "P:0");
        child.id = id.into();
        child.array_child.as_mut().unwrap().index = index;
        child.status = status;
        if status != JobStatus::Starting {
            child.current = None;
        }
        next.put_job(child);
        next
    };
    // P:2 (unborn RUNNABLE) born PENDING, RUNNING (two transitions) or RUNNABLE (no change:
    // children are born lazily, as their status changes).
    for status in [JobStatus::Pending, JobStatus::Running, JobStatus::Runnable] {
        violated(
            check_transitions(&s, &born(status, "P:2", 2), &|_| 1, None),
            LEGAL_TRANSITIONS,
        );
    }
    check_transitions(&s, &born(JobStatus::Starting, "P:2", 2), &|_| 1, None)
        .expect("placed at birth");
    // A child of a closed array (unborn FAILED) is never born.
    let mut closed = s.clone();
    ok(
        &mut closed,
        Command::CancelJob {
            job_id: "A".into(),
            reason: "stop".into(),
        },
    );
    let mut reborn = closed.clone();
    let mut a0 = job(&s, "P:0");
    a0.id = "A:0".into();
    a0.array_child = Some(ArrayChild {
        parent: "A".into(),
        index: 0,
        size: 2,
    });
    a0.status = JobStatus::Starting;
    reborn.put_job(a0);
    violated(
        check_transitions(&closed, &reborn, &|_| 1, None),
        LEGAL_TRANSITIONS,
    );
    // Reopening the closed array would move its unborn children FAILED -> RUNNABLE.
    let mut reopened = closed.clone();
    let mut a = job(&closed, "A");
    a.status = JobStatus::Pending;
    a.array.as_mut().unwrap().closed = None;
    a.is_cancelled = false;
    reopened.put_job(a);
    violated(
        check_transitions(&closed, &reopened, &|_| 1, None),
        LEGAL_TRANSITIONS,
    );
    // A parent never runs, and goes PENDING -> SUCCEEDED when its children are done.
    let mut running = s.clone();
    let mut p = job(&s, "P");
    p.status = JobStatus::Running;
    running.put_job(p);
    violated(
        check_transitions(&s, &running, &|_| 1, None),
        LEGAL_TRANSITIONS,
    );
    assert!(parent_reachable(
        JobStatus::Pending,
        JobStatus::Succeeded,
        1
    ));
    assert!(!parent_reachable(
        JobStatus::Pending,
        JobStatus::Runnable,
        3
    ));
    assert!(!reachable(JobStatus::Pending, JobStatus::Succeeded, 1));
}

#[test]
fn capacity_and_live_attempt_checkers_cover_children() {
    let (before, s) = arrays_base();
    // The placing pass launched two unborn children: legal placements.
    let (_, s2) = {
        let mut s2 = before.clone();
        let changes = pass(&mut s2, "place");
        assert_eq!(
            check_placements(&before, &s2, &changes.effects).expect("unborn children placed"),
            2
        );
        ((), s2)
    };
    assert!(s2.job("P:1").is_some());
    // A child RUNNABLE with a live attempt.
    let mut bad = s.clone();
    let mut p0 = job(&s, "P:0");
    p0.status = JobStatus::Runnable;
    bad.put_job(p0);
    violated(check_live_attempts(&bad), ONE_LIVE_ATTEMPT);
    // A third child on the full agent (2 vCPU, two 1-vCPU children live).
    let mut over = s.clone();
    let mut p2 = job(&s, "P:1");
    p2.id = "P:2".into();
    p2.array_child.as_mut().unwrap().index = 2;
    p2.current.as_mut().unwrap().id = "att-over".into();
    over.account("ce", "a1", p2.resources, true);
    over.put_job(p2);
    check_indexes(&over).expect("counters in step");
    violated(check_capacity(&over), CAPACITY);
    // Placing P:1 again while it runs.
    let launch = Effect::Agent {
        agent_id: "a1".into(),
        instruction: AgentInstruction::Launch(barge_core::agent::AttemptSpec {
            job_id: "P:1".into(),
            attempt_id: "att-again".into(),
            attempt_number: 1,
            image: None,
            command: vec![],
            environment: vec![],
            vcpus_milli: 1000,
            memory_mib: 512,
            log_stream_name: "x".into(),
            user: None,
            host: Default::default(),
            runner: None,
        }),
    };
    violated(check_placements(&s, &s, &[launch]), ONE_LIVE_ATTEMPT);
}

#[test]
fn index_checker_catches_an_array_listed_out_of_step() {
    let (_, s) = arrays_base();
    // A closed behind put_job: the scheduler would still take its unborn children.
    let mut bad = s.clone();
    let mut a = job(&s, "A");
    a.array.as_mut().unwrap().closed = Some("gone".into());
    bad.jobs.insert("A".into(), Arc::new(a));
    violated(check_indexes(&bad), INDEXES);
}

#[test]
fn dependency_checker_covers_array_parents() {
    let (_, mut s) = arrays_base();
    ok(
        &mut s,
        submit_array(
            "W",
            2,
            vec![JobDependency {
                job_id: Some("P".into()),
                kind: None,
            }],
        ),
    );
    pass(&mut s, "w");
    assert_eq!(s.job("W").unwrap().status, JobStatus::Pending);
    check_dependencies(&s).expect("W waits for the whole of P");
    // Its children released while P still runs.
    let mut early = s.clone();
    let mut w = job(&s, "W");
    w.array.as_mut().unwrap().released_at = Some(NOW);
    early.put_job(w);
    violated(check_dependencies(&early), DEPENDENCY_ORDER);
    // A child RUNNABLE while its parent's dependency is unfinished.
    let mut child = job(&s, "S:0");
    child.id = "W:0".into();
    child.array_child = Some(ArrayChild {
        parent: "W".into(),
        index: 0,
        size: 2,
    });
    child.seq = s.job("W").unwrap().seq;
    let mut early = s.clone();
    early.put_job(child);
    violated(check_arrays(&early), DEPENDENCY_ORDER);
}

#[test]
fn submit_checker_catches_an_invalid_array_accepted() {
    let (_, prev) = arrays_base();
    let cases: Vec<(u32, Vec<JobDependency>)> = vec![
        (1, vec![]),
        (3, vec![dependency(Some("A"), "N_TO_N")]),
        (2, vec![dependency(Some("j1"), "N_TO_N")]),
        (
            2,
            vec![JobDependency {
                job_id: Some("P:0".into()),
                kind: None,
            }],
        ),
    ];
    for (size, deps) in cases {
        // What an accepting core would have made of it.
        let mut next = prev.clone();
        let mut bad = job(&prev, "A");
        bad.id = "X".into();
        bad.seq = next.next_job_seq;
        bad.status = JobStatus::Submitted;
        bad.depends_on = deps.clone();
        bad.array = Some(ArrayJob {
            size,
            released_at: None,
            sequential: false,
            n_to_n: deps
                .iter()
                .filter(|d| d.kind.as_deref() == Some("N_TO_N"))
                .filter_map(|d| d.job_id.clone())
                .collect(),
            closed: None,
            closed_from: 0,
        });
        next.put_job(bad);
        violated(check_submit(&prev, &next, "X"), ACCEPTED);
    }
    // And the core refuses them all, as it must.
    for (i, (size, deps)) in [
        (1, vec![]),
        (3, vec![dependency(Some("A"), "N_TO_N")]),
        (2, vec![dependency(Some("j1"), "N_TO_N")]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = prev.clone();
        let mut changes = Changes::default();
        let r = apply(
            &mut s,
            submit_array(&format!("Y{i}"), size, deps),
            NOW,
            &mut changes,
        );
        assert!(r.is_err(), "case {i} accepted");
        check_unchanged(&prev, &s).expect("a refused array changes nothing");
    }
}

#[test]
fn queue_priority_checker_catches_a_lower_queue_served_first() {
    let mut prev = base();
    // A second queue of higher priority on the same environment, with one RUNNABLE job.
    let mut high = (**prev.job_queues.get("q").unwrap()).clone();
    high.name = "hi".into();
    high.priority = 10;
    ok(&mut prev, Command::CreateJobQueue(high));
    let s = SubmitJob {
        job_id: "h1".into(),
        name: "h1".into(),
        queue: "hi".into(),
        definition: "d".into(),
        ..Default::default()
    };
    ok(&mut prev, Command::SubmitJob(Box::new(s)));
    ok(
        &mut prev,
        Command::SchedulerPass(barge_core::Plan {
            admit: vec!["h1".into()],
            placements: vec![],
            gangs: vec![],
        }),
    );
    // j1 ends: one vCPU is free, and both j3 (priority 1) and h1 (priority 10) could take it.
    ok(
        &mut prev,
        Command::AgentReports {
            agent_id: "a1".into(),
            reports: vec![exited("j1", "att-1", 0)],
        },
    );
    let placement = |job: &str| barge_core::command::Placement {
        job_id: job.into(),
        compute_environment: "ce".into(),
        agent_id: "a1".into(),
        attempt_id: format!("att-{job}"),
    };
    let pass = |job: &str| {
        let mut next = prev.clone();
        ok(
            &mut next,
            Command::SchedulerPass(barge_core::Plan {
                admit: vec![],
                placements: vec![placement(job)],
                gangs: vec![],
            }),
        );
        next
    };
    violated(check_queue_priority(&prev, &pass("j3")), QUEUE_PRIORITY);
    check_queue_priority(&prev, &pass("h1")).expect("the higher queue first");
    // The real scheduler serves the higher queue.
    let mut real = prev.clone();
    let mut n = 0;
    let plan = scheduler::plan(&real, &mut || {
        n += 1;
        format!("att-real-{n}")
    });
    ok(&mut real, Command::SchedulerPass(plan));
    assert_eq!(real.job("h1").unwrap().status, JobStatus::Starting);
    check_queue_priority(&prev, &real).expect("the scheduler's own pass");
}
