//! Multi-node parallel (MNP) jobs: the shapes (nodeProperties, nodeOverrides), node ranges and
//! how a node finds its container, gang planning for the scheduler, and why a gang waits.
//! The lifecycle in the applier (placing a gang, launching, ending it) is `apply::multinode`.
//!
//! A multi-node job is one schedulable unit, the *parent*. When its gang is placed, every node
//! becomes a job row of its own, `<parent id>#<index>`, with its own attempt and log stream.
//! Decisions, and why:
//! - **Node ranges nest or stay apart.** AWS lets a narrower range override a wider one
//!   (`0:10` and `4:5`) and does not say what partial overlaps (`0:5` and `3:8`) mean, so
//!   Barge refuses those, and two ranges naming the same nodes, rather than guess. A node runs
//!   the container of the narrowest range that holds it.
//! - **Nodes of one job may share an agent.** AWS runs one node per instance; Barge books each
//!   node's own vCPUs and memory, so several nodes fit one big host (and `barge up`'s single
//!   local agent can run a multi-node job at all). Nodes are packed largest first, each on
//!   the agent it fits most tightly, all within one compute environment.
//! - **All or none.** A gang is placed only when every node fits at once, and the applier
//!   re-checks the whole gang when it commits. A new gang is never placed while a node of the
//!   previous one is still live.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::limits::{MULTINODE_NODES_MAX, MULTINODE_NODE_OVERRIDES_MAX, MULTINODE_NODE_RANGES_MAX};
use crate::model::*;
use crate::resources::format_vcpus;
use crate::state::State;

/// AWS's NodeProperties (job definitions). Numbers are kept as given and checked by
/// `check_node_properties`, so a bad value is answered with a message naming it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeProperties {
    pub num_nodes: i64,
    pub main_node: i64,
    pub node_range_properties: Vec<NodeRangeProperty>,
}

/// AWS's NodeRangeProperty. Members Barge does not act on (instanceTypes) are kept in `other`
/// and echoed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRangeProperty {
    pub target_nodes: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerProperties>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// AWS's NodeOverrides (SubmitJob).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_nodes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_property_overrides: Option<Vec<NodePropertyOverride>>,
}

/// AWS's NodePropertyOverride. `other` holds instanceTypes and the members Barge refuses
/// (ecsPropertiesOverride, eksPropertiesOverride, consumableResourcePropertiesOverride).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePropertyOverride {
    pub target_nodes: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_overrides: Option<ContainerOverrides>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// What a multi-node parent job keeps: its size, its main node and its node groups with the
/// submit-time overrides applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiNodeJob {
    pub num_nodes: u32,
    pub main_node: u32,
    /// Consecutive, in node order, covering 0..num_nodes: each node runs the group holding
    /// its index.
    pub groups: Vec<NodeGroup>,
}

/// Nodes `first..=last`, which run the same effective container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeGroup {
    pub first: u32,
    pub last: u32,
    pub container: ContainerProperties,
    pub resources: Resources,
}

impl MultiNodeJob {
    pub fn group_of(&self, index: u32) -> &NodeGroup {
        self.groups
            .iter()
            .find(|g| g.first <= index && index <= g.last)
            .expect("the groups cover every node")
    }

    pub fn resources_of(&self, index: u32) -> Resources {
        self.group_of(index).resources
    }

    /// vCPUs (thousandths) and MiB the whole gang books.
    pub fn total(&self) -> (u64, u64) {
        self.groups.iter().fold((0, 0), |(v, m), g| {
            let n = u64::from(g.last - g.first + 1);
            (
                v + n * u64::from(g.resources.vcpus_milli),
                m + n * g.resources.memory_mib,
            )
        })
    }
}

/// What a node job keeps about its place in the gang.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub parent_id: String,
    pub index: u32,
    pub is_main: bool,
    /// Whether the node's current attempt has been handed to its agent. Non-main nodes hold
    /// their placement from the gang's start but are launched once the main node runs.
    pub launched: bool,
}

/// A gang placement proposed by the scheduler: every node of one job, each on an agent of
/// one compute environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangPlacement {
    pub job_id: String,
    pub compute_environment: String,
    /// One entry per node, in node order.
    pub nodes: Vec<NodePlacement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlacement {
    pub index: u32,
    pub agent_id: String,
    pub attempt_id: String,
}

/// The id of node `index` of job `parent_id` (AWS: `<id>#<n>`).
pub fn node_id(parent_id: &str, index: u32) -> String {
    format!("{parent_id}#{index}")
}

/// Reads a stored definition's nodeProperties. Earlier versions of Barge stored whatever JSON
/// was registered; one that does not read as NodeProperties is dropped rather than making the
/// whole store unreadable (such a definition then answers "no nodeProperties" at submit).
pub fn lenient_node_properties<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<NodeProperties>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

/// A parsed `targetNodes`: `first..=last`; `last` None is an open end (`n:` or `:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetNodes {
    pub first: u32,
    pub last: Option<u32>,
}

impl TargetNodes {
    /// The nodes it names in a job of `num_nodes` nodes, or why it names none that exist.
    pub fn resolve(self, num_nodes: u32) -> Result<(u32, u32), String> {
        if self.first >= num_nodes {
            return Err(format!(
                "starts at node {} but the job has {num_nodes} node(s), 0 to {}",
                self.first,
                num_nodes - 1
            ));
        }
        match self.last {
            None => Ok((self.first, num_nodes - 1)),
            Some(last) if last >= num_nodes => Err(format!(
                "reaches node {last} but the job has {num_nodes} node(s), 0 to {}",
                num_nodes - 1
            )),
            Some(last) => Ok((self.first, last)),
        }
    }
}

/// Parses AWS's node range forms: `4`, `0:3`, `:3` (from 0), `2:` (to the last node), `:`.
pub fn parse_target_nodes(s: &str) -> Result<TargetNodes, String> {
    let index = |part: &str| -> Result<u32, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{s:?} is not a node range; use forms like \"0:3\", \":3\", \"2:\" or \"4\""
            ));
        }
        match part.parse::<u32>() {
            Ok(n) if n < MULTINODE_NODES_MAX => Ok(n),
            _ => Err(format!(
                "{s:?} names node {part}, but a job has at most {MULTINODE_NODES_MAX} nodes (0 to {})",
                MULTINODE_NODES_MAX - 1
            )),
        }
    };
    match s.split_once(':') {
        None => {
            let n = index(s)?;
            Ok(TargetNodes {
                first: n,
                last: Some(n),
            })
        }
        Some((a, b)) => {
            let first = if a.is_empty() { 0 } else { index(a)? };
            let last = if b.is_empty() { None } else { Some(index(b)?) };
            if last.is_some_and(|l| l < first) {
                return Err(format!("{s:?} ends before it starts"));
            }
            Ok(TargetNodes { first, last })
        }
    }
}

fn check_count(field: &str, v: i64) -> Result<u32, String> {
    if v < 1 || v > i64::from(MULTINODE_NODES_MAX) {
        return Err(format!(
            "{field} must be between 1 and {MULTINODE_NODES_MAX}, got {v}"
        ));
    }
    Ok(v as u32)
}

/// The checks that need nothing but the definition's nodeProperties: numNodes, mainNode, the
/// number of ranges, each targetNodes, that ranges nest or stay apart, that together they
/// cover every node, and that each range has a container with an image. Errors name the
/// member (`nodeProperties.nodeRangeProperties[1].targetNodes`).
pub fn check_node_properties(np: &NodeProperties) -> Result<(), String> {
    let n = check_count("nodeProperties.numNodes", np.num_nodes)?;
    if np.main_node < 0 || np.main_node >= i64::from(n) {
        return Err(format!(
            "nodeProperties.mainNode must be a node index from 0 to {} (less than nodeProperties.numNodes), got {}",
            n - 1,
            np.main_node
        ));
    }
    let ranges = &np.node_range_properties;
    if ranges.is_empty() || ranges.len() > MULTINODE_NODE_RANGES_MAX {
        return Err(format!(
            "nodeProperties.nodeRangeProperties must list 1 to {MULTINODE_NODE_RANGES_MAX} node ranges, got {}",
            ranges.len()
        ));
    }
    let mut resolved = Vec::with_capacity(ranges.len());
    for (i, r) in ranges.iter().enumerate() {
        let field = format!("nodeProperties.nodeRangeProperties[{i}]");
        let span = parse_target_nodes(&r.target_nodes)
            .and_then(|t| t.resolve(n))
            .map_err(|e| format!("{field}.targetNodes {e}"))?;
        let Some(c) = &r.container else {
            return Err(format!(
                "{field}.container is required: Barge runs each node range from its container (ecsProperties and eksProperties are not supported)"
            ));
        };
        if c.image.as_deref().is_none_or(str::is_empty) {
            return Err(format!("Missing required member {field}.container.image"));
        }
        for (j, earlier) in resolved.iter().enumerate() {
            check_nesting(ranges, (i, span), (j, *earlier))?;
        }
        resolved.push(span);
    }
    if let Some(gap) = (0..n).find(|k| !resolved.iter().any(|(a, b)| a <= k && k <= b)) {
        return Err(format!(
            "nodeProperties.nodeRangeProperties leave node {gap} without a range; together the ranges must cover nodes 0 to {}",
            n - 1
        ));
    }
    Ok(())
}

/// Two ranges must nest (one inside the other, the narrower wins) or not meet at all.
fn check_nesting(
    ranges: &[NodeRangeProperty],
    (i, (a, b)): (usize, (u32, u32)),
    (j, (c, d)): (usize, (u32, u32)),
) -> Result<(), String> {
    let here = format!(
        "nodeProperties.nodeRangeProperties[{i}].targetNodes {:?}",
        ranges[i].target_nodes
    );
    let there = format!(
        "nodeProperties.nodeRangeProperties[{j}].targetNodes {:?}",
        ranges[j].target_nodes
    );
    if (a, b) == (c, d) {
        return Err(format!(
            "{here} names the same nodes as {there}; give each node range distinct nodes"
        ));
    }
    let disjoint = b < c || d < a;
    let nested = (c <= a && b <= d) || (a <= c && d <= b);
    if !disjoint && !nested {
        return Err(format!(
            "{here} overlaps {there} without one holding the other; node ranges must nest (e.g. 0:10 and 4:5, where 4:5 wins) or not overlap"
        ));
    }
    Ok(())
}

/// The index, among `spans`, of the narrowest one holding `node` (ties: the later one).
fn narrowest(spans: &[(u32, u32)], node: u32) -> Option<usize> {
    spans
        .iter()
        .enumerate()
        .filter(|(_, (a, b))| *a <= node && node <= *b)
        .min_by_key(|(i, (a, b))| (b - a, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// One run of consecutive nodes that share a definition range and the same overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub first: u32,
    pub last: u32,
    /// Index into the definition's nodeRangeProperties.
    pub range: usize,
    /// Indexes into nodePropertyOverrides, applied in this order (widest first, so a narrower
    /// override wins, as a narrower range does).
    pub overrides: Vec<usize>,
}

/// The effective size and main node of a submission, and the runs of nodes that share a
/// container, after AWS's nodeOverrides rules:
/// - `numNodes` needs a definition range with an open end (`n:` or `:`), whose start, like
///   mainNode, must lie below the new count; a closed range may not reach past the last node.
/// - each override's targetNodes must name nodes of the job.
pub fn segments(
    np: &NodeProperties,
    overrides: Option<&NodeOverrides>,
) -> Result<(u32, u32, Vec<Segment>), String> {
    check_node_properties(np)?;
    let def_n = np.num_nodes as u32;
    let main = np.main_node as u32;
    let targets: Vec<TargetNodes> = np
        .node_range_properties
        .iter()
        .map(|r| parse_target_nodes(&r.target_nodes).expect("checked above"))
        .collect();
    let n = match overrides.and_then(|o| o.num_nodes) {
        None => def_n,
        Some(v) => {
            let n = check_count("nodeOverrides.numNodes", v)?;
            if targets.iter().all(|t| t.last.is_some()) {
                return Err("nodeOverrides.numNodes needs a node range with an open end (\"n:\" or \":\") in the job definition, and none of its nodeRangeProperties has one".into());
            }
            if main >= n {
                return Err(format!(
                    "nodeOverrides.numNodes {n} leaves no node {main}, the definition's mainNode; give at least {}",
                    main + 1
                ));
            }
            for (i, t) in targets.iter().enumerate() {
                t.resolve(n).map_err(|e| {
                    format!(
                        "nodeOverrides.numNodes {n} does not fit the definition: nodeProperties.nodeRangeProperties[{i}].targetNodes {:?} {e}",
                        np.node_range_properties[i].target_nodes
                    )
                })?;
            }
            n
        }
    };
    let spans: Vec<(u32, u32)> = targets
        .iter()
        .map(|t| t.resolve(n).expect("checked above"))
        .collect();
    let list = overrides
        .and_then(|o| o.node_property_overrides.as_deref())
        .unwrap_or_default();
    if list.len() > MULTINODE_NODE_OVERRIDES_MAX {
        return Err(format!(
            "nodeOverrides.nodePropertyOverrides has {} entries; at most {MULTINODE_NODE_OVERRIDES_MAX} are allowed",
            list.len()
        ));
    }
    let mut override_spans = Vec::with_capacity(list.len());
    for (i, o) in list.iter().enumerate() {
        let span = parse_target_nodes(&o.target_nodes)
            .and_then(|t| t.resolve(n))
            .map_err(|e| format!("nodeOverrides.nodePropertyOverrides[{i}].targetNodes {e}"))?;
        override_spans.push(span);
    }
    // Every node where some range or override starts or ends past its predecessor starts a
    // new segment; between two such boundaries all nodes are alike.
    let mut cuts: Vec<u32> = vec![0];
    for (a, b) in spans.iter().chain(override_spans.iter()) {
        cuts.push(*a);
        if b + 1 < n {
            cuts.push(b + 1);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<Segment> = Vec::with_capacity(cuts.len());
    for (k, first) in cuts.iter().enumerate() {
        let last = cuts.get(k + 1).map_or(n - 1, |next| next - 1);
        let range = narrowest(&spans, *first).expect("the ranges cover every node");
        let mut ov: Vec<usize> = (0..override_spans.len())
            .filter(|i| override_spans[*i].0 <= *first && *first <= override_spans[*i].1)
            .collect();
        ov.sort_by_key(|i| {
            (
                std::cmp::Reverse(override_spans[*i].1 - override_spans[*i].0),
                *i,
            )
        });
        out.push(Segment {
            first: *first,
            last,
            range,
            overrides: ov,
        });
    }
    Ok((n, main, out))
}

/// A job's gang needs, in node order: each node's resources.
fn node_needs(m: &MultiNodeJob) -> Vec<(u32, Resources)> {
    (0..m.num_nodes).map(|i| (i, m.resources_of(i))).collect()
}

/// Packs nodes onto agents (given their free vCPUs and memory): largest node first, each on
/// the agent where it fits most tightly. Returns the agent index chosen for each node, in
/// node order, or None when some node finds no room.
pub fn pack(needs: &[(u32, Resources)], free: &[(u64, u64)]) -> Option<Vec<usize>> {
    let mut free = free.to_vec();
    let mut order: Vec<usize> = (0..needs.len()).collect();
    order.sort_by_key(|k| {
        let r = needs[*k].1;
        (
            std::cmp::Reverse(r.vcpus_milli),
            std::cmp::Reverse(r.memory_mib),
            *k,
        )
    });
    let mut chosen = vec![usize::MAX; needs.len()];
    for k in order {
        let r = needs[k].1;
        if r.gpus > 0 {
            return None;
        }
        let (v, m) = (u64::from(r.vcpus_milli), r.memory_mib);
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, (fv, fm))| *fv >= v && *fm >= m)
            .min_by_key(|(i, (fv, _))| (*fv, *i))
            .map(|(i, _)| i)?;
        free[best].0 -= v;
        free[best].1 -= m;
        chosen[k] = best;
    }
    Some(chosen)
}

/// Whether any node of the job still has a live attempt (its last gang is not down yet).
pub fn has_live_node(state: &State, parent_id: &str, m: &MultiNodeJob) -> bool {
    (0..m.num_nodes).any(|i| {
        state
            .job(&node_id(parent_id, i))
            .is_some_and(|n| n.current.is_some())
    })
}

/// How a gang stands against one compute environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GangObstacle {
    /// Never: the whole gang asks for more vCPUs than maxvCpus.
    MaxVcpus {
        ce: String,
        max_milli: u64,
    },
    /// Never: the hosts of the environment, even idle, cannot hold every node.
    HostsTooSmall {
        ce: String,
        hosts: usize,
    },
    Disabled {
        ce: String,
    },
    NoAgents {
        ce: String,
    },
    /// Not all nodes fit now; `fit` of them would.
    Busy {
        ce: String,
        fit: u32,
    },
    /// Room for all: the next pass places the gang.
    None {
        ce: String,
    },
}

impl GangObstacle {
    fn never(&self) -> bool {
        matches!(
            self,
            GangObstacle::MaxVcpus { .. } | GangObstacle::HostsTooSmall { .. }
        )
    }
}

/// How many nodes (largest first) would fit on agents with this much free.
fn nodes_that_fit(needs: &[(u32, Resources)], free: &[(u64, u64)]) -> u32 {
    let mut sorted = needs.to_vec();
    sorted.sort_by_key(|(i, r)| {
        (
            std::cmp::Reverse(r.vcpus_milli),
            std::cmp::Reverse(r.memory_mib),
            *i,
        )
    });
    // `pack` places nodes in this same order, so if a prefix fits every shorter one does:
    // search for the longest (a reason is derived on every read; 1,000 nodes stay cheap).
    let (mut lo, mut hi) = (0, sorted.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if pack(&sorted[..mid], free).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo as u32
}

/// One obstacle per compute environment of the queue, in the queue's order.
pub fn gang_obstacles(state: &State, queue: &JobQueue, m: &MultiNodeJob) -> Vec<GangObstacle> {
    let needs = node_needs(m);
    let (total_v, _) = m.total();
    let mut out = Vec::new();
    for entry in &queue.compute_environment_order {
        let Some(ce) = state.compute_environments.get(&entry.compute_environment) else {
            continue;
        };
        let name = ce.name.clone();
        let hosts: Vec<&Agent> = state
            .agents
            .values()
            .map(|a| &**a)
            .filter(|a| a.serves(ce))
            .collect();
        let idle: Vec<(u64, u64)> = hosts
            .iter()
            .map(|a| (a.vcpus_milli, a.memory_mib))
            .collect();
        let free: Vec<(u64, u64)> = hosts
            .iter()
            .map(|a| (a.free_vcpus_milli(), a.free_memory_mib()))
            .collect();
        let max = ce.max_vcpus_milli();
        let o = if !hosts.is_empty() && pack(&needs, &idle).is_none() {
            GangObstacle::HostsTooSmall {
                ce: name,
                hosts: hosts.len(),
            }
        } else if max.is_some_and(|max| total_v > max) {
            GangObstacle::MaxVcpus {
                ce: name,
                max_milli: max.unwrap_or(0),
            }
        } else if ce.state != ResourceState::Enabled {
            GangObstacle::Disabled { ce: name }
        } else if hosts.is_empty() {
            GangObstacle::NoAgents { ce: name }
        } else {
            let used = state.ce_used_vcpus_milli(&ce.name);
            let ce_room = max.is_none_or(|max| used + total_v <= max);
            if ce_room && pack(&needs, &free).is_some() {
                GangObstacle::None { ce: name }
            } else {
                let fit = if ce_room {
                    nodes_that_fit(&needs, &free)
                } else {
                    // Bounded by maxvCpus: count the largest nodes that still fit under it.
                    let room = max.unwrap_or(0).saturating_sub(used);
                    let mut sorted: Vec<u64> = needs
                        .iter()
                        .map(|(_, r)| u64::from(r.vcpus_milli))
                        .collect();
                    sorted.sort_unstable();
                    let mut sum = 0;
                    let by_max = sorted
                        .iter()
                        .take_while(|v| {
                            sum += **v;
                            sum <= room
                        })
                        .count() as u32;
                    by_max.min(nodes_that_fit(&needs, &free))
                };
                GangObstacle::Busy { ce: name, fit }
            }
        };
        out.push(o);
    }
    out
}

/// Whether some environment of the queue, ENABLED or not, could hold the whole gang were it
/// idle: its maxvCpus bound admits the sum and its agents could hold every node. (As for a
/// single job, one that cannot must not use up the queue's misses in a scheduling pass.)
pub fn gang_could_ever_fit(state: &State, queue: &JobQueue, m: &MultiNodeJob) -> bool {
    let needs = node_needs(m);
    let (total_v, _) = m.total();
    queue.compute_environment_order.iter().any(|entry| {
        state
            .compute_environments
            .get(&entry.compute_environment)
            .is_some_and(|ce| {
                let idle: Vec<(u64, u64)> = state
                    .agents
                    .values()
                    .filter(|a| a.serves(ce))
                    .map(|a| (a.vcpus_milli, a.memory_mib))
                    .collect();
                ce.max_vcpus_milli().is_none_or(|max| total_v <= max)
                    && pack(&needs, &idle).is_some()
            })
    })
}

/// The scheduler's gang step: the first ENABLED compute environment of the queue (in order)
/// whose maxvCpus bound and agents hold every node now. On success the working copies of the
/// agents and environment usage are booked and the placement returned.
pub fn plan_gang(
    state: &State,
    queue: &JobQueue,
    job: &Job,
    agents: &mut [Agent],
    ce_used: &mut BTreeMap<String, u64>,
    new_attempt_id: &mut dyn FnMut() -> String,
) -> Option<GangPlacement> {
    let m = job.multinode.as_ref()?;
    if has_live_node(state, &job.id, m) {
        return None;
    }
    let needs = node_needs(m);
    let (total_v, _) = m.total();
    for entry in &queue.compute_environment_order {
        let Some(ce) = state.compute_environments.get(&entry.compute_environment) else {
            continue;
        };
        if ce.state != ResourceState::Enabled {
            continue;
        }
        let used = ce_used.get(&ce.name).copied().unwrap_or(0);
        if ce.max_vcpus_milli().is_some_and(|max| used + total_v > max) {
            continue;
        }
        let serving: Vec<usize> = (0..agents.len())
            .filter(|i| agents[*i].serves(ce))
            .collect();
        let free: Vec<(u64, u64)> = serving
            .iter()
            .map(|i| (agents[*i].free_vcpus_milli(), agents[*i].free_memory_mib()))
            .collect();
        let Some(chosen) = pack(&needs, &free) else {
            continue;
        };
        let mut nodes = Vec::with_capacity(needs.len());
        for ((index, r), pick) in needs.iter().zip(chosen) {
            let agent = &mut agents[serving[pick]];
            agent.used_vcpus_milli += u64::from(r.vcpus_milli);
            agent.used_memory_mib += r.memory_mib;
            nodes.push(NodePlacement {
                index: *index,
                agent_id: agent.id.clone(),
                attempt_id: new_attempt_id(),
            });
        }
        *ce_used.entry(ce.name.clone()).or_insert(0) += total_v;
        return Some(GangPlacement {
            job_id: job.id.clone(),
            compute_environment: ce.name.clone(),
            nodes,
        });
    }
    None
}

fn describe_gang(m: &MultiNodeJob) -> String {
    let (v, mem) = m.total();
    format!(
        "all {} nodes ({} vCPU and {mem} MiB of memory in all)",
        m.num_nodes,
        format_vcpus(v)
    )
}

/// The waiting reason of a RUNNABLE multi-node parent or node.
pub fn why_waiting(state: &State, job: &Job) -> String {
    if let Some(n) = &job.node {
        return format!(
            "Waiting for the next attempt of multi-node parallel job {}, which runs its nodes together",
            n.parent_id
        );
    }
    let Some(m) = &job.multinode else {
        return "Waiting".into();
    };
    let Some(queue) = state.job_queues.get(&job.queue) else {
        return format!("Job queue {} no longer exists", job.queue);
    };
    if has_live_node(state, &job.id, m) {
        return format!(
            "Waiting for the nodes of attempt {} to stop before the whole gang starts again",
            job.attempts.len()
        );
    }
    let found = gang_obstacles(state, queue, m);
    let need = describe_gang(m);
    if let Some(GangObstacle::None { ce }) = found
        .iter()
        .find(|o| matches!(o, GangObstacle::None { .. }))
    {
        return format!(
            "Waiting for the scheduler to place {need} together on compute environment {ce}"
        );
    }
    if !found.is_empty() && found.iter().all(GangObstacle::never) {
        let parts: Vec<String> = found
            .iter()
            .filter_map(|o| match o {
                GangObstacle::MaxVcpus { ce, max_milli } => Some(format!(
                    "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE - compute environment {ce} allows at most {} vCPU (maxvCpus) and the multi-node job needs {need}",
                    format_vcpus(*max_milli)
                )),
                GangObstacle::HostsTooSmall { ce, hosts } => Some(format!(
                    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - the multi-node job needs {need} placed at once, and the {hosts} host(s) of compute environment {ce} cannot hold them even when idle"
                )),
                _ => None,
            })
            .collect();
        return parts.join("; ");
    }
    let busy: Vec<String> = found
        .iter()
        .filter_map(|o| match o {
            GangObstacle::Busy { ce, fit } => Some(format!(
                "{ce} (room for {fit} of {} nodes now)",
                m.num_nodes
            )),
            _ => None,
        })
        .collect();
    if !busy.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - waiting for room for {need} at once on compute environment {}",
            busy.join(", ")
        );
    }
    let no_agents: Vec<String> = found
        .iter()
        .filter_map(|o| match o {
            GangObstacle::NoAgents { ce } => Some(ce.clone()),
            _ => None,
        })
        .collect();
    if !no_agents.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - no agent has joined compute environment {}; start `barge agent` for it",
            no_agents.join(", ")
        );
    }
    let disabled: Vec<String> = found
        .iter()
        .filter_map(|o| match o {
            GangObstacle::Disabled { ce } => Some(ce.clone()),
            _ => None,
        })
        .collect();
    format!(
        "Waiting: compute environment {} of job queue {} is DISABLED; enable it to run this job",
        disabled.join(", "),
        queue.name
    )
}

/// `barge why`'s advice for a RUNNABLE multi-node parent, one line per compute environment.
pub fn unblock(state: &State, job: &Job) -> Vec<String> {
    let (Some(m), Some(queue)) = (&job.multinode, state.job_queues.get(&job.queue)) else {
        return Vec::new();
    };
    if has_live_node(state, &job.id, m) {
        return vec![format!(
            "wait for the nodes of attempt {} to stop; the next attempt places all nodes together",
            job.attempts.len()
        )];
    }
    let (total_v, _) = m.total();
    gang_obstacles(state, queue, m)
        .into_iter()
        .map(|o| match o {
            GangObstacle::MaxVcpus { ce, .. } => format!(
                "raise maxvCpus of compute environment {ce} to at least {} (the sum over all nodes), or ask for fewer nodes or vCPUs",
                total_v.div_ceil(1000)
            ),
            GangObstacle::HostsTooSmall { ce, .. } => format!(
                "add hosts to compute environment {ce} or bigger ones (barge up --agent-vcpus / --agent-memory-mib), or ask for fewer nodes (nodeOverrides.numNodes) or smaller ones"
            ),
            GangObstacle::Disabled { ce } => format!(
                "enable compute environment {ce} (aws batch update-compute-environment --compute-environment {ce} --state ENABLED)"
            ),
            GangObstacle::NoAgents { ce } => format!("start an agent for compute environment {ce}"),
            GangObstacle::Busy { ce, fit } => format!(
                "wait for jobs on compute environment {ce} to finish: {fit} of {} nodes fit now, and a multi-node job starts only when all do",
                m.num_nodes
            ),
            GangObstacle::None { ce } => format!(
                "nothing: compute environment {ce} has room for every node, the next scheduling pass places them"
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(t: &str) -> NodeRangeProperty {
        NodeRangeProperty {
            target_nodes: t.into(),
            container: Some(ContainerProperties {
                image: Some("busybox".into()),
                ..Default::default()
            }),
            other: Map::new(),
        }
    }

    fn props(n: i64, main: i64, ranges: &[&str]) -> NodeProperties {
        NodeProperties {
            num_nodes: n,
            main_node: main,
            node_range_properties: ranges.iter().map(|t| range(t)).collect(),
        }
    }

    #[test]
    fn target_nodes_forms() {
        let t = |s| parse_target_nodes(s).map(|t| t.resolve(6));
        assert_eq!(t("0:3"), Ok(Ok((0, 3))));
        assert_eq!(t(":3"), Ok(Ok((0, 3))));
        assert_eq!(t("2:"), Ok(Ok((2, 5))));
        assert_eq!(t(":"), Ok(Ok((0, 5))));
        assert_eq!(t("4"), Ok(Ok((4, 4))));
        assert!(t("0:9").unwrap().is_err());
        assert!(t("6:").unwrap().is_err());
        for bad in [
            "",
            "a",
            "1:a",
            "3:1",
            " 1",
            "1:2:3",
            "-1",
            "1000",
            "99999999999",
        ] {
            assert!(parse_target_nodes(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn ranges_must_cover_and_nest() {
        assert!(check_node_properties(&props(3, 0, &["0", "1:"])).is_ok());
        assert!(check_node_properties(&props(11, 0, &["0:10", "4:5"])).is_ok());
        let gap = check_node_properties(&props(4, 0, &["0", "2:"])).unwrap_err();
        assert!(gap.contains("node 1"), "{gap}");
        let overlap = check_node_properties(&props(9, 0, &["0:5", "3:8"])).unwrap_err();
        assert!(
            overlap.starts_with("nodeProperties.nodeRangeProperties[1].targetNodes"),
            "{overlap}"
        );
        let same = check_node_properties(&props(3, 0, &["0:2", ":"])).unwrap_err();
        assert!(same.contains("same nodes"), "{same}");
        let main = check_node_properties(&props(3, 3, &[":"])).unwrap_err();
        assert!(main.starts_with("nodeProperties.mainNode"), "{main}");
        assert!(check_node_properties(&props(0, 0, &[":"]))
            .unwrap_err()
            .starts_with("nodeProperties.numNodes"));
        assert!(check_node_properties(&props(1001, 0, &[":"])).is_err());
        let six = props(6, 0, &["0", "1", "2", "3", "4", "5"]);
        assert!(check_node_properties(&six)
            .unwrap_err()
            .contains("1 to 5 node ranges"));
    }

    #[test]
    fn the_narrowest_range_wins_and_overrides_split_groups() {
        let np = props(6, 0, &["0:5", "4:5"]);
        let (n, main, segs) = segments(&np, None).unwrap();
        assert_eq!((n, main), (6, 0));
        let runs: Vec<(u32, u32, usize)> =
            segs.iter().map(|s| (s.first, s.last, s.range)).collect();
        assert_eq!(runs, vec![(0, 3, 0), (4, 5, 1)]);
        let o = NodeOverrides {
            num_nodes: None,
            node_property_overrides: Some(vec![NodePropertyOverride {
                target_nodes: "3:4".into(),
                container_overrides: None,
                other: Map::new(),
            }]),
        };
        let (_, _, segs) = segments(&np, Some(&o)).unwrap();
        let runs: Vec<(u32, u32, usize, Vec<usize>)> = segs
            .iter()
            .map(|s| (s.first, s.last, s.range, s.overrides.clone()))
            .collect();
        assert_eq!(
            runs,
            vec![
                (0, 2, 0, vec![]),
                (3, 3, 0, vec![0]),
                (4, 4, 1, vec![0]),
                (5, 5, 1, vec![])
            ]
        );
    }

    #[test]
    fn num_nodes_overrides_follow_aws_rules() {
        let open = props(3, 0, &["0", "1:"]);
        let grow = NodeOverrides {
            num_nodes: Some(5),
            ..Default::default()
        };
        assert_eq!(segments(&open, Some(&grow)).unwrap().0, 5);
        let closed = props(3, 0, &["0", "1:2"]);
        let e = segments(&closed, Some(&grow)).unwrap_err();
        assert!(e.starts_with("nodeOverrides.numNodes"), "{e}");
        let shrink = NodeOverrides {
            num_nodes: Some(1),
            ..Default::default()
        };
        let e = segments(&open, Some(&shrink)).unwrap_err();
        assert!(e.contains("nodeRangeProperties[1]"), "{e}");
        let zero = NodeOverrides {
            num_nodes: Some(0),
            ..Default::default()
        };
        assert!(segments(&open, Some(&zero)).is_err());
    }

    #[test]
    fn stored_definitions_read_back_and_old_junk_does_not_break_the_store() {
        let d = JobDefinition {
            name: "d".into(),
            revision: 1,
            status: DefinitionStatus::Active,
            kind: "multinode".into(),
            parameters: Default::default(),
            scheduling_priority: None,
            container_properties: None,
            node_properties: Some(props(3, 0, &["0", "1:"])),
            retry_strategy: None,
            timeout: None,
            propagate_tags: None,
            platform_capabilities: None,
            tags: Tags::new(),
            other: Map::new(),
        };
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json["node_properties"]["nodeRangeProperties"][1]["targetNodes"],
            "1:"
        );
        let back: JobDefinition = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, d);
        // Before nodeProperties was typed, any JSON was stored as given.
        let mut old = json;
        old["node_properties"] = serde_json::json!({"numNodes": "three"});
        let read: JobDefinition = serde_json::from_value(old).unwrap();
        assert_eq!(read.node_properties, None);
    }

    #[test]
    fn packing_is_all_or_nothing() {
        let r = |v: u32| Resources {
            vcpus_milli: v,
            memory_mib: 100,
            gpus: 0,
        };
        let needs = vec![(0, r(1000)), (1, r(1000)), (2, r(2000))];
        assert_eq!(
            pack(&needs, &[(2000, 1000), (2000, 1000)]),
            Some(vec![1, 1, 0])
        );
        assert_eq!(pack(&needs, &[(4000, 1000)]), Some(vec![0, 0, 0]));
        assert_eq!(pack(&needs, &[(3000, 1000)]), None);
        assert_eq!(nodes_that_fit(&needs, &[(3000, 1000)]), 2);
    }
}
