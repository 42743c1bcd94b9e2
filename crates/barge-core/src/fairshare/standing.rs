//! computeReservation, and where a waiting job's share stands (for statusReason and
//! `barge why`).

use std::collections::BTreeSet;

use super::{loads, rank, Rules};
use crate::model::*;
use crate::resources::{agent_has_room, ce_has_room};
use crate::state::State;

// computeReservation

/// What computeReservation holds back in one scheduling pass over one queue.
pub struct Reservation<'a> {
    percent: i64,
    rules: Rules<'a>,
    /// Shares of the queue with work running, including what this pass placed.
    running: BTreeSet<String>,
}

impl<'a> Reservation<'a> {
    /// None when the queue has no policy or reserves nothing.
    pub fn new(state: &'a State, queue: &JobQueue) -> Option<Reservation<'a>> {
        let rules = Rules::for_queue(state, queue)?;
        if rules.reservation_percent == 0 {
            return None;
        }
        let running = loads(state, &queue.name)
            .filter(|(_, l)| l.running_vcpus_milli > 0)
            .map(|(id, _)| rules.share_of(id).0.to_string())
            .collect();
        Some(Reservation {
            percent: rules.reservation_percent,
            rules,
            running,
        })
    }

    /// The most vCPUs (thousandths) `ce` may have in use once `job` is placed there; None when
    /// the reservation does not apply (the job's share runs nothing yet, or `ce` has no bound).
    pub fn cap_milli(&self, job: &Job, ce: &ComputeEnvironment) -> Option<u64> {
        let key = self.rules.share_of(job.share_identifier.as_deref()?).0;
        if !self.running.contains(key) {
            return None;
        }
        let (base, held) = held_back_milli(ce, self.percent, self.running.len())?;
        Some(base - held)
    }

    pub fn placed(&mut self, job: &Job) {
        if let Some(id) = job.share_identifier.as_deref() {
            let key = self.rules.share_of(id).0.to_string();
            self.running.insert(key);
        }
    }
}

/// (the environment's bound, what `percent` held back over `active` shares takes of it), in
/// thousandths of a vCPU; None for an environment with no bound to reserve from.
fn held_back_milli(ce: &ComputeEnvironment, percent: i64, active: usize) -> Option<(u64, u64)> {
    let base = match ce.kind {
        ComputeEnvironmentType::Managed => ce.max_vcpus_milli()?,
        ComputeEnvironmentType::Unmanaged => ce.unmanaged_vcpus?.max(0) as u64 * 1000,
    };
    let share = (percent as f64 / 100.0).powi(active.min(i32::MAX as usize) as i32);
    Some((base, ((base as f64) * share).ceil() as u64))
}

/// Where a RUNNABLE job of a fair-share queue stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    pub share: String,
    pub weight_e4: u32,
    pub usage_mvcpu_ms: f64,
    /// Shares that dispatch before this one.
    pub shares_ahead: usize,
    /// Environments with room that computeReservation keeps from this job's share: (name,
    /// vCPUs held back, thousandths). Empty when some environment of the queue has room the
    /// reservation leaves to it.
    pub reserved: Vec<(String, u64)>,
}

impl Standing {
    /// "share teamA has used 12.5 vCPU-s (weight 0.25), 2 shares ahead".
    pub fn describe(&self) -> String {
        let ahead = match self.shares_ahead {
            0 => "next to dispatch".to_string(),
            1 => "1 share ahead".to_string(),
            n => format!("{n} shares ahead"),
        };
        format!(
            "share {} has used {} vCPU-s (weight {}), {ahead}",
            self.share,
            format_amount(self.usage_mvcpu_ms / 1e6),
            format_amount(f64::from(self.weight_e4) / 1e4)
        )
    }
}

fn format_amount(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

pub fn standing(state: &State, job: &Job) -> Option<Standing> {
    let identifier = job.share_identifier.as_deref()?;
    let queue = state.job_queues.get(&job.queue)?;
    let ranked = rank(state, queue, &[])?.shares;
    let rules = Rules::for_queue(state, queue)?;
    let key = rules.share_of(identifier).0;
    let position = ranked.iter().position(|s| s.key == key)?;
    let share = &ranked[position];
    let mut reserved = Vec::new();
    let mut room_left = false;
    if let Some(r) = Reservation::new(state, queue) {
        for entry in &queue.compute_environment_order {
            let Some(ce) = state.compute_environments.get(&entry.compute_environment) else {
                continue;
            };
            let used = state.ce_used_vcpus_milli(&ce.name);
            let has_room = ce.state == ResourceState::Enabled
                && ce_has_room(ce, used, job.resources)
                && state
                    .agents
                    .values()
                    .any(|a| a.serves(ce) && agent_has_room(a, job.resources));
            let cap = r.cap_milli(job, ce);
            match cap {
                Some(cap) if has_room && used + u64::from(job.resources.vcpus_milli) > cap => {
                    let (_, held) = held_back_milli(ce, r.percent, r.running.len())?;
                    reserved.push((ce.name.clone(), held));
                }
                _ => room_left |= has_room,
            }
        }
    }
    if room_left {
        reserved.clear();
    }
    Some(Standing {
        share: key.to_string(),
        weight_e4: share.weight_e4,
        usage_mvcpu_ms: share.usage_mvcpu_ms,
        shares_ahead: position,
        reserved,
    })
}
