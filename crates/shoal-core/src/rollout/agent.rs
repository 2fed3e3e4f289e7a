//! The rollout agent: one per node. It takes the coordinator's directives, decides for itself
//! whether this node is in a wave, drives each service's [`activation::Service`], and writes the
//! node's own [`RolloutReport`].
//!
//! Refused, counted, and never acted on: malformed directives, expired ones, replays (a sequence
//! not above the last one seen for that rollout), a release counter lower than the one the
//! service runs unless the directive is a rollback naming that release, and directives about a
//! release whose manifest this node has not verified.
//!
//! Call order: an input (`handle_directive`, `handle_manifest`, `handle_complete`, a service
//! result, `handle_timeout` once [`Agent::poll_timeout`] has passed, `set_drained`), then drain
//! [`Agent::poll_output`]; after an [`Output::Persist`], save [`Agent::persisted`].

use super::directive::{Action, Cell, Directive, Release};
use super::report::{Candidate, CellCount, NodeState, RolloutReport, STATES, short_reason};
use super::selector::node_hash;
use crate::activation::ServiceState;
use crate::activation::{self, Command, Outcome, Policy, Service};
use crate::content::RootHash;
use crate::labels::Labels;
use crate::query::{MAX_NAME_BYTES, MAX_SAMPLE_SERVICES, QueryHit, ServiceHit};
use litemap::LiteMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Rollouts a node remembers (the newest); older ones are forgotten.
pub const MAX_KNOWN_ROLLOUTS: usize = 8;
/// Verified manifests and complete releases remembered.
pub const MAX_KNOWN_RELEASES: usize = 64;

/// Why a directive was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its sizes are out of bounds.
    #[error("malformed directive")]
    Malformed,
    /// Its expiry has passed.
    #[error("directive {seq} of rollout {rollout} expired at {expired_at}")]
    Expired {
        /// The rollout.
        rollout: u64,
        /// Its sequence.
        seq: u32,
        /// Its expiry (Unix seconds).
        expired_at: u64,
    },
    /// Its sequence is not above the last one seen.
    #[error("directive {seq} of rollout {rollout} replayed (last seen {last})")]
    Replayed {
        /// The rollout.
        rollout: u64,
        /// Its sequence.
        seq: u32,
        /// The last one seen.
        last: u32,
    },
    /// It would move a service to a lower release counter without a rollback.
    #[error("release counter {offered} of {service} is below the running {running}")]
    LowerCounter {
        /// The service.
        service: String,
        /// The directive's counter.
        offered: u64,
        /// The running release's counter.
        running: u64,
    },
    /// It names a release whose manifest this node has not verified.
    #[error("release {0} has no verified manifest here")]
    Unverified(RootHash),
}

/// Counts of refused directives, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Malformed.
    pub malformed: u64,
    /// Expired.
    pub expired: u64,
    /// Replayed.
    pub replayed: u64,
    /// Lower release counter without a rollback.
    pub lower_counter: u64,
    /// Manifest not verified.
    pub unverified: u64,
}

/// Work for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Carry out an activation command for `service`; answer with the `handle_*` call the
    /// command names.
    Execute {
        /// The service.
        service: String,
        /// The command.
        command: Command,
    },
    /// The durable state changed: save [`Agent::persisted`] before acting on what follows.
    Persist,
}

/// What the node knows of one rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Known {
    /// Shared with every agent that received the same envelope (one copy for a simulated fleet).
    directive: Arc<Directive>,
    hash: u64,
    /// Skipped: maintenance, opted out, drained when it learned the rollout, or no such
    /// service here.
    excluded: bool,
    /// Its cell once it has a stage; kept once set (thresholds only grow).
    cell: Option<Cell>,
    state: NodeState,
    reason: Option<String>,
}

/// The durable part of an [`Agent`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    rollouts: Vec<(u64, Known)>,
    services: Vec<(String, activation::Persisted)>,
    drained: bool,
}

impl Persisted {
    /// The state of a node whose `service` already runs `release` (installed before Shoal
    /// managed it, or by the first rollout).
    pub fn running(service: &str, release: Release) -> Self {
        Persisted {
            rollouts: Vec::new(),
            services: vec![(
                service.to_owned(),
                activation::Persisted {
                    current: Some(release),
                    previous: None,
                    target: None,
                    failed_reason: None,
                    state: ServiceState::Healthy,
                },
            )],
            drained: false,
        }
    }
}

/// A node's rollout agent. See the module docs.
#[derive(Debug)]
pub struct Agent {
    node_id: Vec<u8>,
    name: String,
    labels: Labels,
    drained: bool,
    // Sorted vectors, not B-trees: a node knows one or two services, at most
    // `MAX_KNOWN_ROLLOUTS` rollouts and a few releases, and a B-tree's first node has room for
    // eleven (several KB for one entry, in every node of a simulated fleet).
    rollouts: LiteMap<u64, Known>,
    services: LiteMap<String, Service>,
    manifests: LiteMap<RootHash, ()>,
    complete: LiteMap<RootHash, ()>,
    refused: Refused,
    outputs: VecDeque<Output>,
}

impl Agent {
    /// An agent for the node `node_id` (its peer id bytes), shown as `name`, with `labels`,
    /// running the services in `services` with their health policies, restored from `saved`.
    pub fn new(
        node_id: Vec<u8>,
        name: String,
        labels: Labels,
        services: BTreeMap<String, Policy>,
        saved: Persisted,
    ) -> Self {
        let mut saved_services: BTreeMap<String, activation::Persisted> =
            saved.services.into_iter().collect();
        // Exactly as many entries as services (one or two), not the four a growing vector
        // starts with: a service is a few hundred bytes, in every node of a simulated fleet.
        let mut entries = Vec::with_capacity(services.len());
        entries.extend(services.into_iter().map(|(name, policy)| {
            let service = match saved_services.remove(&name) {
                Some(p) => Service::restore(policy, p),
                None => Service::new(policy),
            };
            (name, service)
        }));
        // A B-tree map's entries come sorted by key, each key once.
        let services = LiteMap::from_sorted_store_unchecked(entries);
        let mut agent = Agent {
            node_id,
            name: super::report::cut(&name, super::report::MAX_NODE_NAME_BYTES),
            labels,
            drained: saved.drained,
            rollouts: saved.rollouts.into_iter().collect(),
            services,
            manifests: LiteMap::new(),
            complete: LiteMap::new(),
            refused: Refused::default(),
            outputs: VecDeque::new(),
        };
        agent.drain_services();
        agent
    }

    /// Refusal counts.
    pub fn refused(&self) -> Refused {
        self.refused
    }

    /// Whether the node is drained (takes part in no new rollout).
    pub fn is_drained(&self) -> bool {
        self.drained
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    /// The services, by name.
    pub fn services(&self) -> impl Iterator<Item = (&str, &Service)> {
        self.services.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// This node's state in `rollout`, if it knows it.
    pub fn state(&self, rollout: u64) -> Option<NodeState> {
        self.rollouts.get(&rollout).map(|k| k.state)
    }

    /// Drains or undrains the node: a drained node starts no activation and is skipped by
    /// rollouts it learns of from now on (a rollout already running counts it as excluded too).
    pub fn set_drained(&mut self, drained: bool) {
        if self.drained != drained {
            self.drained = drained;
            self.outputs.push_back(Output::Persist);
        }
    }

    /// The manifest of `root` was verified (publisher signature, piece list).
    pub fn handle_manifest(&mut self, root: RootHash) {
        remember(&mut self.manifests, root);
    }

    /// The payload of `root` is complete and verified on disk.
    pub fn handle_complete(&mut self, root: RootHash) {
        remember(&mut self.manifests, root);
        remember(&mut self.complete, root);
        self.reconcile();
    }

    /// A directive from the coordinator (its envelope's signature already checked).
    ///
    /// # Errors
    ///
    /// The [`Refusal`], also counted in [`Agent::refused`]; nothing is acted on.
    pub fn handle_directive(
        &mut self,
        unix_now: u64,
        directive: impl Into<Arc<Directive>>,
    ) -> Result<(), Refusal> {
        let directive = directive.into();
        let checked = self.check(unix_now, &directive);
        if let Err(refusal) = &checked {
            let r = &mut self.refused;
            match refusal {
                Refusal::Malformed => r.malformed += 1,
                Refusal::Expired { .. } => r.expired += 1,
                Refusal::Replayed { .. } => r.replayed += 1,
                Refusal::LowerCounter { .. } => r.lower_counter += 1,
                Refusal::Unverified(_) => r.unverified += 1,
            }
            return checked;
        }
        let rollout = directive.spec.rollout;
        let excluded = self.drained
            || !self.services.contains_key(&directive.spec.service)
            || directive
                .spec
                .skip_labels
                .iter()
                .any(|(k, v)| self.labels.get(k) == Some(v.as_str()));
        let hash = node_hash(rollout, &self.node_id);
        let known = self.rollouts.entry(rollout).or_insert(Known {
            directive: directive.clone(),
            hash,
            excluded,
            cell: None,
            state: NodeState::Pending,
            reason: None,
        });
        known.directive = directive;
        if !known.excluded && known.cell.is_none() && known.directive.action != Action::Census {
            known.cell = assign(known, &self.labels);
        }
        while self.rollouts.len() > MAX_KNOWN_ROLLOUTS {
            let Some(&first) = self.rollouts.first().map(|(id, _)| id) else {
                break;
            };
            self.rollouts.remove(&first);
        }
        self.outputs.push_back(Output::Persist);
        self.reconcile();
        Ok(())
    }

    /// The result of [`Command::Prepare`] for `service`.
    pub fn handle_prepared(&mut self, now: Duration, service: &str, result: Result<(), String>) {
        if let Some(s) = self.services.get_mut(service) {
            s.handle_prepared(now, result);
        }
        self.after_service();
    }

    /// The result of [`Command::Switch`] for `service`.
    pub fn handle_switched(&mut self, now: Duration, service: &str, result: Result<(), String>) {
        if let Some(s) = self.services.get_mut(service) {
            s.handle_switched(now, result);
        }
        self.after_service();
    }

    /// The result of [`Command::Check`] for `service`.
    pub fn handle_check(&mut self, now: Duration, service: &str, result: Result<(), String>) {
        if let Some(s) = self.services.get_mut(service) {
            s.handle_check(now, result);
        }
        self.after_service();
    }

    /// The executor's word that `service` keeps crashing.
    pub fn handle_crashed(&mut self, service: &str, reason: String) {
        if let Some(s) = self.services.get_mut(service) {
            s.handle_crashed(reason);
        }
        self.after_service();
    }

    /// Call when [`Agent::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Duration) {
        for (_, s) in self.services.iter_mut() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        self.after_service();
    }

    /// The next piece of work for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Agent::handle_timeout`]; `None` if nothing waits on time.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.services
            .values()
            .filter_map(Service::poll_timeout)
            .min()
    }

    /// What to save after an [`Output::Persist`].
    pub fn persisted(&self) -> Persisted {
        Persisted {
            rollouts: self
                .rollouts
                .iter()
                .map(|(id, k)| (*id, k.clone()))
                .collect(),
            services: self
                .services
                .iter()
                .map(|(n, s)| (n.clone(), s.persisted()))
                .collect(),
            drained: self.drained,
        }
    }

    /// The releases that must stay on disk (running, rollback targets, being activated).
    pub fn pinned(&self) -> BTreeSet<RootHash> {
        self.services
            .values()
            .flat_map(|s| s.pinned().map(|r| r.root))
            .collect()
    }

    /// This node as a fleet query's sample shows it: id, name, labels and services.
    pub fn query_hit(&self) -> QueryHit {
        QueryHit {
            node_id: self.node_id.clone(),
            name: super::report::cut(&self.name, MAX_NAME_BYTES),
            labels: self.labels.clone(),
            services: self
                .services
                .iter()
                .take(MAX_SAMPLE_SERVICES)
                .map(|(name, service)| ServiceHit {
                    service: super::report::cut(name, MAX_NAME_BYTES),
                    version: service
                        .current()
                        .map(|r| super::report::cut(&r.version, MAX_NAME_BYTES)),
                    state: service.state(),
                })
                .collect(),
        }
    }

    /// This node's own report for each rollout it knows, newest last.
    pub fn reports(&self) -> Vec<RolloutReport> {
        self.rollouts
            .iter()
            .map(|(id, k)| self.report(*id, k))
            .collect()
    }

    /// Checks the invariants of the agent and its services; panics on a programmer error.
    pub fn check_invariants(&self) {
        for s in self.services.values() {
            s.check_invariants();
        }
        for k in self.rollouts.values() {
            if k.excluded {
                assert_eq!(k.cell, None, "an excluded node has a cell");
            }
            if k.state != NodeState::Pending {
                assert!(k.cell.is_some(), "a node without a stage left pending");
            }
        }
        assert!(self.rollouts.len() <= MAX_KNOWN_ROLLOUTS);
    }

    fn check(&self, unix_now: u64, d: &Directive) -> Result<(), Refusal> {
        if !d.is_well_formed() {
            return Err(Refusal::Malformed);
        }
        let rollout = d.spec.rollout;
        if d.expires_at_unix < unix_now {
            return Err(Refusal::Expired {
                rollout,
                seq: d.seq,
                expired_at: d.expires_at_unix,
            });
        }
        if let Some(k) = self.rollouts.get(&rollout)
            && d.seq <= k.directive.seq
        {
            return Err(Refusal::Replayed {
                rollout,
                seq: d.seq,
                last: k.directive.seq,
            });
        }
        let release = &d.spec.release;
        if !self.manifests.contains_key(&release.root) {
            return Err(Refusal::Unverified(release.root));
        }
        if let Action::Rollback { to } = &d.action {
            if !self.manifests.contains_key(&to.root) {
                return Err(Refusal::Unverified(to.root));
            }
            return Ok(());
        }
        let running = self
            .services
            .get(&d.spec.service)
            .and_then(|s| s.current())
            .map_or(0, |r| r.counter);
        if release.counter < running {
            return Err(Refusal::LowerCounter {
                service: d.spec.service.clone(),
                offered: release.counter,
                running,
            });
        }
        Ok(())
    }

    /// Starts what the directives ask of this node and the releases on disk allow.
    fn reconcile(&mut self) {
        for (_, known) in self.rollouts.iter_mut() {
            let Some(service) = self.services.get_mut(&known.directive.spec.service) else {
                continue;
            };
            let release = known.directive.spec.release.clone();
            match known.directive.action.clone() {
                Action::Census => {}
                Action::Wave | Action::Complete => {
                    // Once every stage is done, a node in any stage goes to the release, even
                    // in a cell no wave opened (it joined after the last wave).
                    let complete = known.directive.action == Action::Complete;
                    let open = known
                        .cell
                        .as_ref()
                        .is_some_and(|c| complete || known.directive.open.contains(c));
                    if open
                        && known.state == NodeState::Pending
                        && !self.drained
                        && self.complete.contains_key(&release.root)
                        && service.is_steady()
                    {
                        known.state = NodeState::Activating;
                        if service.current() == Some(&release) {
                            known.state = NodeState::Healthy;
                        } else {
                            service.activate(release);
                        }
                        self.outputs.push_back(Output::Persist);
                    }
                }
                Action::Pause | Action::Abort { revert: false } => {}
                Action::Abort { revert: true } => {
                    if matches!(known.state, NodeState::Activating | NodeState::Healthy)
                        && service.is_steady()
                    {
                        if service.current() == Some(&release)
                            && let Some(back) = service.previous().cloned()
                        {
                            service.go_back_to(back);
                        }
                        known.state = NodeState::Reverted;
                        self.outputs.push_back(Output::Persist);
                    }
                }
                Action::Rollback { to } => {
                    if service.is_steady()
                        && service.current().is_some_and(|c| *c != to)
                        && self.complete.contains_key(&to.root)
                    {
                        service.go_back_to(to);
                        if known.state != NodeState::Pending || known.cell.is_some() {
                            known.state = NodeState::Reverted;
                        }
                        self.outputs.push_back(Output::Persist);
                    }
                }
            }
        }
        self.drain_services();
    }

    fn after_service(&mut self) {
        self.drain_services();
        self.reconcile();
    }

    /// Moves the services' commands and outcomes out, updating the rollouts they belong to.
    fn drain_services(&mut self) {
        for (name, service) in &mut self.services {
            while let Some(command) = service.poll_command() {
                self.outputs.push_back(Output::Execute {
                    service: name.clone(),
                    command,
                });
            }
            while let Some(outcome) = service.poll_outcome() {
                let (release, state, reason) = match outcome {
                    Outcome::Healthy(r) => (r, NodeState::Healthy, None),
                    Outcome::Failed {
                        release, reason, ..
                    } => (release, NodeState::Failed, Some(reason)),
                };
                for (_, k) in self.rollouts.iter_mut() {
                    if k.directive.spec.service == *name
                        && k.directive.spec.release == release
                        && k.state == NodeState::Activating
                    {
                        k.state = state;
                        k.reason = reason.clone();
                    }
                }
                self.outputs.push_back(Output::Persist);
            }
        }
    }

    fn report(&self, rollout: u64, k: &Known) -> RolloutReport {
        let mut report = RolloutReport::new(rollout, k.directive.seq);
        report.nodes = 1;
        if k.excluded {
            report.excluded = 1;
            return report;
        }
        let region = self.label(&k.directive.spec.label_region);
        let fault_domain = self.label(&k.directive.spec.label_fault_domain);
        if k.directive.action == Action::Census {
            for (i, stage) in k.directive.spec.stages.iter().enumerate() {
                if !stage.select.matches(&self.labels) {
                    continue;
                }
                let stage_index = u8::try_from(i).unwrap_or(u8::MAX);
                let mut counts = [0; STATES];
                counts[0] = 1;
                report.census.push(CellCount {
                    cell: Cell {
                        stage: stage_index,
                        region: region.clone(),
                        fault_domain: fault_domain.clone(),
                    },
                    counts,
                });
                if matches!(stage.size, super::plan::Size::Count(_)) {
                    report.candidates.push(Candidate {
                        stage: stage_index,
                        hash: k.hash,
                    });
                }
            }
            return report;
        }
        match &k.cell {
            None => report.unassigned = 1,
            Some(cell) => {
                let mut counts = [0; STATES];
                counts[k.state as usize] = 1;
                report.cells.push(CellCount {
                    cell: cell.clone(),
                    counts,
                });
                if k.state == NodeState::Failed {
                    let reason = k.reason.as_deref().unwrap_or("failed");
                    report.reasons.push((short_reason(reason), 1));
                    report.failed_sample.push(self.name.clone());
                }
            }
        }
        report
    }

    fn label(&self, key: &str) -> String {
        self.labels.get(key).unwrap_or("").to_owned()
    }
}

/// The first stage that admits this node, as its cell.
fn assign(k: &Known, labels: &Labels) -> Option<Cell> {
    let spec = &k.directive.spec;
    let stage = spec
        .stages
        .iter()
        .position(|s| s.select.matches(labels) && k.hash <= s.threshold && s.threshold > 0)?;
    Some(Cell {
        stage: u8::try_from(stage).ok()?,
        region: labels.get(&spec.label_region).unwrap_or("").to_owned(),
        fault_domain: labels
            .get(&spec.label_fault_domain)
            .unwrap_or("")
            .to_owned(),
    })
}

/// Adds `root`, forgetting another one if the set is full (the driver tells the agent again
/// about the releases it still holds).
fn remember(set: &mut LiteMap<RootHash, ()>, root: RootHash) {
    if !set.contains_key(&root) && set.len() >= MAX_KNOWN_RELEASES {
        let first = set.first().map(|(r, ())| *r);
        if let Some(first) = first {
            set.remove(&first);
        }
    }
    set.insert(root, ());
}
