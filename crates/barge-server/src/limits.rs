//! The server's own bounds (the domain's live in barge_core::limits).

/// Commands waiting for the writer. When full, callers wait: backpressure instead of an
/// unbounded buffer.
pub const WRITER_QUEUE_COMMANDS_MAX: usize = 16_384;
/// Commands applied and committed in one transaction. Large enough that group commit
/// amortises the fsync; small enough that one batch's latency stays in milliseconds.
pub const WRITER_BATCH_COMMANDS_MAX: usize = 2_048;
/// How often the scheduler looks even when nothing told it to (a safety net: every change
/// that matters already wakes it).
pub const SCHEDULER_IDLE_PASS_MS: u64 = 1_000;
/// How long shutdown waits for the local agent to stop its attempts.
pub const SHUTDOWN_AGENT_WAIT_MS: u64 = 15_000;
/// The largest credentials file (`--credentials-file`) or PEM file (`--tls-cert`,
/// `--tls-key`) read at start. Real ones are a few KiB; a larger one is a wrong path.
pub const SECURITY_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// How long a client has to finish its TLS handshake. Bounds what a silent connection holds.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// TLS handshakes in progress at once; more connections wait in the kernel's backlog, so a
/// flood of slow handshakes cannot exhaust memory.
pub const TLS_HANDSHAKES_MAX: usize = 1_024;
/// Finished handshakes waiting for the HTTP server to take them.
pub const TLS_ACCEPTED_QUEUE_MAX: usize = 64;
/// Pause after a failed accept (out of file descriptors, say), instead of a busy loop.
pub const ACCEPT_ERROR_PAUSE_MS: u64 = 50;
/// How often timeouts are checked. AWS documents its timeouts as best-effort to the minute;
/// a second is plenty and costs one snapshot scan of RUNNING jobs.
pub const TIMER_CHECK_MS: u64 = 1_000;
