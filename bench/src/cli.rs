//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Starts the real `barge` binary (a fresh `barge up` per measurement, on a free loopback port
/// and a fresh data directory) and measures it over HTTP: SubmitJob requests/s, trivial jobs/s
/// end to end (through the local agent, and through 1, 2 and 4 remote agents), the server's resident memory idle and with many jobs queued, array jobs (a
/// million children submitted and queued, an array run end to end), a dependency graph, and
/// trivial container jobs through the Docker runner against plain `docker run --rm`.
#[derive(Debug, Clone, Parser)]
#[command(name = "barge-bench", version)]
pub struct Args {
    /// The `barge` binary to benchmark. Without it: `target/release/barge` under the current
    /// directory, else `barge` next to this program.
    #[arg(long, value_name = "PATH")]
    pub barge: Option<PathBuf>,

    /// SubmitJob requests in each submit measurement.
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub submit_jobs: u64,

    /// Concurrent HTTP/1.1 keep-alive clients, one connection each.
    #[arg(long, value_name = "C", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub clients: u64,

    /// Trivial jobs (`true` through the process runner) in the end-to-end measurement.
    #[arg(long, value_name = "N", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub e2e_jobs: u64,

    /// vCPUs the local agent offers (in the agents scenario: all remote agents together). More
    /// than the host has oversubscribes it, which suits trivial jobs that need 1 vCPU each on
    /// paper and almost nothing in fact.
    #[arg(long, value_name = "V", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub agent_vcpus: u64,

    /// Memory the local agent offers, in MiB (in the agents scenario: all remote agents
    /// together). Each benchmark job asks for 16.
    #[arg(long, value_name = "M", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub agent_memory_mib: u64,

    /// Remote agents of each measurement of the agents scenario: one fresh `barge server` and
    /// that many `barge agent`s on this host per count, sharing --agent-vcpus and
    /// --agent-memory-mib evenly (rounded up), so that only the number of agents varies.
    #[arg(long, value_name = "N,N,…", value_delimiter = ',', default_values_t = [1, 2, 4],
          value_parser = clap::value_parser!(u64).range(1..=crate::scenarios::agents::AGENT_COUNT_MAX))]
    pub agent_counts: Vec<u64>,

    /// A PostgreSQL database (postgres://USER:PASSWORD@HOST:PORT/DATABASE) for the submit
    /// scenario: it also measures SubmitJob into a held queue of `barge server --database-url
    /// URL`. Use a scratch database: the run leaves its jobs there. The report names only its
    /// host.
    #[arg(long, value_name = "URL", value_parser = crate::database::parse)]
    pub database_url: Option<String>,

    /// Jobs left waiting in a queue whose only compute environment is DISABLED, for the
    /// memory measurement.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub queued_jobs: u64,

    /// Children of the array run end to end by the array-e2e scenario.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub array_children: u64,

    /// Jobs of the dependency graph (layers of 100, each job depending on 3 of the layer
    /// before) run by the dag scenario.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub dag_jobs: u64,

    /// Trivial container jobs (`true` in --image) in each round of the container scenario,
    /// through Barge and through `docker run --rm` alike.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub container_jobs: u64,

    /// Containers at a time in the container scenario: `docker run` processes in flight, and
    /// the vCPUs of Barge's agent (each job asks for 1).
    #[arg(long, value_name = "C", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub container_concurrency: u64,

    /// Rounds of the container scenario; each runs both sides once, and the order of the two
    /// alternates from round to round.
    #[arg(long, value_name = "R", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub container_rounds: u64,

    /// The image of the container scenario. It must be on the local Docker engine and have
    /// `true` on its PATH; the default one is built (once) from /bin/busybox when missing.
    #[arg(long, value_name = "IMAGE", default_value = crate::scenarios::container::DEFAULT_IMAGE)]
    pub image: String,

    /// Run one scenario only.
    #[arg(long, value_enum)]
    pub only: Option<Scenario>,

    /// Output format of the report (progress always goes to stderr).
    #[arg(long, value_enum, default_value_t = OutputFormat::Markdown)]
    pub output: OutputFormat,

    /// Hard limit on each scenario, in seconds; past it the scenario fails and its server is
    /// killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub scenario_timeout_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Submit,
    E2e,
    Agents,
    Memory,
    #[value(name = "array-submit")]
    ArraySubmit,
    #[value(name = "array-e2e")]
    ArrayE2e,
    Dag,
    Container,
}

impl Scenario {
    /// The default run, in this order. `container` is skipped (and says why) where no Docker
    /// daemon answers.
    pub const ALL: [Scenario; 8] = [
        Scenario::Submit,
        Scenario::E2e,
        Scenario::Agents,
        Scenario::Memory,
        Scenario::ArraySubmit,
        Scenario::ArrayE2e,
        Scenario::Dag,
        Scenario::Container,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Submit => "submit",
            Scenario::E2e => "e2e",
            Scenario::Agents => "agents",
            Scenario::Memory => "memory",
            Scenario::ArraySubmit => "array-submit",
            Scenario::ArrayE2e => "array-e2e",
            Scenario::Dag => "dag",
            Scenario::Container => "container",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Markdown,
    Json,
}

impl Args {
    pub fn scenarios(&self) -> Vec<Scenario> {
        match self.only {
            Some(one) => vec![one],
            None => Scenario::ALL.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("barge-bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_issue() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.barge, None);
        assert_eq!(a.submit_jobs, 20_000);
        assert_eq!(a.clients, 64);
        assert_eq!(a.e2e_jobs, 5_000);
        assert_eq!(a.agent_vcpus, 64);
        assert_eq!(a.queued_jobs, 100_000);
        assert_eq!(a.array_children, 10_000);
        assert_eq!(a.dag_jobs, 10_000);
        assert_eq!(a.agent_counts, [1, 2, 4]);
        assert_eq!(a.database_url, None);
        assert_eq!(
            (
                a.container_jobs,
                a.container_concurrency,
                a.container_rounds
            ),
            (50, 2, 2)
        );
        assert_eq!(a.image, "barge-bench/busybox:bench");
        assert_eq!(a.only, None);
        assert_eq!(a.output, OutputFormat::Markdown);
        assert_eq!(a.scenarios(), Scenario::ALL.to_vec());
        assert_eq!(
            a.scenarios().iter().map(|s| s.name()).collect::<Vec<_>>(),
            [
                "submit",
                "e2e",
                "agents",
                "memory",
                "array-submit",
                "array-e2e",
                "dag",
                "container"
            ]
        );
    }

    #[test]
    fn every_scenario_is_chosen_by_its_name() {
        for scenario in Scenario::ALL {
            let a = parse(&["--only", scenario.name()]).unwrap();
            assert_eq!(a.scenarios(), vec![scenario]);
        }
    }

    #[test]
    fn every_option_parses() {
        let a = parse(&[
            "--barge",
            "/opt/barge",
            "--submit-jobs",
            "100",
            "--clients",
            "8",
            "--e2e-jobs",
            "50",
            "--agent-vcpus",
            "4",
            "--agent-memory-mib",
            "512",
            "--queued-jobs",
            "1000",
            "--array-children",
            "500",
            "--dag-jobs",
            "250",
            "--container-jobs",
            "100",
            "--container-concurrency",
            "4",
            "--container-rounds",
            "3",
            "--image",
            "local/busybox:1",
            "--agent-counts",
            "3,1",
            "--database-url",
            "postgres://bench:pw@db:5432/bench",
            "--only",
            "e2e",
            "--output",
            "json",
            "--scenario-timeout-s",
            "60",
        ])
        .unwrap();
        assert_eq!(a.barge.as_deref(), Some(std::path::Path::new("/opt/barge")));
        assert_eq!(
            (a.submit_jobs, a.clients, a.e2e_jobs, a.agent_vcpus),
            (100, 8, 50, 4)
        );
        assert_eq!(
            (a.agent_memory_mib, a.queued_jobs, a.scenario_timeout_s),
            (512, 1000, 60)
        );
        assert_eq!((a.array_children, a.dag_jobs), (500, 250));
        assert_eq!(
            (
                a.container_jobs,
                a.container_concurrency,
                a.container_rounds
            ),
            (100, 4, 3)
        );
        assert_eq!(a.image, "local/busybox:1");
        assert_eq!(a.agent_counts, [3, 1]);
        assert_eq!(
            a.database_url.as_deref(),
            Some("postgres://bench:pw@db:5432/bench")
        );
        assert_eq!(a.scenarios(), vec![Scenario::E2e]);
        assert_eq!(a.output, OutputFormat::Json);
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(parse(&["--clients", "0"]).is_err());
        assert!(parse(&["--only", "everything"]).is_err());
        assert!(parse(&["--output", "yaml"]).is_err());
        assert!(parse(&["--submit-jobs", "-5"]).is_err());
        assert!(parse(&["--scenario-timeout-s", "1"]).is_err());
        assert!(parse(&["--array-children", "1"]).is_err());
        assert!(parse(&["--array-children", "1000001"]).is_err());
        assert!(parse(&["--dag-jobs", "0"]).is_err());
        assert!(parse(&["--only", "array_e2e"]).is_err());
        assert!(parse(&["--container-jobs", "0"]).is_err());
        assert!(parse(&["--container-concurrency", "0"]).is_err());
        assert!(parse(&["--container-concurrency", "257"]).is_err());
        assert!(parse(&["--container-rounds", "0"]).is_err());
        assert!(parse(&["--agent-counts", "0"]).is_err());
        assert!(parse(&["--agent-counts", "1,,2"]).is_err());
        assert!(parse(&["--agent-counts", ""]).is_err());
        assert!(parse(&["--agent-counts", "65"]).is_err());
        assert!(parse(&["--agent-counts", "two"]).is_err());
        assert!(parse(&["--database-url", "db:5432"]).is_err());
    }
}
