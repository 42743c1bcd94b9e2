//! Core bugs the simulator found, kept as minimal regression tests that assert the correct
//! behaviour.

use barge_core::arn::Identity;
use barge_core::command::SubmitJob;
use barge_core::limits::SCHEDULER_MISSES_PER_QUEUE_MAX;
use barge_core::model::*;
use barge_core::{apply, scheduler, Changes, Command, State};
use serde_json::Map;

fn ok(s: &mut State, c: Command) {
    apply(s, c, 1, &mut Changes::default()).expect("command accepted");
}

fn definition(name: &str, vcpus: &str) -> Command {
    Command::RegisterJobDefinition(JobDefinition {
        name: name.into(),
        revision: 0,
        status: DefinitionStatus::Active,
        kind: "container".into(),
        parameters: Default::default(),
        scheduling_priority: None,
        container_properties: Some(ContainerProperties {
            resource_requirements: Some(vec![
                ResourceRequirement {
                    kind: "VCPU".into(),
                    value: vcpus.into(),
                },
                ResourceRequirement {
                    kind: "MEMORY".into(),
                    value: "128".into(),
                },
            ]),
            ..Default::default()
        }),
        node_properties: None,
        retry_strategy: None,
        timeout: None,
        propagate_tags: None,
        platform_capabilities: None,
        tags: Tags::new(),
        other: Map::new(),
    })
}

fn submit(id: &str, definition: &str) -> Command {
    Command::SubmitJob(Box::new(SubmitJob {
        job_id: id.into(),
        name: id.into(),
        queue: "q".into(),
        definition: definition.into(),
        ..Default::default()
    }))
}

/// Found by seed 77 (`SIM_SEED=77`, before the tolerance). A queue whose head holds
/// SCHEDULER_MISSES_PER_QUEUE_MAX jobs that can never fit (2 vCPU on a maxvCpus 1 environment)
/// starves the 1-vCPU job behind them forever: every pass spends its misses on the same
/// never-fitting jobs and leaves the queue, and the waiting job's statusReason says it waits
/// for capacity to free up on an idle environment.
#[test]
fn never_fitting_jobs_do_not_starve_the_queue_behind_them() {
    let mut s = State::new(Identity::default());
    ok(
        &mut s,
        Command::RegisterAgent {
            id: "a".into(),
            vcpus_milli: 4000,
            memory_mib: 4096,
            scope: AgentScope::AllManaged,
        },
    );
    ok(
        &mut s,
        Command::CreateComputeEnvironment(ComputeEnvironment {
            name: "ce".into(),
            uuid: "u".into(),
            kind: ComputeEnvironmentType::Managed,
            state: ResourceState::Enabled,
            compute_resources: Some(ComputeResources {
                kind: Some("EC2".into()),
                max_vcpus: Some(1),
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
            tags: Tags::new(),
            other: Map::new(),
        }),
    );
    ok(&mut s, definition("big", "2"));
    ok(&mut s, definition("small", "1"));
    for i in 0..SCHEDULER_MISSES_PER_QUEUE_MAX {
        ok(&mut s, submit(&format!("big-{i}"), "big"));
    }
    ok(&mut s, submit("small", "small"));
    let mut n = 0;
    for _ in 0..3 {
        let plan = scheduler::plan(&s, &mut || {
            n += 1;
            format!("att-{n}")
        });
        ok(&mut s, Command::SchedulerPass(plan));
    }
    let small = s.job("small").unwrap();
    assert_eq!(
        small.status,
        JobStatus::Starting,
        "the 1-vCPU job should run on the idle environment; it waits with: {:?}",
        barge_core::reason::why_waiting(&s, small)
    );
}
