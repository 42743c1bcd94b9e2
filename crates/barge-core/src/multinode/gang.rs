//! Gang planning for the scheduler: packing a job's nodes onto the agents of one compute
//! environment, all or none, and what stands in a gang's way.

use super::*;

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
    pub(super) fn never(&self) -> bool {
        matches!(
            self,
            GangObstacle::MaxVcpus { .. } | GangObstacle::HostsTooSmall { .. }
        )
    }
}

/// How many nodes (largest first) would fit on agents with this much free.
pub(super) fn nodes_that_fit(needs: &[(u32, Resources)], free: &[(u64, u64)]) -> u32 {
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
    for ce in state.environments_of(queue) {
        let name = ce.name.clone();
        let hosts = state.hosts_of(ce);
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
