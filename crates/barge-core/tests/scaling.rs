//! Scaling MANAGED compute environments (`barge_core::scaling`): the plan from RUNNABLE demand,
//! instance type choice, the maxvCpus bound, minvCpus, scale-in after the cooldown only,
//! desiredvCpus, and the checks of the `barge:provider` tag.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use barge_core::command::*;
use barge_core::limits::PROVIDER_TAG;
use barge_core::model::*;
use barge_core::reason::why_waiting;
use barge_core::scaling::*;
use barge_core::Command;
use common::*;
use serde_json::json;

const COOLDOWN_MS: i64 = 60_000;
const REGISTER_MS: i64 = 300_000;

fn t(name: &str, vcpus: u32, memory_mib: u64, gpus: u32, price: f64) -> InstanceType {
    InstanceType {
        name: name.into(),
        vcpus,
        memory_mib,
        gpus,
        price,
    }
}

fn catalog() -> ScalingCatalog {
    ScalingCatalog::new(
        BTreeSet::from(["dock".to_string(), "laptop".to_string()]),
        vec![
            t("m5.xlarge", 4, 16_384, 0, 0.2),
            t("small", 1, 1_024, 0, 0.01),
            t("m5.large", 2, 8_192, 0, 0.1),
            t("medium", 2, 4_096, 0, 0.05),
            t("cheap-medium", 2, 4_096, 0, 0.04),
            t("gpu", 4, 16_384, 1, 3.0),
        ],
    )
}

/// A MANAGED environment scaled by provider `dock`.
fn scaled(name: &str, min: i64, max: i64, types: Option<&[&str]>) -> ComputeEnvironment {
    let mut c = ce(name, max);
    let res = c.compute_resources.as_mut().unwrap();
    res.min_vcpus = Some(min);
    if let Some(types) = types {
        res.other.insert("instanceTypes".into(), json!(types));
    }
    c.tags.insert(PROVIDER_TAG.into(), "dock".into());
    c
}

/// The core's test world (agent i-1 serving every unscaled MANAGED environment, environment
/// `ce`, queue `q`) with the catalog, a scaled environment `auto` and its queue `qa`.
fn world(min: i64, max: i64, types: Option<&[&str]>) -> World {
    let mut w = World::new(4, 4, 8192);
    w.state.config.scaling = Arc::new(catalog());
    w.ok(Command::CreateComputeEnvironment(scaled(
        "auto", min, max, types,
    )));
    w.ok(Command::CreateJobQueue(queue("qa", 1, &["auto"])));
    w.define("one", "1", "512", Some(3));
    w
}

struct Scaler {
    fleet: Fleet,
    next: u32,
}

impl Scaler {
    fn new() -> Scaler {
        Scaler {
            fleet: Fleet::default(),
            next: 0,
        }
    }

    /// Plans as the server does (observe, plan) and records what it asked, as the server
    /// does before calling the providers; desiredvCpus goes through the writer.
    fn step(&mut self, w: &mut World) -> ScalePlan {
        self.fleet.observe(&w.state, w.now);
        let settings = ScalingSettings {
            cooldown_ms: COOLDOWN_MS,
            register_timeout_ms: REGISTER_MS,
        };
        let next = &mut self.next;
        let plan = plan(&w.state, &self.fleet, &settings, w.now, &mut || {
            *next += 1;
            format!("i-{:017x}", *next)
        });
        for l in &plan.launches {
            self.fleet.launching(l, w.now);
        }
        for t in &plan.terminations {
            self.fleet.terminating(&t.instance_id);
        }
        for d in &plan.desired {
            w.ok(Command::SetDesiredVcpus {
                compute_environment: d.compute_environment.clone(),
                desired_vcpus: d.desired_vcpus,
            });
        }
        plan
    }

    /// Every launched instance's agent joins its environment.
    fn join_all(&mut self, w: &mut World) {
        let waiting: Vec<Instance> = self
            .fleet
            .instances
            .values()
            .filter(|i| i.phase == InstancePhase::Launching)
            .cloned()
            .collect();
        for i in waiting {
            w.ok(Command::RegisterAgent {
                id: i.id.clone(),
                vcpus_milli: i.instance_type.vcpus_milli(),
                memory_mib: i.instance_type.memory_mib,
                scope: AgentScope::ComputeEnvironment(i.compute_environment.clone()),
                private_ipv4: None,
                gpus: i.instance_type.gpus,
                runner: None,
                running: Vec::new(),
            });
        }
    }

    /// The provider stopped the instances being terminated; their agents are lost.
    fn finish_terminations(&mut self, w: &mut World) {
        let leaving: Vec<String> = self
            .fleet
            .instances
            .values()
            .filter(|i| i.phase == InstancePhase::Terminating)
            .map(|i| i.id.clone())
            .collect();
        for id in leaving {
            w.ok(Command::AgentLost { id: id.clone() });
            self.fleet.terminated(&id);
        }
    }

    fn vcpus_of(&self, ce: &str) -> u64 {
        self.fleet
            .instances
            .values()
            .filter(|i| i.compute_environment == ce)
            .map(|i| u64::from(i.instance_type.vcpus))
            .sum()
    }
}

fn desired(w: &World, ce: &str) -> Option<i64> {
    w.state.compute_environments[ce]
        .compute_resources
        .as_ref()
        .unwrap()
        .desired_vcpus
}

fn types_of(plan: &ScalePlan) -> Vec<&str> {
    plan.launches
        .iter()
        .map(|l| l.instance_type.name.as_str())
        .collect()
}

fn finish_all(w: &mut World, specs: &[barge_core::agent::AttemptSpec]) {
    for spec in specs {
        let agent = w
            .job(&spec.job_id)
            .current
            .as_ref()
            .unwrap()
            .agent_id
            .clone();
        for report in [
            barge_core::agent::AgentReport::Running {
                job_id: spec.job_id.clone(),
                attempt_id: spec.attempt_id.clone(),
                at_ms: w.now,
            },
            barge_core::agent::AgentReport::Exited {
                job_id: spec.job_id.clone(),
                attempt_id: spec.attempt_id.clone(),
                at_ms: w.now + 1,
                exit_code: Some(0),
                reason: None,
            },
        ] {
            w.ok(Command::AgentReports {
                agent_id: agent.clone(),
                reports: vec![report],
            });
        }
    }
}

#[test]
fn scales_from_zero_to_demand_and_back_after_the_cooldown() {
    let mut w = world(0, 8, None);
    let mut s = Scaler::new();
    assert!(
        s.step(&mut w).launches.is_empty(),
        "no demand, no instances"
    );
    let jobs: Vec<String> = (0..3).map(|_| w.submit("qa", "one")).collect();
    w.schedule(); // admitted: RUNNABLE, with nowhere to run
    for id in &jobs {
        assert_eq!(w.job(id).status, JobStatus::Runnable);
        let reason = why_waiting(&w.state, w.job(id)).unwrap();
        assert!(
            reason.contains("waiting for compute environment auto to scale up"),
            "{reason}"
        );
    }

    let plan = s.step(&mut w);
    assert_eq!(types_of(&plan), ["small", "small", "small"]);
    assert!(plan
        .launches
        .iter()
        .all(|l| l.provider == "dock" && l.compute_environment == "auto"));
    assert_eq!(desired(&w, "auto"), Some(3));
    // Launched, not joined: nothing more is launched for the same demand.
    w.now += 1_000;
    assert!(s.step(&mut w).launches.is_empty());

    s.join_all(&mut w);
    let specs = w.schedule();
    assert_eq!(specs.len(), 3);
    for id in &jobs {
        let agent = &w.job(id).current.as_ref().unwrap().agent_id;
        assert_ne!(
            agent, "i-1",
            "barge up's agent does not serve a scaled environment"
        );
    }
    finish_all(&mut w, &specs);

    // Idle, but not for the cooldown yet.
    w.now += 1_000;
    assert!(s.step(&mut w).terminations.is_empty());
    w.now += COOLDOWN_MS / 2;
    assert!(s.step(&mut w).terminations.is_empty());
    assert_eq!(desired(&w, "auto"), Some(3));
    w.now += COOLDOWN_MS;
    let plan = s.step(&mut w);
    assert_eq!(plan.terminations.len(), 3);
    assert!(plan
        .terminations
        .iter()
        .all(|t| t.cause == TerminationCause::Idle));
    assert_eq!(desired(&w, "auto"), Some(0));
    s.finish_terminations(&mut w);
    w.now += 1_000;
    let plan = s.step(&mut w);
    assert!(plan.launches.is_empty() && plan.terminations.is_empty());
    assert!(s.fleet.instances.is_empty());
}

#[test]
fn optimal_picks_the_smallest_type_that_fits_the_largest_waiting_job() {
    let mut w = world(0, 16, None);
    w.define("two", "2", "3000", None);
    w.submit("qa", "two");
    w.submit("qa", "one");
    w.schedule();
    let plan = Scaler::new().step(&mut w);
    // 3 vCPUs wanted; medium and cheap-medium are the same size: the cheaper one; then the
    // remaining vCPU on another of the smallest type that fits every waiting job.
    assert_eq!(types_of(&plan), ["cheap-medium", "cheap-medium"]);

    // A GPU job: only the GPU type fits.
    let mut w = world(0, 16, None);
    let mut container = w.state.job_definitions[&("one".to_string(), 1)]
        .container_properties
        .clone()
        .unwrap();
    container
        .resource_requirements
        .as_mut()
        .unwrap()
        .push(ResourceRequirement {
            kind: "GPU".into(),
            value: "1".into(),
        });
    let mut def = (*w.state.job_definitions[&("one".to_string(), 1)]).clone();
    def.name = "gpu".into();
    def.container_properties = Some(container);
    w.ok(Command::RegisterJobDefinition(def));
    w.submit("qa", "gpu");
    w.schedule();
    assert_eq!(types_of(&Scaler::new().step(&mut w)), ["gpu"]);
}

#[test]
fn listed_instance_types_and_families_limit_the_choice() {
    let mut w = world(0, 16, Some(&["m5"]));
    w.submit("qa", "one");
    w.schedule();
    assert_eq!(types_of(&Scaler::new().step(&mut w)), ["m5.large"]);

    let mut w = world(0, 16, Some(&["m5.xlarge", "small"]));
    w.define("two", "2", "3000", None);
    w.submit("qa", "two");
    w.schedule();
    assert_eq!(types_of(&Scaler::new().step(&mut w)), ["m5.xlarge"]);

    // A job no allowed type fits waits with a misconfiguration, and launches nothing.
    let mut w = world(0, 16, Some(&["small"]));
    w.define("big", "2", "512", None);
    let id = w.submit("qa", "big");
    w.schedule();
    assert!(Scaler::new().step(&mut w).launches.is_empty());
    let reason = why_waiting(&w.state, w.job(&id)).unwrap();
    assert!(
        reason.starts_with("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"),
        "{reason}"
    );
}

#[test]
fn never_launches_over_max_vcpus() {
    let mut w = world(0, 3, Some(&["medium"]));
    for _ in 0..10 {
        w.submit("qa", "one");
    }
    w.schedule();
    let mut s = Scaler::new();
    let plan = s.step(&mut w);
    // One medium (2 vCPUs); a second would make 4 > 3.
    assert_eq!(types_of(&plan), ["medium"]);
    s.join_all(&mut w);
    w.now += 1_000;
    assert!(s.step(&mut w).launches.is_empty());

    // An agent started by hand for the environment counts against maxvCpus too.
    let mut w = world(0, 4, None);
    w.ok(Command::RegisterAgent {
        id: "by-hand".into(),
        vcpus_milli: 3_000,
        memory_mib: 4096,
        scope: AgentScope::ComputeEnvironment("auto".into()),
        private_ipv4: None,
        gpus: 0,
        runner: None,
        running: Vec::new(),
    });
    for _ in 0..10 {
        w.submit("qa", "one");
    }
    w.schedule(); // three run on the hand-started agent
    let mut s = Scaler::new();
    let plan = s.step(&mut w);
    assert_eq!(types_of(&plan), ["small"]);
    assert_eq!(desired(&w, "auto"), Some(4));

    // Many small types: the bound holds over many plans, whatever the demand.
    let mut w = world(0, 100, Some(&["small"]));
    w.ok(Command::SubmitJob(Box::new(SubmitJob {
        job_id: "array".into(),
        name: "array".into(),
        queue: "qa".into(),
        definition: "one".into(),
        array_size: Some(1_000_000),
        ..Default::default()
    })));
    w.schedule();
    let mut s = Scaler::new();
    for _ in 0..5 {
        s.step(&mut w);
        w.now += 1_000;
        assert!(s.vcpus_of("auto") <= 100);
    }
    assert_eq!(
        s.vcpus_of("auto"),
        100,
        "the million unborn children are demand"
    );
}

#[test]
fn min_vcpus_is_kept_warm() {
    let mut w = world(2, 8, None);
    let mut s = Scaler::new();
    let plan = s.step(&mut w);
    assert_eq!(types_of(&plan), ["small", "small"]);
    assert_eq!(desired(&w, "auto"), Some(2));
    s.join_all(&mut w);
    w.now += 10 * COOLDOWN_MS;
    let plan = s.step(&mut w);
    assert!(plan.terminations.is_empty() && plan.launches.is_empty());
    assert_eq!(desired(&w, "auto"), Some(2));

    // Above minvCpus, idle instances go down to it, not below.
    let mut w = world(1, 8, None);
    for _ in 0..3 {
        w.submit("qa", "one");
    }
    w.schedule();
    let mut s = Scaler::new();
    s.step(&mut w);
    s.join_all(&mut w);
    let specs = w.schedule();
    finish_all(&mut w, &specs);
    w.now += 1_000;
    s.step(&mut w);
    w.now += COOLDOWN_MS + 1;
    let plan = s.step(&mut w);
    assert_eq!(plan.terminations.len(), 2);
    assert_eq!(desired(&w, "auto"), Some(1));
}

#[test]
fn a_busy_instance_is_never_scaled_in_and_a_drained_one_takes_no_work() {
    let mut w = world(0, 8, None);
    w.define("long", "1", "512", None);
    let id = w.submit("qa", "long");
    w.schedule();
    let mut s = Scaler::new();
    s.step(&mut w);
    s.join_all(&mut w);
    w.schedule();
    let instance = w.job(&id).current.as_ref().unwrap().agent_id.clone();
    w.now += 10 * COOLDOWN_MS;
    assert!(s.step(&mut w).terminations.is_empty());

    // The drain before a termination is refused while the instance holds an attempt.
    let (r, _) = w.run(Command::DrainAgent {
        id: instance.clone(),
    });
    assert!(matches!(r, Err(CoreError::Conflict(_))), "{r:?}");

    // A drained idle instance gets no placements.
    let mut w = world(0, 8, None);
    w.ok(Command::RegisterAgent {
        id: "i-idle".into(),
        vcpus_milli: 2_000,
        memory_mib: 4096,
        scope: AgentScope::ComputeEnvironment("auto".into()),
        private_ipv4: None,
        gpus: 0,
        runner: None,
        running: Vec::new(),
    });
    w.ok(Command::DrainAgent {
        id: "i-idle".into(),
    });
    assert!(w.state.agents["i-idle"].draining);
    let id = w.submit("qa", "one");
    assert!(w.schedule().is_empty());
    assert_eq!(w.job(&id).status, JobStatus::Runnable);
    // It stays drained if it registers again meanwhile.
    w.ok(Command::RegisterAgent {
        id: "i-idle".into(),
        vcpus_milli: 2_000,
        memory_mib: 4096,
        scope: AgentScope::ComputeEnvironment("auto".into()),
        private_ipv4: None,
        gpus: 0,
        runner: None,
        running: Vec::new(),
    });
    assert!(w.schedule().is_empty());
}

#[test]
fn a_raised_desired_vcpus_launches_now_and_falls_as_instances_scale_in() {
    let mut w = world(0, 8, None);
    w.ok(Command::UpdateComputeEnvironment(
        ComputeEnvironmentUpdate {
            reference: "auto".into(),
            desired_vcpus: Some(4),
            ..Default::default()
        },
    ));
    let mut s = Scaler::new();
    let plan = s.step(&mut w);
    assert_eq!(plan.launches.len(), 4);
    assert_eq!(desired(&w, "auto"), Some(4));
    // AWS's rule stands for users: desiredvCpus cannot be lowered by an update.
    let (r, _) = w.run(Command::UpdateComputeEnvironment(
        ComputeEnvironmentUpdate {
            reference: "auto".into(),
            desired_vcpus: Some(2),
            ..Default::default()
        },
    ));
    assert!(
        matches!(r, Err(CoreError::Invalid(ref m)) if m.contains("cannot be decreased")),
        "{r:?}"
    );

    s.join_all(&mut w);
    w.now += 1_000;
    let plan = s.step(&mut w);
    assert!(plan.launches.is_empty() && plan.terminations.is_empty());
    w.now += COOLDOWN_MS + 1_000;
    let plan = s.step(&mut w);
    assert_eq!(plan.terminations.len(), 4);
    assert_eq!(desired(&w, "auto"), Some(0));
    s.finish_terminations(&mut w);
    w.now += 1_000;
    assert!(
        s.step(&mut w).launches.is_empty(),
        "the raise is not launched again"
    );
}

#[test]
fn instances_that_never_join_or_are_lost_are_terminated_and_replaced() {
    let mut w = world(0, 8, None);
    let id = w.submit("qa", "one");
    w.schedule();
    let mut s = Scaler::new();
    let first = s.step(&mut w).launches[0].instance_id.clone();
    w.now += REGISTER_MS + 1;
    let plan = s.step(&mut w);
    assert_eq!(
        plan.terminations,
        [Termination {
            instance_id: first.clone(),
            cause: TerminationCause::NeverJoined
        }]
    );
    assert_eq!(plan.launches.len(), 1, "replaced at once");
    s.finish_terminations(&mut w);
    w.now += 1_000;
    assert!(s.step(&mut w).launches.is_empty());

    // A joined instance whose agent is lost (a reclaim) is cleaned up, and its job retried.
    s.join_all(&mut w);
    let specs = w.schedule();
    assert_eq!(specs.len(), 1);
    let instance = w.job(&id).current.as_ref().unwrap().agent_id.clone();
    w.now += 1_000;
    s.step(&mut w); // the scaler sees it joined
    w.ok(Command::AgentLost {
        id: instance.clone(),
    });
    let job = w.job(&id);
    assert_eq!(job.status, JobStatus::Runnable, "retried");
    assert_eq!(
        job.attempts[0].status_reason.as_deref(),
        Some(format!("Host EC2 (instance {instance}) terminated.").as_str())
    );
    w.now += 1_000;
    let plan = s.step(&mut w);
    assert!(plan
        .terminations
        .iter()
        .any(|t| t.instance_id == instance && t.cause == TerminationCause::Lost));
    assert_eq!(plan.launches.len(), 1, "the retried job gets an instance");
}

#[test]
fn failed_launches_back_off() {
    let mut w = world(0, 8, None);
    w.submit("qa", "one");
    w.schedule();
    let mut s = Scaler::new();
    let first = s.step(&mut w).launches[0].instance_id.clone();
    s.fleet.launch_failed(&first, w.now);
    s.fleet.terminated(&first);
    w.now += 500;
    assert!(s.step(&mut w).launches.is_empty(), "backing off");
    w.now += 5_000;
    let plan = s.step(&mut w);
    assert_eq!(plan.launches.len(), 1);
    s.fleet.launch_succeeded(&plan.launches[0].instance_id);
    assert!(s.fleet.launch_backoff.is_empty());
}

#[test]
fn static_environments_first_in_the_queue_take_what_they_can() {
    let mut w = world(0, 8, None);
    // Queue qb: the unscaled `ce` (agent i-1, 4 vCPUs) first, then `auto`.
    w.ok(Command::CreateJobQueue(queue("qb", 1, &["ce", "auto"])));
    let mut long = Vec::new();
    for _ in 0..6 {
        long.push(w.submit("qb", "one"));
    }
    w.schedule(); // admitted, and four placed on i-1
    assert_eq!(
        long.iter()
            .filter(|id| w.job(id).status == JobStatus::Runnable)
            .count(),
        2
    );
    let plan = Scaler::new().step(&mut w);
    assert_eq!(
        types_of(&plan),
        ["small", "small"],
        "only the overflow scales"
    );
}

#[test]
fn a_disabled_environment_launches_nothing() {
    let mut w = world(0, 8, None);
    w.submit("qa", "one");
    w.schedule();
    w.ok(Command::UpdateComputeEnvironment(
        ComputeEnvironmentUpdate {
            reference: "auto".into(),
            state: Some(ResourceState::Disabled),
            ..Default::default()
        },
    ));
    assert!(Scaler::new().step(&mut w).launches.is_empty());
}

#[test]
fn instances_of_an_environment_no_longer_scaled_are_terminated_when_idle() {
    let mut w = world(1, 8, None);
    let mut s = Scaler::new();
    s.step(&mut w);
    s.join_all(&mut w);
    w.now += 1_000;
    s.step(&mut w);
    let arn = format!("{}compute-environment/auto", arn_prefix(&w));
    w.ok(Command::UntagResource {
        arn,
        keys: vec![PROVIDER_TAG.into()],
    });
    w.now += 1_000;
    let plan = s.step(&mut w);
    assert_eq!(plan.terminations.len(), 1);
    assert_eq!(plan.terminations[0].cause, TerminationCause::Orphaned);
}

fn arn_prefix(w: &World) -> String {
    format!(
        "arn:aws:batch:{}:{}:",
        w.state.identity.region, w.state.identity.account_id
    )
}

#[test]
fn a_provider_the_configuration_does_not_define_is_refused() {
    let mut w = world(0, 8, None);
    let mut bad = scaled("bad", 0, 8, None);
    bad.tags.insert(PROVIDER_TAG.into(), "nope".into());
    let (r, _) = w.run(Command::CreateComputeEnvironment(bad));
    let Err(CoreError::Invalid(m)) = r else {
        panic!("{r:?}")
    };
    assert!(
        m.contains(PROVIDER_TAG) && m.contains("\"nope\"") && m.contains("dock, laptop"),
        "{m}"
    );

    // Tagging an existing environment: refused, and its tags are unchanged.
    let arn = format!("{}compute-environment/ce", arn_prefix(&w));
    let (r, _) = w.run(Command::TagResource {
        arn: arn.clone(),
        tags: Tags::from([(PROVIDER_TAG.to_string(), "nope".to_string())]),
    });
    assert!(
        matches!(r, Err(CoreError::Invalid(ref m)) if m.contains("nope")),
        "{r:?}"
    );
    assert!(w.state.compute_environments["ce"].tags.is_empty());
    w.ok(Command::TagResource {
        arn,
        tags: Tags::from([(PROVIDER_TAG.to_string(), "laptop".to_string())]),
    });

    // Without a configuration file there are no providers at all.
    let mut plain = World::new(4, 4, 8192);
    let (r, _) = plain.run(Command::CreateComputeEnvironment(scaled("x", 0, 4, None)));
    assert!(
        matches!(r, Err(CoreError::Invalid(ref m)) if m.contains("--config")),
        "{r:?}"
    );

    // UNMANAGED environments never scale.
    let mut unmanaged = scaled("u", 0, 4, None);
    unmanaged.kind = ComputeEnvironmentType::Unmanaged;
    unmanaged.compute_resources = None;
    let (r, _) = w.run(Command::CreateComputeEnvironment(unmanaged));
    assert!(
        matches!(r, Err(CoreError::Invalid(ref m)) if m.contains("UNMANAGED")),
        "{r:?}"
    );

    // instanceTypes must name something in the catalog.
    let (r, _) = w.run(Command::CreateComputeEnvironment(scaled(
        "t",
        0,
        4,
        Some(&["c7g.metal"]),
    )));
    assert!(
        matches!(r, Err(CoreError::Invalid(ref m)) if m.contains("c7g.metal") && m.contains("small")),
        "{r:?}"
    );
    let mut u = ComputeEnvironmentUpdate {
        reference: "auto".into(),
        ..Default::default()
    };
    u.compute_resources_other
        .insert("instanceTypes".into(), json!(["c7g"]));
    let (r, _) = w.run(Command::UpdateComputeEnvironment(u));
    assert!(r.is_err());
    // Unscaled environments keep any instanceTypes, as AWS scripts give them.
    let mut c = ce("any", 4);
    c.compute_resources
        .as_mut()
        .unwrap()
        .other
        .insert("instanceTypes".into(), json!(["c7g.metal"]));
    w.ok(Command::CreateComputeEnvironment(c));
}

#[test]
fn barge_ups_local_agent_does_not_serve_scaled_environments() {
    let w = world(0, 8, None);
    let local = &w.state.agents["i-1"];
    assert!(local.serves(&w.state.compute_environments["ce"]));
    assert!(!local.serves(&w.state.compute_environments["auto"]));
}

#[test]
fn set_desired_vcpus_keeps_the_bounds_and_changes_only_what_differs() {
    let mut w = world(1, 8, None);
    w.ok(Command::SetDesiredVcpus {
        compute_environment: "auto".into(),
        desired_vcpus: 50,
    });
    assert_eq!(desired(&w, "auto"), Some(8));
    let changes = w.ok(Command::SetDesiredVcpus {
        compute_environment: "auto".into(),
        desired_vcpus: 8,
    });
    assert!(changes.dirty.is_empty());
    w.ok(Command::SetDesiredVcpus {
        compute_environment: "auto".into(),
        desired_vcpus: 0,
    });
    assert_eq!(desired(&w, "auto"), Some(1));
    let (r, _) = w.run(Command::SetDesiredVcpus {
        compute_environment: "gone".into(),
        desired_vcpus: 1,
    });
    assert!(matches!(r, Err(CoreError::NotFound(_))));
}

#[test]
fn a_multi_node_job_is_demand_for_all_its_nodes() {
    // Checked through the plan only: 3 nodes of 1 vCPU want 3 vCPUs.
    let mut w = world(0, 8, None);
    let m = barge_core::multinode::MultiNodeJob {
        num_nodes: 3,
        main_node: 0,
        groups: vec![barge_core::multinode::NodeGroup {
            first: 0,
            last: 2,
            container: ContainerProperties::default(),
            resources: Resources {
                vcpus_milli: 1_000,
                memory_mib: 512,
                gpus: 0,
            },
        }],
    };
    let id = w.submit("qa", "one");
    w.schedule();
    let mut job = (**w.state.job(&id).unwrap()).clone();
    job.status = JobStatus::Runnable;
    job.multinode = Some(m);
    w.state.put_job(job);
    let plan = Scaler::new().step(&mut w);
    assert_eq!(plan.launches.len(), 3);
}

mod schedules {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Submit { vcpus: u8, memory: u16, n: u8 },
        Schedule,
        Join,
        FinishRunning,
        LoseOne(u8),
        Wait(u32),
        FinishTerminations,
        SetMax(u8),
        RaiseDesired(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u8..=4, 64u16..=9000, 1u8..=6).prop_map(|(vcpus, memory, n)| Step::Submit {
                vcpus,
                memory,
                n
            }),
            Just(Step::Schedule),
            Just(Step::Join),
            Just(Step::FinishRunning),
            any::<u8>().prop_map(Step::LoseOne),
            (0u32..=120_000).prop_map(Step::Wait),
            Just(Step::FinishTerminations),
            (1u8..=12).prop_map(Step::SetMax),
            (0u8..=12).prop_map(Step::RaiseDesired),
        ]
    }

    /// The vCPUs that run or may still join `auto`.
    fn bound(w: &World, s: &Scaler) -> u64 {
        let joined: u64 = w
            .state
            .agents
            .values()
            .filter(|a| a.scope == AgentScope::ComputeEnvironment("auto".into()))
            .map(|a| a.vcpus_milli / 1000)
            .sum();
        let waiting: u64 = s
            .fleet
            .instances
            .values()
            .filter(|i| !w.state.agents.contains_key(&i.id) && !i.registered)
            .map(|i| u64::from(i.instance_type.vcpus))
            .sum();
        joined + waiting
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever happens (demand, joins, losses, time, a lowered maxvCpus, a raised
        /// desiredvCpus), a plan launches only within maxvCpus, and desiredvCpus stays in
        /// [min, max].
        #[test]
        fn launches_stay_within_max_vcpus(steps in proptest::collection::vec(step(), 1..60)) {
            let mut w = world(0, 8, None);
            let mut s = Scaler::new();
            let mut defs = 0;
            for st in steps {
                match st {
                    Step::Submit { vcpus, memory, n } => {
                        defs += 1;
                        let name = format!("d{defs}");
                        w.define(&name, &vcpus.to_string(), &memory.to_string(), Some(2));
                        for _ in 0..n {
                            w.submit("qa", &name);
                        }
                    }
                    Step::Schedule => {
                        w.schedule();
                    }
                    Step::Join => s.join_all(&mut w),
                    Step::FinishRunning => {
                        let specs = w.schedule();
                        finish_all(&mut w, &specs);
                    }
                    Step::LoseOne(k) => {
                        let ids: Vec<String> = s.fleet.instances.keys().cloned().collect();
                        if !ids.is_empty() {
                            let id = ids[k as usize % ids.len()].clone();
                            w.ok(Command::AgentLost { id });
                        }
                    }
                    Step::Wait(ms) => w.now += i64::from(ms),
                    Step::FinishTerminations => s.finish_terminations(&mut w),
                    Step::SetMax(max) => {
                        let _ = w.run(Command::UpdateComputeEnvironment(ComputeEnvironmentUpdate {
                            reference: "auto".into(),
                            max_vcpus: Some(i64::from(max)),
                            ..Default::default()
                        }));
                    }
                    Step::RaiseDesired(d) => {
                        let _ = w.run(Command::UpdateComputeEnvironment(ComputeEnvironmentUpdate {
                            reference: "auto".into(),
                            desired_vcpus: Some(i64::from(d)),
                            ..Default::default()
                        }));
                    }
                }
                let before = bound(&w, &s);
                let plan = s.step(&mut w);
                let res = w.state.compute_environments["auto"].compute_resources.clone().unwrap();
                let max = res.max_vcpus.unwrap() as u64;
                if !plan.launches.is_empty() {
                    let launched: u64 = plan.launches.iter().map(|l| u64::from(l.instance_type.vcpus)).sum();
                    prop_assert!(before + launched <= max, "launched {launched} onto {before} with maxvCpus {max}");
                }
                let desired = res.desired_vcpus.unwrap();
                prop_assert!(res.min_vcpus.unwrap_or(0) <= desired && desired <= max as i64);
            }
        }
    }
}
