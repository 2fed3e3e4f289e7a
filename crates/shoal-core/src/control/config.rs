//! Tunables of the control-plane core, with the defaults the daemon uses.

use std::time::Duration;

/// Sizes and intervals of a [`Node`](super::Node).
///
/// The defaults suit fleets of thousands to millions: the active view follows DESIGN.md's
/// log10(N)+1 at about 10k nodes (5) and the passive view is six times that. Larger fleets may
/// raise `active_view_capacity` to 8.
#[derive(Clone, Debug)]
pub struct Config {
    /// Neighbours a node tries to keep connected. A node may go one above this when a
    /// neighbour-short peer asks, so every node can reach a full view.
    pub active_view_capacity: usize,
    /// Candidates a node remembers for refilling its active view.
    pub passive_view_capacity: usize,
    /// Peers in the same rack or fault domain a node remembers, for swarm neighbour choice.
    pub locality_cache_capacity: usize,
    /// Hops a forward-join walks before the newcomer is taken into an active view.
    pub active_random_walk_length: u8,
    /// At this many remaining hops a forward-join also puts the newcomer in a passive view.
    pub passive_random_walk_length: u8,
    /// Joins a node takes per second. Beyond it a join changes no view and starts no
    /// forward-join walk: the joiner only gets a sample of members to ask instead, so a flood of
    /// joins cannot churn a seed's view (and its neighbours') without bound.
    pub max_joins_per_sec: u32,
    /// How often a node shuffles its views with a random walk.
    pub shuffle_interval: Duration,
    /// Active-view entries in a shuffle.
    pub shuffle_active_entries: usize,
    /// Passive-view entries in a shuffle.
    pub shuffle_passive_entries: usize,
    /// How often a node short of neighbours asks a passive peer to become one.
    pub fill_interval: Duration,
    /// How long a neighbour request may stay unanswered before the candidate is dropped.
    pub neighbour_request_timeout: Duration,
    /// A neighbour silent for this long is pinged at the node's next tick, by the end of the
    /// link with the smaller key; the other end waits twice as long. Ticks are this far apart.
    pub ping_interval: Duration,
    /// How long to wait for a pong, and then for the indirect probes, before a neighbour is dead.
    /// Multiplied by the node's own slowness factor (1 to 9).
    pub ping_timeout: Duration,
    /// Other neighbours asked to ping a neighbour that did not answer.
    pub indirect_probes: usize,
    /// How long an announced (`IHave`) message may stay missing before it is grafted.
    pub graft_timeout: Duration,
    /// Recent envelopes kept to answer grafts.
    pub message_cache: usize,
    /// Least time between two reports of a change in a subtree's summary. With nothing changing
    /// a node reports once per round (broadcast) only.
    pub health_interval: Duration,
    /// When the rollout part of a subtree's summary changes, or a new round starts, the node
    /// reports again this soon after its last report instead of waiting the whole interval, so
    /// a wave's gate sees its nodes turn healthy within a fraction of a second per tree level.
    pub health_urgent_gap: Duration,
    /// A node sends no report for this long after it starts: longer than its neighbours take
    /// to find a previous run of it dead (at most two ping intervals of silence, the tick after,
    /// and two timeouts: 5 s), so a quick restart is not counted twice.
    pub health_hold: Duration,
    /// On the source: how long after opening a round it goes on showing the previous round's
    /// total while the new round's is lower (the new tree's reports still climbing).
    pub health_settle: Duration,
    /// A node whose active view has been empty this long joins again through a seed.
    pub rejoin_after: Duration,
    /// How often a node contacts a random seed to mix views across the whole fleet, at least.
    /// In a large fleet the interval grows so that a seed hears at most
    /// `seed_probes_per_sec` probes a second from all nodes together (see
    /// [`Node::set_fleet_size`](super::Node::set_fleet_size)).
    pub seed_probe_interval: Duration,
    /// Most seed probes a second any one seed should get from the whole fleet.
    pub seed_probes_per_sec: u32,
    /// A node that has delivered no broadcast for this long assumes it is cut off from the
    /// source and joins again through a seed. Should be a few heartbeat intervals.
    pub stale_after: Duration,
    /// On the source: how often to ask the driver for a heartbeat broadcast
    /// ([`Output::HeartbeatDue`](super::Output::HeartbeatDue)). `None` elsewhere.
    pub heartbeat_interval: Option<Duration>,
    /// On the source: a heartbeat comes this soon after a neighbour that reported to it leaves,
    /// so the subtree it carried is counted again through the refilled view.
    pub heartbeat_after_loss: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            active_view_capacity: 5,
            passive_view_capacity: 30,
            locality_cache_capacity: 8,
            active_random_walk_length: 6,
            passive_random_walk_length: 3,
            max_joins_per_sec: 100,
            shuffle_interval: Duration::from_secs(10),
            shuffle_active_entries: 3,
            shuffle_passive_entries: 4,
            fill_interval: Duration::from_millis(500),
            neighbour_request_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(1),
            indirect_probes: 2,
            graft_timeout: Duration::from_millis(500),
            message_cache: 64,
            health_interval: Duration::from_secs(1),
            health_urgent_gap: Duration::from_millis(50),
            health_settle: Duration::from_secs(3),
            health_hold: Duration::from_secs(6),
            rejoin_after: Duration::from_secs(2),
            seed_probe_interval: Duration::from_secs(30),
            seed_probes_per_sec: 10,
            stale_after: Duration::from_secs(15),
            heartbeat_interval: None,
            heartbeat_after_loss: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// The defaults for the broadcast source (the coordinator): heartbeats every 5 seconds.
    pub fn source() -> Self {
        Config {
            heartbeat_interval: Some(Duration::from_secs(5)),
            ..Config::default()
        }
    }
}
