//! Multi-node parallel jobs through `apply` and `plan`, as the server drives them: gang
//! placement, launch order, node variables, how the job ends, retries, lost hosts, terminate,
//! timeouts and waiting reasons.

mod common;

use std::collections::BTreeMap;

use barge_core::agent::{AgentInstruction, AgentReport, AttemptSpec};
use barge_core::command::*;
use barge_core::model::*;
use barge_core::multinode::{
    NodeOverrides, NodeProperties, NodePropertyOverride, NodeRangeProperty,
};
use barge_core::reason::{diagnose, why_waiting};
use barge_core::{apply, scheduler, Changes, Command, Effect, State};
use serde_json::Map;

struct World {
    state: State,
    now: i64,
    next_id: u64,
}

/// Launches and stops one command sent to agents, by agent.
#[derive(Default)]
struct Sent {
    launches: Vec<(String, AttemptSpec)>,
    stops: Vec<(String, String)>,
}

fn sent(changes: Changes) -> Sent {
    let mut s = Sent::default();
    for e in changes.effects {
        let Effect::Agent {
            agent_id,
            instruction,
        } = e;
        match instruction {
            AgentInstruction::Launch(spec) => s.launches.push((agent_id, spec)),
            AgentInstruction::Stop { job_id, .. } => s.stops.push((agent_id, job_id)),
        }
    }
    s
}

fn env(spec: &AttemptSpec) -> BTreeMap<String, String> {
    spec.environment.iter().cloned().collect()
}

fn container(vcpus: &str, command: &[&str]) -> ContainerProperties {
    ContainerProperties {
        image: Some("busybox".into()),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        resource_requirements: Some(vec![
            ResourceRequirement {
                kind: "VCPU".into(),
                value: vcpus.into(),
            },
            ResourceRequirement {
                kind: "MEMORY".into(),
                value: "256".into(),
            },
        ]),
        ..Default::default()
    }
}

fn node_props(num_nodes: i64, main: i64, ranges: &[(&str, &str)]) -> NodeProperties {
    NodeProperties {
        num_nodes,
        main_node: main,
        node_range_properties: ranges
            .iter()
            .map(|(t, v)| NodeRangeProperty {
                target_nodes: t.to_string(),
                container: Some(container(v, &["run", t])),
                other: Map::new(),
            })
            .collect(),
    }
}

impl World {
    /// A MANAGED environment (maxvCpus `max_vcpus`), one queue, and agents of the given vCPUs.
    fn new(max_vcpus: i64, agents: &[u64]) -> World {
        let mut w = World {
            state: State::new(Default::default()),
            now: 1_000,
            next_id: 0,
        };
        for (i, v) in agents.iter().enumerate() {
            w.ok(Command::RegisterAgent {
                id: format!("a{}", i + 1),
                vcpus_milli: v * 1000,
                memory_mib: 8192,
                scope: AgentScope::AllManaged,
                private_ipv4: Some(format!("10.0.0.{}", i + 1)),
                gpus: 0,
                runner: None,
                running: Vec::new(),
            });
        }
        w.ok(Command::CreateComputeEnvironment(common::ce(
            "ce", max_vcpus,
        )));
        w.ok(Command::CreateJobQueue(common::queue("q", 1, &["ce"])));
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

    fn err(&mut self, command: Command) -> String {
        self.run(command)
            .0
            .expect_err("command should fail")
            .to_string()
    }

    fn definition(name: &str, np: NodeProperties, attempts: Option<u32>) -> JobDefinition {
        JobDefinition {
            name: name.into(),
            revision: 0,
            status: DefinitionStatus::Active,
            kind: "multinode".into(),
            parameters: BTreeMap::new(),
            scheduling_priority: None,
            container_properties: None,
            node_properties: Some(np),
            retry_strategy: attempts.map(|a| RetryStrategy {
                attempts: Some(a),
                evaluate_on_exit: None,
            }),
            timeout: None,
            propagate_tags: None,
            platform_capabilities: None,
            tags: Tags::new(),
            other: Map::new(),
        }
    }

    /// A 3-node definition: node 0 (main) alone, nodes 1 and 2 as the second range.
    fn define3(&mut self, vcpus: &str, attempts: Option<u32>) {
        let np = node_props(3, 0, &[("0", vcpus), ("1:", vcpus)]);
        self.ok(Command::RegisterJobDefinition(World::definition(
            "mnp", np, attempts,
        )));
    }

    fn submit_with(&mut self, f: impl FnOnce(&mut SubmitJob)) -> Result<String, String> {
        self.next_id += 1;
        let id = format!("job-{}", self.next_id);
        let mut s = SubmitJob {
            job_id: id.clone(),
            name: "mnp".into(),
            queue: "q".into(),
            definition: "mnp".into(),
            ..Default::default()
        };
        f(&mut s);
        match self.run(Command::SubmitJob(Box::new(s))).0 {
            Ok(_) => Ok(id),
            Err(e) => Err(e.to_string()),
        }
    }

    fn submit(&mut self) -> String {
        self.submit_with(|_| {}).unwrap()
    }

    fn schedule(&mut self) -> Sent {
        let mut n = 0;
        let now = self.now;
        let plan = scheduler::plan(&self.state, &mut || {
            n += 1;
            format!("att-{n}-{now}")
        });
        sent(self.ok(Command::SchedulerPass(plan)))
    }

    fn report(&mut self, agent: &str, report: AgentReport) -> Sent {
        sent(self.ok(Command::AgentReports {
            agent_id: agent.into(),
            reports: vec![report],
        }))
    }

    fn running(&mut self, agent: &str, spec: &AttemptSpec) -> Sent {
        let at = self.now;
        self.report(
            agent,
            AgentReport::Running {
                job_id: spec.job_id.clone(),
                attempt_id: spec.attempt_id.clone(),
                at_ms: at,
            },
        )
    }

    fn exited(&mut self, agent: &str, spec: &AttemptSpec, code: i32) -> Sent {
        let at = self.now;
        self.report(
            agent,
            AgentReport::Exited {
                job_id: spec.job_id.clone(),
                attempt_id: spec.attempt_id.clone(),
                at_ms: at,
                exit_code: Some(code),
                reason: None,
            },
        )
    }

    fn job(&self, id: &str) -> &Job {
        self.state.job(id).unwrap()
    }

    fn status(&self, id: &str) -> JobStatus {
        self.job(id).status
    }

    fn used(&self, agent: &str) -> u64 {
        self.state.agents[agent].used_vcpus_milli
    }

    /// Places the job's gang, starts the main node and launches the others; returns every
    /// node's (agent, spec), in node order.
    fn start(&mut self, id: &str) -> Vec<(String, AttemptSpec)> {
        let placed = self.schedule();
        assert_eq!(placed.launches.len(), 1, "only the main node is launched");
        let (main_agent, main) = placed.launches[0].clone();
        let others = self.running(&main_agent, &main);
        assert_eq!(self.status(id), JobStatus::Running);
        let mut all = vec![(main_agent, main)];
        all.extend(others.launches);
        all.sort_by_key(|(_, s)| s.job_id.clone());
        for (agent, spec) in all.clone() {
            if spec.job_id != all[0].1.job_id {
                self.running(&agent, &spec);
            }
        }
        all
    }
}

#[test]
fn a_gang_is_placed_whole_and_the_main_node_starts_first() {
    let mut w = World::new(8, &[4]);
    w.define3("1", None);
    let id = w.submit();
    assert_eq!(
        w.job(&id).resources,
        Resources::default(),
        "the parent books nothing"
    );
    let placed = w.schedule();
    // Every node holds its place, only the main node runs.
    for i in 0..3 {
        let node = w.job(&format!("{id}#{i}"));
        assert_eq!(node.status, JobStatus::Starting);
        assert!(node.current.is_some());
        assert_eq!(node.node.as_ref().unwrap().index, i);
    }
    assert_eq!(w.status(&id), JobStatus::Starting);
    assert_eq!(w.used("a1"), 3000, "the whole gang is booked at once");
    assert_eq!(placed.launches.len(), 1);
    let (agent, main) = placed.launches[0].clone();
    assert_eq!(main.job_id, format!("{id}#0"));
    let e = env(&main);
    assert_eq!(e["AWS_BATCH_JOB_ID"], format!("{id}#0"));
    assert_eq!(e["AWS_BATCH_JOB_NODE_INDEX"], "0");
    assert_eq!(e["AWS_BATCH_JOB_NUM_NODES"], "3");
    assert_eq!(e["AWS_BATCH_JOB_MAIN_NODE_INDEX"], "0");
    assert!(!e.contains_key("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"));
    assert_eq!(
        main.command,
        vec!["run", "0"],
        "node 0 runs its range's container"
    );

    let others = w.running(&agent, &main);
    assert_eq!(
        w.status(&id),
        JobStatus::Running,
        "the parent follows the main node"
    );
    assert_eq!(
        others.launches.len(),
        2,
        "the other nodes start once the main node runs"
    );
    for (_, spec) in &others.launches {
        let e = env(spec);
        assert_ne!(e["AWS_BATCH_JOB_NODE_INDEX"], "0");
        assert_eq!(
            e["AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"],
            "10.0.0.1"
        );
        assert_eq!(spec.command, vec!["run", "1:"]);
    }
}

#[test]
fn the_main_node_decides_and_the_other_nodes_are_stopped() {
    let mut w = World::new(8, &[4]);
    w.define3("1", None);
    let id = w.submit();
    let nodes = w.start(&id);
    // Node 1 fails on its own: the job goes on (only the main node ends it).
    w.exited(&nodes[1].0, &nodes[1].1, 3);
    assert_eq!(w.status(&id), JobStatus::Running);
    assert!(
        w.job(&format!("{id}#1")).current.is_some(),
        "its place is held until the end"
    );
    let end = w.exited(&nodes[0].0, &nodes[0].1, 0);
    assert_eq!(w.status(&id), JobStatus::Succeeded);
    assert_eq!(
        end.stops,
        vec![("a1".to_string(), format!("{id}#2"))],
        "still-running nodes are stopped"
    );
    let parent = w.job(&id);
    assert_eq!(parent.attempts.len(), 1);
    assert_eq!(parent.attempts[0].exit_code, Some(0));
    assert_eq!(
        parent.attempts[0].log_stream_name, nodes[0].1.log_stream_name,
        "the main node's stream"
    );
    assert_eq!(w.status(&format!("{id}#0")), JobStatus::Succeeded);
    assert_eq!(
        w.status(&format!("{id}#1")),
        JobStatus::Failed,
        "exited 3 on its own"
    );
    assert_eq!(
        w.status(&format!("{id}#2")),
        JobStatus::Running,
        "until its stop lands"
    );
    w.exited(&nodes[2].0, &nodes[2].1, 143);
    let stopped = w.job(&format!("{id}#2"));
    assert_eq!(
        stopped.status,
        JobStatus::Succeeded,
        "a node stopped at the job's end takes its status"
    );
    assert_eq!(stopped.attempts[0].exit_code, Some(143));
    assert_eq!(w.used("a1"), 0);
    assert!(w.schedule().launches.is_empty());
}

#[test]
fn a_main_node_failure_retries_the_whole_gang() {
    let mut w = World::new(8, &[4]);
    w.define3("1", Some(2));
    let id = w.submit();
    let nodes = w.start(&id);
    let end = w.exited(&nodes[0].0, &nodes[0].1, 1);
    assert_eq!(w.status(&id), JobStatus::Runnable);
    assert_eq!(end.stops.len(), 2);
    // The old gang is still stopping: no second gang yet.
    assert!(w.schedule().launches.is_empty());
    let reason = why_waiting(&w.state, w.job(&id)).unwrap();
    assert!(reason.contains("nodes of attempt 1 to stop"), "{reason}");
    w.exited(&nodes[1].0, &nodes[1].1, 143);
    w.exited(&nodes[2].0, &nodes[2].1, 143);
    for i in 0..3 {
        assert_eq!(
            w.status(&format!("{id}#{i}")),
            JobStatus::Runnable,
            "node {i} waits for attempt 2"
        );
    }
    let again = w.start(&id);
    assert_eq!(again[0].1.attempt_number, 2);
    assert!(again.iter().all(|(_, s)| s.attempt_number == 2));
    w.exited(&again[0].0, &again[0].1, 0);
    assert_eq!(w.status(&id), JobStatus::Succeeded);
    assert_eq!(w.job(&id).attempts.len(), 2);
    assert_eq!(
        w.job(&format!("{id}#1")).attempts_made(),
        2,
        "each node has one attempt per try"
    );
}

#[test]
fn only_the_main_node_fails_a_job_without_retries() {
    let mut w = World::new(8, &[4]);
    w.define3("1", None);
    let id = w.submit();
    let nodes = w.start(&id);
    w.exited(&nodes[0].0, &nodes[0].1, 2);
    assert_eq!(w.status(&id), JobStatus::Failed);
    assert_eq!(w.job(&id).attempts[0].exit_code, Some(2));
    w.exited(&nodes[1].0, &nodes[1].1, 143);
    assert_eq!(w.status(&format!("{id}#1")), JobStatus::Failed);
}

#[test]
fn a_lost_host_of_any_node_fails_the_attempt_as_aws_does() {
    // Two hosts of 2 vCPU: the main node and one other on one host, the last node on the other.
    let mut w = World::new(8, &[2, 2]);
    w.define3("1", Some(2));
    let id = w.submit();
    let nodes = w.start(&id);
    let hosts: Vec<&str> = nodes.iter().map(|(a, _)| a.as_str()).collect();
    let lonely = (0..3)
        .find(|i| hosts.iter().filter(|h| **h == hosts[*i]).count() == 1)
        .unwrap();
    assert_ne!(lonely, 0, "the main node shares its host in this layout");
    let lost = hosts[lonely].to_string();
    let changes = sent(w.ok(Command::AgentLost { id: lost.clone() }));
    let parent = w.job(&id);
    assert_eq!(
        parent.status,
        JobStatus::Runnable,
        "retried: attempts remain"
    );
    assert_eq!(
        parent.attempts[0].status_reason.as_deref(),
        Some(format!("Host EC2 (instance {lost}) terminated.").as_str())
    );
    assert_eq!(changes.stops.len(), 2, "the surviving nodes are stopped");
    assert_eq!(w.status(&format!("{id}#{lonely}")), JobStatus::Runnable);
}

#[test]
fn terminate_stops_every_node_and_cancel_fails_waiting_nodes() {
    let mut w = World::new(8, &[4]);
    w.define3("1", Some(2));
    let id = w.submit();
    let nodes = w.start(&id);
    let stops = sent(w.ok(Command::TerminateJob {
        job_id: id.clone(),
        reason: "enough".into(),
    }));
    assert_eq!(stops.stops.len(), 3, "every running node is asked to stop");
    assert_eq!(
        w.status(&id),
        JobStatus::Running,
        "until the main node's exit arrives"
    );
    for (agent, spec) in &nodes {
        w.exited(agent, spec, 143);
    }
    let parent = w.job(&id);
    assert_eq!(
        parent.status,
        JobStatus::Failed,
        "terminated jobs are never retried"
    );
    assert!(parent.is_terminated);
    assert_eq!(parent.status_reason.as_deref(), Some("enough"));
    for i in 0..3 {
        assert_eq!(w.status(&format!("{id}#{i}")), JobStatus::Failed);
    }
    assert_eq!(w.used("a1"), 0);

    // Between two attempts the nodes wait RUNNABLE; cancelling the job fails them too.
    let id = w.submit();
    let nodes = w.start(&id);
    w.exited(&nodes[0].0, &nodes[0].1, 1);
    w.exited(&nodes[1].0, &nodes[1].1, 143);
    w.exited(&nodes[2].0, &nodes[2].1, 143);
    assert_eq!(w.status(&format!("{id}#2")), JobStatus::Runnable);
    w.ok(Command::CancelJob {
        job_id: id.clone(),
        reason: "no more".into(),
    });
    assert_eq!(w.status(&id), JobStatus::Failed);
    for i in 0..3 {
        assert_eq!(w.status(&format!("{id}#{i}")), JobStatus::Failed);
    }
}

#[test]
fn the_timeout_covers_the_whole_job() {
    let mut w = World::new(8, &[4]);
    let mut d = World::definition("mnp", node_props(3, 0, &[("0", "1"), ("1:", "1")]), Some(3));
    d.timeout = Some(JobTimeout {
        attempt_duration_seconds: Some(60),
    });
    w.ok(Command::RegisterJobDefinition(d));
    let id = w.submit();
    let nodes = w.start(&id);
    assert!(
        w.job(&format!("{id}#1")).timeout.is_none(),
        "a node never times out on its own"
    );
    w.now += 61_000;
    let stops = sent(w.ok(Command::EnforceTimeouts));
    assert_eq!(stops.stops.len(), 3);
    w.exited(&nodes[0].0, &nodes[0].1, 137);
    let parent = w.job(&id);
    assert_eq!(
        parent.status,
        JobStatus::Failed,
        "a timeout is never retried"
    );
    assert_eq!(
        parent.status_reason.as_deref(),
        Some("Job attempt duration exceeded timeout")
    );
}

#[test]
fn a_gang_that_cannot_fit_waits_with_a_reason_and_takes_nothing() {
    // Hosts too small for three 1-vCPU nodes at once, even idle.
    let mut w = World::new(8, &[2]);
    w.define3("1", None);
    let id = w.submit();
    assert!(w.schedule().launches.is_empty());
    assert!(
        w.state.job(&format!("{id}#0")).is_none(),
        "no node exists before the gang is placed"
    );
    let reason = why_waiting(&w.state, w.job(&id)).unwrap();
    assert!(
        reason.starts_with("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"),
        "{reason}"
    );
    assert!(reason.contains("all 3 nodes"), "{reason}");

    // Room for the gang, but another job holds part of it: the gang waits whole.
    let mut w = World::new(8, &[4]);
    w.define3("1", None);
    let first = w.submit();
    w.schedule();
    let second = w.submit();
    assert!(w.schedule().launches.is_empty());
    assert_eq!(w.status(&second), JobStatus::Runnable);
    assert_eq!(w.used("a1"), 3000, "no node of the second gang is placed");
    let reason = why_waiting(&w.state, w.job(&second)).unwrap();
    assert!(
        reason.starts_with("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"),
        "{reason}"
    );
    assert!(reason.contains("room for 1 of 3 nodes"), "{reason}");
    let d = diagnose(&w.state, w.job(&second));
    assert!(
        d.unblock.iter().any(|u| u.contains("1 of 3 nodes fit now")),
        "{:?}",
        d.unblock
    );
    let _ = first;

    // maxvCpus below the gang's sum.
    let mut w = World::new(2, &[8]);
    w.define3("1", None);
    let id = w.submit();
    w.schedule();
    let reason = why_waiting(&w.state, w.job(&id)).unwrap();
    assert!(
        reason.starts_with("MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE"),
        "{reason}"
    );
}

#[test]
fn node_overrides_resize_and_override_ranges() {
    let mut w = World::new(16, &[8]);
    w.define3("1", None);
    let id = w
        .submit_with(|s| {
            s.node_overrides = Some(NodeOverrides {
                num_nodes: Some(5),
                node_property_overrides: Some(vec![NodePropertyOverride {
                    target_nodes: "3:".into(),
                    container_overrides: Some(ContainerOverrides {
                        command: Some(vec!["other".into()]),
                        environment: Some(vec![KeyValuePair {
                            name: Some("ROLE".into()),
                            value: Some("late".into()),
                        }]),
                        ..Default::default()
                    }),
                    other: Map::new(),
                }]),
            })
        })
        .unwrap();
    let m = w.job(&id).multinode.clone().unwrap();
    assert_eq!(m.num_nodes, 5);
    let nodes = w.start(&id);
    assert_eq!(nodes.len(), 5);
    assert_eq!(nodes[1].1.command, vec!["run", "1:"]);
    assert_eq!(nodes[3].1.command, vec!["other"]);
    assert_eq!(env(&nodes[4].1)["ROLE"], "late");
    assert_eq!(env(&nodes[4].1)["AWS_BATCH_JOB_NUM_NODES"], "5");

    let e = w
        .submit_with(|s| {
            s.container_overrides = Some(ContainerOverrides::default());
        })
        .unwrap_err();
    assert!(e.contains("nodeOverrides.nodePropertyOverrides"), "{e}");
    let e = w
        .submit_with(|s| {
            s.node_overrides = Some(NodeOverrides {
                num_nodes: None,
                node_property_overrides: Some(vec![NodePropertyOverride {
                    target_nodes: "7".into(),
                    container_overrides: None,
                    other: Map::new(),
                }]),
            })
        })
        .unwrap_err();
    assert!(
        e.starts_with("nodeOverrides.nodePropertyOverrides[0].targetNodes"),
        "{e}"
    );
    let e = w
        .submit_with(|s| {
            s.node_overrides = Some(NodeOverrides {
                num_nodes: None,
                node_property_overrides: Some(vec![NodePropertyOverride {
                    target_nodes: "0".into(),
                    container_overrides: Some(ContainerOverrides {
                        environment: Some(vec![KeyValuePair {
                            name: Some("AWS_BATCH_X".into()),
                            value: None,
                        }]),
                        ..Default::default()
                    }),
                    other: Map::new(),
                }]),
            })
        })
        .unwrap_err();
    assert!(
        e.starts_with("nodeOverrides.nodePropertyOverrides[0].containerOverrides.environment"),
        "{e}"
    );
}

#[test]
fn definitions_are_checked_and_errors_name_the_field() {
    let mut w = World::new(8, &[4]);
    let bad = [
        (
            node_props(3, 0, &[("0", "1"), ("2:", "1")]),
            "nodeProperties.nodeRangeProperties",
        ),
        (node_props(3, 5, &[(":", "1")]), "nodeProperties.mainNode"),
        (
            node_props(3, 0, &[("0:1", "1"), ("1:2", "1")]),
            "nodeProperties.nodeRangeProperties[1].targetNodes",
        ),
        (
            node_props(3, 0, &[("0", "1"), ("1:x", "1")]),
            "nodeProperties.nodeRangeProperties[1].targetNodes",
        ),
        (node_props(0, 0, &[(":", "1")]), "nodeProperties.numNodes"),
        (
            node_props(3, 0, &[("0", "1"), ("1:", "0")]),
            "nodeProperties.nodeRangeProperties[1].container",
        ),
    ];
    for (np, field) in bad {
        let e = w.err(Command::RegisterJobDefinition(World::definition(
            "d", np, None,
        )));
        assert!(e.starts_with(field), "{e} should name {field}");
    }
    let mut reserved = node_props(2, 0, &[(":", "1")]);
    reserved.node_range_properties[0]
        .container
        .as_mut()
        .unwrap()
        .environment = Some(vec![KeyValuePair {
        name: Some("AWS_BATCH_JOB_ID".into()),
        value: None,
    }]);
    let e = w.err(Command::RegisterJobDefinition(World::definition(
        "d", reserved, None,
    )));
    assert!(
        e.starts_with("nodeProperties.nodeRangeProperties[0].container.environment"),
        "{e}"
    );
    let mut missing = World::definition("d", node_props(2, 0, &[(":", "1")]), None);
    missing.node_properties = None;
    assert!(w
        .err(Command::RegisterJobDefinition(missing))
        .contains("nodeProperties is required"));
    // Nested ranges are fine: the narrower one wins.
    w.ok(Command::RegisterJobDefinition(World::definition(
        "d",
        node_props(6, 0, &[("0:5", "1"), ("4:5", "2")]),
        None,
    )));
}

#[test]
fn stale_reports_for_an_ended_node_are_refused() {
    let mut w = World::new(8, &[4]);
    w.define3("1", None);
    let id = w.submit();
    let nodes = w.start(&id);
    w.exited(&nodes[1].0, &nodes[1].1, 0);
    // A duplicate of node 1's exit, and a late "running": the attempt has ended.
    let (r, _) = w.run(Command::AgentReports {
        agent_id: nodes[1].0.clone(),
        reports: vec![AgentReport::Exited {
            job_id: nodes[1].1.job_id.clone(),
            attempt_id: nodes[1].1.attempt_id.clone(),
            at_ms: 5,
            exit_code: Some(9),
            reason: None,
        }],
    });
    assert_eq!(r.unwrap(), Reply::Reports { refused: 1 });
    w.exited(&nodes[0].0, &nodes[0].1, 0);
    let node = w.job(&format!("{id}#1"));
    assert_eq!(node.status, JobStatus::Succeeded);
    assert_eq!(node.attempts[0].exit_code, Some(0), "the first exit stands");
}

#[test]
fn a_thousand_node_gang_is_placed_whole_or_not_at_all() {
    // 1,000 nodes of a quarter vCPU: 250 vCPU in all, over two 128-vCPU hosts.
    let mut w = World::new(1000, &[128, 128]);
    let np = node_props(1000, 0, &[("0", "0.25"), ("1:", "0.25")]);
    // The hosts join again with memory for 1,000 nodes of 256 MiB.
    for a in ["a1", "a2"] {
        w.ok(Command::RegisterAgent {
            id: a.into(),
            vcpus_milli: 128_000,
            memory_mib: 1_000_000,
            scope: AgentScope::AllManaged,
            private_ipv4: None,
            gpus: 0,
            runner: None,
            running: Vec::new(),
        });
    }
    w.ok(Command::RegisterJobDefinition(World::definition(
        "mnp", np, None,
    )));
    let id = w.submit();
    let placed = w.schedule();
    assert_eq!(placed.launches.len(), 1);
    assert_eq!(w.used("a1") + w.used("a2"), 250_000);
    assert!((0..1000).all(|i| w.job(&format!("{id}#{i}")).current.is_some()));
    // A second one does not fit beside it: none of its nodes is placed.
    let second = w.submit();
    assert!(w.schedule().launches.is_empty());
    assert!(w.state.job(&format!("{second}#0")).is_none());
    let reason = why_waiting(&w.state, w.job(&second)).unwrap();
    assert!(reason.contains("room for 24 of 1000 nodes"), "{reason}");
}
