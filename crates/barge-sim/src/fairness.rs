//! A long, deterministic, saturated run of one job queue through the real core, to measure how
//! vCPU-time divides among share identifiers: the weights of a fair-share policy must show in
//! it (`check_share_weights`), and every scheduling pass must keep the queue's order
//! (`check_queue_order`), FIFO queues included. Job sizes and lengths (5–60 s) come from a
//! seeded generator; every identifier always has work waiting.

use std::collections::BTreeMap;

use barge_core::agent::{AgentInstruction, AgentReport};
use barge_core::arn::Identity;
use barge_core::command::SubmitJob;
use barge_core::model::*;
use barge_core::{apply, scheduler, Changes, Command, Effect, State};
use serde_json::Map;

use crate::check::{check_queue_order, check_state, Violation};
use crate::rng::Rng;

/// Jobs each identifier keeps waiting, so the queue stays saturated.
const BACKLOG_PER_SHARE: usize = 6;

pub struct Setup {
    pub seed: u64,
    /// Identifiers that submit, each an equal stream of work.
    pub identifiers: Vec<String>,
    /// The policy's shareDistribution (identifier, weightFactor in ten-thousandths); None runs
    /// the same work through a FIFO queue (the identifiers are then only labels).
    pub distribution: Option<Vec<(String, u32)>>,
    pub share_decay_seconds: Option<i64>,
    pub max_vcpus: i64,
    /// Job sizes to draw from, in vCPUs. Mixed sizes cost some accuracy: while a share's next
    /// job waits for two vCPUs, single freed vCPUs go to the jobs of other shares behind it.
    pub job_vcpus: Vec<u64>,
    pub duration_ms: i64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// vCPU-ms each identifier's attempts held, from placement to exit (or to the end of the run).
    pub used_vcpu_ms: BTreeMap<String, f64>,
    pub placements: usize,
}

struct Live {
    label: String,
    vcpus: u64,
    placed_at: i64,
    ends_at: i64,
    attempt_id: String,
}

struct Run {
    state: State,
    rng: Rng,
    now: i64,
    next_id: u64,
    fair: bool,
    job_vcpus: Vec<u64>,
    /// Job id → (label, vCPUs, length in ms).
    planned: BTreeMap<String, (String, u64, i64)>,
    waiting: BTreeMap<String, usize>,
    live: BTreeMap<String, Live>,
    passes: u64,
    outcome: Outcome,
}

impl Run {
    fn apply(&mut self, command: Command) -> Result<Changes, Violation> {
        let mut changes = Changes::default();
        let what = command.name();
        apply(&mut self.state, command, self.now, &mut changes)
            .map_err(|e| Violation::new(crate::check::ALWAYS_OK, format!("{what}: {e}")))?;
        Ok(changes)
    }

    fn submit(&mut self, label: &str) -> Result<(), Violation> {
        self.next_id += 1;
        let job_id = format!("job-{}", self.next_id);
        let vcpus = *self.rng.pick(&self.job_vcpus);
        let length_ms = self.rng.range(5_000, 60_000);
        self.apply(Command::SubmitJob(Box::new(SubmitJob {
            job_id: job_id.clone(),
            name: job_id.clone(),
            queue: "q".into(),
            definition: "d".into(),
            container_overrides: Some(ContainerOverrides {
                resource_requirements: Some(vec![ResourceRequirement {
                    kind: "VCPU".into(),
                    value: vcpus.to_string(),
                }]),
                ..Default::default()
            }),
            share_identifier: self.fair.then(|| label.to_string()),
            ..Default::default()
        })))?;
        self.planned
            .insert(job_id, (label.to_string(), vcpus, length_ms));
        *self.waiting.entry(label.to_string()).or_insert(0) += 1;
        Ok(())
    }

    fn top_up(&mut self, labels: &[String]) -> Result<(), Violation> {
        for label in labels {
            while self.waiting.get(label).copied().unwrap_or(0) < BACKLOG_PER_SHARE {
                self.submit(label)?;
            }
        }
        Ok(())
    }

    fn pass(&mut self) -> Result<(), Violation> {
        let mut n = self.next_id;
        let plan = scheduler::plan(&self.state, &mut || {
            n += 1;
            format!("att-{n}")
        });
        self.next_id = n;
        let prev = self.state.clone();
        let changes = self.apply(Command::SchedulerPass(plan))?;
        check_queue_order(&prev, &self.state)?;
        // The whole-state checks are linear in all jobs ever run; now and then is enough here
        // (the seeded simulations run them after every step).
        self.passes += 1;
        if self.passes.is_multiple_of(64) {
            check_state(&self.state)?;
        }
        for e in changes.effects {
            let Effect::Agent {
                instruction: AgentInstruction::Launch(spec),
                ..
            } = e
            else {
                continue;
            };
            let (label, vcpus, length) = self.planned[&spec.job_id].clone();
            *self.waiting.get_mut(&label).expect("submitted") -= 1;
            self.outcome.placements += 1;
            self.live.insert(
                spec.job_id.clone(),
                Live {
                    label,
                    vcpus,
                    placed_at: self.now,
                    ends_at: self.now + length,
                    attempt_id: spec.attempt_id,
                },
            );
        }
        Ok(())
    }

    /// Moves time to the next attempt's end and reports every attempt that ended by then.
    fn finish_next(&mut self) -> Result<(), Violation> {
        let Some(next) = self.live.values().map(|l| l.ends_at).min() else {
            return Err(Violation::new(
                crate::check::LIVENESS,
                "a saturated queue runs nothing",
            ));
        };
        self.now = next;
        let ended: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.ends_at <= next)
            .map(|(id, _)| id.clone())
            .collect();
        let mut reports = Vec::new();
        for id in ended {
            let l = self.live.remove(&id).expect("listed above");
            *self.outcome.used_vcpu_ms.entry(l.label).or_insert(0.0) +=
                l.vcpus as f64 * (next - l.placed_at) as f64;
            reports.push(AgentReport::Exited {
                job_id: id,
                attempt_id: l.attempt_id,
                at_ms: next,
                exit_code: Some(0),
                reason: None,
            });
        }
        self.apply(Command::AgentReports {
            agent_id: "agent".into(),
            reports,
        })?;
        Ok(())
    }
}

/// Runs `setup` and returns what each identifier used; a broken invariant on the way fails it.
pub fn run(setup: &Setup) -> Result<Outcome, Violation> {
    let mut r = Run {
        state: State::new(Identity::default()),
        rng: Rng::new(setup.seed),
        now: 1_700_000_000_000,
        next_id: 0,
        fair: setup.distribution.is_some(),
        job_vcpus: setup.job_vcpus.clone(),
        planned: BTreeMap::new(),
        waiting: BTreeMap::new(),
        live: BTreeMap::new(),
        passes: 0,
        outcome: Outcome::default(),
    };
    r.apply(Command::RegisterAgent {
        id: "agent".into(),
        vcpus_milli: setup.max_vcpus as u64 * 1000,
        memory_mib: 1 << 20,
        scope: AgentScope::AllManaged,
        private_ipv4: None,
        gpus: 0,
        runner: None,
        running: Vec::new(),
    })?;
    r.apply(Command::CreateComputeEnvironment(ComputeEnvironment {
        name: "ce".into(),
        uuid: "uuid".into(),
        kind: ComputeEnvironmentType::Managed,
        state: ResourceState::Enabled,
        compute_resources: Some(ComputeResources {
            kind: Some("EC2".into()),
            max_vcpus: Some(setup.max_vcpus),
            ..Default::default()
        }),
        unmanaged_vcpus: None,
        service_role: None,
        update_policy: None,
        tags: Tags::new(),
        other: Map::new(),
    }))?;
    if let Some(distribution) = &setup.distribution {
        r.apply(Command::CreateSchedulingPolicy(SchedulingPolicy {
            name: "p".into(),
            fairshare_policy: Some(FairsharePolicy {
                share_decay_seconds: setup.share_decay_seconds,
                compute_reservation: None,
                share_distribution: distribution
                    .iter()
                    .map(|(id, w)| ShareWeight {
                        share_identifier: id.clone(),
                        weight_factor_e4: Some(*w),
                    })
                    .collect(),
            }),
            tags: Tags::new(),
        }))?;
    }
    let policy_arn = setup
        .distribution
        .as_ref()
        .map(|_| Identity::default().scheduling_policy_arn("p"));
    r.apply(Command::CreateJobQueue(JobQueue {
        name: "q".into(),
        state: ResourceState::Enabled,
        priority: 1,
        compute_environment_order: vec![ComputeEnvironmentOrder {
            order: 1,
            compute_environment: "ce".into(),
        }],
        scheduling_policy_arn: policy_arn,
        job_state_time_limit_actions: Vec::new(),
        tags: Tags::new(),
        other: Map::new(),
    }))?;
    r.apply(Command::RegisterJobDefinition(JobDefinition {
        name: "d".into(),
        revision: 0,
        status: DefinitionStatus::Active,
        kind: "container".into(),
        parameters: Default::default(),
        scheduling_priority: None,
        container_properties: Some(ContainerProperties {
            command: Some(vec!["true".into()]),
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
    }))?;
    let end = r.now + setup.duration_ms;
    r.top_up(&setup.identifiers)?;
    while r.now < end {
        r.pass()?;
        r.pass()?; // admits what the first pass left SUBMITTED, and places it
        r.finish_next()?;
        r.top_up(&setup.identifiers)?;
    }
    check_state(&r.state)?;
    for l in r.live.values() {
        *r.outcome.used_vcpu_ms.entry(l.label.clone()).or_insert(0.0) +=
            l.vcpus as f64 * (r.now - l.placed_at) as f64;
    }
    Ok(r.outcome)
}
