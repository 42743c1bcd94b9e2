//! Every bound Barge enforces, in one place, with its unit in its name and a line on why.
//! Going over one is a client error that names the limit, never a crash or an unbounded buffer.

/// AWS's SubmitJob payload quota (30 KiB).
pub const SUBMIT_JOB_BODY_BYTES_MAX: usize = 30 * 1024;
/// AWS's job definition size quota (24 KiB).
pub const REGISTER_JOB_DEFINITION_BODY_BYTES_MAX: usize = 24 * 1024;
/// Any other API request. Generous: the largest legitimate ones are tag maps and id lists.
pub const REQUEST_BODY_BYTES_MAX: usize = 256 * 1024;
/// How far a signed request's X-Amz-Date may be from the server's clock, either way. AWS's
/// value for most services: it bounds how long a captured request can be replayed while
/// tolerating clocks that are a little off.
pub const SIGV4_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Headers one signature may cover. Clients sign a handful; the bound (with each name listed
/// once) keeps an unsigned caller from making the canonical request huge by naming a large
/// header over and over.
pub const SIGV4_SIGNED_HEADERS_MAX: usize = 64;

/// Names of compute environments, job queues, job definitions and jobs (AWS: 128).
pub const NAME_CHARS_MAX: usize = 128;
/// A cancel/terminate reason (AWS: 1024), kept as the job's statusReason.
pub const REASON_CHARS_MAX: usize = 1024;
/// Container `reason` field on a job (AWS: 255).
pub const CONTAINER_REASON_CHARS_MAX: usize = 255;

/// Tags per resource, and their key/value lengths (AWS's TagrisTagsMap).
pub const TAGS_PER_RESOURCE_MAX: usize = 50;
pub const TAG_KEY_CHARS_MAX: usize = 128;
pub const TAG_VALUE_CHARS_MAX: usize = 256;

/// DescribeJobs takes at most this many ids (AWS: 100).
pub const DESCRIBE_JOBS_IDS_MAX: usize = 100;
/// GetJobQueueSnapshot shows this many jobs from the front of the queue (AWS: 100).
pub const QUEUE_SNAPSHOT_JOBS_MAX: usize = 100;
/// CancelJobs and TerminateJobs take at most this many ids (AWS: 50).
pub const BULK_JOBS_IDS_MAX: usize = 50;
/// Describe* pages (AWS: 1–100, default 100).
pub const DESCRIBE_PAGE_ITEMS_MAX: usize = 100;
/// ListJobs pages: up to 1000 when listing by status, 100 with filters (AWS).
pub const LIST_JOBS_PAGE_ITEMS_MAX: usize = 1000;
pub const LIST_JOBS_FILTERED_PAGE_ITEMS_MAX: usize = 100;

/// Compute environments per job queue (AWS: 3).
pub const QUEUE_COMPUTE_ENVIRONMENTS_MAX: usize = 3;
/// Compute environments and job queues per Barge. AWS allows 50 per region; Barge keeps its
/// maps in memory and walks all queues per scheduling pass, so a generous but finite bound.
pub const COMPUTE_ENVIRONMENTS_MAX: usize = 500;
pub const JOB_QUEUES_MAX: usize = 500;

/// dependsOn entries per job, unless the operator chooses otherwise (`--depends-on-max`). AWS
/// allows 20; Barge keeps reverse edges in memory, so a large but finite bound.
pub const DEPENDS_ON_MAX_DEFAULT: usize = 1_000;

/// arrayProperties.size, unless the operator chooses otherwise (`--array-size-max`). AWS
/// allows 10,000; Barge stores only the children that have been born, so a million costs one
/// row until they run.
pub const ARRAY_SIZE_MAX_DEFAULT: u32 = 1_000_000;
/// AWS's smallest array.
pub const ARRAY_SIZE_MIN: u32 = 2;
/// The largest array an operator may allow: indexes are u32, and every born child is a row.
pub const ARRAY_SIZE_MAX_CEILING: u32 = 100_000_000;
/// Child indexes one ListJobs(arrayJobId) page looks at; a page may come back short with a
/// nextToken, which AWS clients follow.
pub const ARRAY_LIST_SCAN_MAX: u32 = 100_000;

/// retryStrategy.attempts (AWS: 1–10).
pub const RETRY_ATTEMPTS_MIN: u32 = 1;
pub const RETRY_ATTEMPTS_MAX: u32 = 10;
/// evaluateOnExit entries (AWS: 5) and pattern length (AWS: 512).
pub const EVALUATE_ON_EXIT_RULES_MAX: usize = 5;
pub const EVALUATE_ON_EXIT_PATTERN_CHARS_MAX: usize = 512;
/// timeout.attemptDurationSeconds lower bound (AWS: 60).
pub const ATTEMPT_DURATION_SECONDS_MIN: u64 = 60;
/// schedulingPriority (AWS: 0–9999).
pub const SCHEDULING_PRIORITY_MAX: i32 = 9999;

/// Scheduling policies per Barge (AWS documents no quota; a finite bound, as for queues).
pub const SCHEDULING_POLICIES_MAX: usize = 500;
/// A share identifier, without its optional trailing `*` (AWS: 255).
pub const SHARE_IDENTIFIER_CHARS_MAX: usize = 255;
/// shareDistribution entries per policy. AWS documents none; overlap checks are quadratic and
/// a queue may have only 500 active identifiers anyway.
pub const SHARE_DISTRIBUTION_ENTRIES_MAX: usize = 500;
/// Share identifiers with unfinished jobs in one fair-share queue (AWS: 500); a submit that
/// would add one more is refused.
pub const ACTIVE_SHARE_IDENTIFIERS_PER_QUEUE_MAX: usize = 500;
/// fairsharePolicy.shareDecaySeconds (AWS: 0–604,800, one week); 0 means the 600 s minimum
/// window.
pub const SHARE_DECAY_SECONDS_MAX: i64 = 604_800;
pub const SHARE_DECAY_SECONDS_DEFAULT: i64 = 600;
/// fairsharePolicy.computeReservation, a percentage (AWS: 0–99).
pub const COMPUTE_RESERVATION_MAX: i64 = 99;
/// weightFactor in ten-thousandths (AWS: 0.0001–999.9999).
pub const WEIGHT_FACTOR_E4_MIN: u32 = 1;
pub const WEIGHT_FACTOR_E4_MAX: u32 = 9_999_999;
/// Weight of an identifier the distribution does not list (AWS: 1.0).
pub const WEIGHT_FACTOR_E4_DEFAULT: u32 = 10_000;

/// jobStateTimeLimitActions.maxTimeSeconds (AWS: 600–86,400).
pub const STATE_TIME_LIMIT_SECONDS_MIN: i64 = 600;
pub const STATE_TIME_LIMIT_SECONDS_MAX: i64 = 86_400;
/// RUNNABLE jobs per queue that one check of the time-limit actions looks at (front first),
/// so the once-a-second check stays cheap however deep the queue.
pub const STATE_TIME_LIMIT_SCAN_PER_QUEUE_MAX: usize = 10_000;

/// SIGTERM → SIGKILL grace when a job is terminated (AWS documents 30 s for timeouts).
pub const STOP_GRACE_MS: u64 = 30_000;
/// A compute environment tag that sets its stop grace period, in whole seconds (AWS has no
/// member for it, and a tag keeps every AWS client able to set it).
pub const STOP_GRACE_TAG: &str = "barge:stop-grace-seconds";
pub const STOP_GRACE_SECONDS_MAX: u64 = 3_600;
/// A compute environment tag that chooses the runner of its attempts: `docker` or `process`
/// (without it, the agent's own choice, `barge up --runner`). A tag, as for the grace period:
/// AWS has no member for it, and every AWS client can set one.
pub const RUNNER_TAG: &str = "barge:runner";

/// Default resources for a container that names none. AWS refuses to place such a job on EC2;
/// Barge runs it with a small, explicit default (documented in docs/api.md).
pub const DEFAULT_VCPUS_MILLI: u32 = 1000;
pub const DEFAULT_MEMORY_MIB: u64 = 2048;
/// The least memory a container may ask for (AWS: 4 MiB).
pub const MEMORY_MIB_MIN: u64 = 4;

/// One scheduling pass admits at most this many SUBMITTED jobs and looks at most this many
/// RUNNABLE jobs per queue that do not fit before moving on, so a pass stays short however deep
/// the queues are.
pub const SCHEDULER_ADMIT_PER_PASS_MAX: usize = 10_000;
pub const SCHEDULER_MISSES_PER_QUEUE_MAX: usize = 64;
/// Jobs one pass looks at in all. Jobs that can never fit are skipped without counting as
/// misses (they must not starve the jobs behind them), so this is what bounds a pass over a
/// queue headed by many of them; beyond it they do delay the jobs behind (documented).
pub const SCHEDULER_VISITS_PER_PASS_MAX: usize = 200_000;
/// Placements per pass; a larger backlog simply takes several passes.
pub const SCHEDULER_PLACEMENTS_PER_PASS_MAX: usize = 4_096;

/// Log events per GetLogEvents/FilterLogEvents page (CloudWatch: 10,000) and per page of
/// DescribeLogStreams/DescribeLogGroups (CloudWatch: 50).
pub const LOG_EVENTS_PAGE_MAX: usize = 10_000;
pub const LOG_EVENTS_PAGE_BYTES_MAX: usize = 1024 * 1024;
pub const LOG_DESCRIBE_PAGE_MAX: usize = 50;

/// Nodes of one multi-node parallel job (AWS: 1,000, the instances of one ECS cluster). Every
/// node is a job row and a placement, so this also bounds what one gang placement commits.
pub const MULTINODE_NODES_MAX: u32 = 1_000;
/// Node ranges (node groups) of one multi-node definition (AWS: 5).
pub const MULTINODE_NODE_RANGES_MAX: usize = 5;
/// nodePropertyOverrides of one SubmitJob. AWS names no number; each override may split the
/// job's node groups further, so a small bound keeps a job's distinct containers few.
pub const MULTINODE_NODE_OVERRIDES_MAX: usize = 10;

/// linuxParameters.swappiness: AWS accepts 0 to 100, as the kernel does.
pub const SWAPPINESS_MAX: i64 = 100;
/// Volumes, mountPoints, ulimits, devices and tmpfs entries of one container. AWS names no
/// number; each becomes a line of the container's host configuration, so a bound keeps a
/// definition (stored and echoed whole) small.
pub const CONTAINER_LIST_ENTRIES_MAX: usize = 100;

/// A compute environment tag that names the instance provider (a `[providers.NAME]` of the
/// server's configuration file) that scales it between minvCpus and maxvCpus. A tag, as for
/// the runner: AWS has no member for it, and every AWS client can set one.
pub const PROVIDER_TAG: &str = "barge:provider";
/// RUNNABLE jobs of one queue that one scaling plan looks at (front first), so the
/// once-a-second plan stays cheap however deep the queue: the demand is an estimate, and the
/// front of a queue is what runs next anyway. Unborn array children are counted in bulk.
pub const SCALING_DEMAND_JOBS_PER_QUEUE_MAX: usize = 10_000;
/// Distinct job shapes (vCPUs, memory, GPUs) remembered per environment to choose instance
/// types: enough to find one that fits some waiting job, small enough to compare cheaply.
pub const SCALING_SHAPES_PER_ENVIRONMENT_MAX: usize = 32;
/// Instances one plan launches per environment; a larger need takes several plans (a second
/// apart), so a maxvCpus of thousands of tiny instances does not start them all in one burst.
pub const SCALING_LAUNCHES_PER_PLAN_MAX: usize = 64;
/// After a failed launch, an environment launches nothing for this long, doubling with each
/// failure in a row up to the maximum: a broken provider is retried, not hammered.
pub const SCALING_LAUNCH_BACKOFF_MS_INITIAL: i64 = 2_000;
pub const SCALING_LAUNCH_BACKOFF_MS_MAX: i64 = 300_000;

/// Schedules one server holds. Each is checked once a second by the firing loop and may submit
/// a job each time it fires, so the bound keeps both the check and a burst of fires small.
pub const SCHEDULES_MAX: usize = 1_000;
/// A scheduleExpression's length (EventBridge Scheduler: 256).
pub const SCHEDULE_EXPRESSION_CHARS_MAX: usize = 256;
/// A schedule's description (EventBridge Scheduler: 512).
pub const SCHEDULE_DESCRIPTION_CHARS_MAX: usize = 512;
/// The jobs of one schedule that are remembered as possibly unfinished (for the overlap
/// policy). With ALLOW, runs may pile up; the oldest beyond this are forgotten (not stopped),
/// so a schedule's row stays small.
pub const SCHEDULE_ACTIVE_JOBS_MAX: usize = 100;
/// Schedules fired by one FireSchedules command; more due at once take several commands, so
/// one command (one transaction) stays short.
pub const SCHEDULE_FIRES_PER_COMMAND_MAX: usize = 100;
/// The last year a cron expression may name (EventBridge: 1970–2199); also where the search
/// for the next fire time stops.
pub const CRON_YEAR_MIN: i16 = 1970;
pub const CRON_YEAR_MAX: i16 = 2199;
/// rate(N unit): N in minutes at most this (about 10 years); larger values are surely typos.
pub const RATE_MINUTES_MAX: i64 = 10 * 366 * 24 * 60;
/// Schedules per ListSchedules page (the default and the most maxResults may ask for).
pub const SCHEDULES_PAGE_MAX: usize = 100;
/// The tag a scheduled job carries, naming its schedule.
pub const SCHEDULE_TAG: &str = "barge:schedule";
