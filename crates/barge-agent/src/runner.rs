//! Runners start an attempt, report it, and stop it on request. Only the process runner exists
//! today; a runner trait is worth its weight once the docker runner arrives.

pub(crate) mod process;
