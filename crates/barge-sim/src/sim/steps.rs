//! The steps of a schedule: setup, the random step kinds (agents working and reporting, lost
//! and rejoining, restarts, batches), and the final drain that checks liveness.

use std::collections::{BTreeMap, BTreeSet};

use barge_core::agent::{AgentReport, LogLine};
use barge_core::command::{ComputeEnvironmentUpdate, JobQueueUpdate, Plan};
use barge_core::model::*;
use barge_core::reason::why_waiting;
use barge_core::{scheduler, Command, Effect, State};

use super::*;
use crate::check;

impl Sim {
    pub(super) fn setup(&mut self) -> Result<(), Failure> {
        let hosts = self.rng.range(1, 3);
        for _ in 0..hosts {
            let vcpus_milli = *self.rng.pick(&[1000, 1500, 2000, 4000]);
            let memory_mib = *self.rng.pick(&[1024, 2048, 4096, 8192]);
            // The first host serves every MANAGED environment, so most schedules have work.
            let scope = if self.hosts.is_empty() || self.rng.chance(50) {
                AgentScope::AllManaged
            } else {
                AgentScope::ComputeEnvironment(self.rng.pick(&CE_NAMES).to_string())
            };
            let id = self.new_id("agent");
            self.hosts.push(Host {
                id,
                vcpus_milli,
                memory_mib,
                scope,
                alive: true,
                running: BTreeMap::new(),
                pending: Vec::new(),
                ran: BTreeSet::new(),
            });
        }
        let mut planned: Vec<Planned> = (0..self.hosts.len()).map(|i| self.register(i)).collect();
        let ces = self.rng.range(1, 2) as usize;
        for (i, name) in CE_NAMES.iter().take(ces).enumerate() {
            let mut p = self.gen_create_ce(Some(name));
            if i == 0 {
                // The first environment is MANAGED, so the first host serves it.
                if let Command::CreateComputeEnvironment(ce) = &mut p.command {
                    if ce.kind == ComputeEnvironmentType::Unmanaged {
                        ce.kind = ComputeEnvironmentType::Managed;
                        ce.unmanaged_vcpus = None;
                        ce.compute_resources = Some(ComputeResources {
                            kind: Some("EC2".into()),
                            max_vcpus: Some(self.rng.range(1, 8)),
                            ..Default::default()
                        });
                        p.what = format!("create compute environment {name} MANAGED ENABLED");
                    }
                }
            }
            planned.push(p);
        }
        // One valid policy, which setup queues may use, so most schedules see fair share.
        planned.push(self.gen_create_policy(Some(POLICY_NAMES[0])));
        let queues = self.rng.range(1, 2) as usize;
        for name in QUEUE_NAMES.iter().take(queues) {
            let order: Vec<String> = CE_NAMES.iter().take(ces).map(|s| s.to_string()).collect();
            planned.push(self.gen_create_queue(Some((name, order))));
        }
        let defs = self.rng.range(1, 2) as usize;
        for name in DEF_NAMES.iter().take(defs) {
            planned.push(self.gen_register_def(Some(name)));
        }
        let results = self.run_batch(planned, true)?;
        if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
            return self.violation(ALWAYS_OK, format!("a setup command was refused: {e}"));
        }
        Ok(())
    }

    pub(super) fn random_step(&mut self) -> Result<(), Failure> {
        let weights: Vec<u64> = STEP_WEIGHTS.iter().map(|(_, w)| *w).collect();
        let kind = STEP_WEIGHTS[self.rng.weighted(&weights)].0;
        match kind {
            StepKind::AgentWork => self.agent_work(),
            StepKind::AgentSend => match self.gen_send() {
                Some(planned) => self.run_batch(planned, true).map(drop),
                None => Ok(()),
            },
            StepKind::LateReport => self.late_report(),
            StepKind::Deliver => {
                let n = self.rng.range(0, self.outbox.len() as i64) as usize;
                self.record(format!("deliver {n} of {} instructions", self.outbox.len()));
                self.deliver(n)
            }
            StepKind::AgentLost => self.agent_lost(),
            StepKind::Poll => {
                let remote: Vec<usize> = (0..self.hosts.len())
                    .filter(|i| self.hosts[*i].alive && self.hosts[*i].remote())
                    .collect();
                match remote.is_empty() {
                    true => Ok(()),
                    false => {
                        let h = *self.rng.pick(&remote);
                        self.poll(h)
                    }
                }
            }
            StepKind::Timeouts => {
                // A quiet spell long enough for timeouts (60–120 s) to come due, and now and
                // then for the queues' time-limit actions (600 s) too.
                self.now_ms += if self.rng.chance(20) {
                    self.rng.range(0, 700_000)
                } else {
                    self.rng.range(0, 90_000)
                };
                self.run_one(Planned {
                    what: "enforce timeouts".into(),
                    command: Command::EnforceTimeouts,
                    note: Note::MustSucceed,
                })
                .map(drop)?;
                self.run_one(Planned {
                    what: "enforce job state time limits".into(),
                    command: Command::EnforceStateTimeLimits,
                    note: Note::MustSucceed,
                })
                .map(drop)
            }
            StepKind::AgentRejoin => self.agent_rejoin(),
            StepKind::AgentReregister => {
                let alive: Vec<usize> = (0..self.hosts.len())
                    .filter(|i| self.hosts[*i].alive)
                    .collect();
                if alive.is_empty() {
                    return Ok(());
                }
                let i = *self.rng.pick(&alive);
                let p = self.register(i);
                self.run_one(p).map(drop)
            }
            StepKind::Restart => self.restart(),
            StepKind::ScaleIn => self.scale_in(),
            StepKind::SetDesired => self.set_desired(),
            StepKind::Batch => {
                let n = self.rng.range(2, 4);
                let mut planned = Vec::new();
                for i in 0..n {
                    let mut p = match self.rng.below(3) {
                        0 => self.gen_pass(),
                        1 => match self.gen_send() {
                            Some(mut ps) => ps.remove(0),
                            None => self.gen_api(),
                        },
                        _ => self.gen_api(),
                    };
                    if i > 0 {
                        p.not_first_in_batch();
                    }
                    planned.push(p);
                }
                self.run_batch(planned, true).map(drop)
            }
            StepKind::Schedule => {
                let p = self.gen_pass();
                self.run_one(p).map(drop)
            }
            StepKind::SubmitBurst => {
                // Many clients submit alike jobs at once: one group commit, deep queues.
                let first = self.gen_submit();
                let Command::SubmitJob(spec) = &first.command else {
                    unreachable!("gen_submit makes a SubmitJob")
                };
                let spec = (**spec).clone();
                let mut planned = vec![first];
                let n = self.rng.range(5, 80);
                let first_copy = self.next_id + 1;
                for _ in 1..n {
                    let job_id = self.new_id("job");
                    let mut s = spec.clone();
                    s.job_id = job_id.clone();
                    s.name = format!("name-{job_id}");
                    // Many small arrays, never many large ones.
                    if s.array_size.unwrap_or(0) > generate::ARRAY_SMALL_MAX as u32 {
                        s.array_size = Some(self.rng.range(2, generate::ARRAY_SMALL_MAX) as u32);
                    }
                    planned.push(Planned {
                        // One history line for the whole burst, below.
                        what: String::new(),
                        command: Command::SubmitJob(Box::new(s)),
                        note: Note::Submit(job_id),
                    });
                }
                let results = self.run_batch(planned, true)?;
                let accepted = results.iter().skip(1).filter(|r| r.is_ok()).count();
                self.record(format!(
                    "submit job-{first_copy}..={} like {}: {accepted} of {} accepted",
                    self.next_id,
                    spec.job_id,
                    n - 1
                ));
                Ok(())
            }
            StepKind::DeleteCe | StepKind::DeleteQueue if self.rng.chance(30) => {
                // Disable first, as a client must, then delete: both in one group commit.
                let (disable, delete) = if kind == StepKind::DeleteCe {
                    let reference = self.ce_ref();
                    (
                        Planned {
                            what: format!("disable compute environment {reference}"),
                            command: Command::UpdateComputeEnvironment(ComputeEnvironmentUpdate {
                                reference: reference.clone(),
                                state: Some(ResourceState::Disabled),
                                ..Default::default()
                            }),
                            note: Note::Plain,
                        },
                        Planned {
                            what: format!("delete compute environment {reference}"),
                            command: Command::DeleteComputeEnvironment { reference },
                            note: Note::Plain,
                        },
                    )
                } else {
                    let reference = self.queue_ref();
                    (
                        Planned {
                            what: format!("disable job queue {reference}"),
                            command: Command::UpdateJobQueue(JobQueueUpdate {
                                reference: reference.clone(),
                                state: Some(ResourceState::Disabled),
                                ..Default::default()
                            }),
                            note: Note::Plain,
                        },
                        Planned {
                            what: format!("delete job queue {reference}"),
                            command: Command::DeleteJobQueue { reference },
                            note: Note::Plain,
                        },
                    )
                };
                self.run_batch(vec![disable, delete], true).map(drop)
            }
            _ => {
                let p = self.gen_api_of(kind);
                self.run_one(p).map(drop)
            }
        }
    }

    /// A random API command.
    pub(super) fn gen_api(&mut self) -> Planned {
        let kinds = [
            (StepKind::CreateCe, 2),
            (StepKind::UpdateCe, 3),
            (StepKind::DeleteCe, 1),
            (StepKind::CreateQueue, 2),
            (StepKind::UpdateQueue, 2),
            (StepKind::DeleteQueue, 1),
            (StepKind::RegisterDef, 2),
            (StepKind::DeregisterDef, 1),
            (StepKind::Submit, 12),
            (StepKind::Cancel, 2),
            (StepKind::Terminate, 3),
            (StepKind::Tag, 1),
            (StepKind::Untag, 1),
            (StepKind::CreatePolicy, 1),
            (StepKind::UpdatePolicy, 1),
            (StepKind::DeletePolicy, 1),
        ];
        let weights: Vec<u64> = kinds.iter().map(|(_, w)| *w).collect();
        let kind = kinds[self.rng.weighted(&weights)].0;
        self.gen_api_of(kind)
    }

    pub(super) fn gen_api_of(&mut self, kind: StepKind) -> Planned {
        match kind {
            StepKind::CreateCe => self.gen_create_ce(None),
            StepKind::UpdateCe => self.gen_update_ce(),
            StepKind::DeleteCe => {
                let reference = self.ce_ref();
                Planned {
                    what: format!("delete compute environment {reference}"),
                    command: Command::DeleteComputeEnvironment { reference },
                    note: Note::Plain,
                }
            }
            StepKind::CreateQueue => self.gen_create_queue(None),
            StepKind::UpdateQueue => self.gen_update_queue(),
            StepKind::DeleteQueue => {
                let reference = self.queue_ref();
                Planned {
                    what: format!("delete job queue {reference}"),
                    command: Command::DeleteJobQueue { reference },
                    note: Note::Plain,
                }
            }
            StepKind::RegisterDef => self.gen_register_def(None),
            StepKind::DeregisterDef => self.gen_deregister_def(),
            StepKind::Submit => self.gen_submit(),
            StepKind::Cancel => {
                let (job_id, target) = self.stop_ref();
                Planned {
                    what: format!("cancel {job_id}"),
                    command: Command::CancelJob {
                        job_id,
                        reason: "cancelled by the simulator".into(),
                    },
                    note: Note::Stop(target),
                }
            }
            StepKind::Terminate => {
                let (job_id, target) = self.stop_ref();
                Planned {
                    what: format!("terminate {job_id}"),
                    command: Command::TerminateJob {
                        job_id,
                        reason: "terminated by the simulator".into(),
                    },
                    note: Note::Stop(target),
                }
            }
            StepKind::Tag => self.gen_tag(),
            StepKind::CreatePolicy => self.gen_create_policy(None),
            StepKind::UpdatePolicy => self.gen_update_policy(),
            StepKind::DeletePolicy => {
                let reference = self.policy_ref();
                Planned {
                    what: format!("delete scheduling policy {reference}"),
                    command: Command::DeleteSchedulingPolicy { reference },
                    note: Note::Plain,
                }
            }
            StepKind::Untag => {
                let arn = self.arn_ref();
                let keys: Vec<String> = (0..self.rng.range(1, 3))
                    .map(|_| format!("k{}", self.rng.below(6)))
                    .collect();
                Planned {
                    what: format!("untag {arn} {keys:?}"),
                    command: Command::UntagResource { arn, keys },
                    note: Note::Plain,
                }
            }
            other => unreachable!("{other:?} is not an API command"),
        }
    }

    pub(super) fn register(&mut self, host: usize) -> Planned {
        let h = &self.hosts[host];
        // What the agent still answers for: live processes, and attempts whose end it has not
        // yet reported (as the real agent counts them).
        let mut running: Vec<String> = h.running.keys().cloned().collect();
        for r in &h.pending {
            let (_, attempt_id) = r.ids();
            if !running.iter().any(|a| a == attempt_id) {
                running.push(attempt_id.to_string());
            }
        }
        Planned {
            what: format!(
                "register agent {} ({} mvCPU, {} MiB, {:?})",
                h.id, h.vcpus_milli, h.memory_mib, h.scope
            ),
            command: Command::RegisterAgent {
                id: h.id.clone(),
                vcpus_milli: h.vcpus_milli,
                memory_mib: h.memory_mib,
                scope: h.scope.clone(),
                private_ipv4: Some(format!("10.0.0.{}", host + 1)),
                gpus: 0,
                runner: None,
                running,
            },
            note: Note::MustSucceed,
        }
    }

    /// The process of one live attempt moves on: it starts, prints, or exits.
    pub(super) fn agent_work(&mut self) -> Result<(), Failure> {
        let busy: Vec<usize> = (0..self.hosts.len())
            .filter(|i| self.hosts[*i].alive && !self.hosts[*i].running.is_empty())
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        let h = *self.rng.pick(&busy);
        let k = self.rng.index(self.hosts[h].running.len());
        let attempt_id = self.hosts[h]
            .running
            .keys()
            .nth(k)
            .expect("index in range")
            .clone();
        let r = self.hosts[h].running[&attempt_id].clone();
        let now = self.now_ms;
        let mut reports = Vec::new();
        let mut exited = false;
        if !r.started && self.rng.chance(12) {
            reports.push(AgentReport::Exited {
                job_id: r.job_id.clone(),
                attempt_id: attempt_id.clone(),
                at_ms: now,
                exit_code: None,
                reason: Some("CannotPullContainerError: simulated".into()),
            });
            exited = true;
        } else if !r.started {
            reports.push(AgentReport::Running {
                job_id: r.job_id.clone(),
                attempt_id: attempt_id.clone(),
                at_ms: now,
            });
            if self.rng.chance(50) {
                reports.push(self.logs(&r.job_id, &attempt_id));
            }
        } else if self.rng.chance(30) {
            reports.push(self.logs(&r.job_id, &attempt_id));
        } else {
            let exit_code =
                *self
                    .rng
                    .pick(&[Some(0), Some(0), Some(0), Some(0), Some(1), Some(137), None]);
            let reason = match exit_code {
                None => Some("CannotStartContainerError: simulated".into()),
                Some(137) if self.rng.chance(50) => Some("OutOfMemoryError: simulated".into()),
                _ => None,
            };
            reports.push(AgentReport::Exited {
                job_id: r.job_id.clone(),
                attempt_id: attempt_id.clone(),
                at_ms: now,
                exit_code,
                reason,
            });
            exited = true;
        }
        let host = &mut self.hosts[h];
        if exited {
            host.running.remove(&attempt_id);
        } else if let Some(run) = host.running.get_mut(&attempt_id) {
            run.started = true;
        }
        let line = format!(
            "agent {} attempt {attempt_id} of {}: {}",
            host.id,
            r.job_id,
            reports
                .iter()
                .map(report_word)
                .collect::<Vec<_>>()
                .join("+")
        );
        host.pending.extend(reports);
        self.record(line);
        Ok(())
    }

    pub(super) fn logs(&mut self, job_id: &str, attempt_id: &str) -> AgentReport {
        let n = self.rng.range(1, 3);
        let lines = (0..n)
            .map(|i| LogLine {
                timestamp_ms: self.now_ms + i,
                message: format!("line {i} of {attempt_id}"),
            })
            .collect();
        AgentReport::Logs {
            job_id: job_id.to_string(),
            attempt_id: attempt_id.to_string(),
            lines,
        }
    }

    /// An agent (alive, or lost and still holding a backlog) sends some of its reports, now and
    /// then twice (a retried request), keeping copies for late delivery.
    pub(super) fn gen_send(&mut self) -> Option<Vec<Planned>> {
        let with: Vec<usize> = (0..self.hosts.len())
            .filter(|i| !self.hosts[*i].pending.is_empty())
            .collect();
        if with.is_empty() {
            return None;
        }
        let h = *self.rng.pick(&with);
        let n = self.rng.range(1, self.hosts[h].pending.len() as i64) as usize;
        let reports: Vec<AgentReport> = self.hosts[h].pending.drain(..n).collect();
        let agent_id = self.hosts[h].id.clone();
        if self.rng.chance(20) {
            for r in &reports {
                self.late.push((agent_id.clone(), r.clone()));
            }
            if self.late.len() > LATE_REPORTS_MAX {
                let extra = self.late.len() - LATE_REPORTS_MAX;
                self.late.drain(..extra);
            }
        }
        let mut planned = vec![self.reports(&agent_id, reports.clone(), "")];
        if self.rng.chance(10) {
            planned.push(self.reports(&agent_id, reports, " (again)"));
        }
        Some(planned)
    }

    pub(super) fn reports(&self, agent_id: &str, reports: Vec<AgentReport>, note: &str) -> Planned {
        Planned {
            what: format!(
                "agent {agent_id} reports{note} [{}]",
                reports
                    .iter()
                    .map(|r| format!("{} {}", report_word(r), report_attempt(r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            command: Command::AgentReports {
                agent_id: agent_id.to_string(),
                reports: reports.clone(),
            },
            note: Note::Reports {
                agent_id: agent_id.to_string(),
                reports,
            },
        }
    }

    pub(super) fn late_report(&mut self) -> Result<(), Failure> {
        if self.late.is_empty() {
            return Ok(());
        }
        let i = self.rng.index(self.late.len());
        let (agent_id, report) = self.late.remove(i);
        let p = self.reports(&agent_id, vec![report], " late");
        self.run_one(p).map(drop)
    }

    /// A scheduler pass: usually planned on the committed state, sometimes an older plan applied
    /// to a state it was not made from (the applier must re-check every placement).
    pub(super) fn gen_pass(&mut self) -> Planned {
        let (plan, fresh) = match self.stale_plan.take() {
            Some(plan) if self.rng.chance(50) => (plan, false),
            kept => {
                self.stale_plan = kept;
                if self.stale_plan.is_none() && self.rng.chance(15) {
                    // A slow pass: planned now, it reaches the applier only later. (A plan is
                    // applied at most once: its attempt ids are fresh, as UUIDs are.)
                    self.stale_plan = Some(self.plan());
                }
                (self.plan(), true)
            }
        };
        Planned {
            what: format!(
                "{} pass: admit {} place [{}]",
                if fresh {
                    "scheduler"
                } else {
                    "stale scheduler"
                },
                plan.admit.len(),
                plan.placements
                    .iter()
                    .map(|p| format!(
                        "{}@{}/{} as {}",
                        p.job_id, p.compute_environment, p.agent_id, p.attempt_id
                    ))
                    .chain(plan.gangs.iter().map(|g| format!(
                        "gang {}@{} [{}]",
                        g.job_id,
                        g.compute_environment,
                        g.nodes
                            .iter()
                            .map(|n| format!("#{}/{} as {}", n.index, n.agent_id, n.attempt_id))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            note: Note::Pass {
                admit: plan.admit.iter().cloned().collect(),
                fresh,
                proposed: plan.placements.len() + plan.gangs.len(),
            },
            command: Command::SchedulerPass(plan),
        }
    }

    pub(super) fn plan(&mut self) -> Plan {
        let mut next_id = self.next_id;
        let plan = scheduler::plan(&self.state, &mut || {
            next_id += 1;
            format!("att-{next_id}")
        });
        self.next_id = next_id;
        plan
    }

    /// An agent is declared lost. Half the time it crashed (its reports die with it); otherwise
    /// it was cut off and keeps its unsent reports, which reach the server later as stale ones.
    /// Either way its processes are gone: an agent that loses its lease stops its work.
    pub(super) fn agent_lost(&mut self) -> Result<(), Failure> {
        let alive: Vec<usize> = (0..self.hosts.len())
            .filter(|i| self.hosts[*i].alive)
            .collect();
        if alive.is_empty() {
            return Ok(());
        }
        let h = *self.rng.pick(&alive);
        let crashed = self.rng.chance(50);
        self.lose_host(h, crashed)
    }

    /// The scaler scales a host in: it drains it (refused while it holds attempts) and then
    /// terminates it, and its agent is lost.
    pub(super) fn scale_in(&mut self) -> Result<(), Failure> {
        let alive: Vec<usize> = (0..self.hosts.len())
            .filter(|i| self.hosts[*i].alive)
            .collect();
        if alive.is_empty() {
            return Ok(());
        }
        let h = *self.rng.pick(&alive);
        let id = self.hosts[h].id.clone();
        let drained = self.run_one(Planned {
            what: format!("drain agent {id}"),
            command: Command::DrainAgent { id },
            note: Note::Plain,
        })?;
        if drained.is_err() {
            return Ok(());
        }
        self.summary.scale_ins += 1;
        self.lose_host(h, false)
    }

    /// The scaler reports a desiredvCpus (clamped by the core to the bounds).
    pub(super) fn set_desired(&mut self) -> Result<(), Failure> {
        let ce = self.rng.pick(&CE_NAMES).to_string();
        let desired_vcpus = self.rng.range(-1, 10);
        self.run_one(Planned {
            what: format!("set desiredvCpus of {ce} to {desired_vcpus}"),
            command: Command::SetDesiredVcpus {
                compute_environment: ce,
                desired_vcpus,
            },
            note: Note::Plain,
        })
        .map(drop)
    }

    fn lose_host(&mut self, h: usize, crashed: bool) -> Result<(), Failure> {
        let fenced = self.sabotage != Sabotage::LostAgentsKeepRunning;
        let host = &mut self.hosts[h];
        host.alive = false;
        if fenced {
            host.running.clear();
        }
        if crashed {
            host.pending.clear();
            host.ran.clear();
        }
        let id = host.id.clone();
        self.outbox.retain(|e| {
            let Effect::Agent { agent_id, .. } = e;
            *agent_id != id
        });
        self.summary.agents_lost += 1;
        self.run_one(Planned {
            what: format!(
                "agent {id} lost ({})",
                if crashed { "crashed" } else { "cut off" }
            ),
            command: Command::AgentLost { id },
            note: Note::MustSucceed,
        })
        .map(drop)
    }

    /// A lost host joins again, under its old id (its backlog of stale reports follows) or a
    /// new one (its backlog may still arrive late under the old id).
    pub(super) fn agent_rejoin(&mut self) -> Result<(), Failure> {
        let lost: Vec<usize> = (0..self.hosts.len())
            .filter(|i| !self.hosts[*i].alive)
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        let h = *self.rng.pick(&lost);
        if !self.rng.chance(30) {
            let old = self.hosts[h].id.clone();
            for r in std::mem::take(&mut self.hosts[h].pending) {
                self.late.push((old.clone(), r));
            }
            self.hosts[h].id = self.new_id("agent");
        }
        self.hosts[h].alive = true;
        let p = self.register(h);
        self.run_one(p).map(drop)
    }

    /// The control plane dies and starts again: sometimes with a batch applied in memory but
    /// not committed; the state is rebuilt from the store alone; every agent's processes died
    /// with it; orphans are failed; the agents that are up register again under new ids.
    pub(super) fn restart(&mut self) -> Result<(), Failure> {
        self.summary.restarts += 1;
        if self.rng.chance(35) {
            let n = self.rng.range(1, 3);
            let mut planned = Vec::new();
            for i in 0..n {
                let mut p = if self.rng.chance(30) {
                    self.gen_pass()
                } else {
                    self.gen_api()
                };
                if i > 0 {
                    p.not_first_in_batch();
                }
                planned.push(p);
            }
            self.record("the next batch is applied but never committed".into());
            self.run_batch(planned, false)?;
            self.summary.lost_batches += 1;
        }
        let before = self.state.clone();
        if let Some(m) = self.store.mismatch(&before) {
            return self.violation(RESTART, format!("before the restart: {m}"));
        }
        let rebuilt = match self.store.load(self.identity.clone()) {
            Ok(s) => s,
            Err(e) => return self.violation(RESTART, e),
        };
        self.check_reload(&before, &rebuilt)?;
        self.record(format!(
            "restart: state rebuilt from {} stored entities",
            self.store.len()
        ));
        self.state = rebuilt;
        self.outbox.clear();
        self.stale_plan = None;
        for host in &mut self.hosts {
            host.running.clear();
            host.ran.clear();
            if host.alive {
                host.pending.clear();
            }
        }
        // The agents are stored, but every one of them died with the control plane (as
        // `barge up`'s local agent does): declare each lost, as `barge up` does at start.
        let stored_agents: Vec<String> = self.state.agents.keys().cloned().collect();
        for id in stored_agents {
            self.run_one(Planned {
                what: format!("the stored agent {id} is gone"),
                command: Command::AgentLost { id },
                note: Note::MustSucceed,
            })
            .map(drop)?;
        }
        self.run_one(Planned {
            what: "fail orphans".into(),
            command: Command::FailOrphans,
            note: Note::MustSucceed,
        })
        .map(drop)?;
        let mut planned = Vec::new();
        for i in 0..self.hosts.len() {
            if self.hosts[i].alive {
                self.hosts[i].id = self.new_id("agent");
                planned.push(self.register(i));
            }
        }
        if !planned.is_empty() {
            self.run_batch(planned, true)?;
        }
        Ok(())
    }

    /// A state loaded from the store equals the committed one in every stored entity and in
    /// the counters derived from them.
    pub(super) fn check_reload(&self, before: &State, rebuilt: &State) -> Result<(), Failure> {
        let mut differs = Vec::new();
        if rebuilt.jobs != before.jobs {
            differs.push("jobs");
        }
        if rebuilt.compute_environments != before.compute_environments {
            differs.push("compute environments");
        }
        if rebuilt.job_queues != before.job_queues {
            differs.push("job queues");
        }
        if rebuilt.job_definitions != before.job_definitions {
            differs.push("job definitions");
        }
        if rebuilt.log_streams != before.log_streams {
            differs.push("log streams");
        }
        if rebuilt.scheduling_policies != before.scheduling_policies {
            differs.push("scheduling policies");
        }
        if rebuilt.share_usage != before.share_usage {
            differs.push("fair-share usage");
        }
        if rebuilt.agents != before.agents {
            differs.push("agents");
        }
        if rebuilt.next_job_seq != before.next_job_seq {
            differs.push("next_job_seq");
        }
        if rebuilt.next_log_stream_number != before.next_log_stream_number {
            differs.push("next_log_stream_number");
        }
        if !differs.is_empty() {
            return self.violation(
                RESTART,
                format!("the reloaded state differs in: {}", differs.join(", ")),
            );
        }
        // Equal jobs and sound indexes on both sides mean equal counts; the usage counters are
        // compared too, since placement trusts them.
        self.check(check_indexes(rebuilt))?;
        self.check(check_arrays(rebuilt))?;
        for parent in before.jobs.values().filter(|j| j.array.is_some()) {
            let (a, b) = (
                before.array_index(&parent.id),
                rebuilt.array_index(&parent.id),
            );
            let same = match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.born == b.born
                        && a.counts == b.counts
                        && a.cursor == b.cursor
                        && a.last_update_ms == b.last_update_ms
                }
                _ => false,
            };
            if !same {
                return self.violation(
                    RESTART,
                    format!(
                        "array {}'s index differs after reload: {a:?} became {b:?}",
                        parent.id
                    ),
                );
            }
        }
        for name in before.compute_environments.keys() {
            if rebuilt.ce_used_vcpus_milli(name) != before.ce_used_vcpus_milli(name) {
                return self.violation(
                    RESTART,
                    format!("compute environment {name}'s usage differs after reload"),
                );
            }
        }
        Ok(())
    }

    /// Liveness: every host comes back, every environment and queue is enabled, and agents run
    /// everything they are given to a successful end. Bounded rounds later, every job that
    /// could run must have finished.
    pub(super) fn drain(&mut self) -> Result<(), Failure> {
        self.record("drain: every host up, everything enabled, every attempt succeeds".into());
        self.late.clear();
        self.stale_plan = None;
        let mut planned = Vec::new();
        for i in 0..self.hosts.len() {
            if !self.hosts[i].alive {
                self.hosts[i].pending.clear();
                self.hosts[i].id = self.new_id("agent");
                self.hosts[i].alive = true;
                planned.push(self.register(i));
            }
        }
        let disabled_ces: Vec<String> = self
            .state
            .compute_environments
            .values()
            .filter(|c| c.state == ResourceState::Disabled)
            .map(|c| c.name.clone())
            .collect();
        for reference in disabled_ces {
            planned.push(Planned {
                what: format!("enable compute environment {reference}"),
                command: Command::UpdateComputeEnvironment(ComputeEnvironmentUpdate {
                    reference,
                    state: Some(ResourceState::Enabled),
                    ..Default::default()
                }),
                note: Note::MustSucceed,
            });
        }
        let disabled_queues: Vec<String> = self
            .state
            .job_queues
            .values()
            .filter(|q| q.state == ResourceState::Disabled)
            .map(|q| q.name.clone())
            .collect();
        for reference in disabled_queues {
            planned.push(Planned {
                what: format!("enable job queue {reference}"),
                command: Command::UpdateJobQueue(JobQueueUpdate {
                    reference,
                    state: Some(ResourceState::Enabled),
                    ..Default::default()
                }),
                note: Note::MustSucceed,
            });
        }
        if !planned.is_empty() {
            self.run_batch(planned, true)?;
            self.check_model()?;
        }
        // A large array would take thousands of rounds: it is cancelled (or terminated) here,
        // which its unborn children must survive as FAILED in one step, without being born.
        let large: Vec<String> = self
            .arrays
            .iter()
            .filter(|id| {
                self.state.job(id).is_some_and(|p| {
                    !p.status.is_terminal()
                        && p.array.as_ref().is_some_and(|a| {
                            a.closed.is_none() && a.size > generate::ARRAY_SMALL_MAX as u32 * 2
                        })
                })
            })
            .cloned()
            .collect();
        for job_id in large {
            let terminate = self.rng.chance(50);
            let reason = "the drain stops large arrays".to_string();
            self.run_one(Planned {
                what: format!(
                    "{} large array {job_id}",
                    if terminate { "terminate" } else { "cancel" }
                ),
                command: if terminate {
                    Command::TerminateJob { job_id, reason }
                } else {
                    Command::CancelJob { job_id, reason }
                },
                note: Note::MustSucceed,
            })
            .map(drop)?;
            self.check_model()?;
        }
        let unborn_open: usize = self
            .arrays
            .iter()
            .filter_map(|id| self.state.job(id))
            .filter(|p| !p.status.is_terminal())
            .filter_map(|p| {
                let array = p.array.as_ref()?;
                let born = self.state.array_index(&p.id).map_or(0, |i| i.born.len());
                Some((array.size as usize).saturating_sub(born))
            })
            .sum();
        let rounds_max = 2 * (self.state.jobs.len() + unborn_open) + 8;
        for _ in 0..rounds_max {
            self.summary.drain_rounds += 1;
            self.deliver(self.outbox.len())?;
            self.poll_all()?;
            let now = self.now_ms;
            for host in self.hosts.iter_mut() {
                for (attempt_id, r) in std::mem::take(&mut host.running) {
                    if !r.started {
                        host.pending.push(AgentReport::Running {
                            job_id: r.job_id.clone(),
                            attempt_id: attempt_id.clone(),
                            at_ms: now,
                        });
                    }
                    host.pending.push(AgentReport::Exited {
                        job_id: r.job_id,
                        attempt_id,
                        at_ms: now + 1,
                        exit_code: Some(0),
                        reason: None,
                    });
                }
            }
            let mut planned = Vec::new();
            for i in 0..self.hosts.len() {
                if !self.hosts[i].pending.is_empty() {
                    let reports = std::mem::take(&mut self.hosts[i].pending);
                    let id = self.hosts[i].id.clone();
                    planned.push(self.reports(&id, reports, ""));
                }
            }
            if !planned.is_empty() {
                self.run_batch(planned, true)?;
            }
            let pass = self.gen_pass();
            // A stale plan proposing nothing says nothing about the state now: only a fresh
            // plan that finds nothing to do ends the drain.
            let proposed = match &pass.note {
                Note::Pass {
                    admit,
                    proposed,
                    fresh,
                } => admit.len() + proposed + usize::from(!fresh),
                _ => 0,
            };
            self.run_one(pass).map(drop)?;
            self.check_model()?;
            self.now_ms += 1_000;
            let live = self.state.jobs.values().any(|j| j.current.is_some());
            if proposed == 0 && !live && self.outbox.is_empty() {
                break;
            }
        }
        for job in jobs_sorted(&self.state) {
            if job.node.is_some() {
                // Counted with their job.
                continue;
            }
            if job.array.is_some() {
                match job.status {
                    JobStatus::Succeeded => self.summary.arrays_succeeded += 1,
                    JobStatus::Failed => self.summary.arrays_failed += 1,
                    _ => {}
                }
            }
            let after_array = job.depends_on.iter().any(|d| {
                d.kind.is_none()
                    && d.job_id
                        .as_ref()
                        .and_then(|id| self.state.job(id))
                        .is_some_and(|dep| dep.array.is_some())
            });
            if after_array && job.status == JobStatus::Succeeded {
                self.summary.array_dependents_ran += 1;
            }
            match job.status {
                JobStatus::Succeeded if job.multinode.is_some() => {
                    self.summary.jobs_succeeded += 1;
                    self.summary.multinode_succeeded += 1;
                }
                JobStatus::Succeeded => self.summary.jobs_succeeded += 1,
                JobStatus::Failed => {
                    self.summary.jobs_failed += 1;
                    if job.status_reason.as_deref() == Some(barge_core::apply::REASON_TIMEOUT) {
                        self.summary.jobs_timed_out += 1;
                    }
                    if job
                        .status_reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with("Canceled by JobStateTimeLimit"))
                    {
                        self.summary.jobs_time_limited += 1;
                    }
                }
                _ if check::could_run(&self.state, job) => {
                    return self.violation(
                        LIVENESS,
                        format!(
                            "job {} is still {} after the drain although it could run ({})",
                            job.id,
                            job.status.as_str(),
                            why_waiting(&self.state, job).unwrap_or_default()
                        ),
                    );
                }
                _ => self.summary.jobs_never_runnable += 1,
            }
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<Summary, Failure> {
        if let Some(m) = self.store.mismatch(&self.state) {
            return self.violation(RESTART, format!("at the end: {m}"));
        }
        let rebuilt = match self.store.load(self.identity.clone()) {
            Ok(s) => s,
            Err(e) => return self.violation(RESTART, e),
        };
        self.check_reload(&self.state, &rebuilt)?;
        self.summary.fingerprint = self.store.fingerprint();
        Ok(self.summary.clone())
    }
}
