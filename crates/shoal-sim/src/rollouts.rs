//! Rollouts in the simulated network: the real [`Conductor`] at the source, and on every other
//! node the real rollout [`Agent`] inside the node's agent machine
//! ([`shoal_core::agent::Machine`]), so directives travel by the simulated broadcast and reports
//! by the simulated health tree exactly as the machine routes them in the daemon. Only the
//! executor is modelled: preparing, switching and each health check take a fixed time, and a
//! check of a release named bad fails.

use crate::NodeId;
use shoal_core::activation::{Command, Policy};
use shoal_core::content::RootHash;
use shoal_core::control::{Place, Summary};
use shoal_core::labels::Labels;
use shoal_core::rollout::agent::{Agent, Persisted};
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
    /// Releases whose manifests every node holds from the start, their pieces still to come
    /// (published, fetched by the data plane: [`crate::fleet`]).
    pub announced: Vec<RootHash>,
    /// Releases whose health checks fail.
    pub bad: BTreeSet<RootHash>,
    /// The nodes on which they fail (`None`: every node).
    pub bad_nodes: Option<BTreeSet<NodeId>>,
    /// From when on they fail.
    pub bad_from: Duration,
    /// How long staging a release takes.
    pub prepare: Duration,
    /// How long switching to a release (restarting the service) takes.
    pub switch: Duration,
    /// How long one health check takes.
    pub check: Duration,
    /// The service's health policy.
    pub policy: Policy,
}

impl Model {
    /// Every node runs `service` at `running`, healthy, with a quick executor: staging takes
    /// 200 ms, switching 300 ms and a check 50 ms; the policy's grace is 5 s, then 2 passing
    /// checks 500 ms apart. No other release is held or announced, and none is bad.
    pub fn quick(service: &str, running: Release) -> Self {
        Model {
            service: service.into(),
            running,
            distributed: Vec::new(),
            announced: Vec::new(),
            bad: BTreeSet::new(),
            bad_nodes: None,
            bad_from: Duration::ZERO,
            prepare: Duration::from_millis(200),
            switch: Duration::from_millis(300),
            check: Duration::from_millis(50),
            policy: Policy {
                grace: Duration::from_secs(5),
                passes: 2,
                interval: Duration::from_millis(500),
            },
        }
    }
}

/// A command in flight on a node's modelled executor.
pub(crate) struct Job {
    pub node: NodeId,
    /// The run of the node that asked; a restarted node does not hear of its previous run's jobs.
    pub run: u32,
    pub command: Command,
}

/// What a finished job answers.
pub(crate) enum Answer {
    Prepared,
    Switched,
    Checked(Result<(), String>),
}

#[derive(Default)]
struct NodeAgent {
    saved: Option<Box<Persisted>>,
    run: u32,
    /// Whether it ever switched to a release other than the model's running one.
    activated: bool,
    /// Releases the data plane completed in its store (kept over restarts, as a store is).
    stored: Vec<RootHash>,
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

    /// The agent of node `id` (re)starting at `place`, from what it last saved, and the
    /// releases its store holds, each with whether it is complete.
    pub fn agent(&mut self, id: NodeId, place: Place) -> (Agent, Vec<(RootHash, bool)>) {
        let model = &self.model;
        let labels: Labels = format!(
            "region=r{},fd={},rack={}",
            place.region, place.fault_domain, place.rack
        )
        .parse()
        .unwrap_or_default();
        let policies = BTreeMap::from([(model.service.clone(), model.policy)]);
        let running = Persisted::running(&model.service, model.running.clone());
        let mut roots: Vec<(RootHash, bool)> = std::iter::once(model.running.root)
            .chain(model.distributed.iter().map(|r| r.root))
            .map(|root| (root, true))
            .collect();
        let announced = model.announced.clone();
        let slot = self.slot(id);
        roots.extend(slot.stored.iter().map(|&root| (root, true)));
        for root in announced {
            if !slot.stored.contains(&root) {
                roots.push((root, false));
            }
        }
        let saved = slot.saved.as_deref().cloned().unwrap_or(running);
        slot.run += 1;
        let agent = Agent::new(
            id.to_le_bytes().to_vec(),
            format!("node{id}"),
            labels,
            policies,
            saved,
        );
        (agent, roots)
    }

    /// Node `id`'s store holds `root` complete, whether or not the node runs now.
    pub fn stored(&mut self, id: NodeId, root: RootHash) {
        let slot = self.slot(id);
        if !slot.stored.contains(&root) {
            slot.stored.push(root);
        }
    }

    /// Node `id` saved its agent's state.
    pub fn save(&mut self, id: NodeId, persisted: Persisted) {
        self.slot(id).saved = Some(Box::new(persisted));
    }

    /// Node `id`'s agent asked for `command`: the job, and how long it takes.
    pub fn job(&mut self, id: NodeId, command: Command) -> (Duration, Job) {
        self.stats.commands += 1;
        let first_root = self.model.running.root;
        let after = match &command {
            Command::Prepare(_) => self.model.prepare,
            Command::Switch(_) => self.model.switch,
            Command::Check(_) => self.model.check,
        };
        let slot = self.slot(id);
        if let Command::Switch(release) = &command
            && release.root != first_root
            && !slot.activated
        {
            slot.activated = true;
            self.stats.activated_nodes += 1;
        }
        let run = self.slot(id).run;
        (
            after,
            Job {
                node: id,
                run,
                command,
            },
        )
    }

    /// What a finished job answers at `now`, unless its node has restarted since.
    pub fn answer(&mut self, job: &Job, now: Duration) -> Option<Answer> {
        let m = &self.model;
        let bad = match &job.command {
            Command::Check(root) => {
                m.bad.contains(root)
                    && now >= m.bad_from
                    && m.bad_nodes.as_ref().is_none_or(|n| n.contains(&job.node))
            }
            _ => false,
        };
        if self.slot(job.node).run != job.run {
            return None;
        }
        Some(match job.command {
            Command::Prepare(_) => Answer::Prepared,
            Command::Switch(_) => Answer::Switched,
            Command::Check(_) if bad => Answer::Checked(Err("health check failed".to_owned())),
            Command::Check(_) => Answer::Checked(Ok(())),
        })
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

    /// The source's periodic read of the fleet's counts; the directives to broadcast.
    pub fn report(&mut self, now: Duration, fleet: &Summary) -> Vec<Directive> {
        let wall = UNIX_AT_START + now;
        self.conductor
            .handle_reports(wall, fleet.nodes, &fleet.rollouts);
        if self.conductor.poll_timeout().is_some_and(|t| t <= wall) {
            self.conductor.handle_timeout(wall);
        }
        let mut directives = Vec::new();
        while let Some(output) = self.conductor.poll_output() {
            match output {
                ConductorOutput::Record(record) => self.records.push(record),
                ConductorOutput::Broadcast(directive) => {
                    self.stats.directives += 1;
                    directives.push(*directive);
                }
            }
        }
        directives
    }
}
