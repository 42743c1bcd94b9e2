//! The report: measured figures against the issue's targets, the command line and the machine,
//! as a markdown block for docs/benchmarks.md or as JSON.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    AtLeast,
    AtMost,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Target {
    pub comparison: Comparison,
    pub value: f64,
}

impl Target {
    pub fn at_least(value: f64) -> Target {
        Target {
            comparison: Comparison::AtLeast,
            value,
        }
    }

    pub fn at_most(value: f64) -> Target {
        Target {
            comparison: Comparison::AtMost,
            value,
        }
    }

    pub fn met_by(&self, measured: f64) -> bool {
        match self.comparison {
            Comparison::AtLeast => measured >= self.value,
            Comparison::AtMost => measured <= self.value,
        }
    }
}

/// One measured number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// The scenario that measured it.
    pub scenario: &'static str,
    /// A stable key for scripts, e.g. `submit_rps_held` or `agents_4_jobs_per_s_wall`.
    pub key: Cow<'static, str>,
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Whether `value` meets `target`; absent for figures without a target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    pub fn new(
        scenario: &'static str,
        key: impl Into<Cow<'static, str>>,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Figure {
        Figure {
            scenario,
            key: key.into(),
            label: label.into(),
            value,
            unit,
            target: None,
            pass: None,
            note: None,
        }
    }

    pub fn target(mut self, target: Target) -> Figure {
        self.pass = Some(target.met_by(self.value));
        self.target = Some(target);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = Some(note.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory_mib: Option<u64>,
    pub kernel: Option<String>,
    pub cpu_model: Option<String>,
}

impl Machine {
    pub fn probe() -> Machine {
        let nproc = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Machine {
            nproc,
            memory_mib: mem_total_mib(&meminfo),
            kernel,
            cpu_model: cpu_model(&cpuinfo),
        }
    }

    fn describe(&self) -> String {
        let unknown = || "unknown".to_string();
        format!(
            "{} CPUs (nproc), {} memory, kernel {}, {}",
            self.nproc,
            self.memory_mib
                .map(|m| format!("{:.1} GiB", m as f64 / 1024.0))
                .unwrap_or_else(unknown),
            self.kernel.clone().unwrap_or_else(unknown),
            self.cpu_model.clone().unwrap_or_else(unknown),
        )
    }
}

fn mem_total_mib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let kib = line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
        Some(kib.trim().parse::<u64>().ok()? / 1024)
    })
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// A scenario that could not finish, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioError {
    pub scenario: &'static str,
    pub error: String,
}

/// A scenario of the default run that was not run, and why (e.g. no Docker daemon answers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioSkip {
    pub scenario: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub command: String,
    /// UTC, when the run started.
    pub date: String,
    pub barge: String,
    pub machine: Machine,
    pub figures: Vec<Figure>,
    pub errors: Vec<ScenarioError>,
    /// Scenarios of the default run left out because they cannot run here; not a failure.
    pub skipped: Vec<ScenarioSkip>,
}

impl Report {
    /// Every figure that has a target meets it, and every scenario finished.
    pub fn all_pass(&self) -> bool {
        self.errors.is_empty() && self.figures.iter().all(|f| f.pass != Some(false))
    }

    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct WithVerdict<'a> {
            #[serde(flatten)]
            report: &'a Report,
            all_pass: bool,
        }
        let with_verdict = WithVerdict {
            report: self,
            all_pass: self.all_pass(),
        };
        serde_json::to_string_pretty(&with_verdict).expect("a report always serializes")
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### barge-bench, {}", self.date);
        let _ = writeln!(out);
        let _ = writeln!(out, "- command: `{}`", self.command);
        let _ = writeln!(out, "- barge: `{}`", self.barge);
        let _ = writeln!(out, "- machine: {}", self.machine.describe());
        let _ = writeln!(out);
        let _ = writeln!(out, "| figure | value | target | result |");
        let _ = writeln!(out, "|---|---:|---:|---|");
        for f in &self.figures {
            let target = f
                .target
                .map(|t| {
                    let sign = match t.comparison {
                        Comparison::AtLeast => "≥",
                        Comparison::AtMost => "≤",
                    };
                    format!("{sign} {}", format_number(t.value, f.unit))
                })
                .unwrap_or_else(|| "—".to_string());
            let result = match f.pass {
                Some(true) => "pass",
                Some(false) => "**FAIL**",
                None => "—",
            };
            let label = match &f.note {
                Some(note) => format!("{} ({note})", f.label),
                None => f.label.clone(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                escape_cell(&label),
                format_number(f.value, f.unit),
                target,
                result
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "Scenarios skipped:");
            let _ = writeln!(out);
            for s in &self.skipped {
                let _ = writeln!(out, "- {}: {}", s.scenario, s.reason);
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "Scenarios that did not finish:");
            let _ = writeln!(out);
            for e in &self.errors {
                let _ = writeln!(out, "- {}:", e.scenario);
                let _ = writeln!(out);
                let _ = writeln!(out, "  ```");
                for line in e.error.lines() {
                    let _ = writeln!(out, "  {line}");
                }
                let _ = writeln!(out, "  ```");
            }
        }
        out
    }
}

fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A value with its unit, thousands separated; rates and counts as integers, the rest with one
/// or two decimals.
pub fn format_number(value: f64, unit: &str) -> String {
    let digits = match unit {
        "req/s" | "jobs/s" | "jobs" | "requests" | "items" => 0,
        "ms" if value < 10.0 => 2,
        _ => 1,
    };
    let text = format!("{value:.digits$}");
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text.as_str(), None),
    };
    let (sign, int_digits) = match int_part.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", int_part),
    };
    let mut out = format!("{sign}{}", group_digits(int_digits));
    if let Some(f) = frac_part {
        out.push('.');
        out.push_str(f);
    }
    if !unit.is_empty() {
        out.push(' ');
        out.push_str(unit);
    }
    out
}

/// A count with thousands separated, for labels: `1,000,000`.
pub fn thousands(n: u64) -> String {
    group_digits(&n.to_string())
}

fn group_digits(digits: &str) -> String {
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    grouped
}

/// The command line, quoted so it can be pasted back into a POSIX shell.
pub fn shell_command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the Unix epoch.
pub fn utc_date(epoch_s: u64) -> String {
    let days = (epoch_s / 86_400) as i64;
    let secs = epoch_s % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            command: "barge-bench --only submit".into(),
            date: "2026-01-02 03:04 UTC".into(),
            barge: "/w/target/release/barge".into(),
            machine: Machine {
                nproc: 2,
                memory_mib: Some(7_936),
                kernel: Some("5.10.0-30-cloud-amd64".into()),
                cpu_model: Some("Intel(R) Xeon(R) CPU @ 2.20GHz".into()),
            },
            figures: vec![
                Figure::new(
                    "submit",
                    "submit_rps",
                    "SubmitJob requests/s",
                    2345.6,
                    "req/s",
                )
                .target(Target::at_least(2000.0)),
                Figure::new("memory", "idle_rss_mib", "idle RSS", 70.25, "MiB")
                    .target(Target::at_most(64.0))
                    .note("after 2 s"),
                Figure::new("submit", "p50_ms", "p50 | latency", 1.234, "ms"),
            ],
            errors: vec![],
            skipped: vec![],
        }
    }

    #[test]
    fn markdown_has_the_table_and_the_machine() {
        let md = sample().to_markdown();
        assert!(
            md.contains("- command: `barge-bench --only submit`"),
            "{md}"
        );
        assert!(
            md.contains("2 CPUs (nproc), 7.8 GiB memory, kernel 5.10.0-30-cloud-amd64, Intel(R) Xeon(R) CPU @ 2.20GHz"),
            "{md}"
        );
        assert!(md.contains("| figure | value | target | result |"), "{md}");
        assert!(
            md.contains("| SubmitJob requests/s | 2,346 req/s | ≥ 2,000 req/s | pass |"),
            "{md}"
        );
        assert!(
            md.contains("| idle RSS (after 2 s) | 70.2 MiB | ≤ 64.0 MiB | **FAIL** |")
                || md.contains("| idle RSS (after 2 s) | 70.3 MiB | ≤ 64.0 MiB | **FAIL** |"),
            "{md}"
        );
        assert!(md.contains("| p50 \\| latency | 1.23 ms | — | — |"), "{md}");
        assert!(!md.contains("did not finish"));
    }

    #[test]
    fn errors_are_listed_and_fail_the_run() {
        let mut r = sample();
        r.figures.truncate(1);
        assert!(r.all_pass());
        r.errors.push(ScenarioError {
            scenario: "e2e",
            error: "timed out\nwith detail".into(),
        });
        assert!(!r.all_pass());
        let md = r.to_markdown();
        assert!(md.contains("- e2e:"), "{md}");
        assert!(md.contains("  with detail"), "{md}");
    }

    #[test]
    fn skipped_scenarios_are_listed_but_do_not_fail_the_run() {
        let mut r = sample();
        r.figures.truncate(1);
        r.skipped.push(ScenarioSkip {
            scenario: "container",
            reason: "no Docker daemon answers".into(),
        });
        assert!(r.all_pass());
        let md = r.to_markdown();
        assert!(md.contains("Scenarios skipped:"), "{md}");
        assert!(md.contains("- container: no Docker daemon answers"), "{md}");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["skipped"][0]["scenario"], "container");
        assert!(!sample().to_markdown().contains("skipped"));
    }

    #[test]
    fn json_carries_the_same_figures() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["all_pass"], false);
        assert_eq!(v["machine"]["nproc"], 2);
        assert_eq!(v["figures"][0]["key"], "submit_rps");
        assert_eq!(v["figures"][0]["pass"], true);
        assert_eq!(v["figures"][0]["target"]["comparison"], "at_least");
        assert_eq!(v["figures"][1]["pass"], false);
        assert!(v["figures"][2].get("pass").is_none());
        assert_eq!(v["figures"][2]["value"], 1.234);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(format_number(0.0, "req/s"), "0 req/s");
        assert_eq!(format_number(999.4, "jobs/s"), "999 jobs/s");
        assert_eq!(format_number(1_234_567.0, "jobs"), "1,234,567 jobs");
        assert_eq!(format_number(512.0, "MiB"), "512.0 MiB");
        assert_eq!(format_number(1536.26, "MiB"), "1,536.3 MiB");
        assert_eq!(format_number(0.456, "ms"), "0.46 ms");
        assert_eq!(format_number(12.34, "ms"), "12.3 ms");
        assert_eq!(format_number(-1234.0, "requests"), "-1,234 requests");
        assert_eq!(format_number(3.0, ""), "3.0");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_030_100), "1,030,100");
    }

    #[test]
    fn machine_files_are_parsed() {
        assert_eq!(
            mem_total_mib("MemTotal:        8126440 kB\nMemFree: 1 kB\n"),
            Some(7935)
        );
        assert_eq!(mem_total_mib("nothing"), None);
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n").as_deref(),
            Some("AMD EPYC 7B13")
        );
        let here = Machine::probe();
        assert!(here.nproc >= 1);
    }

    #[test]
    fn command_lines_are_quoted_for_the_shell() {
        let args = [
            "barge-bench",
            "--barge",
            "/a b/barge",
            "--only",
            "e2e",
            "it's",
            "",
        ];
        assert_eq!(
            shell_command_line(args.iter().map(|s| s.to_string())),
            r"barge-bench --barge '/a b/barge' --only e2e 'it'\''s' ''"
        );
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_767_323_045), "2026-01-02 03:04 UTC");
    }
}
