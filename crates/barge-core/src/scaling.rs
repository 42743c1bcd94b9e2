//! Scaling MANAGED compute environments between minvCpus and maxvCpus from RUNNABLE demand.
//!
//! A MANAGED environment tagged `barge:provider=<name>` is backed by that instance provider of
//! the server's configuration file: its capacity is the instances the provider launches, each
//! an agent that joins the environment under the instance's id. This module is the pure half:
//! the catalog of instance types, the checks of an environment's provider and instanceTypes,
//! the two commands the scaler sends (`DrainAgent`, `SetDesiredVcpus`) and `plan`, which
//! decides from a snapshot, the instances the server knows and the time what to launch, what
//! to terminate and what desiredvCpus to report. Launching and terminating are the server's
//! effects (barge-server's `scaling` and `providers`); nothing here does IO or reads a clock.
//!
//! Rules:
//! - demand = vCPUs in use in the environment + vCPUs of the RUNNABLE jobs that would run
//!   there: each job counts once, on the first environment of its queue (in order) that is
//!   ENABLED, could run it and has room for it: a static environment's free room now, a scaled
//!   one's maxvCpus. Jobs that fit no allowed instance type count nowhere here.
//! - launches (ENABLED only): while capacity (joined agents and launched instances not yet
//!   joined, less those being terminated) is below max(demand, minvCpus, desiredvCpus),
//!   clamped to [minvCpus, maxvCpus], launch the smallest allowed type that fits the waiting
//!   jobs; the vCPUs of every instance that is or may still join never exceed maxvCpus.
//! - scale-in: an instance idle (no live attempt) for the cooldown is terminated while what
//!   stays is at least max(demand, minvCpus); none in a plan that launches for the same
//!   environment. Above maxvCpus (it was lowered) idle instances go without the cooldown.
//! - desiredvCpus: a user may raise it (AWS's rule); the raise is a floor for launches, and
//!   it falls again by the vCPUs of every instance that goes. The scaler reports
//!   max(desired − gone, what demand keeps, capacity), in [min, max].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{Changes, CoreError, Key, Reply};
use crate::limits::*;
use crate::model::*;
use crate::resources::format_vcpus;
use crate::state::State;

/// One instance type of the operator's catalog (`[[instance_types]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceType {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub gpus: u32,
    /// Per hour, in whatever currency the operator thinks in: informational, and a tie-break
    /// between types of the same size.
    #[serde(default)]
    pub price: f64,
}

impl InstanceType {
    pub fn vcpus_milli(&self) -> u64 {
        u64::from(self.vcpus) * 1000
    }

    pub fn fits(&self, res: Resources) -> bool {
        self.vcpus_milli() >= u64::from(res.vcpus_milli)
            && self.memory_mib >= res.memory_mib
            && self.gpus >= res.gpus
    }

    /// Smallest first: by vCPUs, then memory, then GPUs, then price, then name.
    pub fn smaller(a: &InstanceType, b: &InstanceType) -> std::cmp::Ordering {
        (a.vcpus, a.memory_mib, a.gpus)
            .cmp(&(b.vcpus, b.memory_mib, b.gpus))
            .then(a.price.total_cmp(&b.price))
            .then_with(|| a.name.cmp(&b.name))
    }
}

/// What the configuration file gives the core: the names of its providers and its instance
/// types. Empty without a configuration file: no environment can then name a provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalingCatalog {
    pub providers: BTreeSet<String>,
    /// Smallest first (`InstanceType::smaller`).
    pub instance_types: Vec<InstanceType>,
}

impl ScalingCatalog {
    pub fn new(providers: BTreeSet<String>, mut instance_types: Vec<InstanceType>) -> Self {
        instance_types.sort_by(InstanceType::smaller);
        ScalingCatalog {
            providers,
            instance_types,
        }
    }
}

/// The provider an environment's `barge:provider` tag names, if it has one.
pub fn provider_of(ce: &ComputeEnvironment) -> Option<&str> {
    ce.tags.get(PROVIDER_TAG).map(String::as_str)
}

/// The provider that scales `ce`: a MANAGED environment with computeResources whose tag names
/// a configured provider. None for every other environment (UNMANAGED ones never scale).
pub fn scaled_by<'a>(catalog: &ScalingCatalog, ce: &'a ComputeEnvironment) -> Option<&'a str> {
    let provider = provider_of(ce)?;
    (ce.kind == ComputeEnvironmentType::Managed
        && ce.compute_resources.is_some()
        && catalog.providers.contains(provider))
    .then_some(provider)
}

/// instanceTypes values that let Barge choose from the whole catalog.
const ANY_TYPE: [&str; 3] = ["optimal", "default_x86_64", "default_arm64"];

/// The names in computeResources.instanceTypes (none when absent or not a list of strings).
fn instance_type_names(ce: &ComputeEnvironment) -> Vec<&str> {
    ce.compute_resources
        .as_ref()
        .and_then(|r| r.other.get("instanceTypes"))
        .and_then(|v| v.as_array())
        .map(|list| list.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

/// The catalog types `ce` may launch, smallest first: all of them for `optimal` (or no
/// instanceTypes), else those named exactly or by family (`m5` names `m5.large`, `m5.xlarge`).
pub fn allowed_types<'a>(
    catalog: &'a ScalingCatalog,
    ce: &ComputeEnvironment,
) -> Vec<&'a InstanceType> {
    let names = instance_type_names(ce);
    let any = names.is_empty() || names.iter().any(|n| ANY_TYPE.contains(n));
    catalog
        .instance_types
        .iter()
        .filter(|t| {
            any || names.iter().any(|n| {
                t.name == *n
                    || t.name
                        .strip_prefix(n)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        })
        .collect()
}

/// Whether some instance type `ce` may launch could run `res`.
pub fn type_fits(state: &State, ce: &ComputeEnvironment, res: Resources) -> bool {
    allowed_types(&state.config.scaling, ce)
        .iter()
        .any(|t| t.fits(res))
}

/// Refuses an environment whose `barge:provider` tag cannot work: not MANAGED, Fargate, a
/// provider the configuration does not define, or instanceTypes naming no catalog type.
/// Called when an environment is created, tagged with a provider, or given instanceTypes, not
/// on every update: an environment whose provider left the configuration can still be
/// disabled and deleted.
pub fn check_environment(
    catalog: &ScalingCatalog,
    ce: &ComputeEnvironment,
) -> Result<(), CoreError> {
    let Some(provider) = provider_of(ce) else {
        return Ok(());
    };
    if ce.kind != ComputeEnvironmentType::Managed {
        return Err(CoreError::Invalid(format!(
            "tag {PROVIDER_TAG} applies only to MANAGED compute environments; an UNMANAGED one's capacity is the agents that join it"
        )));
    }
    let Some(res) = &ce.compute_resources else {
        return Err(CoreError::Invalid(
            "computeResources is required for a MANAGED compute environment".into(),
        ));
    };
    if res
        .kind
        .as_deref()
        .is_some_and(|k| k.starts_with("FARGATE"))
    {
        return Err(CoreError::Invalid(format!(
            "tag {PROVIDER_TAG} needs computeResources.type EC2 or SPOT: a provider launches instances, and Fargate has none"
        )));
    }
    if !catalog.providers.contains(provider) {
        let configured = if catalog.providers.is_empty() {
            "this server has none: start it with --config FILE, a file with a [providers.NAME] section".to_string()
        } else {
            format!(
                "the configured ones are {}",
                catalog
                    .providers
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(CoreError::Invalid(format!(
            "tag {PROVIDER_TAG} names provider {provider:?}, which this server's configuration does not define; {configured}"
        )));
    }
    if allowed_types(catalog, ce).is_empty() {
        let catalog_names: Vec<&str> = catalog
            .instance_types
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        return Err(CoreError::Invalid(format!(
            "computeResources.instanceTypes {:?} names no instance type of this server's catalog ({}); name catalog types or families, or optimal",
            instance_type_names(ce),
            if catalog_names.is_empty() {
                "empty: add [[instance_types]] to the configuration file".to_string()
            } else {
                catalog_names.join(", ")
            }
        )));
    }
    Ok(())
}

/// `Command::DrainAgent`.
pub(crate) fn drain_agent(
    state: &mut State,
    id: &str,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let Some(agent) = state.agents.get_mut(id) else {
        return Err(CoreError::NotFound(format!("agent {id} is not registered")));
    };
    if agent.used_vcpus_milli > 0 || agent.used_memory_mib > 0 || agent.used_gpus > 0 {
        return Err(CoreError::Conflict(format!(
            "agent {id} holds attempts; it is not idle and cannot be drained"
        )));
    }
    if !agent.draining {
        std::sync::Arc::make_mut(agent).draining = true;
        changes.dirty.push(Key::Agent(id.to_string()));
    }
    Ok(Reply::Done)
}

/// `Command::SetDesiredVcpus`: the value is clamped to the environment's current bounds (they
/// may have changed since the plan).
pub(crate) fn set_desired_vcpus(
    state: &mut State,
    name: &str,
    desired: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let Some(ce) = state.compute_environments.get_mut(name) else {
        return Err(CoreError::NotFound(format!(
            "compute environment {name} does not exist"
        )));
    };
    let Some(res) = &ce.compute_resources else {
        return Err(CoreError::Invalid(format!(
            "compute environment {name} has no computeResources"
        )));
    };
    if res
        .kind
        .as_deref()
        .is_some_and(|k| k.starts_with("FARGATE"))
    {
        return Err(CoreError::Invalid(format!(
            "compute environment {name} is Fargate and has no desiredvCpus"
        )));
    }
    let min = res.min_vcpus.unwrap_or(0).max(0);
    let max = res.max_vcpus.unwrap_or(0).max(min);
    let desired = desired.clamp(min, max);
    if res.desired_vcpus != Some(desired) {
        let ce = std::sync::Arc::make_mut(ce);
        if let Some(res) = ce.compute_resources.as_mut() {
            res.desired_vcpus = Some(desired);
        }
        changes
            .dirty
            .push(Key::ComputeEnvironment(name.to_string()));
    }
    Ok(Reply::Done)
}

/// Where an instance stands, as the server knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstancePhase {
    /// Asked for; its agent has not joined yet.
    Launching,
    /// Its agent joined.
    Running,
    /// The provider is stopping it.
    Terminating,
}

/// One instance a provider launched for an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Also its agent's id.
    pub id: String,
    pub compute_environment: String,
    pub provider: String,
    /// The whole type, so a catalog edit does not change what a running instance offers.
    pub instance_type: InstanceType,
    /// When it was asked for (or, after a restart of the server, found again).
    pub launched_at_ms: i64,
    pub phase: InstancePhase,
    /// Its agent has been seen registered.
    pub registered: bool,
    /// Since when its agent holds no attempt (None while it holds one, or before it joined).
    pub idle_since_ms: Option<i64>,
}

/// Launch failures in a row for one environment, and until when it launches nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    pub failures: u32,
    pub until_ms: i64,
}

/// The instances the server launched and has not seen go, and the environments whose launches
/// back off. Data only: the server updates it from what providers answer, `observe` from the
/// state, and `plan` reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fleet {
    pub instances: BTreeMap<String, Instance>,
    pub launch_backoff: BTreeMap<String, Backoff>,
}

impl Fleet {
    /// Brings each instance up to date with the state: joined or not, idle since when.
    pub fn observe(&mut self, state: &State, now_ms: i64) {
        for inst in self.instances.values_mut() {
            let Some(agent) = state.agents.get(&inst.id) else {
                inst.idle_since_ms = None;
                continue;
            };
            inst.registered = true;
            if inst.phase == InstancePhase::Launching {
                inst.phase = InstancePhase::Running;
            }
            let idle =
                agent.used_vcpus_milli == 0 && agent.used_memory_mib == 0 && agent.used_gpus == 0;
            inst.idle_since_ms = if idle {
                Some(inst.idle_since_ms.unwrap_or(now_ms))
            } else {
                None
            };
        }
    }

    /// Records a launch the plan asked for, before the provider is called.
    pub fn launching(&mut self, launch: &Launch, now_ms: i64) {
        self.instances.insert(
            launch.instance_id.clone(),
            Instance {
                id: launch.instance_id.clone(),
                compute_environment: launch.compute_environment.clone(),
                provider: launch.provider.clone(),
                instance_type: launch.instance_type.clone(),
                launched_at_ms: now_ms,
                phase: InstancePhase::Launching,
                registered: false,
                idle_since_ms: None,
            },
        );
    }

    /// The provider launched it: the environment's launches no longer back off.
    pub fn launch_succeeded(&mut self, id: &str) {
        if let Some(inst) = self.instances.get(id) {
            self.launch_backoff.remove(&inst.compute_environment);
        }
    }

    /// The provider could not launch it: it is terminated (whatever part of it the provider
    /// did start is cleaned up; until then it counts against maxvCpus), and the environment's
    /// launches back off.
    pub fn launch_failed(&mut self, id: &str, now_ms: i64) {
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        inst.phase = InstancePhase::Terminating;
        let b = self
            .launch_backoff
            .entry(inst.compute_environment.clone())
            .or_default();
        let delay = SCALING_LAUNCH_BACKOFF_MS_INITIAL
            .saturating_mul(1 << b.failures.min(20))
            .min(SCALING_LAUNCH_BACKOFF_MS_MAX);
        b.failures += 1;
        b.until_ms = now_ms + delay;
    }

    pub fn terminating(&mut self, id: &str) {
        if let Some(inst) = self.instances.get_mut(id) {
            inst.phase = InstancePhase::Terminating;
        }
    }

    /// A scale-in was called off (the instance took an attempt before it was drained).
    pub fn keep(&mut self, id: &str) {
        if let Some(inst) = self.instances.get_mut(id) {
            inst.phase = if inst.registered {
                InstancePhase::Running
            } else {
                InstancePhase::Launching
            };
            inst.idle_since_ms = None;
        }
    }

    /// The provider stopped it (or found it gone).
    pub fn terminated(&mut self, id: &str) {
        self.instances.remove(id);
    }
}

/// The scaler's settings from the configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalingSettings {
    /// How long an instance stays idle before it may be scaled in.
    pub cooldown_ms: i64,
    /// How long a launched instance has to join before it is given up.
    pub register_timeout_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub compute_environment: String,
    pub provider: String,
    pub instance_type: InstanceType,
    pub instance_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationCause {
    /// Idle for the cooldown, and not needed (scale-in), or above a lowered maxvCpus.
    Idle,
    /// Launched, but its agent never joined in time.
    NeverJoined,
    /// Its agent was declared lost or left: what remains of it is cleaned up.
    Lost,
    /// Its environment is gone or no longer scaled by its provider.
    Orphaned,
}

impl TerminationCause {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationCause::Idle => "idle, not needed",
            TerminationCause::NeverJoined => "its agent never joined",
            TerminationCause::Lost => "its agent was lost",
            TerminationCause::Orphaned => "its compute environment no longer uses its provider",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    pub instance_id: String,
    pub cause: TerminationCause,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredVcpus {
    pub compute_environment: String,
    pub desired_vcpus: i64,
}

/// What one plan asks the server to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalePlan {
    pub launches: Vec<Launch>,
    pub terminations: Vec<Termination>,
    /// Environments whose desiredvCpus should change, and to what.
    pub desired: Vec<DesiredVcpus>,
}

/// The RUNNABLE work one scaled environment would run.
#[derive(Clone, Debug, Default)]
struct Demand {
    queued_milli: u64,
    /// The largest of each dimension over the jobs.
    envelope: Resources,
    /// The job with the most vCPUs (then memory, then GPUs).
    largest: Option<Resources>,
    shapes: Vec<Resources>,
}

impl Demand {
    fn add(&mut self, res: Resources, count: u64) {
        self.queued_milli += u64::from(res.vcpus_milli) * count;
        self.envelope.vcpus_milli = self.envelope.vcpus_milli.max(res.vcpus_milli);
        self.envelope.memory_mib = self.envelope.memory_mib.max(res.memory_mib);
        self.envelope.gpus = self.envelope.gpus.max(res.gpus);
        let key = |r: &Resources| (r.vcpus_milli, r.memory_mib, r.gpus);
        if self.largest.is_none_or(|l| key(&res) > key(&l)) {
            self.largest = Some(res);
        }
        if !self.shapes.contains(&res) && self.shapes.len() < SCALING_SHAPES_PER_ENVIRONMENT_MAX {
            self.shapes.push(res);
        }
    }
}

fn milli(vcpus: Option<i64>) -> u64 {
    vcpus.unwrap_or(0).max(0) as u64 * 1000
}

/// The RUNNABLE demand of every scaled environment (see the module's rules).
fn demand(state: &State) -> BTreeMap<String, Demand> {
    let catalog = &state.config.scaling;
    let mut tally = Tally {
        state,
        out: BTreeMap::new(),
        static_free: BTreeMap::new(),
        hosts: BTreeMap::new(),
        types: BTreeMap::new(),
    };
    let mut queues: Vec<&JobQueue> = state.job_queues.values().map(|q| &**q).collect();
    queues.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    for queue in queues {
        let ces: Vec<&ComputeEnvironment> = state.environments_of(queue).collect();
        if !ces.iter().any(|ce| scaled_by(catalog, ce).is_some()) {
            continue;
        }
        // Disabled queues drain what they hold, as the scheduler does, so their jobs count.
        let born = state
            .jobs_in(&queue.name, JobStatus::Runnable)
            .into_iter()
            .flatten()
            .take(SCALING_DEMAND_JOBS_PER_QUEUE_MAX);
        for (_, id) in born {
            let job = &state.jobs[id];
            // A multi-node job counts once, for all its nodes (each group's needs, as many
            // times as it has nodes); its node rows are the same work.
            if job.node.is_some() {
                continue;
            }
            match &job.multinode {
                Some(m) => {
                    for group in &m.groups {
                        let nodes = u64::from(group.last.saturating_sub(group.first) + 1);
                        tally.assign(&ces, group.resources, nodes);
                    }
                }
                None => tally.assign(&ces, job.resources, 1),
            }
            if tally.full(&ces) {
                break;
            }
        }
        for (_, parent_id) in state
            .arrays_with_unborn_runnable(&queue.name)
            .into_iter()
            .flatten()
        {
            if tally.full(&ces) {
                break;
            }
            let parent = &state.jobs[parent_id];
            let size = parent.array.as_ref().map_or(0, |a| a.size);
            let born = state
                .array_index(parent_id)
                .map_or(0, |i| i.born.len() as u32);
            let unborn = u64::from(size.saturating_sub(born));
            tally.assign(&ces, parent.resources, unborn);
        }
    }
    tally.out
}

/// One plan's count of demand, with what it looks up once per environment.
struct Tally<'a> {
    state: &'a State,
    out: BTreeMap<String, Demand>,
    /// What static environments can still take now, used up as jobs are counted on them.
    static_free: BTreeMap<String, u64>,
    hosts: BTreeMap<String, Vec<&'a Agent>>,
    types: BTreeMap<String, Vec<&'a InstanceType>>,
}

impl<'a> Tally<'a> {
    /// Whether every scaled environment of a queue has all it may take.
    fn full(&self, ces: &[&ComputeEnvironment]) -> bool {
        ces.iter()
            .filter(|ce| scaled_by(&self.state.config.scaling, ce).is_some())
            .all(|ce| {
                let queued = self.out.get(&ce.name).map_or(0, |d| d.queued_milli);
                ce.state != ResourceState::Enabled
                    || self.state.ce_used_vcpus_milli(&ce.name) + queued
                        >= ce.max_vcpus_milli().unwrap_or(0)
            })
    }

    /// Counts `count` jobs needing `res` on the first environments of their queue that take
    /// them.
    fn assign(&mut self, ces: &[&'a ComputeEnvironment], res: Resources, count: u64) {
        let state = self.state;
        let catalog = &state.config.scaling;
        let need = u64::from(res.vcpus_milli);
        let mut left = count;
        for ce in ces {
            if left == 0 {
                return;
            }
            if ce.state != ResourceState::Enabled {
                continue;
            }
            let used = state.ce_used_vcpus_milli(&ce.name);
            if scaled_by(catalog, ce).is_some() {
                let max = ce.max_vcpus_milli().unwrap_or(0);
                let types = self
                    .types
                    .entry(ce.name.clone())
                    .or_insert_with(|| allowed_types(catalog, ce));
                if need > max || !types.iter().any(|t| t.fits(res)) {
                    continue;
                }
                let d = self.out.entry(ce.name.clone()).or_default();
                let room = max.saturating_sub(used + d.queued_milli);
                // A job that needs no vCPU takes no room.
                let take = room.checked_div(need).map_or(left, |n| left.min(n));
                if take > 0 {
                    d.add(res, take);
                    left -= take;
                }
            } else {
                let hosts = self
                    .hosts
                    .entry(ce.name.clone())
                    .or_insert_with(|| state.hosts_of(ce));
                if !hosts
                    .iter()
                    .any(|a| crate::resources::agent_could_fit(a, res))
                {
                    continue;
                }
                let free = self.static_free.entry(ce.name.clone()).or_insert_with(|| {
                    let on_hosts: u64 = hosts.iter().map(|a| a.free_vcpus_milli()).sum();
                    ce.max_vcpus_milli()
                        .map_or(on_hosts, |max| on_hosts.min(max.saturating_sub(used)))
                });
                let take = free.checked_div(need).map_or(left, |n| left.min(n));
                *free -= take * need;
                left -= take;
            }
        }
    }
}

/// The type to launch next: within `room_milli`, the smallest allowed type that fits every
/// waiting job's needs at once, else the largest job, else any waiting job; with no waiting
/// jobs (capacity kept for minvCpus or desiredvCpus), the smallest.
fn choose_type<'a>(
    allowed: &[&'a InstanceType],
    demand: Option<&Demand>,
    room_milli: u64,
) -> Option<&'a InstanceType> {
    let within: Vec<&InstanceType> = allowed
        .iter()
        .copied()
        .filter(|t| t.vcpus_milli() <= room_milli)
        .collect();
    let Some(d) = demand.filter(|d| d.largest.is_some()) else {
        return within.first().copied();
    };
    within
        .iter()
        .find(|t| t.fits(d.envelope))
        .or_else(|| within.iter().find(|t| d.largest.is_some_and(|l| t.fits(l))))
        .or_else(|| within.iter().find(|t| d.shapes.iter().any(|s| t.fits(*s))))
        .copied()
}

/// Decides what to launch, terminate and report. `new_instance_id` names each launch (an
/// EC2-looking `i-` and 17 hex digits in the server).
pub fn plan(
    state: &State,
    fleet: &Fleet,
    settings: &ScalingSettings,
    now_ms: i64,
    new_instance_id: &mut dyn FnMut() -> String,
) -> ScalePlan {
    let catalog = &state.config.scaling;
    let mut out = ScalePlan::default();

    // Instances gone or unwanted, whatever their environment.
    for inst in fleet.instances.values() {
        if inst.phase == InstancePhase::Terminating {
            continue;
        }
        let joined = state.agents.contains_key(&inst.id);
        let cause = if inst.registered && !joined {
            Some(TerminationCause::Lost)
        } else if !inst.registered && now_ms - inst.launched_at_ms > settings.register_timeout_ms {
            Some(TerminationCause::NeverJoined)
        } else {
            let wanted = state
                .compute_environments
                .get(&inst.compute_environment)
                .is_some_and(|ce| scaled_by(catalog, ce) == Some(inst.provider.as_str()));
            (!wanted && (!inst.registered || inst.idle_since_ms.is_some()))
                .then_some(TerminationCause::Orphaned)
        };
        if let Some(cause) = cause {
            out.terminations.push(Termination {
                instance_id: inst.id.clone(),
                cause,
            });
        }
    }

    let demand = demand(state);
    for ce in state.compute_environments.values() {
        let Some(provider) = scaled_by(catalog, ce) else {
            continue;
        };
        plan_environment(
            state,
            fleet,
            ce,
            provider,
            demand.get(&ce.name),
            settings,
            now_ms,
            new_instance_id,
            &mut out,
        );
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn plan_environment(
    state: &State,
    fleet: &Fleet,
    ce: &ComputeEnvironment,
    provider: &str,
    demand: Option<&Demand>,
    settings: &ScalingSettings,
    now_ms: i64,
    new_instance_id: &mut dyn FnMut() -> String,
    out: &mut ScalePlan,
) {
    let Some(res) = &ce.compute_resources else {
        return;
    };
    let min = milli(res.min_vcpus);
    let max = milli(res.max_vcpus).max(min);
    let desired = milli(res.desired_vcpus);
    let used = state.ce_used_vcpus_milli(&ce.name);
    let enabled = ce.state == ResourceState::Enabled;

    let leaving: BTreeSet<&str> = out
        .terminations
        .iter()
        .map(|t| t.instance_id.as_str())
        .chain(
            fleet
                .instances
                .values()
                .filter(|i| i.phase == InstancePhase::Terminating)
                .map(|i| i.id.as_str()),
        )
        .collect();
    let mine: Vec<&Instance> = fleet
        .instances
        .values()
        .filter(|i| i.compute_environment == ce.name)
        .collect();
    // Everything that runs or may still join: every agent of the environment (ours, and any
    // an operator started by hand) and our instances not joined yet, leaving or not. This is
    // what maxvCpus bounds.
    let joined_milli: u64 = state
        .agents
        .values()
        .filter(|a| a.scope == AgentScope::ComputeEnvironment(ce.name.clone()))
        .map(|a| a.vcpus_milli)
        .sum();
    let present = |i: &Instance| {
        if !i.registered || state.agents.contains_key(&i.id) {
            i.instance_type.vcpus_milli()
        } else {
            0
        }
    };
    let mut bound = joined_milli
        + mine
            .iter()
            .filter(|i| !i.registered)
            .map(|i| i.instance_type.vcpus_milli())
            .sum::<u64>();
    // What counts towards the target: the same, less what is leaving.
    let mut capacity = bound.saturating_sub(
        mine.iter()
            .filter(|i| leaving.contains(i.id.as_str()))
            .map(|i| present(i))
            .sum::<u64>(),
    );

    let want = if enabled {
        used + demand.map_or(0, |d| d.queued_milli)
    } else {
        used
    };
    let keep = want.max(min).min(max);
    let mut launched = false;
    let backing_off = fleet
        .launch_backoff
        .get(&ce.name)
        .is_some_and(|b| b.until_ms > now_ms);
    if enabled && !backing_off {
        let target = want.max(min).max(desired).min(max);
        let allowed = allowed_types(&state.config.scaling, ce);
        let mut n = 0;
        while capacity < target && n < SCALING_LAUNCHES_PER_PLAN_MAX {
            let Some(t) = choose_type(&allowed, demand, max.saturating_sub(bound)) else {
                break;
            };
            out.launches.push(Launch {
                compute_environment: ce.name.clone(),
                provider: provider.to_string(),
                instance_type: t.clone(),
                instance_id: new_instance_id(),
            });
            capacity += t.vcpus_milli();
            bound += t.vcpus_milli();
            launched = true;
            n += 1;
        }
    }

    if !launched {
        let mut idle: Vec<&Instance> = mine
            .iter()
            .copied()
            .filter(|i| {
                i.phase == InstancePhase::Running
                    && !leaving.contains(i.id.as_str())
                    && state.agents.contains_key(&i.id)
            })
            .filter(|i| i.idle_since_ms.is_some())
            .collect();
        idle.sort_by(|a, b| {
            a.idle_since_ms
                .cmp(&b.idle_since_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        for inst in idle {
            let v = inst.instance_type.vcpus_milli();
            let cooled = inst
                .idle_since_ms
                .is_some_and(|t| now_ms - t >= settings.cooldown_ms);
            let over_max = bound > max;
            if over_max || (cooled && capacity >= v + keep) {
                out.terminations.push(Termination {
                    instance_id: inst.id.clone(),
                    cause: TerminationCause::Idle,
                });
                capacity = capacity.saturating_sub(v);
                bound = bound.saturating_sub(v);
            }
        }
    }

    if res
        .kind
        .as_deref()
        .is_some_and(|k| k.starts_with("FARGATE"))
    {
        return;
    }
    // Every instance that goes takes its vCPUs off desiredvCpus (a raise is a floor only
    // until the capacity it asked for has come and gone).
    let gone: u64 = out
        .terminations
        .iter()
        .filter_map(|t| fleet.instances.get(&t.instance_id))
        .filter(|i| i.compute_environment == ce.name)
        .map(|i| i.instance_type.vcpus_milli())
        .sum();
    let reported = if enabled {
        desired.saturating_sub(gone).max(keep).max(capacity)
    } else {
        keep.max(capacity)
    }
    .clamp(min, max);
    let reported = reported.div_ceil(1000) as i64;
    if res.desired_vcpus != Some(reported) {
        out.desired.push(DesiredVcpus {
            compute_environment: ce.name.clone(),
            desired_vcpus: reported,
        });
    }
}

/// Why a job waits on a scaled environment that has room under maxvCpus but no host with
/// room now: it is scaling up. For `reason.rs`.
pub fn describe_scaling(state: &State, ce: &ComputeEnvironment) -> String {
    let joined: u64 = state.hosts_of(ce).iter().map(|a| a.vcpus_milli).sum();
    let desired = ce
        .compute_resources
        .as_ref()
        .and_then(|r| r.desired_vcpus)
        .unwrap_or(0);
    format!(
        "waiting for compute environment {} to scale up (desiredvCpus {desired}, {} vCPU of instances joined; provider {})",
        ce.name,
        format_vcpus(joined),
        provider_of(ce).unwrap_or("?")
    )
}
