//! Barge's pure core: the domain (compute environments, job queues, job definitions, jobs and
//! their attempts), the bounds, the job state machine (`apply`) and the scheduler (`plan`).
//!
//! Nothing here does IO, reads a clock or draws a random number: time, ids and seeds are
//! arguments. That is what lets the simulator drive this exact code through many seeded
//! schedules, and what keeps the rules readable in one place. The core must never know about
//! HTTP, SQL, processes or tokio.

pub mod agent;
pub mod apply;
pub mod arn;
pub mod arrays;
pub mod command;
pub mod container;
pub mod dependencies;
pub mod events;
pub mod fairshare;
pub mod limits;
pub mod model;
pub mod multinode;
pub mod reason;
pub mod resources;
pub mod scaling;
pub mod schedule;
pub mod scheduler;
pub mod state;
pub mod stored;
pub mod time;

pub use apply::apply;
pub use command::{Changes, Command, CoreError, Effect, Key, Plan, Reply};
pub use state::State;
