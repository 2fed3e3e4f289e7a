//! A deterministic in-process network for Shoal's control-plane core.
//!
//! [`Network`] runs thousands of real [`shoal_core::control::Node`]s in one process over
//! simulated links: a discrete-event queue keyed by `(time, sequence)`, latency by topology
//! distance (rack, fault domain, region), crashes and partitions, all driven by one seeded RNG,
//! so the same seed replays the same run. Nodes are dense `u32` ids and a crashed node's state is
//! freed, so memory stays at a few kilobytes per live node.
//!
//! Links are modelled at the message level. A message to a crashed or partitioned-off node is
//! lost; if the sender had no overlay link to it (it was dialling), the sender is told the link
//! failed after [`Config::dial_failure_after`], as a real QUIC dial would time out. Links between
//! neighbours give no such signal: the failure detector has to notice, as it must in the daemon
//! when a machine loses power.
//!
//! Node 0 is the broadcast source (the coordinator); the first [`Config::seeds`] nodes are the
//! seeds everyone else joins through.
//!
//! Every node runs the core's agent machine ([`Machine`]) around its control node. With
//! [`Network::enable_rollouts`] the source also runs the real rollout conductor and every other
//! machine a real rollout agent (see [`rollouts`]): directives travel by the simulated broadcast,
//! reports by the simulated health tree, and only the executor is modelled.
//! Fleet queries travel the same way ([`queries`]): the query by broadcast, the answers up the
//! health tree.
//!
//! [`dataplane`] is the data plane: every node's real swarm scheduler, piece transfers as max-min
//! fair flows over the nodes' caps ([`flows`], [`flowtable`]). [`fleet`] runs the two in one event
//! loop, a release's distribution and its rollout together. [`scenario`] reads the scenario
//! files `shoal-sim run` takes, [`run`] runs one and writes what it reports, [`plot`] draws it.

#![warn(missing_docs)]

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_core::agent::machine::{Machine, Output};
use shoal_core::content::RootHash;
use shoal_core::control::{
    self, Directive, Envelope, Message, Node, Output as ControlOutput, Place, Status, Summary,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

pub mod dataplane;
pub mod fleet;
pub mod flows;
pub mod flowtable;
pub mod plot;
pub mod queries;
pub mod rollouts;
pub mod run;
pub mod scenario;
pub mod timeline;

use rollouts::{Answer, Job, Rollouts};
pub use rollouts::{Model, RolloutStats};
use shoal_core::rollout::conductor::{
    ConductorError, Record, RolloutState, Status as RolloutStatus,
};
use shoal_core::rollout::{Plan, Release};

/// A node's id in the simulation: its index.
pub type NodeId = u32;

/// The simulated network's shape and timing.
#[derive(Clone, Debug)]
pub struct Config {
    /// The control-plane configuration every node runs; the source adds heartbeats if
    /// `heartbeat_interval` is set here.
    pub control: control::Config,
    /// Heartbeat interval of the source (node 0); `None` for no heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// How many of the first nodes are seeds.
    pub seeds: usize,
    /// Regions, fault domains per region and racks per fault domain that nodes are spread over.
    pub regions: u32,
    /// Fault domains per region.
    pub fault_domains: u32,
    /// Racks per fault domain.
    pub racks: u32,
    /// One-way latency within a rack.
    pub rack_latency: Duration,
    /// One-way latency within a fault domain.
    pub fault_domain_latency: Duration,
    /// One-way latency within a region.
    pub region_latency: Duration,
    /// One-way latency between regions.
    pub remote_latency: Duration,
    /// How long a dial to an unreachable node takes to fail.
    pub dial_failure_after: Duration,
    /// Nodes start joining over this span after time zero, in id order.
    pub join_spread: Duration,
    /// The seed of every random choice in the run.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            control: control::Config::default(),
            heartbeat_interval: Some(Duration::from_secs(5)),
            seeds: 3,
            regions: 3,
            fault_domains: 4,
            racks: 8,
            rack_latency: Duration::from_micros(200),
            fault_domain_latency: Duration::from_micros(500),
            region_latency: Duration::from_millis(2),
            remote_latency: Duration::from_millis(40),
            dial_failure_after: Duration::from_secs(2),
            join_spread: Duration::from_secs(10),
            seed: 1,
        }
    }
}

enum Event {
    Start(NodeId),
    Timer(NodeId),
    Deliver {
        from: NodeId,
        to: NodeId,
        message: Message<NodeId>,
    },
    LinkFailed {
        node: NodeId,
        peer: NodeId,
    },
    SetOwn {
        node: NodeId,
        summary: Box<Summary>,
    },
    /// A modelled executor command finished.
    Job(Job),
    /// The source's conductor reads the fleet's counts.
    Report,
}

struct Scheduled {
    at: Duration,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Slot {
    node: Option<Box<Machine<NodeId, NodeId>>>,
    place: Place,
    group: u8,
    /// When the node asked to be woken next.
    wake: Option<Duration>,
    /// The timer event the node's wake-up waits on; superseded events stay queued until their
    /// time and are skipped then.
    queued: Option<Duration>,
    /// The event a wake-up moved earlier left behind, still queued: when the node asks for that
    /// time again (a node woken at once to act, then back to its tick), it waits on that event
    /// instead of queueing another, so a busy node's superseded timers do not pile up.
    parked: Option<Duration>,
    crashed: bool,
    /// The highest sequence number this id has delivered, over all its runs.
    max_delivered: u64,
}

/// Counters of a run.
#[derive(Clone, Debug, Default)]
pub struct NetStats {
    /// Events processed (messages, timers, link failures, starts).
    pub events: u64,
    /// Messages sent.
    pub messages: u64,
    /// Messages lost to crashes and partitions.
    pub lost: u64,
    /// Broadcast deliveries over all nodes.
    pub deliveries: u64,
    /// Messages the source (node 0) received.
    pub source_received: u64,
    /// Of those, health reports.
    pub source_health: u64,
    /// Nodes other than the source for which each sequence number was the newest they had
    /// delivered, counting each id once over its runs and including ids that crashed since:
    /// the most nodes a health round (see [`Node::shown_round`]) can count.
    pub delivered_by_seq: BTreeMap<u64, u32>,
    /// Of the messages, those the source (node 0) sent.
    pub source_sent: u64,
    /// Messages sent, by kind ([`Message::kind`]).
    pub sent_by_kind: BTreeMap<&'static str, u64>,
    /// Timer wake-ups the nodes handled.
    pub timers: u64,
    /// Most events queued at once (messages in flight, timers, starts).
    pub queue_peak: usize,
}

/// The simulated network. See the [crate docs](crate).
pub struct Network {
    config: Config,
    now: Duration,
    queue: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    slots: Vec<Slot>,
    seeds: Vec<NodeId>,
    rng: SmallRng,
    partitioned: bool,
    stats: NetStats,
    rollouts: Option<Box<Rollouts>>,
}

impl Network {
    /// A network of `nodes` nodes that start joining at time zero.
    pub fn new(config: Config, nodes: u32) -> Self {
        let seeds = (0..config.seeds.min(nodes as usize) as NodeId).collect();
        let mut network = Network {
            rng: SmallRng::seed_from_u64(config.seed),
            config,
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            next_seq: 0,
            slots: Vec::with_capacity(nodes as usize),
            seeds,
            partitioned: false,
            stats: NetStats::default(),
            rollouts: None,
        };
        for _ in 0..nodes {
            network.add_node();
        }
        network
    }

    /// Adds a node that starts joining now (or, at time zero, over the join spread).
    pub fn add_node(&mut self) -> NodeId {
        let id = self.slots.len() as NodeId;
        let c = &self.config;
        let rack = id % (c.regions * c.fault_domains * c.racks);
        let place = Place {
            region: 1 + rack / (c.fault_domains * c.racks),
            fault_domain: 1 + rack / c.racks,
            rack: 1 + rack,
        };
        self.slots.push(Slot {
            node: None,
            place,
            group: 0,
            wake: None,
            queued: None,
            parked: None,
            crashed: false,
            max_delivered: 0,
        });
        let start = if self.now.is_zero() && id > 0 {
            let spread = self.config.join_spread.as_micros() as u64;
            Duration::from_micros(self.rng.random_range(0..spread.max(1)))
        } else {
            self.now
        };
        self.schedule(start, Event::Start(id));
        id
    }

    /// The current simulated time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Counters so far.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Node `id`, if it has started and not crashed.
    pub fn node(&self, id: NodeId) -> Option<&Node<NodeId>> {
        self.slots
            .get(id as usize)?
            .node
            .as_deref()
            .map(Machine::control)
    }

    /// Ids of nodes that have not crashed (including ones not started yet).
    pub fn alive(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.slots.len() as NodeId).filter(|&id| !self.slots[id as usize].crashed)
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the network has no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Stops node `id` at once, as SIGKILL or a power cut would; its state is freed.
    pub fn crash(&mut self, id: NodeId) {
        let slot = &mut self.slots[id as usize];
        slot.crashed = true;
        slot.node = None;
        slot.wake = None;
    }

    /// Runs the real conductor at the source and the real rollout agent on every other node
    /// from now on, with `model`'s service and executor. Call it before the nodes start (right
    /// after [`Network::new`]) so every agent begins with the model's running release.
    pub fn enable_rollouts(&mut self, model: Model) {
        self.rollouts = Some(Box::new(Rollouts::new(model)));
        self.schedule(self.now + rollouts::REPORT_INTERVAL, Event::Report);
    }

    /// Starts a rollout of `release` with `plan` at the conductor now; its id.
    ///
    /// # Errors
    ///
    /// If the conductor refuses (a rollout of the service in flight).
    ///
    /// # Panics
    ///
    /// If [`Network::enable_rollouts`] was not called.
    pub fn start_rollout(&mut self, plan: Plan, release: Release) -> Result<u64, ConductorError> {
        let now = self.now;
        let r = self
            .rollouts
            .as_deref_mut()
            .expect("Network::enable_rollouts comes before start_rollout");
        let id = r.start_rollout(now, plan, release)?;
        self.report();
        Ok(id)
    }

    /// The conductor's view of rollout `id`.
    pub fn rollout_status(&self, id: u64) -> Option<RolloutStatus> {
        self.rollouts.as_deref()?.conductor.status(id)
    }

    /// The state of rollout `id`, without the rest of its status.
    pub fn rollout_state(&self, id: u64) -> Option<RolloutState> {
        self.rollouts.as_deref()?.conductor.state(id)
    }

    /// The conductor's audit records so far.
    pub fn rollout_records(&self) -> &[Record] {
        self.rollouts.as_deref().map_or(&[], |r| &r.records)
    }

    /// Counters of the rollout layer.
    pub fn rollout_stats(&self) -> RolloutStats {
        self.rollouts
            .as_deref()
            .map(|r| r.stats.clone())
            .unwrap_or_default()
    }

    /// The release node `id`'s service runs and whether it is settled there, if the node runs.
    pub fn service(&self, id: NodeId) -> Option<(Release, bool)> {
        let service = &self.rollouts.as_deref()?.model.service;
        let agent = self.slots.get(id as usize)?.node.as_deref()?.agent()?;
        let service = agent.service(service)?;
        Some((service.current()?.clone(), service.is_steady()))
    }

    /// Sets node `id`'s own health summary at simulated time `at` (as its agent would when its
    /// state changes); nothing happens if it is not running then.
    pub fn set_own_summary_at(&mut self, id: NodeId, at: Duration, summary: Summary) {
        let summary = Box::new(summary);
        self.schedule(at.max(self.now), Event::SetOwn { node: id, summary });
    }

    /// Starts crashed node `id` again now, with the same id and place and fresh state, as a
    /// restarted process with the same identity.
    pub fn restart(&mut self, id: NodeId) {
        let slot = &mut self.slots[id as usize];
        if slot.crashed {
            slot.crashed = false;
            self.schedule(self.now, Event::Start(id));
        }
    }

    /// Cuts the network into groups: messages between nodes of different groups are lost.
    pub fn partition(&mut self, group_of: impl Fn(NodeId) -> u8) {
        for (id, slot) in self.slots.iter_mut().enumerate() {
            slot.group = group_of(id as NodeId);
        }
        self.partitioned = true;
    }

    /// Ends a partition.
    pub fn heal(&mut self) {
        self.partitioned = false;
    }

    /// Broadcasts an envelope from the source (node 0) now; returns its sequence number.
    ///
    /// # Panics
    ///
    /// If the source has crashed or not started.
    pub fn broadcast(&mut self, keep: bool) -> u64 {
        self.broadcast_body(keep, Bytes::new())
    }

    /// Broadcasts an envelope carrying `body` from the source now; its sequence number.
    fn broadcast_body(&mut self, keep: bool, body: Bytes) -> u64 {
        let now = self.now;
        let source = self.slots[0]
            .node
            .as_deref_mut()
            .expect("the source is running")
            .control_mut();
        let seq = source.next_seq();
        source.broadcast(now, Envelope::unsigned(seq, keep, body));
        self.flush(0);
        seq
    }

    /// How many running, non-source nodes have delivered `seq`, out of how many.
    pub fn reach(&self, seq: u64) -> (usize, usize) {
        let mut reached = 0;
        let mut total = 0;
        for slot in self.slots.iter().skip(1) {
            if let Some(node) = &slot.node {
                total += 1;
                if node.control().has_delivered(seq) {
                    reached += 1;
                }
            }
        }
        (reached, total)
    }

    /// Connected components of the overlay (active views, either direction) among running nodes.
    pub fn components(&self) -> usize {
        let n = self.slots.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(node) = &slot.node else { continue };
            for neighbour in node.control().active() {
                let j = neighbour.entry.peer as usize;
                if self.slots[j].node.is_some() {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let mut roots: Vec<usize> = (0..n)
            .filter(|&i| self.slots[i].node.is_some())
            .map(|i| find(&mut parent, i))
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots.len()
    }

    /// When the next event is due, if any is.
    pub fn next_at(&self) -> Option<Duration> {
        self.queue.peek().map(|Reverse(s)| s.at)
    }

    /// Node `id`'s store now holds `root` verified and complete (the data plane finished it);
    /// a node that has not started yet hears of it when it starts.
    pub fn release_complete(&mut self, id: NodeId, root: RootHash) {
        let now = self.now;
        if let Some(r) = self.rollouts.as_deref_mut() {
            r.stored(id, root);
        }
        if let Some(machine) = self.slots[id as usize].node.as_deref_mut() {
            machine.release_stored(root, true, now);
            self.flush(id);
        }
    }

    /// Runs events until simulated time `until`.
    pub fn run_until(&mut self, until: Duration) {
        self.run_until_checking(until, |_| {});
    }

    /// Runs events for `span` of simulated time.
    pub fn run_for(&mut self, span: Duration) {
        self.run_until(self.now + span);
    }

    /// Runs events for `span` of simulated time, calling `check` after every one, for
    /// invariants that must hold at every instant rather than only at the end.
    pub fn run_for_checking(&mut self, span: Duration, check: impl FnMut(&Network)) {
        self.run_until_checking(self.now + span, check);
    }

    fn run_until_checking(&mut self, until: Duration, mut check: impl FnMut(&Network)) {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > until {
                break;
            }
            let Some(Reverse(Scheduled { at, event, .. })) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.stats.events += 1;
            self.step(event);
            check(self);
        }
        self.now = until;
    }

    fn step(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Start(id) => {
                let slot = &mut self.slots[id as usize];
                if slot.crashed {
                    return;
                }
                let me = control::Entry {
                    peer: id,
                    place: slot.place,
                };
                let mut config = self.config.control.clone();
                config.heartbeat_interval = if id == 0 {
                    self.config.heartbeat_interval
                } else {
                    None
                };
                let seeds = if id == 0 {
                    Vec::new()
                } else {
                    self.seeds.clone()
                };
                let seed = self.config.seed ^ (u64::from(id) << 20) ^ 0x5eed;
                let control = Node::new(me, seeds, config, seed, now);
                let unix = rollouts::UNIX_AT_START.as_secs();
                let machine = match self.rollouts.as_deref_mut() {
                    Some(r) if id != 0 => {
                        let (agent, roots) = r.agent(id, slot.place);
                        let mut machine = Machine::new(control, Some(agent), None, unix);
                        for (root, complete) in roots {
                            machine.release_stored(root, complete, now);
                        }
                        machine
                    }
                    _ => {
                        let mut machine = Machine::new(control, None, None, unix);
                        if id != 0 {
                            let own = Summary::node(Status::Healthy, []);
                            machine.control_mut().set_own_summary(own);
                        }
                        machine
                    }
                };
                slot.node = Some(Box::new(machine));
                self.flush(id);
            }
            Event::Timer(id) => {
                let slot = &mut self.slots[id as usize];
                if slot.queued != Some(now) {
                    if slot.parked == Some(now) {
                        slot.parked = None;
                    }
                    return;
                }
                slot.queued = None;
                let Some(node) = slot.node.as_deref_mut() else {
                    return;
                };
                if let Some(later) = slot.wake.filter(|&at| at > now) {
                    // Woken before its time (it asked for a later one since): book that.
                    self.book(id, later);
                    return;
                }
                slot.wake = None;
                self.stats.timers += 1;
                node.handle_timeout(now);
                self.flush(id);
            }
            Event::Deliver { from, to, message } => {
                if !self.reachable(from, to) {
                    self.stats.lost += 1;
                    return;
                }
                let Some(node) = self.slots[to as usize].node.as_deref_mut() else {
                    self.stats.lost += 1;
                    return;
                };
                if to == 0 {
                    self.stats.source_received += 1;
                    if matches!(message, Message::Health { .. }) {
                        self.stats.source_health += 1;
                    }
                }
                node.handle_message(now, from, message);
                self.flush(to);
            }
            Event::SetOwn { node, summary } => {
                if let Some(n) = self.slots[node as usize].node.as_deref_mut() {
                    n.control_mut().set_own_summary(*summary);
                    self.flush(node);
                }
            }
            Event::Job(job) => {
                let Some(answer) = self
                    .rollouts
                    .as_deref_mut()
                    .and_then(|r| r.answer(&job, now))
                else {
                    return;
                };
                let Some(service) = self.rollouts.as_deref().map(|r| r.model.service.clone())
                else {
                    return;
                };
                let Some(machine) = self.slots[job.node as usize].node.as_deref_mut() else {
                    return;
                };
                match answer {
                    Answer::Prepared => machine.handle_prepared(now, &service, Ok(())),
                    Answer::Switched => machine.handle_switched(now, &service, Ok(())),
                    Answer::Checked(result) => machine.handle_check(now, &service, result),
                }
                self.flush(job.node);
            }
            Event::Report => {
                if self.slots[0].node.is_some() {
                    self.report();
                }
                // While the source is down its conductor waits for it.
                self.schedule(now + rollouts::REPORT_INTERVAL, Event::Report);
            }
            Event::LinkFailed { node, peer } => {
                let Some(n) = self.slots[node as usize].node.as_deref_mut() else {
                    return;
                };
                n.handle_disconnected(now, peer);
                self.flush(node);
            }
        }
    }

    /// The conductor reads the source's counts; its directives go out by broadcast.
    fn report(&mut self) {
        let now = self.now;
        let Some(fleet) = self.fleet() else {
            return;
        };
        let Some(r) = self.rollouts.as_deref_mut() else {
            return;
        };
        let directives = r.report(now, &fleet);
        let Some(source) = self.slots[0].node.as_deref_mut() else {
            return;
        };
        for directive in directives {
            let control = source.control_mut();
            let seq = control.next_seq();
            let body = Directive::<NodeId>::Rollout(std::sync::Arc::new(directive)).encode();
            control.broadcast(now, Envelope::unsigned(seq, true, body.into()));
        }
        self.flush(0);
    }

    /// Carries out everything node `id` asked for, then schedules its next timer.
    fn flush(&mut self, id: NodeId) {
        let now = self.now;
        loop {
            let Some(node) = self.slots[id as usize].node.as_deref_mut() else {
                return;
            };
            let Some(output) = node.poll_output() else {
                break;
            };
            match output {
                Output::Control(ControlOutput::Send { to, message }) => {
                    self.stats.messages += 1;
                    if id == 0 {
                        self.stats.source_sent += 1;
                    }
                    *self.stats.sent_by_kind.entry(message.kind()).or_default() += 1;
                    if self.reachable(id, to) && !self.slots[to as usize].crashed {
                        let latency = self.latency(id, to);
                        self.schedule(
                            now + latency,
                            Event::Deliver {
                                from: id,
                                to,
                                message,
                            },
                        );
                    } else {
                        self.stats.lost += 1;
                        let is_neighbour = self.slots[id as usize]
                            .node
                            .as_deref()
                            .is_some_and(|n| n.control().is_neighbour(&to));
                        if !is_neighbour {
                            let at = now + self.config.dial_failure_after;
                            self.schedule(at, Event::LinkFailed { node: id, peer: to });
                        }
                    }
                }
                Output::Control(ControlOutput::HeartbeatDue) => {
                    // Like the daemon's heartbeat, it says how many nodes the source counts.
                    let control = node.control_mut();
                    let seq = control.next_seq();
                    let fleet = control.subtree().nodes;
                    let body = Directive::<NodeId>::Heartbeat { fleet }.encode();
                    control.broadcast(now, Envelope::unsigned(seq, false, body.into()));
                }
                Output::Control(ControlOutput::Deliver { envelope }) => {
                    self.stats.deliveries += 1;
                    let slot = &mut self.slots[id as usize];
                    if id != 0 && envelope.seq > slot.max_delivered {
                        slot.max_delivered = envelope.seq;
                        *self.stats.delivered_by_seq.entry(envelope.seq).or_default() += 1;
                    }
                }
                Output::Execute { command, .. } => {
                    if let Some(r) = self.rollouts.as_deref_mut() {
                        let (after, job) = r.job(id, command);
                        self.schedule(now + after, Event::Job(job));
                    }
                }
                Output::Persist => {
                    let saved = node.agent().map(|a| a.persisted());
                    if let (Some(r), Some(saved)) = (self.rollouts.as_deref_mut(), saved) {
                        r.save(id, saved);
                    }
                }
                Output::Refused(_) => {
                    if let Some(r) = self.rollouts.as_deref_mut() {
                        r.stats.refused += 1;
                    }
                }
                // The data plane is not simulated yet: releases are modelled as distributed. Nor
                // are certificates, so there are no links for a revocation to cut.
                Output::AddRelease { .. }
                | Output::ManifestRefused(_)
                | Output::Connect(_)
                | Output::Revocations(_)
                | Output::CutOff(_) => {}
                Output::Control(
                    ControlOutput::Disconnect { .. }
                    | ControlOutput::NeighbourUp { .. }
                    | ControlOutput::NeighbourDown { .. },
                ) => {}
            }
        }
        let Some(node) = self.slots[id as usize].node.as_deref_mut() else {
            return;
        };
        let wake = node.poll_timeout().max(now);
        self.slots[id as usize].wake = Some(wake);
        self.book(id, wake);
    }

    /// Makes sure a timer event at or before `wake` is queued for node `id`. A later wake-up
    /// than the queued event's keeps that event (the node is booked again when it fires).
    fn book(&mut self, id: NodeId, wake: Duration) {
        let slot = &mut self.slots[id as usize];
        if slot.queued.is_some_and(|at| at <= wake) {
            return;
        }
        if slot.queued.is_none() && slot.parked.is_some_and(|at| at <= wake) {
            slot.queued = slot.parked.take();
            return;
        }
        if let Some(superseded) = slot.queued {
            slot.parked = Some(superseded);
        }
        slot.queued = Some(wake);
        self.schedule(wake, Event::Timer(id));
    }

    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        !self.partitioned || self.slots[from as usize].group == self.slots[to as usize].group
    }

    fn latency(&self, from: NodeId, to: NodeId) -> Duration {
        use shoal_core::labels::Closeness;
        let a = self.slots[from as usize].place;
        let b = self.slots[to as usize].place;
        let base = match a.closeness(&b) {
            Closeness::Rack => self.config.rack_latency,
            Closeness::FaultDomain => self.config.fault_domain_latency,
            Closeness::Region => self.config.region_latency,
            Closeness::Remote => self.config.remote_latency,
        };
        // Up to 10% jitter, so messages on different paths do not arrive in lockstep. It is
        // fixed per ordered pair: messages between two nodes stay in order, as on one stream.
        let pair = (u64::from(from) << 32 | u64::from(to)) ^ self.config.seed;
        let spread = base.as_micros() as u64 / 10 + 1;
        base + Duration::from_micros(mix(pair) % spread)
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.next_seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.next_seq,
            event,
        }));
        self.stats.queue_peak = self.stats.queue_peak.max(self.queue.len());
    }

    /// The source's aggregated summary of the fleet.
    pub fn fleet(&self) -> Option<Summary> {
        self.node(0).map(Node::subtree)
    }
}

/// A 64-bit mixing function (SplitMix64's finaliser): cheap, well spread.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
