//! `barge submit`: SubmitJob with the aws CLI's flags (and a few shorthands), printing the job
//! id; `--wait` follows the job to its end.

use serde_json::{json, Map, Value};

use super::{exit, fail, interrupt, is_done, print_json, Api, Common, Failure, Outcome, Output};

/// How often `--wait` asks how the job is doing.
const WAIT_POLL_MS: u64 = 1_000;
/// How long `--wait` keeps polling a Barge that stopped answering (a restart, a leader failing
/// over) before it gives up. The job was submitted, so giving up must not look like exit 3
/// ("nothing was asked"): a script retrying on 3 would submit it twice.
const WAIT_UNREACHABLE_MS_MAX: u64 = 60_000;

#[derive(clap::Args)]
// The job's flags are optional where a schedule's template takes them (its update changes only
// what is given); a submit needs these three.
#[command(mut_arg("job_name", |a| a.required(true)))]
#[command(mut_arg("job_queue", |a| a.required(true)))]
#[command(mut_arg("job_definition", |a| a.required(true)))]
pub struct SubmitArgs {
    #[command(flatten)]
    job: JobFlags,
    /// Wait until the job ends: exit 0 when it SUCCEEDED, 4 when it FAILED.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    common: Common,
}

/// The flags that describe a SubmitJob request, shared by `submit` and `schedules` (whose
/// job template is a SubmitJob request).
#[derive(clap::Args, Default)]
pub struct JobFlags {
    /// The job's name (letters, digits, - and _; up to 128).
    #[arg(long)]
    pub job_name: Option<String>,
    /// The job queue, by name or ARN.
    #[arg(long)]
    pub job_queue: Option<String>,
    /// The job definition: name, name:revision or ARN.
    #[arg(long)]
    pub job_definition: Option<String>,
    /// A parameter substituted for Ref::NAME in the command (repeatable).
    #[arg(long = "parameters", value_name = "NAME=VALUE", value_parser = key_value)]
    parameters: Vec<(String, String)>,
    /// containerOverrides as JSON, as for the aws CLI; --env, --vcpus, --memory and a
    /// command after `--` are added to it.
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    container_overrides: Option<Map<String, Value>>,
    /// An environment variable for the container (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// vCPUs for the container (a VCPU resourceRequirement: 1, 0.5, …).
    #[arg(long)]
    vcpus: Option<String>,
    /// Memory for the container in MiB (a MEMORY resourceRequirement).
    #[arg(long, value_name = "MIB")]
    memory: Option<u64>,
    /// Makes it an array job of N children (2 up to the server's --array-size-max).
    #[arg(long, value_name = "N", conflicts_with = "array_properties")]
    array_size: Option<u64>,
    /// arrayProperties as JSON ({"size": N}).
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    array_properties: Option<Map<String, Value>>,
    /// A job this one waits for: JOBID, or JOBID:N_TO_N / JOBID:SEQUENTIAL for array jobs
    /// (repeatable).
    #[arg(long, value_name = "JOBID[:TYPE]", value_parser = dependency)]
    depends_on: Vec<Value>,
    /// Attempts before the job fails (retryStrategy.attempts, 1 to 10).
    #[arg(long, value_name = "N")]
    retry_attempts: Option<u64>,
    /// Seconds an attempt may run before it is stopped (timeout.attemptDurationSeconds).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// A tag for the job (repeatable).
    #[arg(long = "tags", value_name = "KEY=VALUE", value_parser = key_value)]
    tags: Vec<(String, String)>,
    /// Copy the job's and definition's tags to what runs it.
    #[arg(long)]
    propagate_tags: bool,
    /// The fair-share identifier (fair-share queues only).
    #[arg(long)]
    share_identifier: Option<String>,
    /// The scheduling priority within a fair-share queue (0 to 9999).
    #[arg(long, value_name = "N")]
    scheduling_priority_override: Option<i64>,
    /// The command to run instead of the definition's (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

pub fn json_object(s: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a JSON object ({...})".to_string()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// `JOBID` or `JOBID:N_TO_N` / `JOBID:SEQUENTIAL`. An array child's id (`id:3`) has a colon
/// too, so only those two words are taken as the type.
fn dependency(s: &str) -> Result<Value, String> {
    let (id, kind) = match s.rsplit_once(':') {
        Some((id, kind)) if kind == "N_TO_N" || kind == "SEQUENTIAL" => (id, Some(kind)),
        _ => (s, None),
    };
    if id.is_empty() {
        return Err(format!("{s:?} names no job id"));
    }
    Ok(match kind {
        Some(k) => json!({ "jobId": id, "type": k }),
        None => json!({ "jobId": id }),
    })
}

impl JobFlags {
    /// Whether any of the flags was given.
    pub fn given(&self) -> bool {
        self.apply(Map::new()) != Map::new()
    }

    /// The SubmitJob request the flags describe, on top of `base` (empty for a submit, a
    /// schedule's current template for its update): a member the flags give replaces the
    /// base's, except that parameters, tags, environment variables and resource requirements
    /// replace only the entries of the same name (or type).
    pub fn apply(&self, mut body: Map<String, Value>) -> Map<String, Value> {
        for (key, value) in [
            ("jobName", &self.job_name),
            ("jobQueue", &self.job_queue),
            ("jobDefinition", &self.job_definition),
        ] {
            if let Some(v) = value {
                body.insert(key.into(), json!(v));
            }
        }
        merge_pairs(&mut body, "parameters", &self.parameters);
        let mut overrides = match (&self.container_overrides, body.remove("containerOverrides")) {
            (Some(given), _) => given.clone(),
            (None, Some(Value::Object(current))) => current,
            (None, _) => Map::new(),
        };
        if !self.command.is_empty() {
            overrides.insert("command".into(), json!(self.command));
        }
        let env: Vec<Value> = self
            .env
            .iter()
            .map(|(k, v)| json!({ "name": k, "value": v }))
            .collect();
        // --env wins over a variable of the same name already there.
        replace_entries(&mut overrides, "environment", "name", env);
        let mut requirements = Vec::new();
        if let Some(v) = &self.vcpus {
            requirements.push(json!({ "type": "VCPU", "value": v }));
        }
        if let Some(m) = self.memory {
            requirements.push(json!({ "type": "MEMORY", "value": m.to_string() }));
        }
        // The shorthand wins over the same type given in the JSON.
        replace_entries(&mut overrides, "resourceRequirements", "type", requirements);
        if !overrides.is_empty() {
            body.insert("containerOverrides".into(), Value::Object(overrides));
        }
        if let Some(n) = self.array_size {
            body.insert("arrayProperties".into(), json!({ "size": n }));
        } else if let Some(p) = &self.array_properties {
            body.insert("arrayProperties".into(), Value::Object(p.clone()));
        }
        if !self.depends_on.is_empty() {
            body.insert("dependsOn".into(), json!(self.depends_on));
        }
        if let Some(n) = self.retry_attempts {
            body.insert("retryStrategy".into(), json!({ "attempts": n }));
        }
        if let Some(s) = self.timeout {
            body.insert("timeout".into(), json!({ "attemptDurationSeconds": s }));
        }
        merge_pairs(&mut body, "tags", &self.tags);
        if self.propagate_tags {
            body.insert("propagateTags".into(), json!(true));
        }
        if let Some(s) = &self.share_identifier {
            body.insert("shareIdentifier".into(), json!(s));
        }
        if let Some(p) = self.scheduling_priority_override {
            body.insert("schedulingPriorityOverride".into(), json!(p));
        }
        body
    }
}

/// Adds `pairs` to the object `body[key]` (made when missing), replacing keys already there.
fn merge_pairs(body: &mut Map<String, Value>, key: &str, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        return;
    }
    let entry = body.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(map) = entry {
        for (k, v) in pairs {
            map.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

/// Appends `new` to the list `overrides[key]` (made when missing), first dropping the entries
/// whose `id` member matches one of `new`'s.
fn replace_entries(overrides: &mut Map<String, Value>, key: &str, id: &str, new: Vec<Value>) {
    if new.is_empty() {
        return;
    }
    let list = overrides.entry(key).or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Value::Array(items) = list {
        items.retain(|r| !new.iter().any(|n| n[id] == r[id]));
        items.extend(new);
    }
}

pub fn run(args: SubmitArgs) -> Outcome {
    let api = Api::new(&args.common)?;
    let answer = api.batch("SubmitJob", &Value::Object(args.job.apply(Map::new())))?;
    let job_id = answer["jobId"]
        .as_str()
        .ok_or_else(|| fail("Barge's SubmitJob answer has no jobId"))?
        .to_string();
    if !args.wait {
        match args.common.output {
            Output::Json => print_json(&answer)?,
            Output::Table => println!("{job_id}"),
        }
        return Ok(exit::OK);
    }
    if args.common.output == Output::Table {
        println!("{job_id}");
    }
    interrupt::catch();
    let Some(job) = wait_for_end(&api, &job_id, |job| {
        eprintln!(
            "barge submit: job {job_id} is {}",
            job["status"].as_str().unwrap_or("?")
        );
    })?
    else {
        eprintln!("barge submit: stopped waiting; job {job_id} goes on (barge terminate {job_id} stops it)");
        return Ok(exit::INTERRUPTED);
    };
    if args.common.output == Output::Json {
        print_json(&job)?;
    }
    Ok(end_code(&job))
}

/// 0 for a job that SUCCEEDED, 4 for one that FAILED (saying why on stderr).
pub fn end_code(job: &Value) -> u8 {
    if job["status"] == "SUCCEEDED" {
        return exit::OK;
    }
    let reason = job["statusReason"].as_str().unwrap_or("no reason given");
    let code = job["container"]["exitCode"]
        .as_i64()
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    eprintln!(
        "barge: job {} FAILED: {reason}{code}",
        job["jobId"].as_str().unwrap_or("?")
    );
    exit::JOB_FAILED
}

/// Polls the job until it ends; `changed` hears each new status. None when Ctrl-C came first.
pub fn wait_for_end(
    api: &Api,
    job_id: &str,
    mut changed: impl FnMut(&Value),
) -> Result<Option<Value>, Failure> {
    let mut last = String::new();
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        let job = match api.describe_job(job_id) {
            Ok(job) => {
                unreachable_since = None;
                job
            }
            Err(Failure::Unreachable(why)) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed().as_millis() >= u128::from(WAIT_UNREACHABLE_MS_MAX) {
                    return Err(Failure::Other(anyhow::anyhow!(
                        "job {job_id} was submitted, but Barge has not answered for {} s ({why}); its state is unknown: look again with `barge describe {job_id}`",
                        WAIT_UNREACHABLE_MS_MAX / 1000
                    )));
                }
                if !interrupt::sleep(WAIT_POLL_MS) {
                    return Ok(None);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let status = job["status"].as_str().unwrap_or("").to_string();
        if status != last {
            changed(&job);
            last = status;
        }
        if is_done(&last) {
            return Ok(Some(job));
        }
        if !interrupt::sleep(WAIT_POLL_MS) {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SubmitArgs,
    }

    fn parse(extra: &[&str]) -> Value {
        let mut argv = vec![
            "submit",
            "--job-name",
            "n",
            "--job-queue",
            "q",
            "--job-definition",
            "d",
        ];
        argv.extend_from_slice(extra);
        Value::Object(
            Wrap::try_parse_from(argv)
                .expect("parses")
                .args
                .job
                .apply(Map::new()),
        )
    }

    #[test]
    fn the_least_is_name_queue_and_definition() {
        assert_eq!(
            parse(&[]),
            json!({"jobName": "n", "jobQueue": "q", "jobDefinition": "d"})
        );
    }

    #[test]
    fn flags_become_submit_job_members() {
        let body = parse(&[
            "--parameters",
            "a=1",
            "--parameters",
            "b=x=y",
            "--array-size",
            "4",
            "--depends-on",
            "j1",
            "--depends-on",
            "j2:N_TO_N",
            "--depends-on",
            "j3:7",
            "--retry-attempts",
            "3",
            "--timeout",
            "60",
            "--tags",
            "team=ml",
            "--share-identifier",
            "blue",
            "--scheduling-priority-override",
            "5",
        ]);
        assert_eq!(body["parameters"], json!({"a": "1", "b": "x=y"}));
        assert_eq!(body["arrayProperties"], json!({"size": 4}));
        assert_eq!(
            body["dependsOn"],
            json!([{"jobId": "j1"}, {"jobId": "j2", "type": "N_TO_N"}, {"jobId": "j3:7"}])
        );
        assert_eq!(body["retryStrategy"], json!({"attempts": 3}));
        assert_eq!(body["timeout"], json!({"attemptDurationSeconds": 60}));
        assert_eq!(body["tags"], json!({"team": "ml"}));
        assert_eq!(body["shareIdentifier"], "blue");
        assert_eq!(body["schedulingPriorityOverride"], 5);
    }

    #[test]
    fn shorthands_join_the_container_overrides() {
        let body = parse(&[
            "--container-overrides",
            r#"{"environment":[{"name":"A","value":"1"}],"resourceRequirements":[{"type":"VCPU","value":"4"},{"type":"GPU","value":"1"}]}"#,
            "--env",
            "B=2",
            "--vcpus",
            "0.5",
            "--memory",
            "256",
            "--",
            "sh",
            "-c",
            "echo hi",
        ]);
        let o = &body["containerOverrides"];
        assert_eq!(o["command"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(
            o["environment"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            o["resourceRequirements"],
            json!([{"type": "GPU", "value": "1"}, {"type": "VCPU", "value": "0.5"}, {"type": "MEMORY", "value": "256"}])
        );
    }

    #[test]
    fn malformed_flags_are_usage_errors() {
        let base = [
            "submit",
            "--job-name",
            "n",
            "--job-queue",
            "q",
            "--job-definition",
            "d",
        ];
        for bad in [
            &["--parameters", "novalue"][..],
            &["--container-overrides", "[1]"],
            &["--container-overrides", "{"],
            &["--array-size", "2", "--array-properties", "{\"size\":2}"],
            &["--depends-on", ":SEQUENTIAL"],
        ] {
            let argv: Vec<&str> = base.iter().chain(bad.iter()).copied().collect();
            assert!(Wrap::try_parse_from(argv).is_err(), "{bad:?}");
        }
        // Optional in JobFlags (a schedule's update), required by submit.
        for missing in 1..=3 {
            let argv: Vec<&str> = base
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 2 * missing - 1 && *i != 2 * missing)
                .map(|(_, a)| *a)
                .collect();
            assert!(
                Wrap::try_parse_from(argv).is_err(),
                "without {}",
                base[2 * missing - 1]
            );
        }
    }

    #[test]
    fn env_replaces_a_variable_of_the_same_name() {
        let body = parse(&[
            "--container-overrides",
            r#"{"environment":[{"name":"A","value":"1"},{"name":"B","value":"1"}]}"#,
            "--env",
            "A=2",
        ]);
        assert_eq!(
            body["containerOverrides"]["environment"],
            json!([{"name": "B", "value": "1"}, {"name": "A", "value": "2"}])
        );
    }
}
