//! The test world shared by the core's integration tests: one agent, one compute environment,
//! one queue, and helpers that drive `apply` and `plan` as the server does.
#![allow(dead_code)]

use std::collections::BTreeMap;

use barge_core::agent::{AgentInstruction, AgentReport};
use barge_core::command::*;
use barge_core::model::*;
use barge_core::{apply, scheduler, Changes, Command, Effect, State};
use serde_json::Map;

pub struct World {
    pub state: State,
    pub now: i64,
    pub next_id: u64,
}

impl World {
    pub fn new(max_vcpus: i64, agent_vcpus: u64, agent_memory_mib: u64) -> World {
        let mut w = World {
            state: State::new(Default::default()),
            now: 1_000,
            next_id: 0,
        };
        w.ok(Command::RegisterAgent {
            id: "i-1".into(),
            vcpus_milli: agent_vcpus * 1000,
            memory_mib: agent_memory_mib,
            scope: AgentScope::AllManaged,
            private_ipv4: None,
            gpus: 0,
            runner: None,
            running: Vec::new(),
        });
        w.ok(Command::CreateComputeEnvironment(ce("ce", max_vcpus)));
        w.ok(Command::CreateJobQueue(queue("q", 1, &["ce"])));
        w
    }

    pub fn run(&mut self, command: Command) -> (Result<Reply, CoreError>, Changes) {
        self.now += 1;
        let mut changes = Changes::default();
        let r = apply(&mut self.state, command, self.now, &mut changes);
        (r, changes)
    }

    pub fn ok(&mut self, command: Command) -> Changes {
        let (r, changes) = self.run(command);
        r.expect("command should succeed");
        changes
    }

    pub fn define(&mut self, name: &str, vcpus: &str, memory: &str, attempts: Option<u32>) {
        self.define_with(name, vcpus, memory, attempts, Map::new());
    }

    /// `define` with container members kept in `other` (volumes, ulimits, linuxParameters…).
    pub fn define_with(
        &mut self,
        name: &str,
        vcpus: &str,
        memory: &str,
        attempts: Option<u32>,
        other: Map<String, serde_json::Value>,
    ) {
        let container = ContainerProperties {
            other,
            image: Some("busybox".into()),
            command: Some(vec!["echo".into(), "Ref::word".into()]),
            resource_requirements: Some(vec![
                ResourceRequirement {
                    kind: "VCPU".into(),
                    value: vcpus.into(),
                },
                ResourceRequirement {
                    kind: "MEMORY".into(),
                    value: memory.into(),
                },
            ]),
            ..Default::default()
        };
        self.ok(Command::RegisterJobDefinition(JobDefinition {
            name: name.into(),
            revision: 0,
            status: DefinitionStatus::Active,
            kind: "container".into(),
            parameters: BTreeMap::from([("word".into(), "hi".into())]),
            scheduling_priority: None,
            container_properties: Some(container),
            node_properties: None,
            retry_strategy: attempts.map(|a| RetryStrategy {
                attempts: Some(a),
                evaluate_on_exit: None,
            }),
            timeout: None,
            propagate_tags: None,
            platform_capabilities: None,
            tags: Tags::new(),
            other: Map::new(),
        }));
    }

    pub fn submit(&mut self, queue: &str, definition: &str) -> String {
        self.submit_after(queue, definition, &[])
    }

    /// Submits a job that depends on `deps`.
    pub fn submit_after(&mut self, queue: &str, definition: &str, deps: &[&str]) -> String {
        self.next_id += 1;
        let id = format!("job-{}", self.next_id);
        self.ok(Command::SubmitJob(Box::new(SubmitJob {
            job_id: id.clone(),
            name: "j".into(),
            queue: queue.into(),
            definition: definition.into(),
            depends_on: deps
                .iter()
                .map(|d| JobDependency {
                    job_id: Some(d.to_string()),
                    kind: None,
                })
                .collect(),
            ..Default::default()
        })));
        id
    }

    /// One scheduling pass; returns the launches it produced.
    pub fn schedule(&mut self) -> Vec<barge_core::agent::AttemptSpec> {
        let mut n = 0;
        let plan = scheduler::plan(&self.state, &mut || {
            n += 1;
            format!("att-{n}-{}", self.now)
        });
        let changes = self.ok(Command::SchedulerPass(plan));
        changes
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

    pub fn report(&mut self, report: AgentReport) -> Reply {
        let (r, _) = self.run(Command::AgentReports {
            agent_id: "i-1".into(),
            reports: vec![report],
        });
        r.unwrap()
    }

    pub fn exit(&mut self, spec: &barge_core::agent::AttemptSpec, code: i32) {
        let at = self.now;
        self.report(AgentReport::Running {
            job_id: spec.job_id.clone(),
            attempt_id: spec.attempt_id.clone(),
            at_ms: at,
        });
        self.report(AgentReport::Exited {
            job_id: spec.job_id.clone(),
            attempt_id: spec.attempt_id.clone(),
            at_ms: at + 5,
            exit_code: Some(code),
            reason: None,
        });
    }

    pub fn job(&self, id: &str) -> &Job {
        self.state.job(id).unwrap()
    }
}

pub fn ce(name: &str, max_vcpus: i64) -> ComputeEnvironment {
    ComputeEnvironment {
        name: name.into(),
        uuid: format!("uuid-{name}"),
        kind: ComputeEnvironmentType::Managed,
        state: ResourceState::Enabled,
        compute_resources: Some(ComputeResources {
            kind: Some("EC2".into()),
            max_vcpus: Some(max_vcpus),
            ..Default::default()
        }),
        unmanaged_vcpus: None,
        service_role: None,
        update_policy: None,
        tags: Tags::new(),
        other: Map::new(),
    }
}

pub fn queue(name: &str, priority: i64, ces: &[&str]) -> JobQueue {
    JobQueue {
        name: name.into(),
        state: ResourceState::Enabled,
        priority,
        compute_environment_order: ces
            .iter()
            .enumerate()
            .map(|(i, c)| ComputeEnvironmentOrder {
                order: i as i64 + 1,
                compute_environment: c.to_string(),
            })
            .collect(),
        scheduling_policy_arn: None,
        job_state_time_limit_actions: Vec::new(),
        tags: Tags::new(),
        other: Map::new(),
    }
}
