//! Rollouts in the simulated network: the real [`Conductor`] at the source and the real rollout
//! [`Agent`] on every other node, their directives carried by the simulated broadcast and their
//! reports by the simulated health tree. Only the executor is modelled: preparing, switching and
//! each health check take a fixed time, and a check of a release named bad fails.

use crate::NodeId;
use shoal_core::activation::{Command, Policy};
use shoal_core::content::RootHash;
use shoal_core::control::{Place, Status, Summary};
use shoal_core::labels::Labels;
use shoal_core::rollout::agent::{Agent, Output as AgentOutput, Persisted};
use shoal_core::rollout::conductor::{self, Conductor, Output as ConductorOutput, Record};
use shoal_core::rollout::{Directive, Release};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The simulated wall clock's reading at simulated time zero (directive expiries are wall time).
pub const UNIX_AT_START: Duration = Duration::from_secs(1_800_000_000);

/// How often the source's conductor reads the fleet's counts, as the daemon's does.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// A made-up release `version` numbered `n`: root `[n; 32]`, release counter `n`.
pub fn release(version: &str, n: u8) -> Release {
    Release {
        version: version.into(),
        root: RootHash([n; 32]),
        counter: u64::from(n),
    }
}

/// What every node runs and how its executor behaves.
#[derive(Clone, Debug)]
pub struct Model {
    /// The one service every node runs.
    pub service: String,
    /// The release every node runs at the start.
    pub running: Release,
    /// Releases every node holds verified (the distribution is not simulated here).
    pub distributed: Vec<Release>,
    /// Releases whose health checks fail.
    pub bad: BTreeSet<RootHash>,
    /// How long staging a release takes.
    pub prepare: Duration,
    /// How long switching to a release (restarting the service) takes.
    pub switch: Duration,
    /// How long one health check takes.
    pub check: Duration,
    /// The service's health policy.
    pub policy: Policy,
}

/// A command in flight on a node's modelled executor.
pub(crate) struct Job {
    pub node: NodeId,
    /// The run of the node that asked; a restarted node does not hear of its previous run's jobs.
    pub run: u32,
    pub command: Command,
}

#[derive(Default)]
struct NodeAgent {
    agent: Option<Box<Agent>>,
    saved: Option<Box<Persisted>>,
    wake: Option<Duration>,
    run: u32,
    /// Whether it ever switched to a release other than the model's running one.
    activated: bool,
}

/// Counters of the rollout layer.
#[derive(Clone, Debug, Default)]
pub struct RolloutStats {
    /// Directives the conductor broadcast.
    pub directives: u64,
    /// Executor commands run.
    pub commands: u64,
    /// Directives nodes refused.
    pub refused: u64,
    /// Nodes that ever switched their service to a release other than the one they started on.
    pub activated_nodes: u32,
}

pub(crate) struct Rollouts {
    pub model: Model,
    pub conductor: Conductor,
    nodes: Vec<NodeAgent>,
    pub records: Vec<Record>,
    pub stats: RolloutStats,
    next_id: u64,
}

/// What the network must do after a rollout-layer step.
pub(crate) enum Effect {
    /// Broadcast this directive from the source.
    Broadcast(Box<Directive>),
    /// Run this job, answering after `after`.
    Run { after: Duration, job: Job },
    /// Wake the node's agent at this time.
    Wake { node: NodeId, at: Duration },
}

impl Rollouts {
    pub fn new(model: Model) -> Self {
        Rollouts {
            model,
            conductor: Conductor::new(conductor::Config::default(), Vec::new()),
            nodes: Vec::new(),
            records: Vec::new(),
            stats: RolloutStats::default(),
            next_id: 1,
        }
    }

    fn slot(&mut self, id: NodeId) -> &mut NodeAgent {
        let i = id as usize;
        if self.nodes.len() <= i {
            self.nodes.resize_with(i + 1, NodeAgent::default);
        }
        &mut self.nodes[i]
    }

    /// Node `id` (re)starts at `place`: its agent comes back from what it last saved.
    pub fn start(&mut self, id: NodeId, place: Place) -> Summary {
        let model = &self.model;
        let labels: Labels = format!(
            "region=r{},fd={},rack={}",
            place.region, place.fault_domain, place.rack
        )
        .parse()
        .unwrap_or_default();
        let policies = BTreeMap::from([(model.service.clone(), model.policy)]);
        let running = Persisted::running(&model.service, model.running.clone());
        let roots: Vec<RootHash> = std::iter::once(model.running.root)
            .chain(model.distributed.iter().map(|r| r.root))
            .collect();
        let slot = self.slot(id);
        let saved = slot.saved.as_deref().cloned().unwrap_or(running);
        let mut agent = Agent::new(
            id.to_le_bytes().to_vec(),
            format!("node{id}"),
            labels,
            policies,
            saved,
        );
        for root in roots {
            agent.handle_manifest(root);
            agent.handle_complete(root);
        }
        slot.run += 1;
        slot.wake = None;
        slot.agent = Some(Box::new(agent));
        summary(slot.agent.as_deref())
    }

    /// Node `id` stopped: its agent's state is gone, except what it saved.
    pub fn crash(&mut self, id: NodeId) {
        let slot = self.slot(id);
        slot.agent = None;
        slot.wake = None;
    }

    /// Starts a rollout of `release` with `plan` now; its id.
    pub fn start_rollout(
        &mut self,
        now: Duration,
        plan: shoal_core::rollout::Plan,
        release: Release,
    ) -> Result<u64, conductor::ConductorError> {
        let id = self.next_id;
        let previous = Some(self.model.running.clone());
        self.conductor.start(
            UNIX_AT_START + now,
            id,
            plan,
            self.model.service.clone(),
            release,
            previous,
            false,
        )?;
        self.next_id += 1;
        Ok(id)
    }

    /// The source's periodic read of the fleet's counts.
    pub fn report(&mut self, now: Duration, fleet: &Summary, effects: &mut Vec<Effect>) {
        let wall = UNIX_AT_START + now;
        self.conductor
            .handle_reports(wall, fleet.nodes, &fleet.rollouts);
        if self.conductor.poll_timeout().is_some_and(|t| t <= wall) {
            self.conductor.handle_timeout(wall);
        }
        while let Some(output) = self.conductor.poll_output() {
            match output {
                ConductorOutput::Record(record) => self.records.push(record),
                ConductorOutput::Broadcast(directive) => {
                    self.stats.directives += 1;
                    effects.push(Effect::Broadcast(directive));
                }
            }
        }
    }

    /// Node `id` delivered a rollout directive.
    pub fn directive(
        &mut self,
        id: NodeId,
        now: Duration,
        directive: Directive,
        effects: &mut Vec<Effect>,
    ) -> Option<Summary> {
        let wall = UNIX_AT_START + now;
        let agent = self.slot(id).agent.as_deref_mut()?;
        if agent.handle_directive(wall.as_secs(), directive).is_err() {
            self.stats.refused += 1;
        }
        Some(self.drain(id, now, effects))
    }

    /// A modelled command finished.
    pub fn answer(
        &mut self,
        now: Duration,
        job: Job,
        effects: &mut Vec<Effect>,
    ) -> Option<Summary> {
        let bad = match &job.command {
            Command::Check(root) => self.model.bad.contains(root),
            _ => false,
        };
        let service = self.model.service.clone();
        let slot = self.slot(job.node);
        if slot.run != job.run {
            return None;
        }
        let agent = slot.agent.as_deref_mut()?;
        match job.command {
            Command::Prepare(_) => agent.handle_prepared(now, &service, Ok(())),
            Command::Switch(_) => agent.handle_switched(now, &service, Ok(())),
            Command::Check(_) => {
                let result = if bad {
                    Err("health check failed".to_owned())
                } else {
                    Ok(())
                };
                agent.handle_check(now, &service, result);
            }
        }
        Some(self.drain(job.node, now, effects))
    }

    /// Node `id`'s agent timer, if it is the one last asked for.
    pub fn wake(
        &mut self,
        id: NodeId,
        now: Duration,
        effects: &mut Vec<Effect>,
    ) -> Option<Summary> {
        let slot = self.slot(id);
        if slot.wake != Some(now) {
            return None;
        }
        slot.wake = None;
        slot.agent.as_deref_mut()?.handle_timeout(now);
        Some(self.drain(id, now, effects))
    }

    /// Carries out the agent's outputs; its node's new own summary.
    fn drain(&mut self, id: NodeId, now: Duration, effects: &mut Vec<Effect>) -> Summary {
        let model_times = (self.model.prepare, self.model.switch, self.model.check);
        let first_root = self.model.running.root;
        let mut newly_activated = false;
        let slot = self.slot(id);
        let run = slot.run;
        let Some(agent) = slot.agent.as_deref_mut() else {
            return summary(None);
        };
        let mut persist = false;
        let mut commands = 0;
        while let Some(output) = agent.poll_output() {
            match output {
                AgentOutput::Persist => persist = true,
                AgentOutput::Execute { command, .. } => {
                    commands += 1;
                    if let Command::Switch(release) = &command
                        && release.root != first_root
                        && !slot.activated
                    {
                        slot.activated = true;
                        newly_activated = true;
                    }
                    let after = match command {
                        Command::Prepare(_) => model_times.0,
                        Command::Switch(_) => model_times.1,
                        Command::Check(_) => model_times.2,
                    };
                    effects.push(Effect::Run {
                        after,
                        job: Job {
                            node: id,
                            run,
                            command,
                        },
                    });
                }
            }
        }
        if persist {
            slot.saved = Some(Box::new(agent.persisted()));
        }
        if let Some(at) = agent.poll_timeout().map(|t| t.max(now))
            && slot.wake != Some(at)
        {
            slot.wake = Some(at);
            effects.push(Effect::Wake { node: id, at });
        }
        let own = summary(slot.agent.as_deref());
        self.stats.commands += commands;
        self.stats.activated_nodes += u32::from(newly_activated);
        own
    }

    /// The release node `id`'s service runs, if it is running.
    pub fn running(&self, id: NodeId) -> Option<&Release> {
        let agent = self.nodes.get(id as usize)?.agent.as_deref()?;
        agent.service(&self.model.service)?.current()
    }

    /// Whether node `id`'s service is settled (not activating or going back).
    pub fn is_steady(&self, id: NodeId) -> bool {
        self.nodes
            .get(id as usize)
            .and_then(|n| n.agent.as_deref())
            .and_then(|a| a.service(&self.model.service))
            .is_some_and(|s| s.is_steady())
    }
}

/// A node's own health summary with its agent's rollout reports.
fn summary(agent: Option<&Agent>) -> Summary {
    let mut summary = Summary::node(Status::Healthy, []);
    if let Some(agent) = agent {
        for report in agent.reports() {
            summary.add_rollout(&report);
        }
    }
    summary
}
