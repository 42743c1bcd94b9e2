//! Random commands: each generator draws one API command (valid or not) from the committed
//! state and the small name pools, so that names collide and references go stale.

use barge_core::arn::{name_from_reference, ResourceKind};
use barge_core::arrays::child_id;
use barge_core::command::{ComputeEnvironmentUpdate, JobQueueUpdate, SubmitJob};
use barge_core::dependencies::{N_TO_N, SEQUENTIAL};
use barge_core::model::*;
use barge_core::Command;
use serde_json::Map;

use super::*;

/// The share of submissions that are array jobs, in percent.
const ARRAY_PERCENT: u64 = 15;
/// Array sizes are 2..=ARRAY_SMALL_MAX, except now and then one of ARRAY_LARGE children, to
/// show that children cost nothing until they are born.
pub(super) const ARRAY_SMALL_MAX: i64 = 12;
pub(super) const ARRAY_LARGE: u32 = 5_000;
/// The share of arrays that are large, in percent.
const ARRAY_LARGE_PERCENT: u64 = 2;

fn dep(job_id: Option<String>, kind: Option<&str>) -> JobDependency {
    JobDependency {
        job_id,
        kind: kind.map(str::to_string),
    }
}

impl Sim {
    pub(super) fn ce_ref(&mut self) -> String {
        let name = *self.rng.pick(&CE_NAMES);
        match self.rng.below(20) {
            0 => "ce-missing".into(),
            1 => self.identity.job_queue_arn(name),
            2..=4 => self.identity.compute_environment_arn(name),
            _ => name.into(),
        }
    }

    pub(super) fn queue_ref(&mut self) -> String {
        if !self.state.job_queues.is_empty() && self.rng.chance(70) {
            let i = self.rng.index(self.state.job_queues.len());
            return self
                .state
                .job_queues
                .keys()
                .nth(i)
                .expect("in range")
                .clone();
        }
        let name = *self.rng.pick(&QUEUE_NAMES);
        match self.rng.below(20) {
            0 => "q-missing".into(),
            1 => self.identity.compute_environment_arn(name),
            2..=4 => self.identity.job_queue_arn(name),
            _ => name.into(),
        }
    }

    pub(super) fn def_ref(&mut self) -> String {
        let active: Vec<String> = self
            .state
            .job_definitions
            .values()
            .filter(|d| d.status == DefinitionStatus::Active)
            .map(|d| d.name.clone())
            .collect();
        if !active.is_empty() && self.rng.chance(60) {
            return self.rng.pick(&active).clone();
        }
        let name = *self.rng.pick(&DEF_NAMES);
        let latest = i64::from(self.state.latest_revision(name));
        match self.rng.below(20) {
            0 => "def-missing".into(),
            1 => format!("{name}:x"),
            2..=6 => format!("{name}:{}", self.rng.range(1, latest + 1)),
            7..=8 => self
                .identity
                .job_definition_arn(name, self.rng.range(1, latest + 1) as u32),
            // An ARN without a revision: the latest ACTIVE one.
            9 => self
                .identity
                .job_definition_arn(name, 0)
                .trim_end_matches(":0")
                .to_string(),
            _ => name.into(),
        }
    }

    /// A known job, mostly one that has not finished, or now and then an unknown id.
    pub(super) fn job_ref(&mut self) -> String {
        if self.acked.is_empty() || self.rng.chance(5) {
            return "job-missing".into();
        }
        let open: Vec<&String> = self
            .acked
            .iter()
            .filter(|(_, s)| !s.is_terminal())
            .map(|(id, _)| id)
            .collect();
        if !open.is_empty() && self.rng.chance(80) {
            let i = self.rng.index(open.len());
            return open[i].clone();
        }
        let i = self.rng.index(self.acked.len());
        self.acked.keys().nth(i).expect("in range").clone()
    }

    /// An acknowledged array parent, mostly one that has not finished.
    pub(super) fn array_ref(&mut self) -> Option<String> {
        if self.arrays.is_empty() {
            return None;
        }
        let open: Vec<&String> = self
            .arrays
            .iter()
            .filter(|id| self.acked.get(*id).is_some_and(|s| !s.is_terminal()))
            .collect();
        if !open.is_empty() && self.rng.chance(75) {
            let i = self.rng.index(open.len());
            return Some(open[i].clone());
        }
        Some(self.rng.pick(&self.arrays).clone())
    }

    /// A child id of an acknowledged array: one already born, the next the scheduler would
    /// take, any index (mostly unborn in a large array), or one past the end.
    pub(super) fn child_ref(&mut self) -> String {
        let Some(parent) = self.array_ref() else {
            return "job-missing:0".into();
        };
        let size = self
            .state
            .job(&parent)
            .and_then(|p| p.array.as_ref())
            .map_or(2, |a| a.size);
        let index = self.state.array_index(&parent);
        let born = index.map_or(0, |i| i.born.len());
        let cursor = index.map_or(0, |i| i.cursor);
        let i = match self.rng.below(10) {
            0..=3 if born > 0 => {
                let k = self.rng.index(born);
                let index = self.state.array_index(&parent).expect("born > 0");
                *index.born.iter().nth(k).expect("in range")
            }
            4 => cursor,
            5 => size,
            _ => self.rng.below(u64::from(size)) as u32,
        };
        child_id(&parent, i)
    }

    /// What a cancel or terminate names: any job, an array parent, or one array child.
    pub(super) fn stop_ref(&mut self) -> (String, Target) {
        if !self.arrays.is_empty() && self.rng.chance(35) {
            if self.rng.chance(60) {
                return (self.child_ref(), Target::ArrayChild);
            }
            if let Some(id) = self.array_ref() {
                return (id, Target::ArrayParent);
            }
        }
        let id = self.job_ref();
        let target = if self.state.job(&id).is_some_and(|j| j.array.is_some()) {
            Target::ArrayParent
        } else {
            Target::Job
        };
        (id, target)
    }

    pub(super) fn arn_ref(&mut self) -> String {
        match self.rng.below(10) {
            0 => {
                let name = *self.rng.pick(&CE_NAMES);
                self.identity.compute_environment_arn(name)
            }
            1 => {
                let name = *self.rng.pick(&QUEUE_NAMES);
                self.identity.job_queue_arn(name)
            }
            2 => {
                let name = *self.rng.pick(&DEF_NAMES);
                let rev = self.rng.range(1, 3) as u32;
                self.identity.job_definition_arn(name, rev)
            }
            3 => "arn:aws:batch:us-east-1:000000000000:job-definition/def-a".into(),
            4 => "arn:aws:s3:::a-bucket".into(),
            5 => {
                let name = *self.rng.pick(&POLICY_NAMES);
                self.identity.scheduling_policy_arn(name)
            }
            _ => {
                let id = self.job_ref();
                self.identity.job_arn(&id)
            }
        }
    }

    pub(super) fn tags(&mut self) -> Tags {
        let n = if self.rng.chance(3) {
            60
        } else {
            self.rng.range(1, 3)
        };
        (0..n)
            .map(|i| {
                let k = if n > 3 { i as u64 } else { self.rng.below(6) };
                (format!("k{k}"), format!("v{}", self.rng.below(100)))
            })
            .collect()
    }

    /// A scheduling policy reference: mostly the ARN of a pool name, sometimes its bare name or
    /// one that never exists.
    pub(super) fn policy_ref(&mut self) -> String {
        let name = *self.rng.pick(&POLICY_NAMES);
        match self.rng.below(20) {
            0 => "pol-missing".into(),
            1 => name.into(),
            2 => self.identity.job_queue_arn(name),
            _ => self.identity.scheduling_policy_arn(name),
        }
    }

    /// A fairsharePolicy; with `valid`, one AWS accepts (no overlapping entries, values in range).
    pub(super) fn gen_fairshare(&mut self, valid: bool) -> FairsharePolicy {
        let mut entries: Vec<ShareWeight> = Vec::new();
        for _ in 0..self.rng.range(0, 3) {
            let id = self.rng.pick(&SHARE_ENTRIES).to_string();
            let clash = entries.iter().any(|e| {
                let (a, b) = (e.share_identifier.as_str(), id.as_str());
                match (a.strip_suffix('*'), b.strip_suffix('*')) {
                    (Some(pa), Some(pb)) => pa.starts_with(pb) || pb.starts_with(pa),
                    (Some(pa), None) => b.starts_with(pa),
                    (None, Some(pb)) => a.starts_with(pb),
                    (None, None) => a == b,
                }
            });
            if valid && clash {
                continue;
            }
            entries.push(ShareWeight {
                share_identifier: id,
                weight_factor_e4: *self.rng.pick(&[
                    None,
                    Some(1),
                    Some(2_500),
                    Some(10_000),
                    Some(80_000),
                ]),
            });
        }
        let mut p = FairsharePolicy {
            share_decay_seconds: *self.rng.pick(&[None, Some(0), Some(60), Some(3_600)]),
            compute_reservation: *self.rng.pick(&[None, Some(0), Some(0), Some(25), Some(90)]),
            share_distribution: entries,
        };
        if !valid && self.rng.chance(25) {
            match self.rng.below(3) {
                0 => p.share_decay_seconds = Some(-1),
                1 => p.compute_reservation = Some(100),
                _ => p.share_distribution.push(ShareWeight {
                    share_identifier: "zed".into(),
                    weight_factor_e4: Some(0),
                }),
            }
        }
        p
    }

    pub(super) fn gen_create_policy(&mut self, valid: Option<&str>) -> Planned {
        let name = valid.map_or_else(|| self.rng.pick(&POLICY_NAMES).to_string(), str::to_string);
        let fairshare_policy =
            (valid.is_some() || self.rng.chance(90)).then(|| self.gen_fairshare(valid.is_some()));
        Planned {
            what: format!("create scheduling policy {name} {fairshare_policy:?}"),
            command: Command::CreateSchedulingPolicy(SchedulingPolicy {
                name,
                fairshare_policy,
                tags: Tags::new(),
            }),
            note: Note::Plain,
        }
    }

    pub(super) fn gen_update_policy(&mut self) -> Planned {
        let reference = self.policy_ref();
        let fairshare_policy = self.rng.chance(90).then(|| {
            let valid = self.rng.chance(70);
            self.gen_fairshare(valid)
        });
        Planned {
            what: format!("update scheduling policy {reference} {fairshare_policy:?}"),
            command: Command::UpdateSchedulingPolicy {
                reference,
                fairshare_policy,
            },
            note: Note::Plain,
        }
    }

    pub(super) fn gen_tag(&mut self) -> Planned {
        let arn = self.arn_ref();
        let tags = self.tags();
        Planned {
            what: format!("tag {arn} with {} tags", tags.len()),
            command: Command::TagResource { arn, tags },
            note: Note::Plain,
        }
    }

    /// A CreateComputeEnvironment; `valid` (setup) names a free name and builds a valid one.
    pub(super) fn gen_create_ce(&mut self, valid: Option<&str>) -> Planned {
        let name = valid.map_or_else(|| self.rng.pick(&CE_NAMES).to_string(), str::to_string);
        let managed = self.rng.chance(70);
        let uuid = self.new_id("uuid");
        let mut ce = ComputeEnvironment {
            name: name.clone(),
            uuid,
            kind: if managed {
                ComputeEnvironmentType::Managed
            } else {
                ComputeEnvironmentType::Unmanaged
            },
            state: if valid.is_some() || self.rng.chance(85) {
                ResourceState::Enabled
            } else {
                ResourceState::Disabled
            },
            compute_resources: None,
            unmanaged_vcpus: None,
            service_role: None,
            update_policy: None,
            tags: Tags::new(),
            other: Map::new(),
        };
        let mut shape = String::new();
        if managed {
            let max = if valid.is_some() {
                self.rng.range(1, 8)
            } else {
                self.rng.range(0, 8)
            };
            let mut res = ComputeResources {
                kind: Some("EC2".into()),
                min_vcpus: None,
                max_vcpus: Some(max),
                desired_vcpus: None,
                other: Map::new(),
            };
            if valid.is_none() {
                match self.rng.below(12) {
                    0 => res.max_vcpus = None,
                    1 => res.min_vcpus = Some(max + 1),
                    2 => res.desired_vcpus = Some(max + 2),
                    3 => res.kind = Some("FARGATE".into()),
                    4 => ce.unmanaged_vcpus = Some(2),
                    5 => res.min_vcpus = Some(0),
                    _ => {}
                }
            }
            shape = format!("MANAGED {:?} max {:?}", res.kind, res.max_vcpus);
            ce.compute_resources = Some(res);
        } else {
            if valid.is_none() && self.rng.chance(8) {
                ce.compute_resources = Some(ComputeResources::default());
            }
            if self.rng.chance(30) {
                let low = if valid.is_some() { 0 } else { -1 };
                ce.unmanaged_vcpus = Some(self.rng.range(low, 4));
            }
            shape.push_str("UNMANAGED");
        }
        if self.rng.chance(20) {
            ce.tags = self.tags();
            if valid.is_some() {
                // Setup must succeed: no more tags than a resource may hold.
                let keep = barge_core::limits::TAGS_PER_RESOURCE_MAX.min(3);
                ce.tags = std::mem::take(&mut ce.tags)
                    .into_iter()
                    .take(keep)
                    .collect();
            }
        }
        Planned {
            what: format!(
                "create compute environment {name} {shape} {}",
                ce.state.as_str()
            ),
            command: Command::CreateComputeEnvironment(ce),
            note: Note::Plain,
        }
    }

    pub(super) fn gen_update_ce(&mut self) -> Planned {
        let mut u = ComputeEnvironmentUpdate {
            reference: self.ce_ref(),
            ..Default::default()
        };
        if self.rng.chance(50) {
            u.state = Some(if self.rng.chance(60) {
                ResourceState::Enabled
            } else {
                ResourceState::Disabled
            });
        }
        if self.rng.chance(40) {
            u.max_vcpus = Some(self.rng.range(-1, 8));
        }
        if self.rng.chance(10) {
            u.min_vcpus = Some(self.rng.range(0, 3));
        }
        if self.rng.chance(8) {
            u.desired_vcpus = Some(self.rng.range(0, 8));
        }
        if self.rng.chance(5) {
            u.unmanaged_vcpus = Some(self.rng.range(-1, 4));
        }
        if self.rng.chance(5) {
            u.service_role = Some("arn:aws:iam::000000000000:role/sim".into());
        }
        Planned {
            what: format!(
                "update compute environment {} state {:?} max {:?} min {:?} desired {:?}",
                u.reference, u.state, u.max_vcpus, u.min_vcpus, u.desired_vcpus
            ),
            command: Command::UpdateComputeEnvironment(u),
            note: Note::Plain,
        }
    }

    pub(super) fn gen_order(&mut self) -> Vec<ComputeEnvironmentOrder> {
        let n = match self.rng.below(20) {
            0 => 0,
            1 => 4,
            _ => self.rng.range(1, 3),
        };
        (0..n)
            .map(|i| ComputeEnvironmentOrder {
                order: if self.rng.chance(90) {
                    i + 1
                } else {
                    self.rng.range(1, 3)
                },
                compute_environment: self.ce_ref(),
            })
            .collect()
    }

    /// A CreateJobQueue; `valid` (setup) gives a free name and existing environments.
    pub(super) fn gen_create_queue(&mut self, setup: Option<(&str, Vec<String>)>) -> Planned {
        let valid = setup.is_some();
        let (name, order) = match setup {
            Some((name, ces)) => (
                name.to_string(),
                ces.into_iter()
                    .enumerate()
                    .map(|(i, c)| ComputeEnvironmentOrder {
                        order: i as i64 + 1,
                        compute_environment: c,
                    })
                    .collect(),
            ),
            None => (self.rng.pick(&QUEUE_NAMES).to_string(), self.gen_order()),
        };
        let q = JobQueue {
            name: name.clone(),
            state: if valid || self.rng.chance(85) {
                ResourceState::Enabled
            } else {
                ResourceState::Disabled
            },
            priority: self.rng.range(0, 10),
            compute_environment_order: order,
            scheduling_policy_arn: match valid {
                true if self.rng.chance(40) => {
                    Some(self.identity.scheduling_policy_arn(POLICY_NAMES[0]))
                }
                false if self.rng.chance(30) => Some(self.policy_ref()),
                _ => None,
            },
            // Short enough for the simulated clock's quiet spells to reach.
            job_state_time_limit_actions: if self.rng.chance(30) {
                vec![JobStateTimeLimitAction {
                    reason: self
                        .rng
                        .pick(&[
                            "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
                            "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
                            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
                        ])
                        .to_string(),
                    state: "RUNNABLE".into(),
                    max_time_seconds: 600,
                    action: "CANCEL".into(),
                }]
            } else {
                Vec::new()
            },
            tags: Tags::new(),
            other: Map::new(),
        };
        Planned {
            what: format!(
                "create job queue {name} {} priority {} over [{}]",
                q.state.as_str(),
                q.priority,
                q.compute_environment_order
                    .iter()
                    .map(|o| format!("{}:{}", o.order, o.compute_environment))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            command: Command::CreateJobQueue(q),
            note: Note::Plain,
        }
    }

    pub(super) fn gen_update_queue(&mut self) -> Planned {
        let mut u = JobQueueUpdate {
            reference: self.queue_ref(),
            ..Default::default()
        };
        if self.rng.chance(45) {
            u.state = Some(if self.rng.chance(60) {
                ResourceState::Enabled
            } else {
                ResourceState::Disabled
            });
        }
        if self.rng.chance(30) {
            u.priority = Some(self.rng.range(0, 10));
        }
        if self.rng.chance(30) {
            u.compute_environment_order = Some(self.gen_order());
        }
        if self.rng.chance(6) {
            // Replacing works on a fair-share queue; removing ("") and gaining never do.
            u.scheduling_policy_arn = Some(if self.rng.chance(10) {
                String::new()
            } else {
                self.policy_ref()
            });
        }
        Planned {
            what: format!(
                "update job queue {} state {:?} priority {:?} order {:?}",
                u.reference,
                u.state,
                u.priority,
                u.compute_environment_order.as_ref().map(|o| o
                    .iter()
                    .map(|e| format!("{}:{}", e.order, e.compute_environment))
                    .collect::<Vec<_>>())
            ),
            command: Command::UpdateJobQueue(u),
            note: Note::Plain,
        }
    }

    pub(super) fn requirements(&mut self) -> Option<Vec<ResourceRequirement>> {
        let mut reqs = vec![ResourceRequirement {
            kind: "VCPU".into(),
            value: self.rng.pick(&["0.25", "0.5", "1", "1", "2"]).to_string(),
        }];
        if self.rng.chance(80) {
            reqs.push(ResourceRequirement {
                kind: "MEMORY".into(),
                value: self.rng.pick(&["256", "512", "1024", "3072"]).to_string(),
            });
        }
        Some(reqs)
    }

    /// A RegisterJobDefinition; `valid` (setup) builds a valid container definition.
    pub(super) fn gen_register_def(&mut self, valid: Option<&str>) -> Planned {
        if self.rng.chance(20) {
            return self.gen_multinode_def(valid);
        }
        let name = valid.map_or_else(|| self.rng.pick(&DEF_NAMES).to_string(), str::to_string);
        let mut container = ContainerProperties {
            image: Some("busybox".into()),
            command: Some(vec!["echo".into(), "Ref::word".into()]),
            ..Default::default()
        };
        match self.rng.below(10) {
            0 | 1 => {} // no resources: Barge's defaults
            2 => {
                container.vcpus = Some(self.rng.range(1, 2));
                container.memory = Some(512);
            }
            _ => container.resource_requirements = self.requirements(),
        }
        if self.rng.chance(20) {
            container.environment = Some(vec![KeyValuePair {
                name: Some("GREETING".into()),
                value: Some("hi".into()),
            }]);
        }
        let mut kind = "container".to_string();
        let mut container = Some(container);
        if valid.is_none() && self.rng.chance(12) {
            let c = container.as_mut().expect("set above");
            match self.rng.below(6) {
                0 => container = None,
                1 => kind = "multinode".into(),
                2 => {
                    c.resource_requirements = Some(vec![ResourceRequirement {
                        kind: "VCPU".into(),
                        value: "0".into(),
                    }])
                }
                3 => {
                    c.resource_requirements = Some(vec![ResourceRequirement {
                        kind: "FPGA".into(),
                        value: "1".into(),
                    }])
                }
                4 => {
                    c.environment = Some(vec![KeyValuePair {
                        name: Some("AWS_BATCH_JOB_ID".into()),
                        value: Some("x".into()),
                    }])
                }
                _ => c.memory = Some(-1),
            }
        }
        let retry_strategy = self.rng.chance(60).then(|| self.retry_strategy());
        let mut parameters = std::collections::BTreeMap::new();
        if self.rng.chance(50) {
            parameters.insert("word".to_string(), "hello".to_string());
        }
        let what = format!(
            "register job definition {name} ({kind}, resources {:?}/{:?}/{:?}, attempts {:?})",
            container
                .as_ref()
                .and_then(|c| c.resource_requirements.clone()),
            container.as_ref().and_then(|c| c.vcpus),
            container.as_ref().and_then(|c| c.memory),
            retry_strategy.as_ref().and_then(|r| r.attempts)
        );
        Planned {
            what,
            command: Command::RegisterJobDefinition(JobDefinition {
                name,
                revision: 0,
                status: DefinitionStatus::Active,
                kind,
                parameters,
                scheduling_priority: None,
                container_properties: container,
                node_properties: None,
                retry_strategy,
                // Short enough that the simulated clock (up to 2 s a step) reaches it.
                timeout: self.rng.chance(25).then(|| JobTimeout {
                    attempt_duration_seconds: Some(self.rng.range(60, 120) as u64),
                }),
                propagate_tags: None,
                platform_capabilities: None,
                tags: Tags::new(),
                other: Map::new(),
            }),
            note: Note::Plain,
        }
    }

    /// A container for a node range: small resources (so gangs of a few nodes fit the hosts
    /// now and then), sometimes none (Barge's defaults).
    fn node_container(&mut self) -> ContainerProperties {
        let mut c = ContainerProperties {
            image: Some("busybox".into()),
            command: Some(vec!["mpirun".into(), "Ref::word".into()]),
            ..Default::default()
        };
        if self.rng.chance(85) {
            c.resource_requirements = Some(vec![
                ResourceRequirement {
                    kind: "VCPU".into(),
                    value: self.rng.pick(&["0.25", "0.5", "1"]).to_string(),
                },
                ResourceRequirement {
                    kind: "MEMORY".into(),
                    value: self.rng.pick(&["128", "256", "512"]).to_string(),
                },
            ]);
        }
        c
    }

    /// A RegisterJobDefinition of type multinode: 1–4 nodes in one of AWS's range layouts;
    /// unless `valid`, now and then a broken one (gaps, partial overlaps, a main node past
    /// the end, no nodes, no nodeProperties).
    pub(super) fn gen_multinode_def(&mut self, valid: Option<&str>) -> Planned {
        let name = valid.map_or_else(|| self.rng.pick(&DEF_NAMES).to_string(), str::to_string);
        let n = self.rng.range(1, 4);
        let main = self.rng.range(0, n - 1);
        let layouts: Vec<Vec<String>> = if n == 1 {
            vec![vec![":".into()], vec!["0".into()]]
        } else {
            let k = self.rng.range(1, n - 1);
            vec![
                vec![":".into()],
                vec!["0".into(), "1:".into()],
                vec![format!(":{}", k - 1), format!("{k}:")],
                vec![":".into(), format!("{k}")],
                vec![format!("0:{}", n - 1), "0".into(), format!("{k}:")],
            ]
        };
        let mut targets = self.rng.pick(&layouts).clone();
        let mut num_nodes = n;
        let mut main_node = main;
        let mut broken = "";
        if valid.is_none() && self.rng.chance(15) {
            match self.rng.below(5) {
                0 => {
                    targets = vec!["0".into(), format!("{}:", (n + 1).min(3))];
                    num_nodes = 4;
                    broken = " (gap)";
                }
                1 => {
                    targets = vec!["0:2".into(), "1:3".into()];
                    num_nodes = 4;
                    broken = " (overlap)";
                }
                2 => {
                    main_node = n;
                    broken = " (main past the end)";
                }
                3 => {
                    num_nodes = 0;
                    broken = " (no nodes)";
                }
                _ => broken = " (no nodeProperties)",
            }
        }
        let ranges = targets
            .iter()
            .map(|t| barge_core::multinode::NodeRangeProperty {
                target_nodes: t.clone(),
                container: Some(self.node_container()),
                other: Map::new(),
            })
            .collect();
        let node_properties =
            (broken != " (no nodeProperties)").then_some(barge_core::multinode::NodeProperties {
                num_nodes,
                main_node,
                node_range_properties: ranges,
            });
        let retry_strategy = self.rng.chance(60).then(|| self.retry_strategy());
        let mut parameters = std::collections::BTreeMap::new();
        parameters.insert("word".to_string(), "hello".to_string());
        Planned {
            what: format!(
                "register job definition {name} (multinode, {num_nodes} nodes, main {main_node}, ranges {targets:?}{broken}, attempts {:?})",
                retry_strategy.as_ref().and_then(|r| r.attempts)
            ),
            command: Command::RegisterJobDefinition(JobDefinition {
                name,
                revision: 0,
                status: DefinitionStatus::Active,
                kind: "multinode".into(),
                parameters,
                scheduling_priority: None,
                container_properties: None,
                node_properties,
                retry_strategy,
                timeout: self.rng.chance(20).then(|| JobTimeout {
                    attempt_duration_seconds: Some(self.rng.range(60, 120) as u64),
                }),
                propagate_tags: None,
                platform_capabilities: None,
                tags: Tags::new(),
                other: Map::new(),
            }),
            note: Note::Plain,
        }
    }

    /// nodeOverrides for a submission: a new size now and then, and overrides of a range of
    /// nodes (sometimes naming nodes the job does not have).
    fn node_overrides(&mut self) -> barge_core::multinode::NodeOverrides {
        let mut o = barge_core::multinode::NodeOverrides::default();
        if self.rng.chance(40) {
            o.num_nodes = Some(self.rng.range(0, 5));
        }
        if self.rng.chance(60) {
            let target = self
                .rng
                .pick(&["0", "1:", ":", ":1", "2", "0:1", "9"])
                .to_string();
            let mut c = ContainerOverrides::default();
            if self.rng.chance(50) {
                c.command = Some(vec!["worker".into()]);
            }
            if self.rng.chance(40) {
                c.resource_requirements = self.requirements();
            }
            if self.rng.chance(5) {
                c.environment = Some(vec![KeyValuePair {
                    name: Some("AWS_BATCH_JOB_NODE_INDEX".into()),
                    value: Some("7".into()),
                }]);
            }
            o.node_property_overrides = Some(vec![barge_core::multinode::NodePropertyOverride {
                target_nodes: target,
                container_overrides: Some(c),
                other: Map::new(),
            }]);
        }
        o
    }

    /// 1–3 attempts, sometimes with evaluateOnExit rules over what the simulated agents report.
    pub(super) fn retry_strategy(&mut self) -> RetryStrategy {
        let attempts = Some(self.rng.range(1, 3) as u32);
        if !self.rng.chance(35) {
            return RetryStrategy {
                attempts,
                evaluate_on_exit: None,
            };
        }
        let rules = (0..self.rng.range(1, 2))
            .map(|_| {
                let mut rule = EvaluateOnExit {
                    on_status_reason: None,
                    on_reason: None,
                    on_exit_code: None,
                    action: self.rng.pick(&["RETRY", "EXIT", "exit"]).to_string(),
                };
                let code = |rng: &mut Rng| Some(rng.pick(&["0", "1", "137", "1*"]).to_string());
                let reason = |rng: &mut Rng| {
                    Some(
                        rng.pick(&["CannotStart*", "OutOfMemoryError: simulated", "*"])
                            .to_string(),
                    )
                };
                match self.rng.below(5) {
                    0 => rule.on_exit_code = code(&mut self.rng),
                    1 => rule.on_reason = reason(&mut self.rng),
                    2 => {
                        rule.on_status_reason = Some(
                            self.rng
                                .pick(&["Host EC2*", "Essential container in task exited"])
                                .to_string(),
                        )
                    }
                    3 => {
                        rule.on_exit_code = code(&mut self.rng);
                        rule.on_reason = reason(&mut self.rng);
                    }
                    _ => {} // no condition: matches every attempt
                }
                rule
            })
            .collect();
        RetryStrategy {
            attempts,
            evaluate_on_exit: Some(rules),
        }
    }

    pub(super) fn gen_deregister_def(&mut self) -> Planned {
        let defs: Vec<(String, u32)> = self.state.job_definitions.keys().cloned().collect();
        let reference = if defs.is_empty() || self.rng.chance(10) {
            "def-a:99".to_string()
        } else {
            let (name, rev) = self.rng.pick(&defs).clone();
            match self.rng.below(10) {
                0 => name,
                1 | 2 => self.identity.job_definition_arn(&name, rev),
                _ => format!("{name}:{rev}"),
            }
        };
        Planned {
            what: format!("deregister job definition {reference}"),
            command: Command::DeregisterJobDefinition { reference },
            note: Note::Plain,
        }
    }

    pub(super) fn gen_submit(&mut self) -> Planned {
        let job_id = if !self.acked.is_empty() && self.rng.chance(3) {
            let i = self.rng.index(self.acked.len());
            self.acked.keys().nth(i).expect("in range").clone()
        } else {
            self.new_id("job")
        };
        let mut s = SubmitJob {
            job_id: job_id.clone(),
            name: format!("name-{job_id}"),
            queue: self.queue_ref(),
            definition: self.def_ref(),
            ..Default::default()
        };
        let multinode = self
            .state
            .latest_active_definition(&s.definition)
            .is_some_and(|d| d.kind == "multinode");
        if self.rng.chance(if multinode { 50 } else { 3 }) {
            s.node_overrides = Some(self.node_overrides());
        }
        // Container overrides are refused for multi-node jobs: rarely try.
        if self.rng.chance(if multinode { 3 } else { 30 }) {
            let mut o = ContainerOverrides::default();
            if self.rng.chance(10) {
                o.vcpus = Some(self.rng.range(0, 2));
            }
            if self.rng.chance(10) {
                o.memory = Some(self.rng.range(0, 2048));
            }
            if self.rng.chance(30) {
                o.command = Some(vec!["echo".into(), "Ref::word".into(), "Ref::other".into()]);
            }
            if self.rng.chance(20) {
                let name = if self.rng.chance(10) {
                    "AWS_BATCH_JOB_ATTEMPT"
                } else {
                    "GREETING"
                };
                o.environment = Some(vec![KeyValuePair {
                    name: Some(name.into()),
                    value: Some("override".into()),
                }]);
            }
            if self.rng.chance(40) {
                o.resource_requirements = self.requirements();
            }
            if self.rng.chance(5) {
                o.instance_type = Some("m5.large".into());
            }
            s.container_overrides = Some(o);
        }
        if self.rng.chance(20) {
            s.retry_strategy = Some(self.retry_strategy());
        }
        if self.rng.chance(15) {
            s.tags = self.tags();
        }
        if self.rng.chance(20) {
            s.parameters.insert("word".into(), "override".into());
        }
        if self.rng.chance(15) {
            for _ in 0..self.rng.range(1, 3) {
                // Now and then the whole of an array: its parent.
                let id = match self.array_ref() {
                    Some(id) if self.rng.chance(35) => id,
                    _ => self.job_ref(),
                };
                s.depends_on.push(dep(Some(id), None));
            }
        }
        // A shareIdentifier when the queue has a policy, mostly; now and then the wrong way.
        let fair = name_from_reference(&s.queue, ResourceKind::JobQueue)
            .and_then(|n| self.state.job_queues.get(n))
            .is_some_and(|q| q.scheduling_policy_arn.is_some());
        if fair != self.rng.chance(5) {
            s.share_identifier = Some(if self.rng.chance(3) {
                "bad id*x".into()
            } else {
                self.rng.pick(&SHARE_IDS).to_string()
            });
        }
        if self.rng.chance(30) {
            s.scheduling_priority_override = Some(self.rng.range(0, 9));
        }
        let mut note = Note::Submit(job_id.clone());
        let mut array = String::new();
        if self.rng.chance(2) {
            // One array child, born or not: depend on the array, or N_TO_N on its children.
            let child = self.child_ref();
            s.depends_on.push(dep(Some(child.clone()), None));
            array = format!(" after child {child}");
            note = Note::MustRefuse(job_id.clone());
        } else if self.rng.chance(1) {
            // SEQUENTIAL and N_TO_N order the children of an array; a plain job has none.
            let kind = *self.rng.pick(&[SEQUENTIAL, N_TO_N]);
            let target = (kind == N_TO_N).then(|| self.job_ref());
            s.depends_on.push(dep(target, Some(kind)));
            array = format!(" (not an array) {kind}");
            note = Note::MustRefuse(job_id.clone());
        } else if self.rng.chance(ARRAY_PERCENT) {
            let (shape, valid) = self.gen_array(&mut s);
            array = shape;
            if !valid {
                note = Note::MustRefuse(job_id.clone());
            }
        }
        Planned {
            what: format!(
                "submit {job_id}{array} to {} with {}{}{}{}",
                s.queue,
                s.definition,
                match (&s.share_identifier, s.scheduling_priority_override) {
                    (None, None) => String::new(),
                    (share, priority) => format!(" share {share:?} priority {priority:?}"),
                },
                match (&s.container_overrides, &s.node_overrides) {
                    (Some(_), _) => " +overrides".to_string(),
                    (None, Some(o)) => format!(
                        " +nodeOverrides numNodes {:?} targets {:?}",
                        o.num_nodes,
                        o.node_property_overrides
                            .iter()
                            .flatten()
                            .map(|p| p.target_nodes.as_str())
                            .collect::<Vec<_>>()
                    ),
                    (None, None) => String::new(),
                },
                match &s.retry_strategy {
                    Some(r) => format!(" attempts {:?}", r.attempts),
                    None => String::new(),
                }
            ),
            command: Command::SubmitJob(Box::new(s)),
            note,
        }
    }

    /// Makes `s` an array job: plain, SEQUENTIAL, N_TO_N on an acknowledged array of the same
    /// size (with or without SEQUENTIAL), or invalid. Returns how it reads in the history, and
    /// false when it is invalid whatever the state, so it must be refused.
    pub(super) fn gen_array(&mut self, s: &mut SubmitJob) -> (String, bool) {
        let size = if self.rng.chance(ARRAY_LARGE_PERCENT) {
            ARRAY_LARGE
        } else {
            self.rng.range(2, ARRAY_SMALL_MAX) as u32
        };
        s.array_size = Some(size);
        let sequential = dep(None, Some(SEQUENTIAL));
        match self.rng.weighted(&[40, 25, 18, 4, 13]) {
            0 => (format!(" array of {size}"), true),
            1 => {
                s.depends_on.push(sequential);
                (format!(" SEQUENTIAL array of {size}"), true)
            }
            kind @ (2 | 3) => {
                let Some(other) = self.array_ref() else {
                    return (format!(" array of {size}"), true);
                };
                let size = self.array_size(&other);
                s.array_size = Some(size);
                s.depends_on.push(dep(Some(other.clone()), Some(N_TO_N)));
                if kind == 3 {
                    s.depends_on.push(sequential);
                }
                (
                    format!(
                        " {}array of {size} N_TO_N on {other}",
                        if kind == 3 { "SEQUENTIAL " } else { "" }
                    ),
                    true,
                )
            }
            _ => self.gen_invalid_array(s),
        }
    }

    fn array_size(&self, id: &str) -> u32 {
        self.state
            .job(id)
            .and_then(|j| j.array.as_ref())
            .map_or(0, |a| a.size)
    }

    /// An array submission that must be refused.
    fn gen_invalid_array(&mut self, s: &mut SubmitJob) -> (String, bool) {
        let plain: Vec<String> = self
            .acked
            .keys()
            .filter(|id| self.state.job(id).is_some_and(|j| j.array.is_none()))
            .cloned()
            .collect();
        let size = s.array_size.unwrap_or(2);
        match self.rng.below(7) {
            1 => {
                let size = self.state.config.array_size_max + 1;
                s.array_size = Some(size);
                (format!(" array of {size} (too large)"), false)
            }
            2 if !plain.is_empty() => {
                let other = self.rng.pick(&plain).clone();
                s.depends_on.push(dep(Some(other.clone()), Some(N_TO_N)));
                (
                    format!(" array of {size} N_TO_N on {other} (not an array)"),
                    false,
                )
            }
            3 if !self.arrays.is_empty() => {
                let other = self.array_ref().expect("not empty");
                let other_size = self.array_size(&other);
                let size = if other_size > 2 && self.rng.chance(50) {
                    other_size - 1
                } else {
                    other_size + 1
                };
                s.array_size = Some(size);
                s.depends_on.push(dep(Some(other.clone()), Some(N_TO_N)));
                (
                    format!(" array of {size} N_TO_N on {other} of {other_size}"),
                    false,
                )
            }
            4 if !self.arrays.is_empty() => {
                // A child, born (a job, not an array) or not (not a job at all).
                let child = self.child_ref();
                s.depends_on.push(dep(Some(child.clone()), Some(N_TO_N)));
                (format!(" array of {size} N_TO_N on child {child}"), false)
            }
            5 => {
                let target = self.job_ref();
                s.depends_on.push(dep(Some(target), Some("ALL")));
                (format!(" array of {size} with dependency type ALL"), false)
            }
            6 => {
                s.depends_on.push(dep(None, Some(N_TO_N)));
                (format!(" array of {size} N_TO_N without a jobId"), false)
            }
            _ => {
                let size = self.rng.range(0, 1) as u32;
                s.array_size = Some(size);
                (format!(" array of {size} (too small)"), false)
            }
        }
    }
}
