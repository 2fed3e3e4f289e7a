//! The data plane as flows: every node runs the real swarm scheduler ([`Swarm`]) that
//! `shoal node` and `shoal fetch` run; a piece being sent is a flow whose rate is its max-min fair
//! share of the sender's upload and the receiver's download ([`flows::fair_rates`]), recomputed
//! whenever a flow starts or ends; every message (`Have`, requests, answers, announcements) takes
//! the latency of the topology between the two nodes.
//!
//! Node 0 is the origin: it holds the release from the start and runs [`Config::origin`]. Every
//! other node picks up to [`DataConfig::neighbours`] swarm neighbours with the daemon's rule
//! ([`neighbours::choose_by`]): mostly the closest, a quarter of them from anywhere.

mod fanout;
mod faults;
mod links;

pub use faults::Partition;

use crate::flows::Flow;
use crate::flowtable::{FlowModel, FlowTable};
use crate::timeline::{SAMPLE_INTERVAL, Sample, Timeline};
use shoal_core::bitfield::Bitfield;
use shoal_core::content::{PieceIndex, PieceLayout};
use shoal_core::control::Place;
use shoal_core::labels::Closeness;
use shoal_core::swarm::{Action, Config, PeerKey, Received, Swarm};
use shoal_core::wire::piece::RejectReason;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

/// One-way latency by how close two nodes are.
#[derive(Clone, Copy, Debug)]
pub struct Latencies {
    /// Within a rack.
    pub rack: Duration,
    /// Within a fault domain.
    pub fault_domain: Duration,
    /// Within a region.
    pub region: Duration,
    /// Between regions.
    pub remote: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            rack: Duration::from_micros(200),
            fault_domain: Duration::from_micros(500),
            region: Duration::from_millis(2),
            remote: Duration::from_millis(40),
        }
    }
}

/// The shape and caps of a distribution run.
#[derive(Clone, Debug)]
pub struct DataConfig {
    /// Nodes, the origin (node 0) included.
    pub nodes: u32,
    /// Regions nodes are spread over, round robin by rack.
    pub regions: u32,
    /// Fault domains per region.
    pub fault_domains: u32,
    /// Racks per fault domain.
    pub racks: u32,
    /// Every node's upload cap, bytes per second.
    pub upload: f64,
    /// Every node's download cap, bytes per second.
    pub download: f64,
    /// The release's pieces.
    pub layout: PieceLayout,
    /// Swarm neighbours each node picks (the daemon's `max_peers`).
    pub neighbours: usize,
    /// Message latencies.
    pub latency: Latencies,
    /// The seed of every random choice.
    pub seed: u64,
    /// Simulated time after which the run stops even if some node is not complete.
    pub limit: Duration,
    /// Nodes that crash, and when: their state is gone and their links break.
    pub crashes: Vec<(Duration, Vec<u32>)>,
    /// Partitions, one at a time: their nodes lose every link to the rest until they heal.
    pub partitions: Vec<Partition>,
    /// How flow rates are recomputed.
    pub flow_model: FlowModel,
}

impl DataConfig {
    /// `nodes` nodes in one rack with `rate` bytes per second up and down each, 40 swarm
    /// neighbours, the default latencies, seed 1, an hour's limit, no faults and local flows:
    /// the base that benchmarks and tests change a few fields of.
    pub fn uniform(nodes: u32, layout: PieceLayout, rate: f64) -> Self {
        DataConfig {
            nodes,
            regions: 1,
            fault_domains: 1,
            racks: 1,
            upload: rate,
            download: rate,
            layout,
            neighbours: 40,
            latency: Latencies::default(),
            seed: 1,
            limit: Duration::from_secs(3_600),
            crashes: Vec::new(),
            partitions: Vec::new(),
            flow_model: FlowModel::Local,
        }
    }
}

/// What a distribution run did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// When each node held every piece (the origin at zero); `None` if it never did.
    pub completed_at: Vec<Option<Duration>>,
    /// Piece bytes the origin sent.
    pub origin_bytes: u64,
    /// Piece bytes sent over all nodes.
    pub bytes_sent: u64,
    /// Events handled.
    pub events: u64,
    /// Simulated time at the end.
    pub simulated: Duration,
    /// Nodes that crashed.
    pub crashed: u32,
    /// Nodes cut off by a partition that was still on at the end.
    pub partitioned: u32,
}

impl Outcome {
    /// The receivers' completion times in seconds, sorted; those that never completed are left
    /// out.
    pub fn receiver_secs(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self.completed_at[1..]
            .iter()
            .flatten()
            .map(Duration::as_secs_f64)
            .collect();
        t.sort_by(f64::total_cmp);
        t
    }

    /// When the last node completed, if all did; crashed nodes that had not completed do not
    /// count.
    pub fn last_complete(&self) -> Option<Duration> {
        let done = self.completed_at.iter().flatten().count() as u32;
        (done + self.crashed >= self.completed_at.len() as u32)
            .then(|| self.completed_at.iter().flatten().max().copied())
            .flatten()
    }
}

#[derive(Debug)]
enum Msg {
    /// A full bitfield, shared by every copy a node sends at once.
    Have(Arc<Bitfield>),
    Delta(PieceIndex),
    Request(PieceIndex),
    Cancel(PieceIndex),
    Reject(PieceIndex, RejectReason),
    Piece(PieceIndex),
    Wake,
    /// The flows' next completion, if the flow set has not changed since (its generation).
    Flows(u64),
    /// `Have`, to each neighbour of the sender at this distance.
    HaveTo(Arc<Bitfield>, Closeness),
    /// `Delta`, to each neighbour of the sender at this distance.
    DeltaTo(PieceIndex, Closeness),
    /// The `i`-th entry of [`DataConfig::crashes`] happens.
    Crash(usize),
    /// The `i`-th entry of [`DataConfig::partitions`] cuts its nodes off.
    Partition(usize),
    /// The links across the `i`-th entry of [`DataConfig::partitions`] time out.
    LinksTimeout(usize),
    /// The `i`-th entry of [`DataConfig::partitions`] heals.
    Heal(usize),
}

/// A message or timer on the queue. A fleet's first announcements put one per swarm link on
/// it at once, so it is kept small (checked below).
struct Event {
    /// When, in simulated nanoseconds.
    at: u64,
    seq: u64,
    from: u32,
    to: u32,
    msg: Msg,
}

const _: () = assert!(std::mem::size_of::<Event>() <= 40);

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A distribution run in progress.
pub struct DataPlane {
    config: DataConfig,
    places: Vec<Place>,
    swarms: Vec<Swarm>,
    links: Vec<Vec<u32>>,
    queue: BinaryHeap<Reverse<Event>>,
    seq: u64,
    now: Duration,
    wake: Vec<Option<Duration>>,
    flows: FlowTable,
    /// The time of the pending [`Msg::Flows`] event and its generation.
    flows_event: Option<Duration>,
    generation: u64,
    outcome: Outcome,
    complete: u32,
    /// Distinct pieces delivered to each node: what its bitfield may hold at most.
    delivered: Vec<u32>,
    crashed: Vec<bool>,
    /// A fan-out's recipients, kept between deliveries.
    scratch: Vec<u32>,
    /// The partition in force, if one is.
    cut: faults::Cut,
}

/// The place of node `id`: racks round robin, then fault domains, then regions.
pub fn place_of(id: u32, regions: u32, fault_domains: u32, racks: u32) -> Place {
    let rack = id % (regions * fault_domains * racks).max(1);
    Place {
        region: 1 + rack / (fault_domains * racks).max(1),
        fault_domain: 1 + rack / racks.max(1),
        rack: 1 + rack,
    }
}

impl DataPlane {
    /// Sets up the nodes and their swarm neighbours; nothing has moved yet.
    pub fn new(config: DataConfig) -> Self {
        let n = config.nodes;
        let count = config.layout.piece_count();
        let places: Vec<Place> = (0..n)
            .map(|id| place_of(id, config.regions, config.fault_domains, config.racks))
            .collect();
        let swarms = (0..n)
            .map(|id| {
                let (cfg, have) = if id == 0 {
                    (Config::origin(), Bitfield::full(count))
                } else {
                    (Config::default(), Bitfield::new(count))
                };
                Swarm::new(cfg, config.layout, have, config.seed ^ u64::from(id))
            })
            .collect();
        let links = links::choose_links(&config, &places);
        // Room for the first bitfields (one event per distance class a node has neighbours at)
        // and the faults: no doubling past the need at the peak.
        let first_events = n as usize * 4 + config.crashes.len() + 2 * config.partitions.len();
        let mut completed_at = vec![None; n as usize];
        completed_at[0] = Some(Duration::ZERO);
        let mut plane = DataPlane {
            places,
            swarms,
            links,
            queue: BinaryHeap::with_capacity(first_events),
            seq: 0,
            now: Duration::ZERO,
            wake: vec![None; n as usize],
            flows: FlowTable::new(n, config.upload, config.download, config.flow_model),
            flows_event: None,
            generation: 0,
            outcome: Outcome {
                completed_at,
                ..Outcome::default()
            },
            complete: 1,
            delivered: vec![0; n as usize],
            crashed: vec![false; n as usize],
            scratch: Vec::new(),
            cut: faults::Cut::default(),
            config,
        };
        for i in 0..plane.config.crashes.len() {
            let at = plane.config.crashes[i].0;
            plane.schedule(at, 0, 0, Msg::Crash(i));
        }
        for i in 0..plane.config.partitions.len() {
            let p = &plane.config.partitions[i];
            let (at, heal) = (p.at, p.heal);
            plane.schedule(at, 0, 0, Msg::Partition(i));
            if let Some(heal) = heal {
                plane.schedule(heal, 0, 0, Msg::Heal(i));
            }
        }
        for a in 0..n {
            for i in 0..plane.links[a as usize].len() {
                let b = plane.links[a as usize][i];
                let key = PeerKey(u64::from(b));
                plane.swarms[a as usize]
                    .handle_peer_joined(key, b == 0)
                    .unwrap_or_else(|e| panic!("node {a} could not take peer {b}: {e:?}"));
            }
            let have = Arc::new(plane.swarms[a as usize].have().clone());
            plane.fan_out(a, fanout::Fanned::Have(have));
        }
        plane
    }

    /// Runs until every node holds the release or the time limit passes.
    pub fn run(self, progress: impl FnMut(Duration, u64)) -> Outcome {
        self.run_sampled(progress, &mut Timeline::default())
    }

    /// [`DataPlane::run`], sampling the nodes complete and the origin's bytes into `timeline`
    /// every [`SAMPLE_INTERVAL`].
    pub fn run_sampled(
        mut self,
        mut progress: impl FnMut(Duration, u64),
        timeline: &mut Timeline,
    ) -> Outcome {
        let mut next_sample = Duration::ZERO;
        while !self.is_done() {
            let Some(at) = self.next_at() else {
                break;
            };
            if at > self.config.limit {
                self.now = self.config.limit;
                break;
            }
            while next_sample <= at {
                timeline.samples.push(self.sample(next_sample));
                next_sample += SAMPLE_INTERVAL;
            }
            self.step();
            if self.outcome.events.is_multiple_of(65_536) {
                progress(self.now, self.outcome.events);
            }
        }
        // The end, where it falls between two samples.
        if timeline
            .samples
            .last()
            .is_none_or(|l| l.secs < self.now.as_secs_f64())
        {
            timeline.samples.push(self.sample(self.now));
        }
        self.finish()
    }

    fn sample(&self, at: Duration) -> Sample {
        Sample {
            secs: at.as_secs_f64(),
            complete: self.complete,
            origin_bytes: self.outcome.origin_bytes,
            ..Sample::default()
        }
    }

    /// Whether every node that has not crashed holds the release.
    pub fn is_done(&self) -> bool {
        self.complete + self.outcome.crashed >= self.config.nodes
    }

    /// Nodes holding the release verified so far, the origin included.
    pub fn complete_nodes(&self) -> u32 {
        self.complete
    }

    /// Piece bytes the origin has sent so far.
    pub fn origin_bytes(&self) -> u64 {
        self.outcome.origin_bytes
    }

    /// Events handled so far.
    pub fn events(&self) -> u64 {
        self.outcome.events
    }

    /// When the next event is due, if any is.
    pub fn next_at(&self) -> Option<Duration> {
        self.queue
            .peek()
            .map(|Reverse(e)| Duration::from_nanos(e.at))
    }

    /// Handles the next event; the node it completed, if it completed one.
    pub fn step(&mut self) -> Option<u32> {
        let Reverse(event) = self.queue.pop()?;
        self.now = Duration::from_nanos(event.at);
        self.outcome.events += 1;
        let before = self.complete;
        let to = event.to;
        self.handle(event);
        (self.complete > before).then_some(to)
    }

    /// What the run did, with the simulated time at its last event.
    pub fn finish(mut self) -> Outcome {
        self.outcome.simulated = self.now;
        self.outcome.partitioned = self.cut.cut_off_nodes();
        self.outcome
    }

    fn send(&mut self, from: u32, to: u32, msg: Msg) {
        let at = self.now + self.latency(from, to);
        self.schedule(at, from, to, msg);
    }

    fn schedule(&mut self, at: Duration, from: u32, to: u32, msg: Msg) {
        self.seq += 1;
        self.queue.push(Reverse(Event {
            at: u64::try_from(at.as_nanos()).unwrap_or(u64::MAX),
            seq: self.seq,
            from,
            to,
            msg,
        }));
    }

    fn latency(&self, from: u32, to: u32) -> Duration {
        self.latency_of(self.places[from as usize].closeness(&self.places[to as usize]))
    }

    fn latency_of(&self, class: Closeness) -> Duration {
        let l = &self.config.latency;
        match class {
            Closeness::Rack => l.rack,
            Closeness::FaultDomain => l.fault_domain,
            Closeness::Region => l.region,
            Closeness::Remote => l.remote,
        }
    }

    fn handle(&mut self, event: Event) {
        match event.msg {
            Msg::Crash(i) => {
                let ids = std::mem::take(&mut self.config.crashes[i].1);
                self.crash(&ids);
                return;
            }
            Msg::Partition(i) => return self.partition(i),
            Msg::LinksTimeout(i) => return self.break_links(i),
            Msg::Heal(i) => return self.heal(i),
            Msg::Flows(generation) => {
                if generation == self.generation {
                    self.finish_flows();
                }
                return;
            }
            _ => {}
        }
        if self.crashed[event.to as usize] || self.crashed[event.from as usize] {
            // Lost with the node: nothing reaches or leaves a crashed machine.
            return;
        }
        let Event { from, to, msg, .. } = event;
        let msg = match msg {
            Msg::HaveTo(have, class) => {
                return self.deliver_fanned(from, fanout::Fanned::Have(have), class);
            }
            Msg::DeltaTo(piece, class) => {
                return self.deliver_fanned(from, fanout::Fanned::Delta(piece), class);
            }
            msg => msg,
        };
        if !self.reachable(from, to) {
            return self.hold(from, to, msg);
        }
        let now = self.now;
        let key = PeerKey(u64::from(from));
        let swarm = &mut self.swarms[to as usize];
        match msg {
            Msg::Have(have) => {
                if swarm.contains(key) {
                    let _ = swarm.handle_have(key, Arc::unwrap_or_clone(have));
                }
            }
            Msg::Delta(piece) => {
                if swarm.contains(key) {
                    let _ = swarm.handle_have_delta(key, &[piece]);
                }
            }
            Msg::Request(piece) => swarm.handle_request(key, piece),
            Msg::Cancel(piece) => swarm.handle_cancel(key, piece),
            Msg::Reject(piece, reason) => swarm.handle_rejected(key, piece, reason, now),
            Msg::Piece(piece) => {
                let had = swarm.have().contains(piece.0);
                swarm.handle_piece(key, piece, Received::Verified, now);
                if !had {
                    self.delivered[to as usize] += 1;
                }
                self.check_counts(to);
                if !had && self.swarms[to as usize].is_complete() {
                    self.outcome.completed_at[to as usize] = Some(now);
                    self.complete += 1;
                }
            }
            Msg::Wake => {
                if self.wake[to as usize] == Some(now) {
                    self.wake[to as usize] = None;
                }
                swarm.handle_timeout(now);
            }
            Msg::Flows(_)
            | Msg::HaveTo(..)
            | Msg::DeltaTo(..)
            | Msg::Crash(_)
            | Msg::Partition(_)
            | Msg::LinksTimeout(_)
            | Msg::Heal(_) => return,
        }
        self.act(to);
    }

    /// Carries out everything node `id` wants now, then books its next wake-up.
    fn act(&mut self, id: u32) {
        let now = self.now;
        let mut touched: Vec<u32> = Vec::new();
        while let Some(action) = self.swarms[id as usize].poll_action(now) {
            match action {
                Action::Request { peer, piece } => {
                    self.send(id, peer.0 as u32, Msg::Request(piece))
                }
                Action::Cancel { peer, piece } => self.send(id, peer.0 as u32, Msg::Cancel(piece)),
                Action::Reject {
                    peer,
                    piece,
                    reason,
                } => self.send(id, peer.0 as u32, Msg::Reject(piece, reason)),
                Action::Send { peer, piece } => {
                    let to = peer.0 as u32;
                    let len = f64::from(self.config.layout.piece_len(piece));
                    self.flows.add(Flow { from: id, to }, piece, len, now);
                    touched.extend([id, to]);
                }
                Action::Announce { piece } => self.fan_out(id, fanout::Fanned::Delta(piece)),
                Action::Disconnect { peer, .. } => {
                    let p = peer.0 as u32;
                    self.flows.remove_between(id, p);
                    touched.extend([id, p]);
                    self.links[id as usize].retain(|&l| l != p);
                    self.links[p as usize].retain(|&l| l != id);
                    self.swarms[p as usize].handle_peer_left(PeerKey(u64::from(id)));
                }
            }
        }
        if !touched.is_empty() {
            touched.sort_unstable();
            touched.dedup();
            self.flows.reshare(&touched, now);
            self.book_flows();
        }
        if let Some(wake) = self.swarms[id as usize].poll_timeout(now) {
            let wake = wake.max(now);
            let pending = self.wake[id as usize];
            if pending.is_none_or(|p| wake < p || p < now) {
                self.wake[id as usize] = Some(wake);
                self.schedule(wake, id, id, Msg::Wake);
            }
        }
    }

    /// One pending event, at the next flow's finish.
    fn book_flows(&mut self) {
        let next = self.flows.next_due();
        if next != self.flows_event {
            self.generation += 1;
            self.flows_event = next;
            if let Some(at) = next {
                self.schedule(at.max(self.now), 0, 0, Msg::Flows(self.generation));
            }
        }
    }

    /// Ends every flow whose last byte has gone: the sender is told, the piece reaches the
    /// receiver one latency later.
    fn finish_flows(&mut self) {
        self.flows_event = None;
        let done = self.flows.take_due(self.now);
        let mut touched = Vec::new();
        for e in &done {
            let len = u64::from(self.config.layout.piece_len(e.piece));
            self.outcome.bytes_sent += len;
            if e.flow.from == 0 {
                self.outcome.origin_bytes += len;
            }
            self.send(e.flow.from, e.flow.to, Msg::Piece(e.piece));
            touched.extend([e.flow.from, e.flow.to]);
        }
        touched.sort_unstable();
        touched.dedup();
        self.flows.reshare(&touched, self.now);
        self.book_flows();
        let senders: BTreeSet<u32> = done.iter().map(|e| e.flow.from).collect();
        for e in done {
            self.swarms[e.flow.from as usize].handle_sent(
                PeerKey(u64::from(e.flow.to)),
                e.piece,
                true,
            );
        }
        for id in senders {
            self.act(id);
        }
    }

    /// Test builds: a node never holds more pieces than were delivered to it.
    fn check_counts(&self, id: u32) {
        if cfg!(debug_assertions) && id != 0 {
            let have = self.swarms[id as usize].have().count();
            assert!(
                have <= self.delivered[id as usize],
                "node {id} counts {have} pieces, {} were delivered",
                self.delivered[id as usize]
            );
        }
    }
}
