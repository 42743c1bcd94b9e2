//! Fair-share scheduling: how a job queue with a scheduling policy orders its RUNNABLE jobs,
//! how much vCPU-time each share has used, and what computeReservation holds back.
//!
//! - **Shares.** A job belongs to the shareDistribution entry that names its shareIdentifier
//!   exactly, else to the wildcard entry (`UserA*`) whose prefix it starts with: one share for
//!   every identifier the wildcard matches, their usage pooled under one weight. An identifier
//!   no entry matches is a share of its own with weight 1.
//! - **Usage.** Per queue and identifier: the vCPUs its live attempts book, from placement to
//!   the end of the attempt (exactly what the compute environment's counter books), integrated
//!   over time and decayed exponentially with a half-life of shareDecaySeconds (0: 600 s). Times
//!   are those of the commands that book and release the capacity (`State::latest_command_ms`),
//!   so the core needs no clock. The record (`ShareUsage`, one per queue) is history the jobs no
//!   longer tell cheaply, so it is stored; it advances whenever a share of its queue starts or
//!   stops running work. Running vCPUs per identifier are derived from live attempts.
//! - **Order.** The share with the lowest weighted usage (usage × weightFactor, read as of the
//!   latest command, running work included) dispatches first; ties go to the share running
//!   less, then to the share whose next job was submitted first. Within a share: higher
//!   schedulingPriority first, then submission order. One scheduling pass keeps one ranking.
//! - **Reservation.** With computeReservation `cr`, while `n` shares of the queue run work, jobs
//!   of those shares may fill a compute environment only to `1 − (cr/100)^n` of its maxvCpus
//!   (unmanagedvCpus when UNMANAGED); a share with nothing running may use the rest. This is
//!   the scheduler's policy only: the applier re-checks hard capacity, not the reservation.

use std::collections::BTreeMap;

use crate::arn::{name_from_reference, ResourceKind};
use crate::command::CoreError;
use crate::limits::*;
use crate::model::*;
use crate::state::State;

mod order;
mod standing;
mod usage;

pub use order::{dispatch_order, jobs_ahead, rank, DispatchOrder, RankedShare, Ranking};
pub use standing::{standing, Reservation, Standing};
pub(crate) use usage::{advance_usage, on_put_job, rebuild_index, take_touched};
pub use usage::{
    index_contents, loads, runnable_of, usage_now, IndexContents, RunnableKey, ShareIndex,
    ShareLoad, ShareUsage,
};

/// A shareIdentifier, on a job or in a distribution: 1–255 characters, no whitespace, and `*`
/// only as the last one.
pub fn check_share_identifier(field: &str, v: &str) -> Result<(), String> {
    let body = v.strip_suffix('*').unwrap_or(v);
    let chars = body.chars().count();
    if chars == 0 || chars > SHARE_IDENTIFIER_CHARS_MAX {
        return Err(format!(
            "{field} must be 1 to {SHARE_IDENTIFIER_CHARS_MAX} characters long (plus an optional trailing *), got {chars}"
        ));
    }
    if let Some(bad) = body
        .chars()
        .find(|c| *c == '*' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{field} {v:?} contains {bad:?}; an asterisk may only end it, and spaces are not allowed"
        ));
    }
    Ok(())
}

/// Whether two distribution entries could match the same identifier.
fn overlap(a: &str, b: &str) -> bool {
    match (a.strip_suffix('*'), b.strip_suffix('*')) {
        (Some(pa), Some(pb)) => pa.starts_with(pb) || pb.starts_with(pa),
        (Some(pa), None) => b.starts_with(pa),
        (None, Some(pb)) => a.starts_with(pb),
        (None, None) => a == b,
    }
}

/// AWS's rules for a fairsharePolicy; the message names the member at fault.
pub fn check_policy(p: &FairsharePolicy) -> Result<(), String> {
    if let Some(d) = p.share_decay_seconds {
        if !(0..=SHARE_DECAY_SECONDS_MAX).contains(&d) {
            return Err(format!(
                "fairsharePolicy.shareDecaySeconds must be between 0 and {SHARE_DECAY_SECONDS_MAX}, got {d}"
            ));
        }
    }
    if let Some(c) = p.compute_reservation {
        if !(0..=COMPUTE_RESERVATION_MAX).contains(&c) {
            return Err(format!(
                "fairsharePolicy.computeReservation must be between 0 and {COMPUTE_RESERVATION_MAX}, got {c}"
            ));
        }
    }
    let entries = &p.share_distribution;
    if entries.len() > SHARE_DISTRIBUTION_ENTRIES_MAX {
        return Err(format!(
            "fairsharePolicy.shareDistribution lists {} entries; at most {SHARE_DISTRIBUTION_ENTRIES_MAX} are allowed",
            entries.len()
        ));
    }
    for (i, e) in entries.iter().enumerate() {
        let at = format!("fairsharePolicy.shareDistribution[{i}]");
        check_share_identifier(&format!("{at}.shareIdentifier"), &e.share_identifier)?;
        if let Some(w) = e.weight_factor_e4 {
            if !(WEIGHT_FACTOR_E4_MIN..=WEIGHT_FACTOR_E4_MAX).contains(&w) {
                return Err(format!(
                    "{at}.weightFactor must be between 0.0001 and 999.9999, got {}",
                    f64::from(w) / 1e4
                ));
            }
        }
        for (j, other) in entries[..i].iter().enumerate() {
            let (a, b) = (&other.share_identifier, &e.share_identifier);
            if a == b {
                return Err(format!(
                    "fairsharePolicy.shareDistribution lists shareIdentifier {a:?} twice (entries {j} and {i})"
                ));
            }
            if overlap(a, b) {
                return Err(format!(
                    "fairsharePolicy.shareDistribution: shareIdentifier {a:?} (entry {j}) and {b:?} (entry {i}) overlap; an identifier may match only one entry"
                ));
            }
        }
    }
    Ok(())
}

/// The policy a queue names, if any.
pub fn policy_of<'a>(state: &'a State, queue: &JobQueue) -> Option<&'a SchedulingPolicy> {
    let arn = queue.scheduling_policy_arn.as_deref()?;
    let name = name_from_reference(arn, ResourceKind::SchedulingPolicy)?;
    state.scheduling_policies.get(name).map(|p| &**p)
}

/// A policy's rules, with AWS's defaults filled in, and its weights indexed for lookup.
pub struct Rules<'a> {
    pub half_life_ms: f64,
    pub reservation_percent: i64,
    exact: BTreeMap<&'a str, u32>,
    /// Wildcard prefixes. They do not overlap, so the only one that can match an identifier is
    /// the greatest prefix not after it.
    prefixes: BTreeMap<&'a str, (&'a str, u32)>,
}

impl<'a> Rules<'a> {
    pub fn of(policy: &'a SchedulingPolicy) -> Rules<'a> {
        let default = FairsharePolicy::default();
        let p = policy.fairshare_policy.as_ref().unwrap_or(&default);
        let decay_s = match p.share_decay_seconds.unwrap_or(0) {
            0 => SHARE_DECAY_SECONDS_DEFAULT,
            s => s,
        };
        let mut rules = Rules {
            half_life_ms: (decay_s * 1000) as f64,
            reservation_percent: p.compute_reservation.unwrap_or(0),
            exact: BTreeMap::new(),
            prefixes: BTreeMap::new(),
        };
        for e in policy
            .fairshare_policy
            .as_ref()
            .map_or(&[][..], |p| &p.share_distribution[..])
        {
            let weight = e.weight_factor_e4.unwrap_or(WEIGHT_FACTOR_E4_DEFAULT);
            match e.share_identifier.strip_suffix('*') {
                Some(prefix) => drop(rules.prefixes.insert(prefix, (&e.share_identifier, weight))),
                None => drop(rules.exact.insert(&e.share_identifier, weight)),
            }
        }
        rules
    }

    pub fn for_queue(state: &'a State, queue: &JobQueue) -> Option<Rules<'a>> {
        policy_of(state, queue).map(Rules::of)
    }

    /// The share an identifier belongs to, and its weight in ten-thousandths.
    pub fn share_of<'b>(&self, identifier: &'b str) -> (&'b str, u32)
    where
        'a: 'b,
    {
        if let Some(w) = self.exact.get(identifier) {
            return (identifier, *w);
        }
        if let Some((prefix, (entry, w))) = self.prefixes.range(..=identifier).next_back() {
            if identifier.starts_with(prefix) {
                return (entry, *w);
            }
        }
        (identifier, WEIGHT_FACTOR_E4_DEFAULT)
    }
}

/// SubmitJob's fair-share rules: a shareIdentifier exactly when the queue has a policy, and at
/// most `ACTIVE_SHARE_IDENTIFIERS_PER_QUEUE_MAX` active identifiers per queue.
pub fn check_submit(
    state: &State,
    queue: &JobQueue,
    identifier: Option<&str>,
) -> Result<(), CoreError> {
    match (&queue.scheduling_policy_arn, identifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(CoreError::Invalid(format!(
            "shareIdentifier is only allowed on a job queue with a fair-share scheduling policy, and job queue {} has none (it is FIFO)",
            queue.name
        ))),
        (Some(arn), None) => Err(CoreError::Invalid(format!(
            "shareIdentifier is required: job queue {} has the fair-share scheduling policy {arn}",
            queue.name
        ))),
        (Some(_), Some(id)) => {
            check_share_identifier("shareIdentifier", id).map_err(CoreError::Invalid)?;
            let active = state.shares.load.get(&queue.name);
            let count = active.map_or(0, |m| m.len());
            if count >= ACTIVE_SHARE_IDENTIFIERS_PER_QUEUE_MAX
                && !active.is_some_and(|m| m.contains_key(id))
            {
                return Err(CoreError::LimitExceeded(format!(
                    "job queue {} already has {count} active share identifiers (with unfinished jobs), the most allowed; shareIdentifier {id:?} would be one more",
                    queue.name
                )));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[(&str, Option<u32>)]) -> FairsharePolicy {
        FairsharePolicy {
            share_decay_seconds: None,
            compute_reservation: None,
            share_distribution: entries
                .iter()
                .map(|(id, w)| ShareWeight {
                    share_identifier: id.to_string(),
                    weight_factor_e4: *w,
                })
                .collect(),
        }
    }

    #[test]
    fn overlapping_and_duplicate_identifiers_are_named() {
        let e = check_policy(&policy(&[("UserA*", None), ("UserA1", None)])).unwrap_err();
        assert!(
            e.contains("\"UserA*\"") && e.contains("\"UserA1\"") && e.contains("overlap"),
            "{e}"
        );
        let e = check_policy(&policy(&[("b", None), ("b", None)])).unwrap_err();
        assert!(e.contains("\"b\" twice"), "{e}");
        let e = check_policy(&policy(&[("User*", None), ("UserB*", None)])).unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        check_policy(&policy(&[
            ("UserA*", None),
            ("UserB*", None),
            ("Other", Some(5)),
        ]))
        .unwrap();
        let e = check_policy(&policy(&[("a", Some(0))])).unwrap_err();
        assert!(e.contains("shareDistribution[0].weightFactor"), "{e}");
        let e = check_policy(&policy(&[("a*b", None)])).unwrap_err();
        assert!(e.contains("shareDistribution[0].shareIdentifier"), "{e}");
        let mut p = policy(&[]);
        p.share_decay_seconds = Some(SHARE_DECAY_SECONDS_MAX + 1);
        assert!(check_policy(&p).unwrap_err().contains("shareDecaySeconds"));
        p.share_decay_seconds = Some(0);
        p.compute_reservation = Some(100);
        assert!(check_policy(&p).unwrap_err().contains("computeReservation"));
    }

    #[test]
    fn identifiers_find_their_share() {
        let p = SchedulingPolicy {
            name: "p".into(),
            fairshare_policy: Some(policy(&[
                ("UserA*", Some(2500)),
                ("UserB", Some(5000)),
                ("Z*", None),
            ])),
            tags: Tags::new(),
        };
        let rules = Rules::of(&p);
        assert_eq!(rules.share_of("UserA1"), ("UserA*", 2500));
        assert_eq!(rules.share_of("UserA"), ("UserA*", 2500));
        assert_eq!(rules.share_of("UserB"), ("UserB", 5000));
        assert_eq!(rules.share_of("UserB2"), ("UserB2", 10_000));
        assert_eq!(rules.share_of("User"), ("User", 10_000));
        assert_eq!(rules.share_of("Zed"), ("Z*", 10_000));
        assert_eq!(rules.half_life_ms, 600_000.0);
    }
}
