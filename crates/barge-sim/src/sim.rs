//! The simulation driver: a seeded schedule of API commands, scheduler passes, agent work and
//! reports (late, duplicated, stale), lost agents and restarts, all applied through the real
//! `barge_core::apply` and `barge_core::scheduler::plan`, with every invariant checked after
//! every command and every step.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use barge_core::agent::{AgentInstruction, AgentReport};
use barge_core::apply::{reconcile, HeldAttempt};
use barge_core::arn::Identity;
use barge_core::command::{CoreError, Key, Plan, Reply};
use barge_core::model::*;
use barge_core::{apply, Changes, Command, Effect, State};

use crate::check::*;
use crate::rng::Rng;
use crate::store::SimStore;

mod generate;
mod steps;

/// Small name pools, so that commands collide (names taken, references to what was deleted).
const CE_NAMES: [&str; 4] = ["ce-a", "ce-b", "ce-c", "ce-d"];
const QUEUE_NAMES: [&str; 3] = ["q-a", "q-b", "q-c"];
const DEF_NAMES: [&str; 3] = ["def-a", "def-b", "def-c"];
const POLICY_NAMES: [&str; 3] = ["pol-a", "pol-b", "pol-c"];
/// Share identifiers jobs use, and the entries distributions draw from (wildcards included,
/// so shares pool and entries overlap).
const SHARE_IDS: [&str; 5] = ["alice", "bob", "team1", "team2", "carol"];
const SHARE_ENTRIES: [&str; 6] = ["alice", "bob", "team*", "team1", "car*", "t*"];

/// How many history lines a failure prints.
const HISTORY_LINES: usize = 24;
/// Reports kept for late delivery.
const LATE_REPORTS_MAX: usize = 32;
/// Simulated time between steps, in ms.
const STEP_MS_MAX: i64 = 2_000;

/// What a run did, for coverage reports and to show that two runs of a seed agree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub seeds: u64,
    pub steps: u64,
    pub commands_ok: u64,
    pub commands_refused: u64,
    pub jobs_acknowledged: u64,
    pub jobs_succeeded: u64,
    pub jobs_failed: u64,
    /// Jobs that could never run where they were (no environment or agent large enough).
    pub jobs_never_runnable: u64,
    pub placements: u64,
    /// Attempts that ended with the job going back to RUNNABLE.
    pub retries: u64,
    pub reports_refused: u64,
    pub agents_lost: u64,
    pub restarts: u64,
    /// Polls by remote agents, and the launches their answers brought.
    pub polls: u64,
    pub poll_launches: u64,
    /// Restarts that dropped an applied but uncommitted batch.
    pub lost_batches: u64,
    pub drain_rounds: u64,
    /// Jobs that ended FAILED by their timeout.
    pub jobs_timed_out: u64,
    /// Jobs cancelled by a queue's jobStateTimeLimitActions.
    pub jobs_time_limited: u64,
    /// Placements of jobs with a shareIdentifier (in fair-share queues).
    pub fair_share_placements: u64,
    /// Multi-node gangs placed (each: every node of one job at once).
    pub gangs_placed: u64,
    /// Multi-node jobs that reached SUCCEEDED.
    pub multinode_succeeded: u64,
    /// Array jobs acknowledged, and how many of them were large (see `ARRAY_LARGE`).
    pub arrays_submitted: u64,
    pub arrays_large: u64,
    /// Invalid array submissions (size, N_TO_N partner, types) refused as they must be.
    pub arrays_refused: u64,
    /// Array children born (committed), and how: placed at birth, RUNNABLE because child i-1
    /// succeeded (SEQUENTIAL) or because child i of another array did (N_TO_N), FAILED because
    /// such a dependency failed (a cascade), or FAILED by a cancel or terminate by id.
    pub children_born: u64,
    pub children_placed_at_birth: u64,
    pub sequential_births: u64,
    pub n_to_n_births: u64,
    pub array_cascades: u64,
    pub children_stopped_unborn: u64,
    /// Accepted cancels and terminates of one child by id (born or not), and of array parents.
    pub child_stops: u64,
    pub array_stops: u64,
    /// Array parents that ended SUCCEEDED and FAILED.
    pub arrays_succeeded: u64,
    pub arrays_failed: u64,
    /// Jobs that waited for a whole array (a plain dependency on its parent) and then ran.
    pub array_dependents_ran: u64,
    /// Hosts drained and terminated by a scale-in (their drain was accepted).
    pub scale_ins: u64,
    /// A digest of the final store (not summed by `add`).
    pub fingerprint: u64,
}

impl Summary {
    pub fn add(&mut self, o: &Summary) {
        self.seeds += o.seeds;
        self.steps += o.steps;
        self.commands_ok += o.commands_ok;
        self.commands_refused += o.commands_refused;
        self.jobs_acknowledged += o.jobs_acknowledged;
        self.jobs_succeeded += o.jobs_succeeded;
        self.jobs_failed += o.jobs_failed;
        self.jobs_never_runnable += o.jobs_never_runnable;
        self.placements += o.placements;
        self.retries += o.retries;
        self.reports_refused += o.reports_refused;
        self.agents_lost += o.agents_lost;
        self.scale_ins += o.scale_ins;
        self.restarts += o.restarts;
        self.polls += o.polls;
        self.poll_launches += o.poll_launches;
        self.lost_batches += o.lost_batches;
        self.drain_rounds += o.drain_rounds;
        self.jobs_timed_out += o.jobs_timed_out;
        self.jobs_time_limited += o.jobs_time_limited;
        self.fair_share_placements += o.fair_share_placements;
        self.gangs_placed += o.gangs_placed;
        self.multinode_succeeded += o.multinode_succeeded;
        self.arrays_submitted += o.arrays_submitted;
        self.arrays_large += o.arrays_large;
        self.arrays_refused += o.arrays_refused;
        self.children_born += o.children_born;
        self.children_placed_at_birth += o.children_placed_at_birth;
        self.sequential_births += o.sequential_births;
        self.n_to_n_births += o.n_to_n_births;
        self.array_cascades += o.array_cascades;
        self.children_stopped_unborn += o.children_stopped_unborn;
        self.child_stops += o.child_stops;
        self.array_stops += o.array_stops;
        self.arrays_succeeded += o.arrays_succeeded;
        self.arrays_failed += o.arrays_failed;
        self.array_dependents_ran += o.array_dependents_ran;
    }
}

/// A broken invariant, with what is needed to replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    /// The step it broke at: 0 is the setup, `steps + 1` the final drain.
    pub step: usize,
    pub violation: Violation,
    /// The last commands and events, oldest first.
    pub recent: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} step {}: {}",
            self.seed, self.step, self.violation
        )?;
        writeln!(f, "last steps (oldest first):")?;
        for line in &self.recent {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay: SIM_SEED={} cargo test -p barge-sim --release -- --nocapture",
            self.seed
        )
    }
}

impl std::error::Error for Failure {}

/// Deliberate faults, so tests can show that the checks catch what they claim to catch. The
/// seeded runs never use them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sabotage {
    #[default]
    None,
    /// The store drops every update of an existing job, as if `Changes.dirty` missed it.
    StoreDropsJobUpdates,
    /// After each step a finished job is put back to RUNNABLE behind the core's back.
    ReviveFinishedJobs,
    /// A lost agent does not stop its work (no fencing), so its attempts run on while the core
    /// retries them elsewhere.
    LostAgentsKeepRunning,
    /// After each step, a SEQUENTIAL array's next unborn child is born RUNNABLE behind the
    /// core's back although the child before it has not succeeded.
    BirthOutOfOrder,
}

/// Runs one seeded schedule of `steps` random steps, then the drain phase. Any panic inside
/// the core is turned into a Failure too.
pub fn run_seed(seed: u64, steps: usize) -> Result<Summary, Failure> {
    run_seed_sabotaged(seed, steps, Sabotage::None)
}

/// `run_seed` with a deliberate fault (see `Sabotage`).
pub fn run_seed_sabotaged(seed: u64, steps: usize, sabotage: Sabotage) -> Result<Summary, Failure> {
    let mut sim = Sim::new(seed);
    sim.sabotage = sabotage;
    match catch_unwind(AssertUnwindSafe(|| sim.run(steps))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a non-string panic".into());
            Err(sim.failure(Violation::new(NO_PANIC, message)))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepKind {
    CreateCe,
    UpdateCe,
    DeleteCe,
    CreateQueue,
    UpdateQueue,
    DeleteQueue,
    RegisterDef,
    DeregisterDef,
    Submit,
    SubmitBurst,
    Cancel,
    Terminate,
    Tag,
    Untag,
    Schedule,
    AgentWork,
    AgentSend,
    LateReport,
    Deliver,
    Poll,
    AgentLost,
    AgentRejoin,
    AgentReregister,
    Restart,
    Batch,
    Timeouts,
    CreatePolicy,
    UpdatePolicy,
    DeletePolicy,
    ScaleIn,
    SetDesired,
}

const STEP_WEIGHTS: [(StepKind, u64); 31] = [
    (StepKind::CreateCe, 3),
    (StepKind::UpdateCe, 4),
    (StepKind::DeleteCe, 1),
    (StepKind::CreateQueue, 3),
    (StepKind::UpdateQueue, 3),
    (StepKind::DeleteQueue, 1),
    (StepKind::RegisterDef, 3),
    (StepKind::DeregisterDef, 1),
    (StepKind::Submit, 16),
    (StepKind::SubmitBurst, 1),
    (StepKind::Cancel, 1),
    (StepKind::Terminate, 1),
    (StepKind::Tag, 1),
    (StepKind::Untag, 1),
    (StepKind::Schedule, 12),
    (StepKind::AgentWork, 16),
    (StepKind::AgentSend, 10),
    (StepKind::LateReport, 2),
    (StepKind::Deliver, 5),
    (StepKind::Poll, 5),
    (StepKind::AgentLost, 1),
    (StepKind::AgentRejoin, 2),
    (StepKind::AgentReregister, 1),
    (StepKind::Restart, 1),
    (StepKind::Batch, 4),
    (StepKind::Timeouts, 2),
    (StepKind::CreatePolicy, 1),
    (StepKind::UpdatePolicy, 1),
    (StepKind::DeletePolicy, 1),
    (StepKind::ScaleIn, 1),
    (StepKind::SetDesired, 1),
];

/// One simulated host. Its agent id changes when it joins again under a new identity.
#[derive(Clone, Debug)]
struct Host {
    id: String,
    vcpus_milli: u64,
    memory_mib: u64,
    scope: AgentScope,
    /// False once declared lost, until it joins again.
    alive: bool,
    /// Attempts whose process exists, by attempt id.
    running: BTreeMap<String, Running>,
    /// Reports produced and not yet sent, in order.
    pending: Vec<AgentReport>,
    /// Every attempt this agent process has run, so that it ignores a launch of one again, as
    /// the real agent does. Forgotten when the process dies.
    ran: BTreeSet<String>,
}

impl Host {
    /// A host that joined one compute environment is a remote agent: it gets no pushed
    /// instructions, only the answers to its polls (`barge_core::apply::reconcile`), as
    /// `barge agent` does. `barge up`'s agent (every MANAGED environment) gets them pushed.
    fn remote(&self) -> bool {
        matches!(self.scope, AgentScope::ComputeEnvironment(_))
    }
}

#[derive(Clone, Debug)]
struct Running {
    job_id: String,
    started: bool,
}

/// How many status transitions a command may move each job (by id).
type Hops<'a> = Box<dyn Fn(&str) -> usize + 'a>;

/// A command and what the checks need to know about it.
struct Planned {
    command: Command,
    what: String,
    note: Note,
}

impl Planned {
    /// A plan applied after other commands of its batch no longer meets the state it was made
    /// from, so it may legitimately place fewer jobs than it proposed.
    fn not_first_in_batch(&mut self) {
        if let Note::Pass { fresh, .. } = &mut self.note {
            *fresh = false;
        }
    }
}

enum Note {
    /// May be refused.
    Plain,
    /// Must never be refused (agent registration, lost agents, orphans).
    MustSucceed,
    Submit(String),
    /// A submission that is invalid whatever the state (an array of size 1, N_TO_N on a job
    /// that is not an array of the same size, …): it must be refused.
    MustRefuse(String),
    /// A cancel or terminate (may be refused), and what it targets.
    Stop(Target),
    Reports {
        agent_id: String,
        reports: Vec<AgentReport>,
    },
    Pass {
        admit: HashSet<String>,
        /// Planned on exactly the state it is applied to: every placement must commit.
        fresh: bool,
        proposed: usize,
    },
}

/// What a cancel or terminate names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Job,
    ArrayParent,
    ArrayChild,
}

/// Array coverage of the commands of one batch, added to the summary only if it commits.
#[derive(Default)]
struct Tally {
    refused_arrays: u64,
    births: u64,
    placed: u64,
    sequential: u64,
    n_to_n: u64,
    cascades: u64,
    stopped_unborn: u64,
    child_stops: u64,
    array_stops: u64,
}

impl Tally {
    /// Classifies the children `changes.dirty` names that `prev` did not have.
    fn births(&mut self, prev: &State, next: &State, dirty: &[Key]) {
        let mut seen = HashSet::new();
        for key in dirty {
            let Key::Job(id) = key else { continue };
            if prev.jobs.contains_key(id) || !seen.insert(id) {
                continue;
            }
            let Some(job) = next.job(id) else { continue };
            let Some(c) = &job.array_child else { continue };
            let Some(array) = next.job(&c.parent).and_then(|p| p.array.clone()) else {
                continue;
            };
            self.births += 1;
            match job.status {
                JobStatus::Starting => self.placed += 1,
                JobStatus::Runnable if array.sequential && c.index > 0 => self.sequential += 1,
                JobStatus::Runnable if !array.n_to_n.is_empty() => self.n_to_n += 1,
                JobStatus::Failed if job.is_cancelled || job.is_terminated => {
                    self.stopped_unborn += 1
                }
                JobStatus::Failed
                    if job.status_reason.as_deref()
                        == Some(barge_core::dependencies::REASON_DEPENDENCY_FAILED) =>
                {
                    self.cascades += 1
                }
                _ => {}
            }
        }
    }

    fn add_to(&self, s: &mut Summary) {
        s.arrays_refused += self.refused_arrays;
        s.children_born += self.births;
        s.children_placed_at_birth += self.placed;
        s.sequential_births += self.sequential;
        s.n_to_n_births += self.n_to_n;
        s.array_cascades += self.cascades;
        s.children_stopped_unborn += self.stopped_unborn;
        s.child_stops += self.child_stops;
        s.array_stops += self.array_stops;
    }
}

/// One seeded run: the core's committed state, the simulated store, clock, ids and hosts, and
/// what the invariants need to remember between steps.
pub struct Sim {
    seed: u64,
    rng: Rng,
    identity: Identity,
    /// The committed state: what has been acknowledged and is in `store`.
    state: State,
    store: SimStore,
    now_ms: i64,
    next_id: u64,
    hosts: Vec<Host>,
    /// Instructions committed but not yet delivered to their agents.
    outbox: Vec<Effect>,
    /// Copies of sent reports, for late (stale or duplicate) delivery: (agent id, report).
    late: Vec<(String, AgentReport)>,
    /// A plan kept to be applied later, on a state it was not made from.
    stale_plan: Option<Plan>,
    /// Every acknowledged job and the status last seen.
    acked: BTreeMap<String, JobStatus>,
    /// The acknowledged array parents, in the order they were acknowledged.
    arrays: Vec<String>,
    /// Every array child born in a committed batch, and the status last seen.
    children: BTreeMap<String, JobStatus>,
    /// Every attempt id ever launched.
    launched: HashSet<String>,
    recent: VecDeque<String>,
    step: usize,
    summary: Summary,
    sabotage: Sabotage,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let identity = Identity::default();
        Sim {
            seed,
            rng: Rng::new(seed),
            state: State::new(identity.clone()),
            identity,
            store: SimStore::default(),
            now_ms: 1_700_000_000_000,
            next_id: 0,
            hosts: Vec::new(),
            outbox: Vec::new(),
            late: Vec::new(),
            stale_plan: None,
            acked: BTreeMap::new(),
            arrays: Vec::new(),
            children: BTreeMap::new(),
            launched: HashSet::new(),
            recent: VecDeque::with_capacity(HISTORY_LINES),
            step: 0,
            summary: Summary {
                seeds: 1,
                ..Summary::default()
            },
            sabotage: Sabotage::None,
        }
    }

    /// The committed state (for tests that inspect a run).
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn run(&mut self, steps: usize) -> Result<Summary, Failure> {
        self.setup()?;
        self.check_model()?;
        for i in 1..=steps {
            self.step = i;
            self.now_ms += self.rng.range(1, STEP_MS_MAX);
            self.random_step()?;
            if self.sabotage == Sabotage::ReviveFinishedJobs {
                self.revive_a_finished_job();
            }
            if self.sabotage == Sabotage::BirthOutOfOrder {
                self.birth_out_of_order();
            }
            self.check_model()?;
            self.summary.steps += 1;
        }
        self.step = steps + 1;
        self.drain()?;
        self.finish()
    }

    fn revive_a_finished_job(&mut self) {
        let Some(job) = self
            .acked
            .iter()
            .find(|(_, s)| s.is_terminal())
            .and_then(|(id, _)| self.state.job(id))
        else {
            return;
        };
        let mut job = (**job).clone();
        job.status = JobStatus::Runnable;
        self.record(format!("SABOTAGE: {} put back to RUNNABLE", job.id));
        self.state.put_job(job);
    }

    fn birth_out_of_order(&mut self) {
        for parent_id in &self.arrays {
            let Some(parent) = self.state.job(parent_id) else {
                continue;
            };
            let Some(array) = &parent.array else { continue };
            if !array.sequential || array.released_at.is_none() || parent.status.is_terminal() {
                continue;
            }
            let cursor = self.state.array_index(parent_id).map_or(0, |i| i.cursor);
            let before = cursor
                .checked_sub(1)
                .and_then(|b| self.state.job(&barge_core::arrays::child_id(parent_id, b)));
            let Some(before) = before else { continue };
            if cursor >= array.size || before.status == JobStatus::Succeeded {
                continue;
            }
            let mut child = (**before).clone();
            child.id = barge_core::arrays::child_id(parent_id, cursor);
            child.status = JobStatus::Runnable;
            child.attempts.clear();
            child.current = None;
            child.stop_reason = None;
            child.status_reason = None;
            child.is_cancelled = false;
            child.is_terminated = false;
            if let Some(c) = child.array_child.as_mut() {
                c.index = cursor;
            }
            self.record(format!(
                "SABOTAGE: {} born RUNNABLE while {} is {}",
                child.id,
                before.id,
                before.status.as_str()
            ));
            self.children.insert(child.id.clone(), JobStatus::Runnable);
            self.state.put_job(child);
            return;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Plumbing

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    fn record(&mut self, line: String) {
        if self.recent.len() == HISTORY_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("#{} {line}", self.step));
    }

    fn failure(&self, violation: Violation) -> Failure {
        Failure {
            seed: self.seed,
            step: self.step,
            violation,
            recent: self.recent.iter().cloned().collect(),
        }
    }

    fn check<T>(&self, r: Result<T, Violation>) -> Result<T, Failure> {
        r.map_err(|v| self.failure(v))
    }

    fn violation<T>(&self, invariant: &'static str, detail: String) -> Result<T, Failure> {
        Err(self.failure(Violation::new(invariant, detail)))
    }

    /// Applies one command to `work` and checks everything that must hold after it.
    fn apply_checked(
        &mut self,
        work: &mut State,
        changes: &mut Changes,
        p: Planned,
        tally: &mut Tally,
    ) -> Result<Result<Reply, CoreError>, Failure> {
        let prev = work.clone();
        let mark = changes.mark();
        let result = apply(work, p.command, self.now_ms, changes);
        if !p.what.is_empty() {
            let outcome = match &result {
                Ok(r) => format!("{r:?}"),
                Err(e) => format!("refused: {e}"),
            };
            self.record(format!("{} -> {outcome}", p.what));
        }
        let reply = match &result {
            Err(e) => {
                self.summary.commands_refused += 1;
                if !matches!(
                    p.note,
                    Note::Plain | Note::Submit(_) | Note::MustRefuse(_) | Note::Stop(_)
                ) {
                    return self.violation(ALWAYS_OK, format!("{} was refused: {e}", p.what));
                }
                if matches!(p.note, Note::MustRefuse(_)) {
                    tally.refused_arrays += 1;
                }
                self.check(check_unchanged(&prev, work))?;
                if changes.mark() != mark {
                    return self.violation(
                        ATOMIC,
                        format!("{} was refused but left changes behind", p.what),
                    );
                }
                return Ok(result);
            }
            Ok(reply) => reply.clone(),
        };
        if let Note::MustRefuse(id) = &p.note {
            return self.violation(
                ACCEPTED,
                format!("{} was accepted ({id}), but it is invalid", p.what),
            );
        }
        match p.note {
            Note::Stop(Target::ArrayChild) => tally.child_stops += 1,
            Note::Stop(Target::ArrayParent) => tally.array_stops += 1,
            _ => {}
        }
        self.summary.commands_ok += 1;
        let effects = &changes.effects[mark.2..];
        let (hops, created): (Hops, Option<&str>) = match &p.note {
            Note::Pass { admit, .. } => (
                Box::new(move |id: &str| if admit.contains(id) { 2 } else { 1 }),
                None,
            ),
            Note::Reports { reports, .. } => {
                let mut per_job: BTreeMap<&str, usize> = BTreeMap::new();
                for r in reports {
                    *per_job.entry(report_job(r)).or_insert(0) += 1;
                }
                // A job that finishes moves its PENDING dependents one step (RUNNABLE, or
                // FAILED in a cascade); any other job not reported on must not move.
                let pending: HashSet<String> = prev
                    .jobs
                    .values()
                    .filter(|j| j.status == JobStatus::Pending)
                    .map(|j| j.id.clone())
                    .collect();
                // A multi-node job and its nodes move on their main node's reports (and end
                // together): each report may move each of them one step.
                let gang_hops = reports.len();
                let in_gang: HashSet<String> = prev
                    .jobs
                    .values()
                    .filter(|j| j.multinode.is_some() || j.node.is_some())
                    .map(|j| j.id.clone())
                    .collect();
                (
                    Box::new(move |id: &str| {
                        if in_gang.contains(id) {
                            return gang_hops;
                        }
                        per_job
                            .get(id)
                            .copied()
                            .unwrap_or(usize::from(pending.contains(id)))
                    }),
                    None,
                )
            }
            Note::Submit(id) => (Box::new(|_: &str| 1), Some(id.as_str())),
            _ => (Box::new(|_: &str| 1), None),
        };
        let r = check_transitions(&prev, work, &*hops, created);
        drop(hops);
        self.check(r)?;
        self.check(check_state(work))?;
        let launched = self.check(check_placements(&prev, work, effects))?;
        match &p.note {
            Note::Pass {
                fresh, proposed, ..
            } => {
                let Reply::Placed { placed } = reply else {
                    return self.violation(PLACEMENT, format!("a pass answered {reply:?}"));
                };
                if placed != launched {
                    return self.violation(
                        PLACEMENT,
                        format!("a pass reports {placed} placements but launched {launched}"),
                    );
                }
                if *fresh {
                    self.check(check_queue_order(&prev, work))?;
                    self.check(check_queue_priority(&prev, work))?;
                }
                if *fresh && placed != *proposed {
                    return self.violation(
                        PLACEMENT,
                        format!(
                            "a plan made from this very state proposed {proposed} placements but only {placed} committed (the scheduler and the applier disagree on fit)"
                        ),
                    );
                }
                self.summary.placements += launched as u64;
                self.summary.fair_share_placements += effects
                    .iter()
                    .filter(|e| match e {
                        Effect::Agent {
                            instruction: AgentInstruction::Launch(spec),
                            ..
                        } => work
                            .job(&spec.job_id)
                            .is_some_and(|j| j.share_identifier.is_some()),
                        _ => false,
                    })
                    .count() as u64;
            }
            Note::Reports { agent_id, reports } => {
                let Reply::Reports { refused } = reply else {
                    return self.violation(STALE_REPORTS, format!("reports answered {reply:?}"));
                };
                let r = check_reports(&prev, work, agent_id, reports, refused, effects);
                self.check(r)?;
                self.summary.reports_refused += refused as u64;
            }
            Note::Submit(id) => self.check(check_submit(&prev, work, id))?,
            _ => {}
        }
        // Outside a pass, only a gang's other nodes are launched: the main node reported
        // RUNNING (checked by `check_placements` and `check_gangs`).
        let deferred = effects
            .iter()
            .filter(|e| {
                matches!(e, Effect::Agent { instruction: AgentInstruction::Launch(s), .. }
                if work.job(&s.job_id).and_then(|j| j.node.as_ref()).is_some_and(|n| !n.is_main))
            })
            .count();
        if launched > deferred && !matches!(p.note, Note::Pass { .. }) {
            return self.violation(PLACEMENT, format!("{} launched attempts", p.what));
        }
        if matches!(p.note, Note::Pass { .. }) {
            if deferred > 0 {
                return self.violation(
                    PLACEMENT,
                    "a pass launched a non-main node before its main node ran".into(),
                );
            }
            self.summary.gangs_placed += effects
                .iter()
                .filter(|e| {
                    matches!(e, Effect::Agent { instruction: AgentInstruction::Launch(s), .. }
                    if work.job(&s.job_id).is_some_and(|j| j.node.is_some()))
                })
                .count() as u64;
        }
        tally.births(&prev, work, &changes.dirty[mark.0..]);
        if !prev.jobs.ptr_eq(&work.jobs) {
            for job in work.jobs.values() {
                if job.status == JobStatus::Runnable
                    && prev.job(&job.id).is_some_and(|o| {
                        matches!(o.status, JobStatus::Starting | JobStatus::Running)
                    })
                {
                    self.summary.retries += 1;
                }
            }
        }
        Ok(result)
    }

    /// Applies a batch of commands as the writer does (one `Changes`, one commit) and, with
    /// `commit`, makes it durable, acknowledges it and queues its effects. Without `commit` the
    /// batch is applied and checked, then thrown away, as when the process dies before the
    /// commit: none of its callers was answered.
    fn run_batch(
        &mut self,
        planned: Vec<Planned>,
        commit: bool,
    ) -> Result<Vec<Result<Reply, CoreError>>, Failure> {
        let mut work = self.state.clone();
        let mut changes = Changes::default();
        let mut results = Vec::with_capacity(planned.len());
        let mut submitted = Vec::new();
        let mut tally = Tally::default();
        for p in planned {
            let job_id = match &p.note {
                Note::Submit(id) => Some(id.clone()),
                _ => None,
            };
            let r = self.apply_checked(&mut work, &mut changes, p, &mut tally)?;
            if let (Ok(_), Some(id)) = (&r, job_id) {
                submitted.push(id);
            }
            results.push(r);
        }
        if !commit {
            return Ok(results);
        }
        self.check(check_dirty(&self.state, &work, &changes.dirty))?;
        let stored = if self.sabotage == Sabotage::StoreDropsJobUpdates {
            let mut c = changes.clone();
            c.dirty
                .retain(|k| !matches!(k, Key::Job(id) if self.state.jobs.contains_key(id)));
            self.store.commit(&work, &c)
        } else {
            self.store.commit(&work, &changes)
        };
        if let Err(e) = stored {
            return self.violation(DURABLE, e);
        }
        self.state = work;
        for id in submitted {
            self.acked.insert(id.clone(), JobStatus::Submitted);
            self.summary.jobs_acknowledged += 1;
            if let Some(array) = self.state.job(&id).and_then(|j| j.array.as_ref()) {
                self.summary.arrays_submitted += 1;
                if array.size > generate::ARRAY_SMALL_MAX as u32 {
                    self.summary.arrays_large += 1;
                }
                self.arrays.push(id);
            }
        }
        tally.add_to(&mut self.summary);
        for key in &changes.dirty {
            let Key::Job(id) = key else { continue };
            if self.acked.contains_key(id) || self.children.contains_key(id) {
                continue;
            }
            if let Some(job) = self.state.job(id).filter(|j| j.array_child.is_some()) {
                self.children.insert(id.clone(), job.status);
            }
        }
        for e in &changes.effects {
            if let Effect::Agent {
                instruction: AgentInstruction::Launch(spec),
                ..
            } = e
            {
                if !self.launched.insert(spec.attempt_id.clone()) {
                    return self.violation(
                        ONE_LIVE_ATTEMPT,
                        format!("attempt id {} launched twice", spec.attempt_id),
                    );
                }
            }
        }
        self.outbox.extend(changes.effects);
        if self.rng.chance(75) {
            self.deliver(self.outbox.len())?;
        }
        Ok(results)
    }

    fn run_one(&mut self, p: Planned) -> Result<Result<Reply, CoreError>, Failure> {
        Ok(self
            .run_batch(vec![p], true)?
            .pop()
            .expect("one result per command"))
    }

    /// Delivers the first `n` queued instructions. An instruction for an agent that is not
    /// alive under that id is dropped, as the server's router drops it.
    fn deliver(&mut self, n: usize) -> Result<(), Failure> {
        let batch: Vec<Effect> = self.outbox.drain(..n).collect();
        for effect in batch {
            let Effect::Agent {
                agent_id,
                instruction,
            } = effect;
            let now = self.now_ms;
            let sigkill = self.rng.chance(50);
            let Some(host) = self.hosts.iter_mut().find(|h| h.alive && h.id == agent_id) else {
                continue;
            };
            if host.remote() {
                // The server only wakes a remote agent's poll; the poll says what to do.
                continue;
            }
            match instruction {
                AgentInstruction::Launch(spec) => {
                    let prior = host.running.insert(
                        spec.attempt_id.clone(),
                        Running {
                            job_id: spec.job_id.clone(),
                            started: false,
                        },
                    );
                    host.ran.insert(spec.attempt_id.clone());
                    if prior.is_some() {
                        return self.violation(
                            AGENT_MODEL,
                            format!(
                                "agent {agent_id} was told to launch {} twice",
                                spec.attempt_id
                            ),
                        );
                    }
                }
                AgentInstruction::Stop {
                    job_id, attempt_id, ..
                } => {
                    // Only an attempt the agent runs can be stopped; a Stop for anything else
                    // (a stale attempt) is a no-op on the agent.
                    if host.running.remove(&attempt_id).is_some() {
                        host.pending.push(AgentReport::Exited {
                            job_id,
                            attempt_id,
                            at_ms: now,
                            exit_code: Some(if sigkill { 137 } else { 143 }),
                            reason: None,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// A remote host polls: it is told, from the state, what to launch and stop given what
    /// it holds, and does it as `barge agent` does (a launch of an attempt it ran before is
    /// ignored; a stop of one it never had is answered with its end, without an exit code).
    pub(super) fn poll(&mut self, h: usize) -> Result<(), Failure> {
        let now = self.now_ms;
        let sigkill = self.rng.chance(50);
        let host = &self.hosts[h];
        let held: Vec<HeldAttempt> = host
            .running
            .iter()
            .map(|(attempt_id, r)| HeldAttempt {
                job_id: r.job_id.clone(),
                attempt_id: attempt_id.clone(),
            })
            .collect();
        let told = reconcile(&self.state, &host.id, &held);
        let mut said = Vec::new();
        let mut launches = 0;
        let host = &mut self.hosts[h];
        for instruction in told {
            match instruction {
                AgentInstruction::Launch(spec) => {
                    if host.running.contains_key(&spec.attempt_id) {
                        let detail = format!(
                            "a poll told agent {} to launch {}, which it holds",
                            host.id, spec.attempt_id
                        );
                        return self.violation(AGENT_MODEL, detail);
                    }
                    if !host.ran.insert(spec.attempt_id.clone()) {
                        said.push(format!("launch {} (ran before: ignored)", spec.attempt_id));
                        continue;
                    }
                    said.push(format!("launch {}", spec.attempt_id));
                    launches += 1;
                    host.running.insert(
                        spec.attempt_id.clone(),
                        Running {
                            job_id: spec.job_id.clone(),
                            started: false,
                        },
                    );
                }
                AgentInstruction::Stop {
                    job_id, attempt_id, ..
                } => {
                    said.push(format!("stop {attempt_id}"));
                    let exit_code = if host.running.remove(&attempt_id).is_some() {
                        Some(if sigkill { 137 } else { 143 })
                    } else if host.ran.contains(&attempt_id) {
                        // Ended here already; its end is reported or on its way.
                        continue;
                    } else {
                        None
                    };
                    host.ran.insert(attempt_id.clone());
                    host.pending.push(AgentReport::Exited {
                        job_id,
                        attempt_id,
                        at_ms: now,
                        exit_code,
                        reason: None,
                    });
                }
            }
        }
        let id = self.hosts[h].id.clone();
        self.summary.polls += 1;
        self.summary.poll_launches += launches;
        self.record(format!("poll by agent {id}: [{}]", said.join(", ")));
        Ok(())
    }

    /// Every live remote host polls (the final drain).
    pub(super) fn poll_all(&mut self) -> Result<(), Failure> {
        for h in 0..self.hosts.len() {
            if self.hosts[h].alive && self.hosts[h].remote() {
                self.poll(h)?;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Model invariants (after every step)

    /// Invariants that need the simulator's own knowledge: every acknowledged job is still there
    /// and no terminal one changed status; nothing else is there; each agent runs exactly the
    /// live attempts placed on it (no attempt runs twice, none is live that nobody runs).
    fn check_model(&mut self) -> Result<(), Failure> {
        if let Err(v) = seen_jobs_stay(&self.state, &mut self.acked, "acknowledged job")
            .and_then(|()| seen_jobs_stay(&self.state, &mut self.children, "array child"))
        {
            return Err(self.failure(v));
        }
        // Node rows of multi-node jobs are made by the core, not submitted; array children
        // are born.
        let submitted = self
            .state
            .jobs
            .values()
            .filter(|j| j.node.is_none())
            .count();
        if submitted != self.acked.len() + self.children.len() {
            return self.violation(
                NO_JOB_LOST,
                format!(
                    "the state holds {submitted} jobs besides nodes but {} were acknowledged and {} array children born",
                    self.acked.len(),
                    self.children.len()
                ),
            );
        }
        // Every process that exists, on any host, alive or cut off, is its job's live attempt
        // there: otherwise one job runs twice, or runs with nobody accounting for it.
        for host in &self.hosts {
            for (attempt_id, r) in &host.running {
                let live = self
                    .state
                    .job(&r.job_id)
                    .and_then(|j| j.current.as_ref())
                    .is_some_and(|a| a.id == *attempt_id && a.agent_id == host.id);
                if !live {
                    return self.violation(
                        ONE_LIVE_ATTEMPT,
                        format!(
                            "agent {} runs attempt {attempt_id} of job {}, which is not the job's live attempt there",
                            host.id, r.job_id
                        ),
                    );
                }
            }
        }
        self.check(check_waiting_reasons(&self.state))?;
        self.check(check_arrays(&self.state))?;
        for job in jobs_sorted(&self.state) {
            let Some(a) = &job.current else { continue };
            // A node holds its place unlaunched until its main node runs, and keeps an ended
            // attempt until its job ends: neither has a process.
            if job
                .node
                .as_ref()
                .is_some_and(|n| !n.launched || a.stopped_at.is_some())
            {
                if !self.hosts.iter().any(|h| h.alive && h.id == a.agent_id) {
                    return self.violation(
                        AGENT_MODEL,
                        format!(
                            "node {} holds a place on agent {}, which is not alive",
                            job.id, a.agent_id
                        ),
                    );
                }
                continue;
            }
            let Some(host) = self.hosts.iter().find(|h| h.alive && h.id == a.agent_id) else {
                return self.violation(
                    AGENT_MODEL,
                    format!(
                        "job {} is live on agent {}, which is not alive",
                        job.id, a.agent_id
                    ),
                );
            };
            let told = |host: &Host| {
                if host.remote() {
                    // Its next poll must launch it (or, being stopped, end it).
                    let held: Vec<HeldAttempt> = host
                        .running
                        .iter()
                        .map(|(attempt_id, r)| HeldAttempt {
                            job_id: r.job_id.clone(),
                            attempt_id: attempt_id.clone(),
                        })
                        .collect();
                    reconcile(&self.state, &host.id, &held)
                        .iter()
                        .any(|i| match i {
                            AgentInstruction::Launch(s) => s.attempt_id == a.id,
                            AgentInstruction::Stop { attempt_id, .. } => *attempt_id == a.id,
                        })
                } else {
                    self.outbox.iter().any(|e| {
                        matches!(e, Effect::Agent { agent_id, instruction: AgentInstruction::Launch(s) }
                            if *agent_id == host.id && s.attempt_id == a.id)
                    })
                }
            };
            let accounted = host.running.contains_key(&a.id)
                || host.pending.iter().any(
                    |r| matches!(r, AgentReport::Exited { attempt_id, .. } if *attempt_id == a.id),
                )
                || told(host);
            if !accounted {
                return self.violation(
                    AGENT_MODEL,
                    format!(
                        "job {} is live as attempt {} on agent {}, which neither runs it nor has been told to",
                        job.id, a.id, a.agent_id
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Every job seen before is still there, and one seen terminal has not changed status since;
/// `seen` is brought up to date.
fn seen_jobs_stay(
    state: &State,
    seen: &mut BTreeMap<String, JobStatus>,
    what: &str,
) -> Result<(), Violation> {
    for (id, last) in seen.iter_mut() {
        let Some(job) = state.job(id) else {
            let detail = format!("{what} {id} (last {}) is gone", last.as_str());
            return Err(Violation::new(NO_JOB_LOST, detail));
        };
        if last.is_terminal() && job.status != *last {
            let detail = format!(
                "{what} {id} was {} and is now {}",
                last.as_str(),
                job.status.as_str()
            );
            return Err(Violation::new(NO_JOB_LOST, detail));
        }
        *last = job.status;
    }
    Ok(())
}

fn report_job(r: &AgentReport) -> &str {
    r.ids().0
}

fn report_attempt(r: &AgentReport) -> &str {
    r.ids().1
}

fn report_word(r: &AgentReport) -> String {
    match r {
        AgentReport::Running { .. } => "running".into(),
        AgentReport::Logs { lines, .. } => format!("{} lines", lines.len()),
        AgentReport::Exited {
            exit_code, reason, ..
        } => format!(
            "exit {}{}",
            exit_code.map_or("none".to_string(), |c| c.to_string()),
            if reason.is_some() { " +reason" } else { "" }
        ),
    }
}
