//! The job lifecycle and placement rules, driven through `apply` and `plan` as the server does.

mod common;

use std::collections::BTreeMap;

use barge_core::agent::{AgentInstruction, AgentReport, LogLine};
use barge_core::command::*;
use barge_core::model::*;
use barge_core::reason::why_waiting;
use barge_core::{Command, Effect, State};
use common::*;
use proptest::prelude::*;
use serde_json::Map;

#[test]
fn a_job_goes_through_the_whole_lifecycle() {
    let mut w = World::new(4, 4, 8192);
    w.define("d", "1", "128", None);
    let id = w.submit("q", "d");
    assert_eq!(w.job(&id).status, JobStatus::Submitted);
    let launches = w.schedule();
    assert_eq!(launches.len(), 1);
    let spec = &launches[0];
    assert_eq!(w.job(&id).status, JobStatus::Starting);
    assert_eq!(
        spec.command,
        vec!["echo", "hi"],
        "Ref:: is substituted from the definition's parameters"
    );
    let env: BTreeMap<_, _> = spec.environment.iter().cloned().collect();
    assert_eq!(env["AWS_BATCH_JOB_ID"], id);
    assert_eq!(env["AWS_BATCH_JOB_ATTEMPT"], "1");
    assert_eq!(env["AWS_BATCH_JQ_NAME"], "q");
    assert_eq!(env["AWS_BATCH_CE_NAME"], "ce");
    w.report(AgentReport::Running {
        job_id: id.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: 2_000,
    });
    assert_eq!(w.job(&id).status, JobStatus::Running);
    assert_eq!(w.job(&id).started_at, Some(2_000));
    assert!(
        w.state.log_streams.contains_key(&spec.log_stream_name),
        "the stream exists from RUNNING on"
    );
    w.report(AgentReport::Logs {
        job_id: id.clone(),
        attempt_id: spec.attempt_id.clone(),
        lines: vec![LogLine {
            timestamp_ms: 2_001,
            message: "hi".into(),
        }],
    });
    assert_eq!(w.state.log_streams[&spec.log_stream_name].next_event_seq, 1);
    w.report(AgentReport::Exited {
        job_id: id.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: 2_010,
        exit_code: Some(0),
        reason: None,
    });
    let job = w.job(&id);
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.stopped_at, Some(2_010));
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].exit_code, Some(0));
    assert_eq!(
        job.status_reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(
        w.state.agents["i-1"].used_vcpus_milli, 0,
        "capacity is released"
    );
}

#[test]
fn failed_attempts_are_retried_until_attempts_run_out() {
    let mut w = World::new(4, 4, 8192);
    w.define("d", "1", "128", Some(3));
    let id = w.submit("q", "d");
    for attempt in 1..=3 {
        let launches = w.schedule();
        assert_eq!(launches.len(), 1, "attempt {attempt} is placed");
        assert_eq!(launches[0].attempt_number, attempt);
        w.exit(&launches[0], 1);
    }
    let job = w.job(&id);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempts.len(), 3);
    assert!(job.attempts.iter().all(|a| a.exit_code == Some(1)));
    assert!(w.schedule().is_empty());
}

#[test]
fn evaluate_on_exit_first_match_decides() {
    let mut w = World::new(4, 4, 8192);
    w.define("d", "1", "128", Some(5));
    let mut d = (**w.state.latest_active_definition("d").unwrap()).clone();
    d.retry_strategy = Some(RetryStrategy {
        attempts: Some(5),
        evaluate_on_exit: Some(vec![
            EvaluateOnExit {
                on_exit_code: Some("3*".into()),
                on_reason: None,
                on_status_reason: None,
                action: "exit".into(),
            },
            EvaluateOnExit {
                on_exit_code: Some("2".into()),
                on_reason: None,
                on_status_reason: None,
                action: "RETRY".into(),
            },
        ]),
    });
    w.ok(Command::RegisterJobDefinition(d));
    let id = w.submit("q", "d");
    let l = w.schedule();
    w.exit(&l[0], 2);
    assert_eq!(
        w.job(&id).status,
        JobStatus::Runnable,
        "exit 2 matches RETRY"
    );
    let l = w.schedule();
    w.exit(&l[0], 7);
    assert_eq!(
        w.job(&id).status,
        JobStatus::Runnable,
        "no rule matches: retry"
    );
    let l = w.schedule();
    w.exit(&l[0], 31);
    assert_eq!(w.job(&id).status, JobStatus::Failed, "3* matches EXIT");
    assert_eq!(w.job(&id).attempts.len(), 3);
}

#[test]
fn stale_reports_are_refused_and_stale_running_is_stopped() {
    let mut w = World::new(4, 4, 8192);
    w.define("d", "1", "128", Some(2));
    let id = w.submit("q", "d");
    let first = w.schedule().remove(0);
    // The agent is lost: the attempt fails with the host reason and the job is retried.
    w.ok(Command::AgentLost { id: "i-1".into() });
    assert_eq!(w.job(&id).status, JobStatus::Runnable);
    assert_eq!(
        w.job(&id).attempts[0].status_reason.as_deref(),
        Some("Host EC2 (instance i-1) terminated.")
    );
    w.ok(Command::RegisterAgent {
        id: "i-1".into(),
        vcpus_milli: 4000,
        memory_mib: 8192,
        scope: AgentScope::AllManaged,
        private_ipv4: None,
        gpus: 0,
        runner: None,
        running: Vec::new(),
    });
    let (r, changes) = w.run(Command::AgentReports {
        agent_id: "i-1".into(),
        reports: vec![AgentReport::Running {
            job_id: id.clone(),
            attempt_id: first.attempt_id.clone(),
            at_ms: 5,
        }],
    });
    assert_eq!(r.unwrap(), Reply::Reports { refused: 1 });
    assert!(matches!(
        changes.effects.as_slice(),
        [Effect::Agent {
            instruction: AgentInstruction::Stop { .. },
            ..
        }]
    ));
    let second = w.schedule().remove(0);
    assert_ne!(second.attempt_id, first.attempt_id);
    assert_eq!(second.attempt_number, 2);
}

#[test]
fn cancel_and_terminate_follow_aws_per_state_rules() {
    let mut w = World::new(1, 1, 8192);
    w.define("d", "1", "128", Some(3));
    let running = w.submit("q", "d");
    let waiting = w.submit("q", "d");
    let spec = w.schedule().remove(0);
    assert_eq!(spec.job_id, running);
    w.report(AgentReport::Running {
        job_id: running.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: 5,
    });
    // Cancel of a RUNNING job: no effect.
    w.ok(Command::CancelJob {
        job_id: running.clone(),
        reason: "nope".into(),
    });
    assert_eq!(w.job(&running).status, JobStatus::Running);
    // Cancel of a RUNNABLE job: FAILED, isCancelled, the reason.
    w.ok(Command::CancelJob {
        job_id: waiting.clone(),
        reason: "changed my mind".into(),
    });
    assert_eq!(w.job(&waiting).status, JobStatus::Failed);
    assert!(w.job(&waiting).is_cancelled);
    assert_eq!(
        w.job(&waiting).status_reason.as_deref(),
        Some("changed my mind")
    );
    // Terminate of a RUNNING job: a Stop, then FAILED without retry when the exit arrives.
    let changes = w.ok(Command::TerminateJob {
        job_id: running.clone(),
        reason: "stop it".into(),
    });
    assert!(matches!(
        changes.effects.as_slice(),
        [Effect::Agent {
            instruction: AgentInstruction::Stop { .. },
            ..
        }]
    ));
    w.report(AgentReport::Exited {
        job_id: running.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: 9,
        exit_code: Some(143),
        reason: None,
    });
    let job = w.job(&running);
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.is_terminated);
    assert_eq!(job.status_reason.as_deref(), Some("stop it"));
    assert_eq!(job.attempts.len(), 1, "a terminated job is not retried");
}

#[test]
fn higher_priority_queue_goes_first_and_reasons_explain_waiting() {
    let mut w = World::new(1, 1, 8192);
    w.ok(Command::CreateJobQueue(queue("high", 10, &["ce"])));
    w.define("d", "1", "128", None);
    let low = w.submit("q", "d");
    let high = w.submit("high", "d");
    let launches = w.schedule();
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].job_id, high);
    assert_eq!(w.job(&low).status, JobStatus::Runnable);
    let reason = why_waiting(&w.state, w.job(&low)).unwrap();
    assert!(
        reason.starts_with("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"),
        "{reason}"
    );
}

#[test]
fn a_job_that_can_never_fit_says_so_and_does_not_block() {
    let mut w = World::new(2, 4, 1024);
    w.define("big", "4", "128", None);
    w.define("fat", "1", "4096", None);
    w.define("small", "1", "128", None);
    let big = w.submit("q", "big");
    let fat = w.submit("q", "fat");
    let small = w.submit("q", "small");
    let launches = w.schedule();
    assert_eq!(
        launches
            .iter()
            .map(|l| l.job_id.clone())
            .collect::<Vec<_>>(),
        vec![small]
    );
    let r = why_waiting(&w.state, w.job(&big)).unwrap();
    assert!(
        r.starts_with("MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE"),
        "{r}"
    );
    let r = why_waiting(&w.state, w.job(&fat)).unwrap();
    assert!(
        r.starts_with("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"),
        "{r}"
    );
}

#[test]
fn failing_commands_change_nothing() {
    let mut w = World::new(2, 2, 1024);
    let before = w.state.jobs.len();
    let (r, changes) = w.run(Command::SubmitJob(Box::new(SubmitJob {
        job_id: "x".into(),
        name: "x".into(),
        queue: "q".into(),
        definition: "missing".into(),
        ..Default::default()
    })));
    assert!(matches!(r, Err(CoreError::NotFound(_))));
    assert!(changes.dirty.is_empty());
    assert_eq!(w.state.jobs.len(), before);
    // Deleting an enabled environment is refused; a disabled but attached one too.
    assert!(w
        .run(Command::DeleteComputeEnvironment {
            reference: "ce".into()
        })
        .0
        .is_err());
    w.ok(Command::UpdateComputeEnvironment(
        ComputeEnvironmentUpdate {
            reference: "ce".into(),
            state: Some(ResourceState::Disabled),
            ..Default::default()
        },
    ));
    let (r, _) = w.run(Command::DeleteComputeEnvironment {
        reference: "ce".into(),
    });
    assert!(r.unwrap_err().to_string().contains("attached"));
}

#[test]
fn desired_vcpus_cannot_decrease() {
    let mut w = World::new(8, 2, 1024);
    let upd = |d| {
        Command::UpdateComputeEnvironment(ComputeEnvironmentUpdate {
            reference: "arn:aws:batch:us-east-1:000000000000:compute-environment/ce".into(),
            desired_vcpus: Some(d),
            ..Default::default()
        })
    };
    w.ok(upd(4));
    assert!(w.run(upd(2)).0.is_err());
    assert!(w.run(upd(9)).0.is_err(), "above maxvCpus");
}

proptest! {
    /// Whatever the jobs and agents, one plan never books more than an agent or an
    /// environment has.
    #[test]
    fn plans_never_overcommit(
        agents in proptest::collection::vec((1u64..8, 256u64..4096), 1..4),
        jobs in proptest::collection::vec((1u32..4, 64u64..2048), 0..40),
        max_vcpus in 0i64..12,
    ) {
        let mut w = World { state: State::new(Default::default()), now: 0, next_id: 0 };
        for (n, (v, m)) in agents.iter().enumerate() {
            w.ok(Command::RegisterAgent { id: format!("i-{n}"), vcpus_milli: v * 1000, memory_mib: *m, scope: AgentScope::AllManaged, private_ipv4: None, gpus: 0 , runner: None, running: Vec::new(),});
        }
        w.ok(Command::CreateComputeEnvironment(ce("ce", max_vcpus)));
        w.ok(Command::CreateJobQueue(queue("q", 1, &["ce"])));
        for (n, (v, m)) in jobs.iter().enumerate() {
            w.define(&format!("d{n}"), &v.to_string(), &m.to_string(), None);
            w.submit("q", &format!("d{n}"));
        }
        w.schedule();
        w.schedule();
        let mut ce_used = 0u64;
        for agent in w.state.agents.values() {
            let used: (u64, u64) = w.state.jobs.values()
                .filter(|j| j.current.as_ref().is_some_and(|a| a.agent_id == agent.id))
                .fold((0, 0), |(v, m), j| (v + u64::from(j.resources.vcpus_milli), m + j.resources.memory_mib));
            prop_assert!(used.0 <= agent.vcpus_milli && used.1 <= agent.memory_mib);
            prop_assert_eq!(used.0, agent.used_vcpus_milli);
            ce_used += used.0;
        }
        prop_assert!(ce_used <= max_vcpus as u64 * 1000);
    }

    #[test]
    fn parameter_substitution_replaces_whole_names(value in "[a-z]{0,8}") {
        let params = BTreeMap::from([("a".to_string(), "A".to_string()), ("ab".to_string(), value.clone())]);
        let out = barge_core::apply::substitute_parameters(&["Ref::ab".into(), "x-Ref::a".into(), "Ref::zz".into()], &params);
        prop_assert_eq!(out, vec![value, "x-A".to_string(), "Ref::zz".to_string()]);
    }
}

#[test]
fn a_timed_out_attempt_is_stopped_and_not_retried() {
    let mut w = World::new(4, 4, 8192);
    w.define("d", "1", "128", Some(3));
    let mut d = (**w.state.latest_active_definition("d").unwrap()).clone();
    d.timeout = Some(JobTimeout {
        attempt_duration_seconds: Some(60),
    });
    w.ok(Command::RegisterJobDefinition(d));
    let id = w.submit("q", "d");
    let spec = w.schedule().remove(0);
    w.report(AgentReport::Running {
        job_id: id.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: 10_000,
    });
    assert!(barge_core::apply::due_timeouts(&w.state, 69_999).is_empty());
    assert_eq!(
        barge_core::apply::due_timeouts(&w.state, 70_000),
        vec![id.clone()]
    );
    w.now = 70_000;
    let changes = w.ok(Command::EnforceTimeouts);
    assert!(matches!(
        changes.effects.as_slice(),
        [Effect::Agent {
            instruction: AgentInstruction::Stop {
                grace_ms: 30_000,
                ..
            },
            ..
        }]
    ));
    assert!(
        w.ok(Command::EnforceTimeouts).effects.is_empty(),
        "asked to stop only once"
    );
    w.report(AgentReport::Exited {
        job_id: id.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: 70_010,
        exit_code: Some(143),
        reason: None,
    });
    let job = w.job(&id);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(
        job.status_reason.as_deref(),
        Some("Job attempt duration exceeded timeout")
    );
    assert_eq!(
        job.attempts[0].status_reason.as_deref(),
        Some("Job attempt duration exceeded timeout")
    );
    assert!(!job.is_terminated);
    assert!(w.schedule().is_empty(), "a timed-out job is not retried");
}

#[test]
fn memory_below_four_mib_is_refused() {
    let mut w = World::new(4, 4, 8192);
    let mut d = JobDefinition {
        name: "m".into(),
        revision: 0,
        status: DefinitionStatus::Active,
        kind: "container".into(),
        parameters: BTreeMap::new(),
        scheduling_priority: None,
        container_properties: Some(ContainerProperties {
            memory: Some(2),
            ..Default::default()
        }),
        node_properties: None,
        retry_strategy: None,
        timeout: None,
        propagate_tags: None,
        platform_capabilities: None,
        tags: Tags::new(),
        other: Map::new(),
    };
    assert!(w.run(Command::RegisterJobDefinition(d.clone())).0.is_err());
    d.container_properties = Some(ContainerProperties {
        resource_requirements: Some(vec![ResourceRequirement {
            kind: "MEMORY".into(),
            value: "3".into(),
        }]),
        ..Default::default()
    });
    assert!(w.run(Command::RegisterJobDefinition(d.clone())).0.is_err());
    d.container_properties = Some(ContainerProperties {
        memory: Some(4),
        ..Default::default()
    });
    w.ok(Command::RegisterJobDefinition(d));
}

/// Found by the simulator: never-fitting jobs used to count as the queue's misses, so enough of
/// them at its head starved every job behind them on an idle environment.
#[test]
fn never_fitting_jobs_do_not_starve_the_queue_behind_them() {
    let mut w = World::new(1, 4, 4096);
    w.define("big", "2", "128", None);
    w.define("small", "1", "128", None);
    for _ in 0..barge_core::limits::SCHEDULER_MISSES_PER_QUEUE_MAX + 10 {
        w.submit("q", "big");
    }
    let small = w.submit("q", "small");
    let launches = w.schedule();
    assert_eq!(
        launches
            .iter()
            .map(|l| l.job_id.clone())
            .collect::<Vec<_>>(),
        vec![small]
    );
}

#[test]
fn dependencies_hold_jobs_pending_and_failures_cascade() {
    let mut w = World::new(4, 4, 8192);
    w.define("d", "1", "128", None);
    let a = w.submit("q", "d");
    let b = w.submit_after("q", "d", &[&a]);
    let c = w.submit_after("q", "d", &[&b, &a]);
    let launches = w.schedule();
    assert_eq!(
        launches
            .iter()
            .map(|l| l.job_id.clone())
            .collect::<Vec<_>>(),
        vec![a.clone()]
    );
    assert_eq!(w.job(&b).status, JobStatus::Pending);
    assert_eq!(w.job(&c).status, JobStatus::Pending);
    let reason = why_waiting(&w.state, w.job(&b)).unwrap();
    assert!(reason.contains(&a), "{reason}");
    w.exit(&launches[0], 0);
    assert_eq!(
        w.job(&b).status,
        JobStatus::Runnable,
        "a succeeded: b may run"
    );
    assert_eq!(w.job(&c).status, JobStatus::Pending, "c still waits for b");
    let launches = w.schedule();
    assert_eq!(launches[0].job_id, b);
    w.exit(&launches[0], 1);
    assert_eq!(w.job(&b).status, JobStatus::Failed);
    assert_eq!(w.job(&c).status, JobStatus::Failed, "b failed: c fails too");
    assert_eq!(
        w.job(&c).status_reason.as_deref(),
        Some("Dependent Job failed")
    );
    // A job submitted after its dependency failed fails when admitted; one on a missing job
    // is refused.
    let d = w.submit_after("q", "d", &[&c]);
    w.schedule();
    assert_eq!(w.job(&d).status, JobStatus::Failed);
    let (r, _) = w.run(Command::SubmitJob(Box::new(SubmitJob {
        job_id: "x".into(),
        name: "x".into(),
        queue: "q".into(),
        definition: "d".into(),
        depends_on: vec![JobDependency {
            job_id: Some("nope".into()),
            kind: None,
        }],
        ..Default::default()
    })));
    assert!(r.unwrap_err().to_string().contains("nope"));
}

#[test]
fn cancelling_a_dependency_cascades() {
    let mut w = World::new(0, 4, 8192);
    w.define("d", "1", "128", None);
    let a = w.submit("q", "d");
    let b = w.submit_after("q", "d", &[&a]);
    w.schedule();
    assert_eq!(w.job(&b).status, JobStatus::Pending);
    w.ok(Command::CancelJob {
        job_id: a.clone(),
        reason: "no".into(),
    });
    assert_eq!(w.job(&b).status, JobStatus::Failed);
    assert_eq!(
        w.job(&b).status_reason.as_deref(),
        Some("Dependent Job failed")
    );
}

#[test]
fn diagnosis_counts_jobs_ahead_and_says_what_unblocks() {
    let mut w = World::new(1, 1, 8192);
    w.define("d", "1", "128", None);
    let running = w.submit("q", "d");
    let second = w.submit("q", "d");
    let third = w.submit("q", "d");
    let launches = w.schedule();
    assert_eq!(launches[0].job_id, running);
    let d = barge_core::reason::diagnose(&w.state, w.job(&third));
    assert_eq!(d.status, JobStatus::Runnable);
    assert_eq!(d.jobs_ahead, Some(1), "{second} is ahead");
    assert!(d.reason.unwrap().starts_with("CAPACITY:"));
    assert_eq!(d.unblock.len(), 1);
    assert!(
        d.unblock[0].contains("wait for jobs running on compute environment ce"),
        "{:?}",
        d.unblock
    );
    w.ok(Command::UpdateComputeEnvironment(
        ComputeEnvironmentUpdate {
            reference: "ce".into(),
            state: Some(ResourceState::Disabled),
            ..Default::default()
        },
    ));
    let d = barge_core::reason::diagnose(&w.state, w.job(&third));
    assert!(d.unblock[0].contains("--state ENABLED"), "{:?}", d.unblock);
}

#[test]
fn state_time_limit_actions_cancel_jobs_stuck_on_their_reason() {
    let mut w = World::new(1, 4, 8192);
    let mut q = queue("limited", 1, &["ce"]);
    q.job_state_time_limit_actions = vec![JobStateTimeLimitAction {
        reason: "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE".into(),
        state: "RUNNABLE".into(),
        max_time_seconds: 600,
        action: "CANCEL".into(),
    }];
    w.ok(Command::CreateJobQueue(q));
    w.define("big", "2", "128", None);
    w.define("small", "1", "128", None);
    let big = w.submit("limited", "big");
    let small = w.submit("limited", "small");
    let busy = w.submit("limited", "small");
    let launches = w.schedule();
    assert_eq!(launches[0].job_id, small);
    let became_runnable = w.job(&big).runnable_at.unwrap();
    assert_eq!(
        w.job(&busy).status,
        JobStatus::Runnable,
        "waits for capacity, a reason no action names"
    );
    assert!(
        barge_core::apply::due_state_time_limits(&w.state, became_runnable + 599_999).is_empty()
    );
    let due = barge_core::apply::due_state_time_limits(&w.state, became_runnable + 600_000);
    assert_eq!(
        due,
        vec![(
            big.clone(),
            "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE".to_string()
        )]
    );
    w.now = became_runnable + 600_000;
    w.ok(Command::EnforceStateTimeLimits);
    let job = w.job(&big);
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.is_cancelled);
    assert_eq!(
        job.status_reason.as_deref(),
        Some("Canceled by JobStateTimeLimit action due to reason: MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE")
    );
    assert_eq!(w.job(&busy).status, JobStatus::Runnable);
}

#[test]
fn log_event_timestamps_never_go_backwards_within_a_stream() {
    let mut w = World::new(4, 4, 8192);
    w.define("d", "1", "128", None);
    let id = w.submit("q", "d");
    let spec = w.schedule().remove(0);
    w.report(AgentReport::Running {
        job_id: id.clone(),
        attempt_id: spec.attempt_id.clone(),
        at_ms: 100,
    });
    let line = |t: i64, m: &str| LogLine {
        timestamp_ms: t,
        message: m.into(),
    };
    let (r, changes) = w.run(Command::AgentReports {
        agent_id: "i-1".into(),
        reports: vec![AgentReport::Logs {
            job_id: id.clone(),
            attempt_id: spec.attempt_id.clone(),
            // stdout read at 205, stderr read at 203 but arriving after it
            lines: vec![
                line(200, "a"),
                line(205, "b"),
                line(203, "c"),
                line(210, "d"),
            ],
        }],
    });
    r.unwrap();
    let stamps: Vec<i64> = changes.log_events.iter().map(|e| e.timestamp_ms).collect();
    assert_eq!(stamps, vec![200, 205, 205, 210]);
    let stream = &w.state.log_streams[&spec.log_stream_name];
    assert_eq!(
        (stream.first_event_at, stream.last_event_at),
        (Some(200), Some(210))
    );
}

#[test]
fn a_compute_environment_tag_sets_the_stop_grace_period() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let arn = w.state.identity.compute_environment_arn("ce");
    let refused = w.run(Command::TagResource {
        arn: arn.clone(),
        tags: Tags::from([("barge:stop-grace-seconds".into(), "soon".into())]),
    });
    assert!(refused
        .0
        .unwrap_err()
        .to_string()
        .contains("barge:stop-grace-seconds must be a whole number of seconds"));
    w.ok(Command::TagResource {
        arn,
        tags: Tags::from([("barge:stop-grace-seconds".into(), "5".into())]),
    });
    let job = w.submit("q", "d");
    let spec = w.schedule().pop().expect("admitted and placed in one pass");
    assert_eq!(spec.job_id, job);
    let changes = w.ok(Command::TerminateJob {
        job_id: job,
        reason: "stop".into(),
    });
    let grace: Vec<u64> = changes
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Agent {
                instruction: AgentInstruction::Stop { grace_ms, .. },
                ..
            } => Some(*grace_ms),
            _ => None,
        })
        .collect();
    assert_eq!(grace, vec![5_000]);
}

#[test]
fn propagated_tags_beyond_fifty_fail_the_job() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let tags = |prefix: &str, n: usize| -> Tags {
        (0..n)
            .map(|i| (format!("{prefix}{i}"), "v".to_string()))
            .collect()
    };
    let arn = w.state.identity.job_definition_arn("d", 1);
    w.ok(Command::TagResource {
        arn,
        tags: tags("def", 30),
    });
    let mut submit = |id: &str, propagate: bool, job_tags: Tags| {
        w.ok(Command::SubmitJob(Box::new(SubmitJob {
            job_id: id.into(),
            name: "t".into(),
            queue: "q".into(),
            definition: "d".into(),
            propagate_tags: Some(propagate),
            tags: job_tags,
            ..Default::default()
        })));
    };
    submit("over", true, tags("job", 21));
    submit("same-keys", true, tags("def", 30));
    submit("not-propagated", false, tags("job", 40));
    w.schedule();
    assert_eq!(w.job("over").status, JobStatus::Failed);
    assert!(w
        .job("over")
        .status_reason
        .as_deref()
        .unwrap()
        .contains("together are 51"));
    assert_ne!(w.job("same-keys").status, JobStatus::Failed);
    assert_ne!(w.job("not-propagated").status, JobStatus::Failed);
}

#[test]
fn the_attempt_spec_carries_the_containers_host_settings() {
    let mut w = World::new(4, 4, 8192);
    let other = serde_json::json!({
        "volumes": [{"name": "data", "host": {"sourcePath": "/srv/data"}}],
        "mountPoints": [{"sourceVolume": "data", "containerPath": "/data", "readOnly": true}],
        "ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 20}],
        "linuxParameters": {"initProcessEnabled": true, "sharedMemorySize": 256},
        "readonlyRootFilesystem": true,
    });
    w.define_with("d", "1", "128", None, other.as_object().cloned().unwrap());
    w.submit("q", "d");
    let spec = w.schedule().remove(0);
    let host = &spec.host;
    assert_eq!(host.mounts.len(), 1);
    assert_eq!(host.mounts[0].host_path.as_deref(), Some("/srv/data"));
    assert!(host.mounts[0].read_only);
    assert_eq!((host.ulimits[0].soft, host.ulimits[0].hard), (10, 20));
    assert!(host.init && host.readonly_root_filesystem && !host.privileged);
    assert_eq!(host.shm_size_mib, Some(256));
    assert_eq!((host.gpus, host.refused.as_deref()), (0, None));
}

#[test]
fn a_stored_container_that_fails_the_checks_is_refused_not_run_differently() {
    // As a definition registered before the checks existed would read back from the store.
    let mut w = World::new(4, 4, 8192);
    let other = serde_json::json!({"secrets": [{"name": "A", "valueFrom": "arn:aws:ssm:x"}]});
    w.define_with("d", "1", "128", None, other.as_object().cloned().unwrap());
    w.submit("q", "d");
    let spec = w.schedule().remove(0);
    let refused = spec.host.refused.expect("refused");
    assert!(
        refused.starts_with("containerProperties.secrets is not supported"),
        "{refused}"
    );
}

#[test]
fn a_compute_environment_tag_chooses_the_runner_of_its_attempts() {
    let mut w = World::new(256, 2, 8192);
    w.define("d", "1", "512", None);
    let arn = w.state.identity.compute_environment_arn("ce");
    let refused = w.run(Command::TagResource {
        arn: arn.clone(),
        tags: Tags::from([("barge:runner".into(), "kubernetes".into())]),
    });
    assert!(refused
        .0
        .unwrap_err()
        .to_string()
        .contains("barge:runner must be docker or process"));
    let first = w.submit("q", "d");
    let spec = w.schedule().pop().expect("placed");
    assert_eq!((spec.job_id.as_str(), spec.runner), (first.as_str(), None));
    w.ok(Command::TagResource {
        arn,
        tags: Tags::from([("barge:runner".into(), "docker".into())]),
    });
    w.submit("q", "d");
    let spec = w.schedule().pop().expect("placed");
    assert_eq!(spec.runner, Some(barge_core::agent::RunnerKind::Docker));
}

#[test]
fn gpu_jobs_run_where_an_agent_has_free_gpus() {
    let mut w = World::new(256, 8, 16384);
    w.define("d", "1", "512", None);
    // The agent registers again, now with two GPUs.
    w.ok(Command::RegisterAgent {
        id: "i-1".into(),
        vcpus_milli: 8000,
        memory_mib: 16384,
        scope: AgentScope::AllManaged,
        private_ipv4: None,
        gpus: 2,
        runner: None,
        running: Vec::new(),
    });
    let submit_gpus = |w: &mut World, gpus: &str| {
        w.next_id += 1;
        let id = format!("gpu-{}", w.next_id);
        w.ok(Command::SubmitJob(Box::new(SubmitJob {
            job_id: id.clone(),
            name: "g".into(),
            queue: "q".into(),
            definition: "d".into(),
            container_overrides: Some(ContainerOverrides {
                resource_requirements: Some(vec![ResourceRequirement {
                    kind: "GPU".into(),
                    value: gpus.into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })));
        id
    };
    let first = submit_gpus(&mut w, "1");
    let second = submit_gpus(&mut w, "1");
    let third = submit_gpus(&mut w, "1");
    let too_many = submit_gpus(&mut w, "3");
    let placed = w.schedule();
    let ids: Vec<&str> = placed.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![first.as_str(), second.as_str()],
        "two GPUs, two jobs"
    );
    assert!(
        placed.iter().all(|s| s.host.gpus == 1),
        "the runner asks Docker for them"
    );
    let waiting = why_waiting(&w.state, w.job(&third)).unwrap();
    assert!(waiting.starts_with("CAPACITY:"), "{waiting}");
    let never = why_waiting(&w.state, w.job(&too_many)).unwrap();
    assert!(
        never.contains("the most GPUs any host there has is 2"),
        "{never}"
    );
    w.exit(&placed[0], 0);
    let next = w.schedule();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].job_id, third);
}
