//! Trivial jobs per second end to end through remote agents: for each count N of
//! `--agent-counts`, a fresh `barge server` (no local agent) and N `barge agent`s on this host
//! (process runner) joined to one UNMANAGED compute environment, then `--e2e-jobs` jobs of
//! `true` submitted by the e2e scenario's load generator into its queue, from the first SubmitJob
//! to the last job seen SUCCEEDED. The total capacity (`--agent-vcpus`, `--agent-memory-mib`)
//! is split evenly among the agents, rounded up, so that only the number of agents varies: what
//! the figures compare is the cost of the agent protocol (polls, launches, batched reports)
//! spread over more connections, not more capacity.

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use super::e2e::run_trivial_jobs;
use super::{register_definition, Ctx, DEFINITION_MEMORY_MIB, DEFINITION_VCPUS};
use crate::http::Api;
use crate::report::Figure;
use crate::server::{Fleet, FleetConfig, Plane, Server, ServerConfig};

/// The most agents of one measurement. Each is a process with its own runtime polling the
/// server; past a few dozen on one host, the figure measures the host's scheduler, not Barge.
pub const AGENT_COUNT_MAX: u64 = 64;
/// The UNMANAGED compute environment the agents join.
pub const FLEET_ENVIRONMENT: &str = "bench-fleet";
/// The queue on `FLEET_ENVIRONMENT`.
pub const FLEET_QUEUE: &str = "bench-fleet-q";

/// What each of N agents offers when they share a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentShare {
    pub vcpus: u64,
    pub memory_mib: u64,
}

impl AgentShare {
    /// `total_vcpus` and `total_memory_mib` divided among `agents`, rounded up, so that the
    /// agents together offer at least the total. Refused when one agent could not hold one
    /// benchmark job: the jobs would wait forever.
    pub fn split(total_vcpus: u64, total_memory_mib: u64, agents: u64) -> Result<AgentShare> {
        if agents == 0 {
            bail!("--agent-counts: a count must be at least 1");
        }
        let share = AgentShare {
            vcpus: total_vcpus.div_ceil(agents),
            memory_mib: total_memory_mib.div_ceil(agents),
        };
        if share.vcpus < DEFINITION_VCPUS || share.memory_mib < DEFINITION_MEMORY_MIB {
            bail!(
                "{agents} agents sharing {total_vcpus} vCPUs and {total_memory_mib} MiB get \
                 {} vCPUs and {} MiB each, less than one benchmark job needs \
                 ({DEFINITION_VCPUS} vCPU, {DEFINITION_MEMORY_MIB} MiB): raise --agent-vcpus \
                 or --agent-memory-mib to at least {} vCPUs and {} MiB, or use fewer agents",
                share.vcpus,
                share.memory_mib,
                DEFINITION_VCPUS * agents,
                DEFINITION_MEMORY_MIB * agents
            );
        }
        Ok(share)
    }
}

pub async fn run(ctx: &Ctx<'_>, figures: &mut Vec<Figure>) -> Result<()> {
    // Every count's share is checked before the first server starts, so that a count that
    // cannot run fails the scenario at once rather than after the others' measurements.
    let shares = ctx
        .args
        .agent_counts
        .iter()
        .map(|&n| {
            Ok((
                n,
                AgentShare::split(ctx.args.agent_vcpus, ctx.args.agent_memory_mib, n)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let alone = ctx.with_config(ServerConfig {
        plane: Plane::Alone {
            extra_args: Vec::new(),
        },
        ..ctx.server.clone()
    });
    for (agents, share) in shares {
        measure(&alone, figures, agents, share).await?;
    }
    Ok(())
}

/// One count: a fresh server and its agents, the jobs, the figures; agents and server stopped.
async fn measure(
    ctx: &Ctx<'_>,
    figures: &mut Vec<Figure>,
    agents: u64,
    share: AgentShare,
) -> Result<()> {
    let (jobs, clients) = (ctx.args.e2e_jobs, ctx.args.clients);
    let sizes = format!(
        "{agents} agent{} of {} vCPUs and {} MiB",
        if agents == 1 { "" } else { "s" },
        share.vcpus,
        share.memory_mib
    );
    ctx.progress(format!(
        "{jobs} trivial jobs into {FLEET_QUEUE} with {clients} clients, {sizes}"
    ));
    ctx.with_server(async |server: &mut Server| {
        let mut api = Api::connect(server.addr).await?;
        create_fleet_queue(&mut api).await?;
        register_definition(&mut api).await?;
        let fleet_config = FleetConfig {
            barge: ctx.server.barge.clone(),
            server: server.addr,
            compute_environment: FLEET_ENVIRONMENT.to_string(),
            vcpus: share.vcpus,
            memory_mib: share.memory_mib,
            runner: ctx.server.runner,
        };
        let mut fleet = Fleet::start(&fleet_config, agents as usize).await?;
        ctx.progress(format!("{sizes} registered"));

        let addr = server.addr;
        let run = run_trivial_jobs(ctx, addr, &mut api, FLEET_QUEUE, jobs, || {
            server.ensure_running()?;
            fleet.ensure_running()
        })
        .await
        .map_err(|e| anyhow!("{e:#}\n{}", fleet.log_tails()));
        // The agents deregister on SIGTERM, so they stop while the server still runs.
        fleet.stop().await;
        let run = run?;

        figures.push(
            ctx.figure(
                format!("agents_{agents}_jobs_per_s_wall"),
                format!(
                    "trivial jobs/s end to end with {agents} remote agent{}, first submit to \
                     last SUCCEEDED (wall clock)",
                    if agents == 1 { "" } else { "s" }
                ),
                run.jobs_per_s(),
                "jobs/s",
            )
            .note(format!("{sizes}; {}", run.wall_note())),
        );
        figures.push(run.failed_figure(
            ctx,
            format!("agents_{agents}_failed"),
            &format!("trivial jobs FAILED or not accepted, {sizes}"),
        ));
        Ok(())
    })
    .await
}

/// An UNMANAGED compute environment, whose capacity is the agents that join it, and its queue.
async fn create_fleet_queue(api: &mut Api) -> Result<()> {
    api.call(
        "CreateComputeEnvironment",
        &json!({
            "computeEnvironmentName": FLEET_ENVIRONMENT,
            "type": "UNMANAGED",
            "state": "ENABLED"
        }),
    )
    .await?;
    api.call(
        "CreateJobQueue",
        &json!({
            "jobQueueName": FLEET_QUEUE,
            "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": FLEET_ENVIRONMENT}]
        }),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_split_evenly_and_rounded_up() {
        let split = |v, m, n| AgentShare::split(v, m, n).unwrap();
        assert_eq!(
            split(64, 4096, 1),
            AgentShare {
                vcpus: 64,
                memory_mib: 4096
            }
        );
        assert_eq!(
            split(64, 4096, 4),
            AgentShare {
                vcpus: 16,
                memory_mib: 1024
            }
        );
        // Rounded up: three agents together offer at least the total, never less.
        assert_eq!(
            split(64, 4096, 3),
            AgentShare {
                vcpus: 22,
                memory_mib: 1366
            }
        );
        assert_eq!(
            split(1, 16, 1),
            AgentShare {
                vcpus: 1,
                memory_mib: 16
            }
        );
        assert_eq!(split(2, 64, 4).vcpus, 1);
    }

    #[test]
    fn agents_too_small_for_a_job_are_refused_with_what_to_do() {
        let e = AgentShare::split(64, 40, 4).unwrap_err().to_string();
        assert!(e.contains("10 MiB each"), "{e}");
        assert!(
            e.contains("--agent-memory-mib to at least 4 vCPUs and 64 MiB"),
            "{e}"
        );
        assert!(AgentShare::split(64, 4096, 0).is_err());
    }
}
