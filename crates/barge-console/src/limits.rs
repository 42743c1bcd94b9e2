//! The console's own bounds. Every page is bounded: none walks more of the state than these
//! allow, whatever the number of jobs.

/// Jobs on one page of a job list. A screenful; the rest is a click on "Older".
pub const JOBS_PAGE_ITEMS: usize = 50;
/// Index entries one job-list page may examine while filtering by name prefix. The filter
/// cannot be answered from an index, so a page stops here and offers to continue from where
/// it stopped: a page costs at most this many lookups even in a queue of millions.
pub const JOBS_PAGE_SCAN_MAX: usize = 10_000;
/// Job definitions on one page of the definitions list.
pub const DEFINITIONS_PAGE_ITEMS: usize = 100;
/// Links to array children on one job page (the rest by paging through the children).
pub const ARRAY_CHILD_LINKS_MAX: u32 = 100;
/// Jobs that depend on this one, listed on its page.
pub const DEPENDENTS_SHOWN_MAX: usize = 100;
/// Log events in one answer of the live log endpoint. The page asks again at once while
/// a full page came back.
pub const LOG_EVENTS_PAGE_MAX: i64 = 500;
/// How often the job page asks for new log lines and its status, in milliseconds.
pub const LOG_POLL_MS: u64 = 1_000;
/// Log lines the job page keeps; older ones are dropped from the top so that a chatty job
/// cannot grow the page without end (the whole log stays in CloudWatch Logs' API).
pub const LOG_LINES_KEPT_MAX: usize = 5_000;
/// The largest form body accepted. Console forms hold a few fields; the largest is a job
/// definition's command and environment.
pub const FORM_BODY_BYTES_MAX: usize = 64 * 1024;
/// A console session (and its sign-in) lasts this long, in milliseconds: a working day.
pub const SESSION_MS: i64 = 12 * 60 * 60 * 1000;
/// Queues and compute environments listed on the overview (AWS allows 50 and 50 per
/// account; Barge's are few as well).
pub const OVERVIEW_ROWS_MAX: usize = 500;
/// Schedules on one page of the schedules list (the server holds at most barge-core's
/// `SCHEDULES_MAX`, 1,000).
pub const SCHEDULES_PAGE_ITEMS: usize = 50;
/// Schedules named in the overview's "next to fire" table. Finding them walks every schedule,
/// which `SCHEDULES_MAX` bounds.
pub const OVERVIEW_SCHEDULES_SHOWN: usize = 5;
