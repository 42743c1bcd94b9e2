//! Barge's deterministic simulator (dev only). It owns seeded schedules driven through the real
//! core: API commands (valid and not), scheduler passes (fresh and stale plans), agent work and
//! reports (late, duplicated, for stale attempts), lost agents, and restarts that rebuild the
//! state from a simulated store exactly as barge-store does, with or without a batch that never
//! committed. After every command and every step it checks the invariants in `check`: only
//! legal job transitions, capacity never over-committed, at most one live attempt per job, no
//! acknowledged job lost, attempts accounted, derived indexes equal to a rebuild, every change
//! named for the store; and at the end, that every job that can run finishes. `fairness` runs
//! one saturated queue for hours of simulated time to show that share weights are honoured. A failure names
//! its seed, step, invariant and the last steps, and replays exactly from the seed.
//!
//! Array jobs (small ones, now and then one of thousands of children, SEQUENTIAL, N_TO_N, plain
//! dependencies on them, invalid ones, cancels and terminates of parents and of single children)
//! have their own invariants (`check::check_arrays`): no child lost (the born children are
//! exactly the parent's rows, statusSummary adds up to the size), the parent's status follows its
//! children, SEQUENTIAL and N_TO_N order, and children born lazily through legal transitions.
//! A failure reaches only dependents (`check::check_cascade_causes`).
//!
//! It must never know IO, clocks, threads or tokio: time, ids and randomness (one seeded
//! SplitMix64) are its own, so a seed is the whole story of a run.

pub mod check;
pub mod fairness;
pub mod rng;
mod sim;
pub mod store;

pub use check::Violation;
pub use sim::{run_seed, run_seed_sabotaged, Failure, Sabotage, Sim, Summary};
