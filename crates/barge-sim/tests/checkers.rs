//! The invariant checkers can fail: each test builds a real state through the core, corrupts it
//! by hand the way a bug would, and asserts that the checker names the broken invariant. The
//! sabotage tests do the same end to end, through whole seeded runs.

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
    assert_eq!(store.mismatch(&s), None);
    let loaded = store.load(Identity::default()).unwrap();
    assert!(loaded.jobs == s.jobs);
    assert_eq!(loaded.ce_used_vcpus_milli("ce"), 2000);
    check_indexes(&loaded).expect("a load rebuilds the indexes");
}

#[test]
fn sabotaged_runs_fail_with_the_right_invariant() {
    for (sabotage, invariant) in [
        (Sabotage::StoreDropsJobUpdates, RESTART),
        (Sabotage::ReviveFinishedJobs, NO_JOB_LOST),
        (Sabotage::LostAgentsKeepRunning, ONE_LIVE_ATTEMPT),
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
