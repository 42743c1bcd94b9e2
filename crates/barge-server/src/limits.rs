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
/// How often the schedules' clock is read for due schedules. Cron's unit is a minute; a second
/// keeps a fire within a second of its time for one snapshot scan of the schedules.
pub const SCHEDULE_CHECK_MS: u64 = 1_000;
/// How long an agent may go unheard before it is declared lost, unless configured
/// (`--agent-heartbeat-timeout-seconds`). AWS's own figure for an unreachable instance is
/// minutes; 30 s keeps a lost host's jobs from waiting long, over several polls' worth.
pub const HEARTBEAT_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// The shortest heartbeat timeout accepted: below it a busy server could lose healthy agents.
pub const HEARTBEAT_TIMEOUT_MS_MIN: u64 = 2_000;
/// How often silent agents are looked for.
pub const HEARTBEAT_CHECK_MS: u64 = 500;
/// The longest a poll waits for instructions before answering with none.
pub const POLL_WAIT_MAX_MS: u64 = 10_000;
/// The largest agent request: a report batch of 128 reports of up to 1 MiB of log lines each,
/// with room to spare.
pub const AGENT_BODY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The longest agent id (an instance id, `i-` and 17 hex digits on EC2).
pub const AGENT_ID_CHARS_MAX: usize = 64;
/// The largest request a follower forwards to the leader: the largest any operation accepts
/// (an agent's report batch).
pub const PROXY_BODY_BYTES_MAX: usize = AGENT_BODY_BYTES_MAX;
/// How long a follower waits to connect to the leader before answering 503 (clients retry).
pub const PROXY_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// The leader lease: a leader that dies unannounced is replaced after at most this long.
/// Short, so that a failover is seconds; long enough that a busy leader renews in time (it
/// renews every third of it).
pub const LEASE_TTL_MS_DEFAULT: u64 = 5_000;

/// The configuration file (`--config`): a catalog and a few providers fit in kilobytes; a
/// bound keeps a wrong path (a log, a binary) from being read whole.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// How often the scaler plans when nothing woke it. Instances take seconds to start, so a
/// second is responsive without costing more than one snapshot walk per second.
pub const SCALER_TICK_MS: u64 = 1_000;
/// How long an instance stays idle before it may be scaled in, unless configured
/// (`[scaling] cooldown_seconds`). A minute keeps a bursty queue from paying the start of an
/// instance for every burst.
pub const SCALING_COOLDOWN_SECONDS_DEFAULT: u64 = 60;
/// How long a launched instance has to join before it is terminated and replaced, unless
/// configured (`[scaling] register_timeout_seconds`): cloud instances take minutes to boot.
pub const SCALING_REGISTER_TIMEOUT_SECONDS_DEFAULT: u64 = 300;
/// The shortest register timeout accepted: below it a slow start is mistaken for a failure.
pub const SCALING_REGISTER_TIMEOUT_SECONDS_MIN: u64 = 5;
/// The longest cooldown and register timeout accepted (a day): a typo is an error, not an
/// instance kept forever.
pub const SCALING_SECONDS_MAX: u64 = 86_400;
/// Provider actions (launch, terminate, check) running at once: a burst of launches does not
/// start hundreds of `docker create` or operator programs together.
pub const PROVIDER_ACTIONS_CONCURRENT_MAX: usize = 8;
/// How often providers that can tell (local processes, Docker containers) are asked which
/// instances are gone, so a reclaimed instance's jobs are retried at once rather than after
/// the heartbeat timeout.
pub const PROVIDER_CHECK_MS: u64 = 2_000;
/// SIGTERM (or `docker stop`) to SIGKILL for an instance: its agent stops its attempts and
/// leaves; an idle one takes well under a second.
pub const INSTANCE_STOP_GRACE_MS: u64 = 30_000;
/// How long the `command` provider's programs may run, unless configured (`timeout_seconds`),
/// and the most that may be configured.
pub const COMMAND_PROVIDER_TIMEOUT_SECONDS_DEFAULT: u64 = 120;
pub const COMMAND_PROVIDER_TIMEOUT_SECONDS_MAX: u64 = 3_600;
/// Output of one provider program kept for the server's log; the rest is cut.
pub const COMMAND_PROVIDER_OUTPUT_BYTES_MAX: usize = 16 * 1024;
/// A failed termination is tried again after this long, doubling up to the maximum.
pub const TERMINATE_RETRY_MS_INITIAL: i64 = 2_000;
pub const TERMINATE_RETRY_MS_MAX: i64 = 300_000;
/// Providers and instance types one configuration file may define: a catalog is read into
/// every plan, so a finite bound.
pub const CONFIG_PROVIDERS_MAX: usize = 100;
pub const CONFIG_INSTANCE_TYPES_MAX: usize = 1_000;

/// Job state change events (docs/events.md) held in memory for consumers that resume
/// (`Last-Event-ID`), unless configured (`[events] history_events`). An event is one to a few
/// KiB, so the default holds tens of MiB at most: minutes of a busy server's changes.
pub const EVENTS_HISTORY_EVENTS_DEFAULT: usize = 10_000;
/// The configurable range of the history: at least a handful, at most a bound on memory.
pub const EVENTS_HISTORY_EVENTS_MIN: usize = 10;
pub const EVENTS_HISTORY_EVENTS_MAX: usize = 1_000_000;
/// Committed batches whose changes wait to be rendered into events. The writer never waits:
/// past this, a batch's changes are dropped and consumers are told events were missed.
pub const EVENTS_PENDING_BATCHES_MAX: usize = 1_024;
/// Events written to one stream consumer at a time. A consumer reads the shared history at
/// its own pace, so what it holds is one such chunk, whatever its speed.
pub const EVENTS_STREAM_CHUNK_EVENTS_MAX: usize = 256;
/// Events one read of the history looks at (kept or filtered out) while holding its lock: a
/// filtered stream over a full history reads it in steps this long, so publishing never waits
/// on it for more than a few milliseconds.
pub const EVENTS_READ_EXAMINED_MAX: usize = 4_096;
/// Event streams open at once; more are refused with 503 (each holds a connection and a
/// chunk).
pub const EVENTS_STREAMS_MAX: usize = 256;
/// A comment line sent on an idle event stream, so proxies and load balancers keep it open.
pub const EVENTS_HEARTBEAT_MS: u64 = 15_000;
/// Webhooks one configuration file may define: each has its own queue and task.
pub const WEBHOOKS_MAX: usize = 32;
/// Events waiting for one webhook. When full, the oldest is dropped (counted and logged), so a
/// receiver that is down cannot make the server hold memory without bound.
pub const WEBHOOK_QUEUE_EVENTS_MAX: usize = 10_000;
/// Deliveries of one event to a webhook before it is given up (counted and logged).
pub const WEBHOOK_ATTEMPTS_MAX: u32 = 8;
/// The wait before a delivery's second try, doubling each time up to the maximum.
pub const WEBHOOK_RETRY_MS_INITIAL: u64 = 200;
pub const WEBHOOK_RETRY_MS_MAX: u64 = 30_000;
/// How long one delivery (connect, send, answer) may take before it counts as failed.
pub const WEBHOOK_TIMEOUT_MS: u64 = 10_000;
/// A receiver's answer is read only to end the exchange; anything longer is cut.
pub const WEBHOOK_RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// The largest webhook secret file: a secret is tens of bytes; more is a wrong path.
pub const WEBHOOK_SECRET_FILE_BYTES_MAX: u64 = 4 * 1024;
