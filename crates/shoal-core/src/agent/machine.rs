//! A node's agent machine: the control node, the fetch policy and the rollout agent, with what
//! joins them decided here rather than in each driver.
//!
//! - A delivered heartbeat sets the fleet size that paces seed probes.
//! - A delivered announcement's manifest is verified against the trust document, then fetched
//!   once ([`Output::AddRelease`]); once added, and while incomplete, swarm peers come from
//!   membership's neighbour rule ([`Output::Connect`]).
//! - A delivered rollout directive goes to the rollout agent (refusals come out as
//!   [`Output::Refused`]); its executor commands come out as [`Output::Execute`].
//! - The node's own health summary (its releases and its rollout reports) is rebuilt after
//!   every input that can change it, so the health tree hears of a change at once.
//!
//! The source (the coordinator) runs one without a rollout agent and sets no own summary.
//!
//! # Driving it
//!
//! Feed every input, then drain [`Machine::poll_output`] until `None`, then sleep until
//! [`Machine::poll_timeout`]. Calls made straight on [`Machine::control_mut`] (the source's
//! broadcasts) are carried through at the next drain.

use super::fetch::{self, Fetch};
use crate::activation::Command;
use crate::content::RootHash;
use crate::control::{self, Directive, Message, Peer, Status, Summary};
use crate::manifest::{SignedManifest, VerifiedManifest};
use crate::query::{MAX_QUERIES, Query};
use crate::revocation::{CUT_OFF_AFTER, Revocations};
use crate::rollout::agent::{self as rollout_agent, Agent, Refusal};
use crate::trust::Trust;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Swarm neighbours taken from membership for a release being fetched.
pub const SWARM_CANDIDATES: usize = 16;
/// Of those, how many are chosen at random whatever their place (the rest are the closest).
pub const SWARM_OUTSIDE: usize = SWARM_CANDIDATES / 4;

/// What the driver must do.
#[derive(Debug)]
pub enum Output<P, O> {
    /// What the control node asks for. A `Deliver` has been acted on already; it is passed on
    /// for the driver's logs and counters.
    Control(control::Output<P>),
    /// Add this release to the store and join its swarm; then call [`Machine::release_added`].
    AddRelease {
        /// The verified manifest.
        manifest: Box<VerifiedManifest>,
        /// The origin that serves it.
        origin: O,
    },
    /// An announced manifest failed verification.
    ManifestRefused(String),
    /// Connect the data plane to these swarm peers.
    Connect(Vec<P>),
    /// Carry out an activation command; answer with the matching `handle_*` call.
    Execute {
        /// The service.
        service: String,
        /// The command.
        command: Command,
    },
    /// The rollout agent's durable state changed: save [`Agent::persisted`] before acting on
    /// what follows.
    Persist,
    /// A rollout directive was refused (and counted by the agent).
    Refused(Refusal),
    /// A newer revocation list arrived: refuse peers whose certificate came from a listed
    /// token, and keep the list for a restart.
    Revocations(Arc<Revocations>),
    /// [`CUT_OFF_AFTER`] has passed since this list arrived: cut the control-plane links that
    /// are up to peers whose certificate came from a token it lists.
    CutOff(Arc<Revocations>),
}

/// A node's agent machine. See the module documentation.
pub struct Machine<P: Peer, O> {
    control: control::Node<P>,
    agent: Option<Agent>,
    fetch: Fetch,
    trust: Option<Arc<Trust>>,
    unix_at_epoch: u64,
    /// The time of the latest input.
    now: Duration,
    /// Releases in the store: complete or not.
    releases: BTreeMap<RootHash, bool>,
    /// The verified manifest of the announcement being handled.
    announced: Option<(Box<VerifiedManifest>, O)>,
    /// Whether the agent may have changed since [`Machine::take_agent_changed`].
    agent_changed: bool,
    /// The newest revocation list received or restored.
    revocations: Arc<Revocations>,
    /// When the links up to peers the newest list revokes are to be cut.
    cut_off_at: Option<Duration>,
    /// Fleet queries this node answers until they expire, sorted by id, at most
    /// [`MAX_QUERIES`].
    queries: Vec<Arc<Query>>,
    out: VecDeque<Output<P, O>>,
}

impl<P: Peer, O: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Machine<P, O> {
    /// A machine around `control`, with a rollout `agent` on a node (none on the source);
    /// announced manifests are checked against `trust` (none: announcements are refused).
    /// `unix_at_epoch` is the wall clock, in Unix seconds, at the driver's time zero.
    pub fn new(
        control: control::Node<P>,
        agent: Option<Agent>,
        trust: Option<Arc<Trust>>,
        unix_at_epoch: u64,
    ) -> Self {
        let mut machine = Machine {
            control,
            agent,
            fetch: Fetch::new(),
            trust,
            unix_at_epoch,
            now: Duration::ZERO,
            releases: BTreeMap::new(),
            announced: None,
            agent_changed: false,
            revocations: Arc::default(),
            cut_off_at: None,
            queries: Vec::new(),
            out: VecDeque::new(),
        };
        machine.after_agent();
        machine
    }

    /// Restores the revocation list kept from before a restart; a broadcast list replaces it
    /// only if newer.
    pub fn restore_revocations(&mut self, revocations: Arc<Revocations>) {
        self.revocations = revocations;
    }

    /// A newer list issued here, at the source: kept, and the links up to the peers it revokes
    /// cut [`CUT_OFF_AFTER`] from `now` (the driver broadcasts it).
    pub fn issue_revocations(&mut self, now: Duration, revocations: Arc<Revocations>) {
        self.now = self.now.max(now);
        self.revocations = revocations;
        self.cut_off_at = Some(self.now + CUT_OFF_AFTER);
    }

    /// The newest revocation list this node holds.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// The control node.
    pub fn control(&self) -> &control::Node<P> {
        &self.control
    }

    /// The control node, for the source's broadcasts and the driver's own summary when there is
    /// no agent.
    pub fn control_mut(&mut self) -> &mut control::Node<P> {
        &mut self.control
    }

    /// The rollout agent, if this node runs one.
    pub fn agent(&self) -> Option<&Agent> {
        self.agent.as_ref()
    }

    /// Whether the rollout agent may have changed since the last call: the driver refreshes
    /// what it shows of the agent (its services, its refusals) only then.
    pub fn take_agent_changed(&mut self) -> bool {
        std::mem::take(&mut self.agent_changed)
    }

    /// A message from `from`, its envelopes already verified.
    pub fn handle_message(&mut self, now: Duration, from: P, message: Message<P>) {
        self.now = self.now.max(now);
        self.control.handle_message(now, from, message);
    }

    /// The link to `peer` broke.
    pub fn handle_disconnected(&mut self, now: Duration, peer: P) {
        self.now = self.now.max(now);
        self.control.handle_disconnected(now, peer);
    }

    /// Feeds time in.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        if self.control.poll_timeout() <= now {
            self.control.handle_timeout(now);
        }
        if let Some(agent) = &mut self.agent
            && agent.poll_timeout().is_some_and(|t| t <= now)
        {
            agent.handle_timeout(now);
            self.after_agent();
        }
        self.fetch.handle_timeout(now);
        self.carry_fetch();
        if self.queries_expire_at().is_some_and(|t| t <= now) {
            let unix = self.unix_at_epoch + now.as_secs();
            self.queries.retain(|q| q.expires_unix_secs >= unix);
            self.after_agent();
        }
        if self.cut_off_at.is_some_and(|t| t <= now) {
            self.cut_off_at = None;
            self.out
                .push_back(Output::CutOff(Arc::clone(&self.revocations)));
        }
    }

    /// When [`Machine::handle_timeout`] is next due.
    pub fn poll_timeout(&mut self) -> Duration {
        let agent = self.agent.as_ref().and_then(Agent::poll_timeout);
        [
            agent,
            self.fetch.poll_timeout(),
            self.cut_off_at,
            self.queries_expire_at(),
        ]
        .into_iter()
        .flatten()
        .fold(self.control.poll_timeout(), Duration::min)
    }

    /// When the first query this node answers expires, in driver time: it leaves the node's
    /// summary then.
    fn queries_expire_at(&self) -> Option<Duration> {
        let unix = self.queries.iter().map(|q| q.expires_unix_secs).min()?;
        Some(Duration::from_secs(
            unix.saturating_add(1).saturating_sub(self.unix_at_epoch),
        ))
    }

    /// The store holds `root` (verified manifest), `complete` or not.
    pub fn release_stored(&mut self, root: RootHash, complete: bool, now: Duration) {
        self.now = self.now.max(now);
        let before = self.releases.insert(root, complete);
        if before == Some(complete) {
            return;
        }
        match before {
            None => self.fetch.held(root, complete, now),
            Some(_) if complete => self.fetch.completed(root),
            Some(_) => {}
        }
        if let Some(agent) = &mut self.agent {
            agent.handle_manifest(root);
            if complete {
                agent.handle_complete(root);
            }
        }
        self.after_agent();
    }

    /// The store took (`ok`) or refused the release of an [`Output::AddRelease`].
    pub fn release_added(&mut self, root: RootHash, ok: bool, now: Duration) {
        self.now = self.now.max(now);
        self.fetch.added(root, ok, now);
        if ok {
            self.releases.entry(root).or_insert(false);
            if let Some(agent) = &mut self.agent {
                agent.handle_manifest(root);
            }
            self.after_agent();
        }
        self.carry_fetch();
    }

    /// Drains (`true`) or undrains the node.
    pub fn set_drained(&mut self, drained: bool) {
        if let Some(agent) = &mut self.agent {
            agent.set_drained(drained);
            self.after_agent();
        }
    }

    /// The executor staged a release for `service`.
    pub fn handle_prepared(&mut self, now: Duration, service: &str, result: Result<(), String>) {
        self.now = self.now.max(now);
        self.with_agent(|a| a.handle_prepared(now, service, result));
    }

    /// The executor switched `service`.
    pub fn handle_switched(&mut self, now: Duration, service: &str, result: Result<(), String>) {
        self.now = self.now.max(now);
        self.with_agent(|a| a.handle_switched(now, service, result));
    }

    /// One health check of `service` finished.
    pub fn handle_check(&mut self, now: Duration, service: &str, result: Result<(), String>) {
        self.now = self.now.max(now);
        self.with_agent(|a| a.handle_check(now, service, result));
    }

    /// A supervised `service` keeps exiting.
    pub fn handle_crashed(&mut self, service: &str, reason: String) {
        self.with_agent(|a| a.handle_crashed(service, reason));
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output<P, O>> {
        loop {
            if let Some(output) = self.out.pop_front() {
                return Some(output);
            }
            let output = self.control.poll_output()?;
            if let control::Output::Deliver { envelope } = &output {
                let directive = envelope.decoded(Directive::<O>::decode);
                self.deliver(&directive);
            }
            self.out.push_back(Output::Control(output));
        }
    }

    /// Acts on a delivered envelope's directive, decoded once for every node that holds the
    /// envelope ([`control::Envelope::decoded`]).
    fn deliver(&mut self, directive: &Option<Directive<O>>) {
        match directive {
            Some(Directive::Heartbeat { fleet }) => self.control.set_fleet_size(*fleet),
            Some(Directive::Rollout(directive)) => {
                let unix = self.unix_at_epoch + self.now.as_secs();
                if let Some(agent) = &mut self.agent {
                    if let Err(refusal) = agent.handle_directive(unix, Arc::clone(directive)) {
                        self.out.push_back(Output::Refused(refusal));
                    }
                    self.after_agent();
                }
            }
            Some(Directive::Revoked(list)) if list.generation > self.revocations.generation => {
                self.revocations = Arc::clone(list);
                self.cut_off_at = Some(self.now + CUT_OFF_AFTER);
                self.out.push_back(Output::Revocations(Arc::clone(list)));
            }
            Some(Directive::Revoked(_)) => {}
            Some(Directive::Query(query)) => {
                if let Err(i) = self.queries.binary_search_by_key(&query.id, |q| q.id) {
                    self.queries.insert(i, Arc::clone(query));
                    while self.queries.len() > MAX_QUERIES {
                        self.queries.remove(0);
                    }
                    self.after_agent();
                }
            }
            Some(Directive::Announce { manifest, origin }) => {
                let verified = match &self.trust {
                    Some(trust) => SignedManifest::decode(manifest)
                        .and_then(|m| m.verify(trust))
                        .map_err(|e| e.to_string()),
                    None => Err("no trust document to check it against".to_owned()),
                };
                match verified {
                    Ok(manifest) => {
                        let root = manifest.root();
                        self.announced = Some((Box::new(manifest), origin.clone()));
                        self.fetch.announced(root);
                        self.carry_fetch();
                        self.announced = None;
                    }
                    Err(reason) => self.out.push_back(Output::ManifestRefused(reason)),
                }
            }
            None => {}
        }
    }

    fn carry_fetch(&mut self) {
        while let Some(output) = self.fetch.poll_output() {
            match output {
                fetch::Output::Add(root) => match self.announced.take() {
                    Some((manifest, origin)) if manifest.root() == root => {
                        self.out.push_back(Output::AddRelease { manifest, origin });
                    }
                    other => {
                        self.announced = other;
                        self.fetch.added(root, false, self.now);
                    }
                },
                fetch::Output::FindPeers => {
                    let peers = self
                        .control
                        .swarm_candidates(SWARM_CANDIDATES, SWARM_OUTSIDE)
                        .into_iter()
                        .map(|e| e.peer)
                        .collect();
                    self.out.push_back(Output::Connect(peers));
                }
            }
        }
    }

    /// Feeds an input to the agent.
    fn with_agent(&mut self, input: impl FnOnce(&mut Agent)) {
        if let Some(agent) = &mut self.agent {
            input(agent);
            self.after_agent();
        }
    }

    /// Carries the agent's outputs out and rebuilds the node's own summary.
    fn after_agent(&mut self) {
        let Some(agent) = &mut self.agent else {
            return;
        };
        self.agent_changed = true;
        while let Some(output) = agent.poll_output() {
            self.out.push_back(match output {
                rollout_agent::Output::Execute { service, command } => {
                    Output::Execute { service, command }
                }
                rollout_agent::Output::Persist => Output::Persist,
            });
        }
        let mut summary =
            Summary::node(Status::Healthy, self.releases.iter().map(|(r, c)| (*r, *c)));
        for report in agent.reports() {
            summary.add_rollout(&report);
        }
        let unix = self.unix_at_epoch + self.now.as_secs();
        self.queries.retain(|q| q.expires_unix_secs >= unix);
        if !self.queries.is_empty() {
            let me = agent.query_hit();
            for query in &self.queries {
                summary.add_query(&query.answer(me.clone()));
            }
        }
        self.control.set_own_summary(summary);
    }
}

#[cfg(test)]
mod tests;
