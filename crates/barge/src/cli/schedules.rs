//! `barge schedules …`: Barge's scheduled jobs (docs/schedules.md) through its own API under
//! `/barge/v1/schedules`. A schedule's job template is a SubmitJob request, so it takes the
//! same flags as `barge submit` (`JobFlags`), or the JSON with `--job-template`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::submit::{json_object, key_value, JobFlags};
use super::table::{clip, time, Table};
use super::Output;
use super::{exit, fail, percent_encode_segment, print_json, Api, Common, Failure, Outcome};

/// Where the API lives.
const PATH: &str = "/barge/v1/schedules";
/// The list's page size (the API's largest, SCHEDULES_PAGE_MAX).
const LIST_PAGE_ITEMS: u64 = 100;
/// The most list pages read: twice what the server's SCHEDULES_MAX (1,000) needs, so a
/// server that never ends its pages cannot keep the command going.
const LIST_PAGES_MAX: usize = 20;
/// The last error is cut to this many characters in a summary (it stays one line).
const ERROR_CHARS_MAX: usize = 240;

#[derive(clap::Args)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Subcommand)]
enum Sub {
    /// Create a schedule that submits a job (the template: submit's flags) when it fires.
    Create(Box<CreateArgs>),
    /// List the schedules, by name: expression, state, next and last fire, last job.
    List(ListArgs),
    /// Describe a schedule: its timing, counters, last error and job template.
    Describe(NameArgs),
    /// Change a schedule: only what is given changes (job flags change its template).
    Update(Box<UpdateArgs>),
    /// Enable a schedule (it fires from now on; missed times are not caught up).
    Enable(NameArgs),
    /// Disable a schedule (it stops firing; its jobs go on).
    Disable(NameArgs),
    /// Delete a schedule (its jobs go on).
    Delete(NameArgs),
}

impl SchedulesArgs {
    /// The command's name in error messages.
    pub fn name(&self) -> &'static str {
        match self.command {
            Sub::Create(_) => "schedules create",
            Sub::List(_) => "schedules list",
            Sub::Describe(_) => "schedules describe",
            Sub::Update(_) => "schedules update",
            Sub::Enable(_) => "schedules enable",
            Sub::Disable(_) => "schedules disable",
            Sub::Delete(_) => "schedules delete",
        }
    }
}

/// What create and update set besides the template.
#[derive(clap::Args)]
struct ScheduleFlags {
    /// cron(…), rate(…) or at(…), EventBridge Scheduler's syntax.
    #[arg(long, value_name = "EXPRESSION")]
    expression: Option<String>,
    /// The IANA time zone the expression is read in (default UTC).
    #[arg(long, value_name = "TZ")]
    timezone: Option<String>,
    /// What a fire does while an earlier run is unfinished: ALLOW, SKIP or CANCEL_PREVIOUS.
    #[arg(long, value_parser = overlap)]
    overlap: Option<String>,
    /// ENABLED or DISABLED.
    #[arg(long, value_parser = state)]
    state: Option<String>,
    /// What the schedule is for (up to 512 characters).
    #[arg(long)]
    description: Option<String>,
    /// The job template as JSON (a SubmitJob request); the job flags are applied on top.
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    job_template: Option<Map<String, Value>>,
    /// A tag of the schedule itself, not of its jobs (repeatable; on update they replace the
    /// schedule's tags).
    #[arg(long = "schedule-tags", value_name = "KEY=VALUE", value_parser = key_value)]
    schedule_tags: Vec<(String, String)>,
}

#[derive(clap::Args)]
// A schedule needs an expression; an update may leave it as it is.
#[command(mut_arg("expression", |a| a.required(true)))]
struct CreateArgs {
    /// The schedule's name (letters, digits, - and _; up to 128).
    name: String,
    #[command(flatten)]
    schedule: ScheduleFlags,
    #[command(flatten)]
    job: JobFlags,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct UpdateArgs {
    /// The schedule's name.
    name: String,
    #[command(flatten)]
    schedule: ScheduleFlags,
    #[command(flatten)]
    job: JobFlags,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct NameArgs {
    /// The schedule's name.
    name: String,
    #[command(flatten)]
    common: Common,
}

fn upper_one_of(s: &str, allowed: &[&str]) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    if allowed.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!("{s:?} is not one of {}", allowed.join(", ")))
    }
}

fn overlap(s: &str) -> Result<String, String> {
    upper_one_of(s, &["ALLOW", "SKIP", "CANCEL_PREVIOUS"])
}

fn state(s: &str) -> Result<String, String> {
    upper_one_of(s, &["ENABLED", "DISABLED"])
}

pub fn run(args: SchedulesArgs) -> Outcome {
    match args.command {
        Sub::Create(a) => {
            let api = Api::new(&a.common)?;
            let schedule = api.own("POST", PATH, Some(&create_body(&a)))?;
            show(&schedule, a.common.output)
        }
        Sub::List(a) => list(a),
        Sub::Describe(a) => {
            let schedule = Api::new(&a.common)?.own("GET", &path(&a.name), None)?;
            show(&schedule, a.common.output)
        }
        Sub::Update(a) => {
            let api = Api::new(&a.common)?;
            // Job flags change the current template (the API replaces it whole).
            let current = if a.job.given() && a.schedule.job_template.is_none() {
                let schedule = api.own("GET", &path(&a.name), None)?;
                schedule["jobTemplate"].as_object().cloned()
            } else {
                None
            };
            let body = update_body(&a, current)?;
            let schedule = api.own("PATCH", &path(&a.name), Some(&body))?;
            show(&schedule, a.common.output)
        }
        Sub::Enable(a) => set_state(a, "ENABLED"),
        Sub::Disable(a) => set_state(a, "DISABLED"),
        Sub::Delete(a) => {
            let answer = Api::new(&a.common)?.own("DELETE", &path(&a.name), None)?;
            match a.common.output {
                Output::Json => print_json(&answer)?,
                Output::Table => println!("deleted schedule {}", a.name),
            }
            Ok(exit::OK)
        }
    }
}

fn path(name: &str) -> String {
    format!("{PATH}/{}", percent_encode_segment(name))
}

fn set_state(a: NameArgs, state: &str) -> Outcome {
    let body = json!({ "state": state });
    let schedule = Api::new(&a.common)?.own("PATCH", &path(&a.name), Some(&body))?;
    show(&schedule, a.common.output)
}

fn show(schedule: &Value, output: Output) -> Outcome {
    match output {
        Output::Json => print_json(schedule)?,
        Output::Table => print!("{}", summary(schedule)),
    }
    Ok(exit::OK)
}

/// The members create and update share; `template` is the job template when there is one.
fn members(flags: &ScheduleFlags, template: Option<Map<String, Value>>) -> Map<String, Value> {
    let mut body = Map::new();
    for (key, value) in [
        ("scheduleExpression", &flags.expression),
        ("scheduleExpressionTimezone", &flags.timezone),
        ("state", &flags.state),
        ("overlapPolicy", &flags.overlap),
        ("description", &flags.description),
    ] {
        if let Some(v) = value {
            body.insert(key.into(), json!(v));
        }
    }
    if let Some(t) = template {
        body.insert("jobTemplate".into(), Value::Object(t));
    }
    if !flags.schedule_tags.is_empty() {
        let tags: Map<String, Value> = flags
            .schedule_tags
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        body.insert("tags".into(), Value::Object(tags));
    }
    body
}

/// The create request: the template is `--job-template` (or nothing) with the job flags on
/// top; what is missing from it the API names.
fn create_body(a: &CreateArgs) -> Value {
    let base = a.schedule.job_template.clone().unwrap_or_default();
    let mut body = members(&a.schedule, Some(a.job.apply(base)));
    body.insert("scheduleName".into(), json!(a.name));
    Value::Object(body)
}

/// The update request: a new template when `--job-template` or a job flag is given (the flags
/// on top of `--job-template`, else of `current`, the schedule's template).
fn update_body(a: &UpdateArgs, current: Option<Map<String, Value>>) -> Result<Value, Failure> {
    let template = match (&a.schedule.job_template, a.job.given()) {
        (Some(given), _) => Some(a.job.apply(given.clone())),
        (None, true) => Some(a.job.apply(current.unwrap_or_default())),
        (None, false) => None,
    };
    let body = members(&a.schedule, template);
    if body.is_empty() {
        return Err(fail(
            "nothing to change: give --expression, --timezone, --overlap, --state, --description, --schedule-tags, --job-template or job flags",
        ));
    }
    Ok(Value::Object(body))
}

fn list(a: ListArgs) -> Outcome {
    let api = Api::new(&a.common)?;
    let mut schedules = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..LIST_PAGES_MAX {
        let mut query = format!("{PATH}?maxResults={LIST_PAGE_ITEMS}");
        if let Some(t) = &token {
            query.push_str(&format!("&nextToken={}", percent_encode_segment(t)));
        }
        let page = api.own("GET", &query, None)?;
        schedules.extend(page["schedules"].as_array().cloned().unwrap_or_default());
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => {
                match a.common.output {
                    Output::Json => print_json(&json!({ "schedules": schedules }))?,
                    Output::Table => print!("{}", render(&schedules)),
                }
                return Ok(exit::OK);
            }
        }
    }
    Err(fail(format!(
        "more than {} schedules: Barge's list did not end",
        LIST_PAGES_MAX as u64 * LIST_PAGE_ITEMS
    )))
}

/// The list's table: one row per schedule.
fn render(schedules: &[Value]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "EXPRESSION",
        "TIME ZONE",
        "STATE",
        "OVERLAP",
        "NEXT FIRE",
        "LAST FIRED",
        "LAST JOB",
    ]);
    for s in schedules {
        let text = |k: &str| s[k].as_str().unwrap_or("-").to_string();
        t.row(vec![
            text("scheduleName"),
            text("scheduleExpression"),
            text("scheduleExpressionTimezone"),
            text("state"),
            text("overlapPolicy"),
            time(s["nextFireAt"].as_i64()),
            time(s["lastFiredAt"].as_i64()),
            text("lastJobId"),
        ]);
    }
    t.render()
}

/// One schedule, a line per fact, facts it lacks left out.
fn summary(s: &Value) -> String {
    let text = |k: &str| s[k].as_str().unwrap_or("").to_string();
    let mut out = format!("schedule {}\n", text("scheduleName"));
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("  {:<14}{value}\n", format!("{label}:")));
    };
    if let Some(d) = s["description"].as_str() {
        line("description", d.to_string());
    }
    line("expression", text("scheduleExpression"));
    line("time zone", text("scheduleExpressionTimezone"));
    line("state", text("state"));
    line("overlap", text("overlapPolicy"));
    line(
        "next fire",
        match s["nextFireAt"].as_i64() {
            Some(t) => time(Some(t)),
            None if s["state"] == "DISABLED" => "none (disabled)".to_string(),
            None => "none (a one-time schedule that fired)".to_string(),
        },
    );
    if let Some(t) = s["lastFiredAt"].as_i64() {
        line("last fired", time(Some(t)));
    }
    if let Some(j) = s["lastJobId"].as_str() {
        line("last job", j.to_string());
    }
    let active: Vec<&str> = s["activeJobIds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    // The unfinished runs: what the overlap policy looks at when the schedule next fires.
    if !active.is_empty() {
        line("active runs", active.join(", "));
    }
    let count = |k: &str| s[k].as_u64().unwrap_or(0);
    line(
        "runs",
        format!(
            "fired {}, skipped {}, failed {}",
            count("firedCount"),
            count("skippedCount"),
            count("failedCount")
        ),
    );
    if let Some(e) = s["lastError"].as_str() {
        line("last error", clip(e, ERROR_CHARS_MAX));
    }
    let t = &s["jobTemplate"];
    let member = |k: &str| t[k].as_str().unwrap_or("?").to_string();
    line(
        "job",
        format!(
            "{} on {} with {}",
            member("jobName"),
            member("jobQueue"),
            member("jobDefinition")
        ),
    );
    line("template", t.to_string());
    if let Some(tags) = s["tags"].as_object().filter(|t| !t.is_empty()) {
        let pairs: Vec<String> = tags
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        line("tags", pairs.join(", "));
    }
    line("created", time(s["createdAt"].as_i64()));
    line("updated", time(s["updatedAt"].as_i64()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SchedulesArgs,
    }

    fn parse(argv: &[&str]) -> Sub {
        let mut all = vec!["barge"];
        all.extend_from_slice(argv);
        Wrap::try_parse_from(all).expect("parses").args.command
    }

    fn create(argv: &[&str]) -> Value {
        let mut all = vec!["create"];
        all.extend_from_slice(argv);
        match parse(&all) {
            Sub::Create(a) => create_body(&a),
            _ => unreachable!(),
        }
    }

    fn update(argv: &[&str], current: Option<Value>) -> Result<Value, Failure> {
        let mut all = vec!["update", "s"];
        all.extend_from_slice(argv);
        match parse(&all) {
            Sub::Update(a) => update_body(&a, current.and_then(|c| c.as_object().cloned())),
            _ => unreachable!(),
        }
    }

    #[test]
    fn create_takes_submit_flags_as_its_template() {
        let body = create(&[
            "nightly",
            "--expression",
            "cron(0 3 * * ? *)",
            "--timezone",
            "Europe/Paris",
            "--overlap",
            "skip",
            "--state",
            "DISABLED",
            "--description",
            "the report",
            "--schedule-tags",
            "team=data",
            "--job-name",
            "report",
            "--job-queue",
            "q",
            "--job-definition",
            "d:2",
            "--parameters",
            "mode=full",
            "--env",
            "A=1",
            "--tags",
            "cost=low",
            "--",
            "sh",
            "-c",
            "echo hi",
        ]);
        assert_eq!(
            body,
            json!({
                "scheduleName": "nightly",
                "scheduleExpression": "cron(0 3 * * ? *)",
                "scheduleExpressionTimezone": "Europe/Paris",
                "overlapPolicy": "SKIP",
                "state": "DISABLED",
                "description": "the report",
                "tags": {"team": "data"},
                "jobTemplate": {
                    "jobName": "report", "jobQueue": "q", "jobDefinition": "d:2",
                    "parameters": {"mode": "full"},
                    "containerOverrides": {
                        "command": ["sh", "-c", "echo hi"],
                        "environment": [{"name": "A", "value": "1"}]
                    },
                    "tags": {"cost": "low"}
                }
            })
        );
    }

    #[test]
    fn job_flags_go_on_top_of_a_json_template() {
        let body = create(&[
            "s",
            "--expression",
            "rate(5 minutes)",
            "--job-template",
            r#"{"jobName":"a","jobQueue":"q","jobDefinition":"d","parameters":{"x":"1","y":"2"}}"#,
            "--job-name",
            "b",
            "--parameters",
            "y=3",
        ]);
        assert_eq!(
            body["jobTemplate"],
            json!({"jobName": "b", "jobQueue": "q", "jobDefinition": "d", "parameters": {"x": "1", "y": "3"}})
        );
        // Only what was given: the API's defaults apply to the rest.
        assert!(body.get("overlapPolicy").is_none() && body.get("state").is_none());
    }

    #[test]
    fn update_sends_only_what_changes() {
        assert_eq!(
            update(
                &["--state", "enabled", "--expression", "rate(1 hour)"],
                None
            )
            .unwrap(),
            json!({"state": "ENABLED", "scheduleExpression": "rate(1 hour)"})
        );
        assert!(update(&[], None).is_err());
    }

    #[test]
    fn update_job_flags_change_the_current_template() {
        let current = json!({
            "jobName": "a", "jobQueue": "q", "jobDefinition": "d",
            "containerOverrides": {"command": ["x"], "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
        });
        let body = update(&["--env", "B=3", "--job-queue", "other"], Some(current)).unwrap();
        assert_eq!(
            body,
            json!({"jobTemplate": {
                "jobName": "a", "jobQueue": "other", "jobDefinition": "d",
                "containerOverrides": {"command": ["x"], "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]}
            }})
        );
        // --job-template replaces the template whole (then the flags apply).
        let body = update(
            &["--job-template", r#"{"jobName":"n"}"#, "--job-queue", "q2"],
            Some(json!({"jobDefinition": "old"})),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"jobTemplate": {"jobName": "n", "jobQueue": "q2"}})
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &[
                "create",
                "s",
                "--expression",
                "rate(1 hour)",
                "--overlap",
                "SOMETIMES",
            ][..],
            &[
                "create",
                "s",
                "--expression",
                "rate(1 hour)",
                "--state",
                "ON",
            ],
            &[
                "create",
                "s",
                "--expression",
                "rate(1 hour)",
                "--job-template",
                "[1]",
            ],
            &[
                "create",
                "s",
                "--expression",
                "rate(1 hour)",
                "--schedule-tags",
                "novalue",
            ],
            &["create", "s", "--job-name", "n"],
            &["update"],
            &["enable"],
        ] {
            let mut all = vec!["barge"];
            all.extend_from_slice(bad);
            assert!(Wrap::try_parse_from(all).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_table_has_a_row_per_schedule_with_dashes_for_what_has_not_happened() {
        let rows = [json!({
            "scheduleName": "n", "scheduleExpression": "rate(1 hour)",
            "scheduleExpressionTimezone": "UTC", "state": "DISABLED", "overlapPolicy": "ALLOW"
        })];
        assert_eq!(
            render(&rows),
            "NAME  EXPRESSION    TIME ZONE  STATE     OVERLAP  NEXT FIRE  LAST FIRED  LAST JOB\n\
             n     rate(1 hour)  UTC        DISABLED  ALLOW    -          -           -\n"
        );
    }

    #[test]
    fn the_summary_says_why_there_is_no_next_fire() {
        let s = json!({
            "scheduleName": "n", "scheduleExpression": "at(2030-01-01T00:00:00)",
            "scheduleExpressionTimezone": "UTC", "state": "ENABLED", "overlapPolicy": "ALLOW",
            "jobTemplate": {"jobName": "j", "jobQueue": "q", "jobDefinition": "d"},
            "firedCount": 1, "lastFiredAt": 0, "lastJobId": "id-1", "createdAt": 0, "updatedAt": 0
        });
        let out = summary(&s);
        assert!(
            out.contains("  next fire:    none (a one-time schedule that fired)\n"),
            "{out}"
        );
        assert!(out.contains("  job:          j on q with d\n"), "{out}");
        assert!(
            out.contains("  runs:         fired 1, skipped 0, failed 0\n"),
            "{out}"
        );
    }
}
