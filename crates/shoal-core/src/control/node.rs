//! The control-plane node: state, inputs, outputs and timers. The protocols' handlers live in
//! the sibling modules (`membership`, `detector`, `broadcast`) as further `impl Node` blocks.

use super::Peer;
use super::config::Config;
use super::health::Summary;
use super::message::{Envelope, MAX_SHUFFLE_ENTRIES, MAX_SYNC_ENVELOPES, Message};
use super::place::Entry;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// What a [`Node`] asks its driver to do.
#[must_use]
#[derive(Clone, Debug, PartialEq)]
pub enum Output<P> {
    /// Send `message` to `to`, connecting first if needed.
    Send {
        /// The receiver.
        to: P,
        /// The message.
        message: Message<P>,
    },
    /// Close the overlay link to `peer` once what was sent to it is flushed.
    Disconnect {
        /// The peer.
        peer: P,
    },
    /// A broadcast envelope arrived for the first time: act on it.
    Deliver {
        /// The envelope (already verified by the driver).
        envelope: Arc<Envelope>,
    },
    /// `entry` joined the active view.
    NeighbourUp {
        /// The new neighbour.
        entry: Entry<P>,
    },
    /// `peer` left the active view.
    NeighbourDown {
        /// The former neighbour.
        peer: P,
    },
    /// On the source: time to broadcast a heartbeat (a signed envelope with `keep: false` and
    /// sequence number [`Node::next_seq`]).
    HeartbeatDue,
}

/// Where a liveness probe of a neighbour stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    /// Nothing outstanding.
    Idle,
    /// Pinged at `sent`; waiting for the pong until `deadline`.
    Direct {
        nonce: u64,
        sent: Duration,
        deadline: Duration,
    },
    /// The pong did not come; other neighbours were asked. Dead at `deadline`.
    Indirect { nonce: u64, deadline: Duration },
}

/// A child's latest report.
#[derive(Clone, Debug)]
pub(super) struct ChildReport {
    pub(super) epoch: u64,
    /// The round (broadcast sequence number) it counts in.
    pub(super) round: u64,
    pub(super) summary: Summary,
}

/// On the source: what it showed of the fleet when it last opened a round, and since when.
#[derive(Clone, Debug)]
pub(super) struct ClosedRound {
    pub(super) round: u64,
    pub(super) summary: Summary,
    pub(super) since: Duration,
}

/// One member of the active view, with what the protocols know about it.
#[derive(Clone, Debug)]
pub struct Neighbour<P> {
    /// The neighbour and its place.
    pub entry: Entry<P>,
    /// Broadcasts go to it in full (part of the tree) rather than as `IHave`.
    pub eager: bool,
    /// Its latest delivered sequence number, as it last said.
    pub latest: u64,
    /// When anything was last heard from it.
    pub last_heard: Duration,
    /// The round-trip time of its last answered ping.
    pub rtt: Option<Duration>,
    pub(super) probe: Probe,
    pub(super) child: Option<ChildReport>,
}

impl<P> Neighbour<P> {
    /// Whether a liveness probe is outstanding (it missed a ping).
    pub fn is_suspect(&self) -> bool {
        !matches!(self.probe, Probe::Idle)
    }

    /// Nodes counted in its latest health report to us, if it reports to us.
    pub fn reported_nodes(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.summary.nodes)
    }
}

/// An indirect probe this node runs for a neighbour.
#[derive(Clone, Debug)]
pub(super) struct Relay<P> {
    pub(super) requester: P,
    pub(super) target: P,
    pub(super) their_nonce: u64,
    pub(super) our_nonce: u64,
    pub(super) deadline: Duration,
}

/// A broadcast announced by `IHave` (or a neighbour's higher sequence number) but not received.
#[derive(Clone, Debug)]
pub(super) struct Missing<P> {
    pub(super) seq: u64,
    pub(super) announcers: Vec<P>,
    pub(super) deadline: Duration,
}

/// Counters, for `shoal members` and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handled.
    pub messages_received: u64,
    /// Messages refused for breaking a limit (too many entries, bad summary, ...).
    pub malformed: u64,
    /// Neighbours declared dead by the failure detector.
    pub declared_dead: u64,
    /// Times the node joined through a seed.
    pub joins_sent: u64,
    /// Joins dropped over the per-second limit.
    pub joins_refused: u64,
    /// Broadcasts delivered.
    pub delivered: u64,
    /// Broadcasts received again after delivery.
    pub duplicates: u64,
    /// Grafts sent to pull a missing broadcast.
    pub grafts_sent: u64,
    /// Health reports sent to the parent.
    pub health_reports_sent: u64,
    /// Times the node found its own timers firing late and stretched its timeouts.
    pub late_wakeups: u64,
}

/// Most missing broadcasts tracked at once.
pub(super) const MAX_MISSING: usize = 64;
/// Most announcers remembered per missing broadcast.
pub(super) const MAX_ANNOUNCERS: usize = 4;
/// Most indirect probes run for others at once.
pub(super) const MAX_RELAYS: usize = 16;
/// Most kept envelopes (release announcements) remembered for newcomers.
pub(super) const MAX_KEPT: usize = MAX_SYNC_ENVELOPES;
/// Highest slowness factor: timeouts stretch to at most (1 + this) times.
pub(super) const MAX_SLOWNESS: u32 = 8;

/// One control-plane node. See the [module docs](super) for the model and the calling order.
pub struct Node<P: Peer> {
    pub(super) me: Entry<P>,
    pub(super) config: Config,
    pub(super) rng: SmallRng,
    pub(super) seeds: Vec<P>,
    pub(super) now: Duration,
    pub(super) started: Duration,
    pub(super) outputs: VecDeque<Output<P>>,
    pub(super) stats: Stats,

    // Membership.
    pub(super) active: Vec<Neighbour<P>>,
    pub(super) passive: Vec<Entry<P>>,
    pub(super) locality: Vec<Entry<P>>,
    pub(super) pending: Option<(P, Duration)>,
    pub(super) empty_since: Option<Duration>,
    pub(super) last_join: Option<Duration>,
    /// Which seed the next join goes to (modulo the number of seeds).
    pub(super) seed_turn: usize,
    pub(super) next_shuffle: Duration,
    pub(super) next_fill: Duration,
    pub(super) next_seed_probe: Duration,
    /// The fleet's size as the source last said (0 until it has).
    pub(super) fleet_size: u32,
    /// The interval the next seed probe was scheduled with.
    pub(super) seed_probe_every: Duration,
    pub(super) join_window: (Duration, u32),

    // Failure detection.
    pub(super) slowness: u32,
    pub(super) nonce: u64,
    pub(super) relays: Vec<Relay<P>>,
    pub(super) expected_wake: Option<Duration>,
    /// Where this node's ticks fall within a `ping_interval`: see [`Node::on_tick`].
    pub(super) tick_phase: Duration,

    // Broadcast.
    pub(super) latest: u64,
    pub(super) delivered_mask: u64,
    pub(super) cache: VecDeque<Arc<Envelope>>,
    pub(super) kept: Vec<Arc<Envelope>>,
    pub(super) missing: Vec<Missing<P>>,
    pub(super) parent: Option<P>,
    pub(super) last_delivery: Option<Duration>,
    pub(super) needs_sync: bool,
    pub(super) next_heartbeat: Option<Duration>,

    // Health.
    pub(super) own: Summary,
    pub(super) epoch: u64,
    /// Something to report changed since the last report.
    pub(super) dirty: bool,
    /// When the next report goes, if one is due (`Duration::MAX` otherwise).
    pub(super) next_health: Duration,
    /// When the last health report went to the parent.
    pub(super) last_report: Duration,
    /// The round before this node's current one: its children of that round are waited for.
    pub(super) awaited_round: u64,
    /// When this node's current round started.
    pub(super) round_started: Duration,
    /// On the source: the previous round's total, shown until the new round catches up.
    pub(super) closed: Option<ClosedRound>,
}

impl<P: Peer> Node<P> {
    /// A node `me` that joins through `seeds` (empty for the first node), with its randomness
    /// drawn from `seed`. `now` is the driver's current time.
    pub fn new(me: Entry<P>, seeds: Vec<P>, config: Config, seed: u64, now: Duration) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let seeds: Vec<P> = seeds.into_iter().filter(|s| *s != me.peer).collect();
        let tick_phase = {
            use rand::Rng;
            let period = tick_period(&config);
            Duration::from_nanos(rng.random_range(0..period))
        };
        let seed_turn = {
            use rand::Rng;
            rng.random_range(0..seeds.len().max(1))
        };
        let tick = |at| tick_at(tick_phase, tick_period(&config), at);
        let next_shuffle = tick(now + jitter(&mut rng, config.shuffle_interval));
        let next_seed_probe = tick(now + jitter(&mut rng, config.seed_probe_interval));
        let next_heartbeat = config.heartbeat_interval.map(|i| now + i);
        Node {
            me,
            rng,
            seeds,
            now,
            started: now,
            outputs: VecDeque::new(),
            stats: Stats::default(),
            active: Vec::with_capacity(config.active_view_capacity + 1),
            passive: Vec::new(),
            locality: Vec::new(),
            pending: None,
            empty_since: Some(now),
            last_join: None,
            seed_turn,
            next_shuffle,
            next_fill: now,
            next_seed_probe,
            fleet_size: 0,
            seed_probe_every: config.seed_probe_interval,
            join_window: (now, 0),
            slowness: 0,
            nonce: 0,
            relays: Vec::new(),
            expected_wake: None,
            tick_phase,
            latest: 0,
            delivered_mask: 0,
            cache: VecDeque::new(),
            kept: Vec::new(),
            missing: Vec::new(),
            parent: None,
            last_delivery: None,
            needs_sync: true,
            next_heartbeat,
            own: Summary::default(),
            epoch: 0,
            dirty: false,
            next_health: Duration::MAX,
            last_report: now,
            awaited_round: 0,
            round_started: now,
            closed: None,
            config,
        }
    }

    // ----- Getters -----

    /// This node.
    pub fn me(&self) -> &Entry<P> {
        &self.me
    }

    /// How many broadcasts the most advanced active neighbour says it has delivered that this
    /// node has not: 0 when it is up to date.
    pub fn broadcast_lag(&self) -> u64 {
        self.active()
            .iter()
            .map(|n| n.latest.saturating_sub(self.latest))
            .max()
            .unwrap_or(0)
    }

    /// The active view.
    pub fn active(&self) -> &[Neighbour<P>] {
        &self.active
    }

    /// The passive view.
    pub fn passive(&self) -> &[Entry<P>] {
        &self.passive
    }

    /// Peers in this node's rack or fault domain.
    pub fn locality(&self) -> &[Entry<P>] {
        &self.locality
    }

    /// Up to `want` peers to swarm with, from the active view, the locality cache and the
    /// passive view: mostly the closest, and `outside` of them at random whatever their place,
    /// so no rack or fault domain swarms only within itself
    /// ([`choose_by`](crate::swarm::neighbours::choose_by)).
    pub fn swarm_candidates(&mut self, want: usize, outside: usize) -> Vec<Entry<P>> {
        let mut pool: Vec<Entry<P>> = Vec::new();
        let known = self
            .active
            .iter()
            .map(|n| &n.entry)
            .chain(&self.locality)
            .chain(&self.passive);
        for entry in known {
            if !pool.iter().any(|e| e.peer == entry.peer) {
                pool.push(*entry);
            }
        }
        let me = self.me.place;
        let chosen = crate::swarm::neighbours::choose_by(
            pool.len(),
            |i| me.closeness(&pool[i].place),
            want,
            outside,
            &mut self.rng,
        );
        chosen.into_iter().map(|i| pool[i]).collect()
    }

    /// Whether `peer` is in the active view.
    pub fn is_neighbour(&self, peer: &P) -> bool {
        self.active.iter().any(|n| n.entry.peer == *peer)
    }

    /// The neighbour this node reports its health to: the one that delivered its latest broadcast.
    pub fn parent(&self) -> Option<P> {
        self.parent
    }

    /// The highest sequence number delivered (or broadcast, on the source).
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// The sequence number the source's next broadcast must carry.
    pub fn next_seq(&self) -> u64 {
        self.latest + 1
    }

    /// Whether envelope `seq` has been delivered (or is too old to matter).
    pub fn has_delivered(&self, seq: u64) -> bool {
        self.is_delivered(seq, false)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The factor (1 to 9) this node currently stretches its failure-detection timeouts by.
    pub fn slowness_factor(&self) -> u32 {
        1 + self.slowness
    }

    /// This node's subtree summary: its own plus its children's reports in the current round.
    ///
    /// On the source this is the whole fleet. It never counts a node twice; it counts a node
    /// that died or left until the first round after that has settled, and misses one that
    /// joined, or lost its parent, until the next round reaches it.
    pub fn subtree(&self) -> Summary {
        self.shown().1
    }

    /// The round whose counts [`Node::subtree`] shows: the latest, or on the source the
    /// previous one while the latest is still climbing.
    pub fn shown_round(&self) -> u64 {
        self.shown().0
    }

    /// The round shown and its counts (see [`Node::subtree`]).
    pub(super) fn shown(&self) -> (u64, Summary) {
        let current = self.round_sum();
        match &self.closed {
            Some(closed)
                if current.nodes < closed.summary.nodes
                    && self.now < closed.since + self.config.health_settle =>
            {
                (closed.round, closed.summary.clone())
            }
            _ => (self.latest, current),
        }
    }

    // ----- Inputs -----

    /// Adds a seed to join through (the driver learns seeds' ids after start).
    pub fn add_seed(&mut self, seed: P) {
        if seed != self.me.peer && !self.seeds.contains(&seed) {
            self.seeds.push(seed);
        }
    }

    /// Source only: continues the sequence after `latest`, the last number broadcast before a
    /// restart, so the fleet does not take new broadcasts for old ones.
    pub fn resume_after(&mut self, latest: u64) {
        if latest > self.latest {
            self.latest = latest;
            self.delivered_mask = u64::MAX;
        }
    }

    /// The fleet's size as the latest heartbeat said (0 before one).
    pub fn fleet_size(&self) -> u32 {
        self.fleet_size
    }

    /// The fleet's size, as the source counts it (its heartbeats say). Stretches the interval
    /// between seed probes so the seeds of a large fleet are not flooded.
    pub fn set_fleet_size(&mut self, nodes: u32) {
        self.fleet_size = nodes;
        let every = self.seed_probe_interval();
        if every > self.seed_probe_every * 2 {
            // Much larger than the fleet this node knew: the next probe waits its turn too.
            self.seed_probe_every = every;
            let wait = jitter(&mut self.rng, every);
            self.next_seed_probe = self.on_tick(self.now + wait);
        }
    }

    /// Sets this node's own health summary (usually [`Summary::node`]); sent up from the next report.
    pub fn set_own_summary(&mut self, summary: Summary) {
        if summary != self.own {
            let urgent =
                summary.rollouts != self.own.rollouts || summary.queries != self.own.queries;
            self.own = summary;
            self.report_changed(urgent);
        }
    }

    /// Handles `message` from `from`. The driver has checked the signature of every envelope in
    /// it ([`Message::envelopes`]) and dropped the message if any failed.
    pub fn handle_message(&mut self, now: Duration, from: P, message: Message<P>) {
        self.now = now.max(self.now);
        if from == self.me.peer {
            return;
        }
        self.stats.messages_received += 1;
        if !self.is_well_formed(&message) {
            self.stats.malformed += 1;
            return;
        }
        let is_pong = matches!(message, Message::Pong { .. });
        if let Some(n) = self.neighbour_mut(&from) {
            n.last_heard = now;
            // Anything from a neighbour proves it alive. Only its pong settles a direct probe
            // with an RTT; other messages settle the probe without one.
            if !is_pong {
                n.probe = Probe::Idle;
            }
        }
        match message {
            Message::Join { place } => self.on_join(Entry { peer: from, place }),
            Message::ForwardJoin { joiner, ttl } => self.on_forward_join(from, joiner, ttl),
            Message::Neighbour { place, priority } => {
                self.on_neighbour(Entry { peer: from, place }, priority)
            }
            Message::NeighbourReply { place, accepted } => {
                self.on_neighbour_reply(Entry { peer: from, place }, accepted)
            }
            Message::Disconnect { alive } => self.on_disconnect(from, alive),
            Message::Shuffle {
                origin,
                ttl,
                entries,
            } => self.on_shuffle(from, origin, ttl, entries),
            Message::ShuffleReply { entries } => self.integrate(&entries, &[]),
            Message::Ping { nonce, latest } => self.on_ping(from, nonce, latest),
            Message::Pong {
                nonce,
                latest,
                neighbour,
            } => self.on_pong(from, nonce, latest, neighbour),
            Message::ProbeRequest { target, nonce } => self.on_probe_request(from, target, nonce),
            Message::ProbeReply { target, nonce } => self.on_probe_reply(target, nonce),
            Message::Gossip { envelope } => self.on_gossip(from, envelope),
            Message::IHave { seq } => self.on_ihave(from, seq),
            Message::Graft { seq } => self.on_graft(from, seq),
            Message::Prune => self.on_prune(from),
            Message::Sync => self.on_sync(from),
            Message::SyncReply { envelopes } => {
                for envelope in envelopes {
                    self.on_gossip(from, envelope);
                }
            }
            Message::Health {
                epoch,
                round,
                summary,
            } => self.on_health(from, epoch, round, summary),
        }
    }

    /// The link to `peer` broke (connection closed, dial failed). An active neighbour is dropped
    /// as dead at once; the failure detector would only confirm it later.
    pub fn handle_disconnected(&mut self, now: Duration, peer: P) {
        self.now = now.max(self.now);
        if self.pending.is_some_and(|(p, _)| p == peer) {
            self.pending = None;
            self.passive.retain(|e| e.peer != peer);
        }
        if self.is_neighbour(&peer) {
            self.fail(peer);
        }
    }

    /// Runs every timer due at `now`. Call when the deadline from [`Node::poll_timeout`] passes.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now.max(self.now);
        if let Some(expected) = self.expected_wake.take() {
            let grace = (self.config.ping_interval / 2).max(Duration::from_millis(250));
            if now > expected + grace {
                self.stats.late_wakeups += 1;
                self.slowness = (self.slowness + 1).min(MAX_SLOWNESS);
            }
        }
        self.membership_timers();
        self.detector_timers();
        self.broadcast_timers();
        self.health_timers();
    }

    /// Source only: broadcasts `envelope`, whose `seq` must be [`Node::next_seq`]; it is not
    /// delivered back to this node.
    ///
    /// # Panics
    ///
    /// If `envelope.seq` is not [`Node::next_seq`]: the caller numbers its own messages.
    pub fn broadcast(&mut self, now: Duration, envelope: Envelope) {
        self.now = now.max(self.now);
        assert_eq!(
            envelope.seq,
            self.next_seq(),
            "broadcasts are numbered densely"
        );
        let envelope = Arc::new(envelope);
        self.close_round();
        self.record(&envelope);
        self.last_delivery = Some(now);
        self.push(None, &envelope);
    }

    // ----- Outputs -----

    /// The next thing for the driver to do, or `None` when there is nothing more until the next input.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    ///
    /// An idle node with a full active view wakes once a tick (a `ping_interval`) at most,
    /// however many neighbours it has: every periodic deadline falls on a tick.
    pub fn poll_timeout(&mut self) -> Duration {
        let mut next = self
            .next_shuffle
            .min(self.next_fill)
            .min(self.next_seed_probe)
            .min(self.next_health)
            .min(self.stale_deadline());
        if let Some(at) = self.next_heartbeat {
            next = next.min(at);
        }
        if let Some((_, at)) = self.pending {
            next = next.min(at);
        }
        for n in &self.active {
            next = next.min(self.next_probe_deadline(n));
        }
        // Relays need no wake-up of their own: the expired ones are dropped at the next.
        for m in &self.missing {
            next = next.min(m.deadline);
        }
        self.expected_wake = Some(next);
        next
    }

    // ----- Shared helpers -----

    pub(super) fn send(&mut self, to: P, message: Message<P>) {
        self.outputs.push_back(Output::Send { to, message });
    }

    pub(super) fn neighbour_mut(&mut self, peer: &P) -> Option<&mut Neighbour<P>> {
        self.active.iter_mut().find(|n| n.entry.peer == *peer)
    }

    pub(super) fn next_nonce(&mut self) -> u64 {
        self.nonce = self.nonce.wrapping_add(1);
        self.nonce
    }

    /// A timeout stretched by this node's slowness.
    pub(super) fn stretched(&self, base: Duration) -> Duration {
        base * (1 + self.slowness)
    }

    /// This node's first tick at or after `at`. Ticks are a `ping_interval` apart, at a phase
    /// drawn when the node starts so the fleet's ticks do not line up. Deadlines that may come a
    /// little late (probes, shuffles, fills of a full view, reports that are not urgent) are put
    /// on ticks, so they share wake-ups.
    pub(super) fn on_tick(&self, at: Duration) -> Duration {
        tick_at(self.tick_phase, tick_period(&self.config), at)
    }

    fn is_well_formed(&self, message: &Message<P>) -> bool {
        match message {
            Message::Shuffle { entries, .. } | Message::ShuffleReply { entries } => {
                entries.len() <= MAX_SHUFFLE_ENTRIES
            }
            Message::SyncReply { envelopes } => envelopes.len() <= MAX_SYNC_ENVELOPES,
            Message::Health { summary, .. } => summary.is_well_formed(),
            Message::Gossip { envelope } => envelope.seq > 0,
            Message::IHave { seq } | Message::Graft { seq } => *seq > 0,
            _ => true,
        }
    }
}

/// The nanoseconds between two of a node's ticks: its `ping_interval`, at least one.
fn tick_period(config: &Config) -> u64 {
    config
        .ping_interval
        .as_nanos()
        .clamp(1, u128::from(u64::MAX)) as u64
}

/// The first point at or after `at` that is `phase` past a multiple of `period` nanoseconds.
/// A time too far out to round (`Duration::MAX` for "never") is returned as it is.
///
/// In 64-bit nanoseconds (584 years), not 128-bit: every timer of every node is rounded here,
/// and a 128-bit remainder is a library call several times slower than one division.
pub(super) fn tick_at(phase: Duration, period: u64, at: Duration) -> Duration {
    let (Ok(at_nanos), Ok(phase_nanos)) = (
        u64::try_from(at.as_nanos()),
        u64::try_from(phase.as_nanos()),
    ) else {
        return at;
    };
    let offset = (at_nanos % period + period - phase_nanos % period) % period;
    if offset == 0 {
        return at;
    }
    at.checked_add(Duration::from_nanos(period - offset))
        .unwrap_or(at)
}

/// A random point in [interval/2, interval*3/2), so timers of many nodes do not line up.
pub(super) fn jitter(rng: &mut SmallRng, interval: Duration) -> Duration {
    use rand::Rng;
    let half = interval / 2;
    let spread = interval.as_nanos().min(u128::from(u64::MAX)) as u64;
    half + Duration::from_nanos(rng.random_range(0..spread.max(1)))
}
