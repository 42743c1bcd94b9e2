//! Every bound of the agent in one place, each with its unit in its name and the reason for its
//! value. Memory held for one attempt is bounded by these, whatever the job writes.

/// Reports waiting for the reporter. When the control plane is slow this fills up, attempt tasks
/// wait, their pipes stop being read and the jobs block in `write`: backpressure instead of an
/// unbounded buffer.
pub const REPORT_QUEUE_MAX: usize = 128;

/// Reports sent to the control plane in one call. Large enough that many attempts share one
/// durable commit; as large as the queue, since a batch is drawn from it.
pub const REPORT_BATCH_MAX: usize = REPORT_QUEUE_MAX;

/// First wait before retrying a failed report call; doubled after each failure.
pub const REPORT_RETRY_DELAY_INITIAL_MS: u64 = 100;

/// Longest wait between two report retries, so that the agent catches up within seconds of the
/// control plane coming back.
pub const REPORT_RETRY_DELAY_MAX_MS: u64 = 5_000;

/// Longest log line in bytes; longer lines are split. The CloudWatch Logs event limit, so one
/// line is always one event.
pub const LOG_LINE_BYTES_MAX: usize = 256 * 1024;

/// Lines in one `Logs` report. Bounds the report size for chatty jobs that fill a batch before
/// the flush interval.
pub const LOG_BATCH_LINES_MAX: usize = 1_000;

/// Message bytes in one `Logs` report: the CloudWatch Logs PutLogEvents batch limit.
pub const LOG_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// How long a read line may wait for more lines before it is shipped: short enough for
/// `barge logs -f` to feel live, long enough to batch a chatty job.
pub const LOG_FLUSH_INTERVAL_MS: u64 = 200;

/// Lines read from a job's stdout and stderr but not yet batched. Small, because each may be
/// `LOG_LINE_BYTES_MAX` long.
pub const LOG_LINES_QUEUED_MAX: usize = 16;

/// Read buffer for one output pipe.
pub const LOG_READ_BUFFER_BYTES: usize = 64 * 1024;

/// How long to keep reading output after the process group is gone. A process that left the
/// group (setsid) can hold the pipes open forever; its output past this is not collected, so
/// that the attempt's exit is still reported.
pub const LOG_DRAIN_AFTER_EXIT_MS: u64 = 2_000;

/// Pause between two checks for a job's orphaned processes to finish dying after SIGKILL. They die
/// within milliseconds, so a short poll costs little and does not delay the exit report.
pub const ORPHAN_REAP_POLL_MS: u64 = 5;

/// Grace between SIGTERM and SIGKILL for the attempts still running when the agent shuts down:
/// enough for a job to flush, short enough that shutting down stays quick.
pub const SHUTDOWN_GRACE_MS: u64 = 2_000;

/// How long shutdown waits, once every process is gone, for the last reports to be durable. After
/// that they are dropped: the control plane fails the attempts of a lost agent anyway.
pub const SHUTDOWN_REPORT_FLUSH_MS: u64 = 10_000;

/// How long the agent waits at start for the Docker socket to answer (ping and version
/// negotiation). A daemon that does not answer in this time is treated as absent: `auto` falls
/// back to the process runner instead of hanging `barge up`.
pub const DOCKER_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Timeout of one Docker API request, in seconds (bollard's unit). Covers create, start,
/// inspect, kill and remove; the streams that follow a container (logs, wait) return their
/// headers at once and are not cut by it. Generous, because a loaded daemon can take seconds.
pub const DOCKER_REQUEST_TIMEOUT_S: u64 = 120;

/// Longest a missing image may take to pull before the attempt fails with
/// CannotPullContainerError: an unreachable registry must never hang an attempt.
pub const DOCKER_PULL_TIMEOUT_MS: u64 = 300_000;

/// Buffer between the Docker log stream and the line reader, per stream (stdout, stderr). When
/// it is full the log stream is not read further and the daemon keeps the rest in its log
/// file: memory stays bounded whatever the container writes.
pub const DOCKER_LOG_PIPE_BYTES: usize = LOG_READ_BUFFER_BYTES;

/// The CFS period of an attempt's cgroup, in µs: the kernel's default (100 ms). An attempt may
/// use `vcpus × period` of CPU time in every period; shorter periods throttle more smoothly
/// but cost more scheduler work.
pub const CGROUP_CPU_PERIOD_US: u64 = 100_000;

/// The smallest CFS quota the kernel accepts, in µs: a job asking for less CPU gets this.
pub const CGROUP_CPU_QUOTA_MIN_US: u64 = 1_000;

/// How long emptying a cgroup (SIGKILL to every process in it, again until none is left) may
/// take before the agent gives up on it and leaves it for the next start. Killed processes go
/// within milliseconds; only a fork bomb racing the kills, or a process stuck in the kernel
/// (D state), takes longer.
pub const CGROUP_EMPTY_WAIT_MS: u64 = 5_000;

/// Pause between two looks at a cgroup that is being emptied.
pub const CGROUP_EMPTY_POLL_MS: u64 = 5;

/// Headroom over the job's memory in the rlimit fallback (RLIMIT_DATA), in MiB. RLIMIT_DATA
/// counts writable private address space, not memory in use: allocators reserve some they never
/// touch (malloc arenas, language runtimes' heaps), so a limit of exactly the job's memory would
/// refuse allocations a cgroup limit of the same size allows.
pub const RLIMIT_DATA_HEADROOM_MIB: u64 = 64;

/// Finished attempts an agent remembers, so that a late or repeated launch of one is ignored
/// (about 100 bytes each). Far more than a remote agent can finish between two polls.
pub const FINISHED_ATTEMPTS_REMEMBERED_MAX: usize = 100_000;

/// The largest answer a remote agent reads from the server. A poll's answer carries at most
/// one spec per attempt the agent can fit, each well under 1 MiB.
pub const AGENT_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How long a remote agent's non-poll call (register, reports, deregister) may take.
pub const AGENT_CALL_TIMEOUT_MS: u64 = 10_000;

/// Extra time a poll may take beyond the server's poll wait before the agent gives up on it.
pub const AGENT_POLL_SLACK_MS: u64 = 5_000;

/// First and longest wait between two failed attempts to reach the server.
pub const AGENT_RETRY_DELAY_INITIAL_MS: u64 = 200;
pub const AGENT_RETRY_DELAY_MAX_MS: u64 = 5_000;

/// How often a remote agent checks whether it has lost the server for too long (and must stop
/// what it runs).
pub const AGENT_FENCE_CHECK_MS: u64 = 500;
