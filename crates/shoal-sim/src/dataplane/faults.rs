//! Faults on the data plane's schedule: crashes and partitions.
//!
//! A partition cuts a set of nodes off from the rest as the daemon's QUIC connections see it:
//! nothing crosses the cut, but the connections are not known to be gone until
//! [`LINK_TIMEOUT`] (the daemon's idle timeout) passes without a packet. Until then the
//! pieces in flight across the cut stall where they are and the messages sent across wait in
//! the senders' streams; a partition that heals sooner resumes them all, as QUIC retransmits.
//! One that lasts longer breaks every link across it: both sides' swarms see the peers leave
//! (their requests and uploads there end) and fetch from whom they still reach; when it heals,
//! the nodes connect again and exchange their bitfields, as the daemon redials its peers.

use super::{DataPlane, Msg};
use crate::flows::Flow;
use shoal_core::bitfield::Bitfield;
use shoal_core::content::PieceIndex;
use shoal_core::swarm::{Config, PeerKey, Swarm};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long a link across a partition lasts without a packet before both ends drop it: the
/// daemon's QUIC idle timeout (`shoal_net::transport::IDLE_TIMEOUT`).
pub const LINK_TIMEOUT: Duration = Duration::from_secs(20);

/// A partition on the schedule.
#[derive(Clone, Debug)]
pub struct Partition {
    /// When it starts.
    pub at: Duration,
    /// When it heals; `None`: never.
    pub heal: Option<Duration>,
    /// The nodes it cuts off from the rest, sorted.
    pub nodes: Vec<u32>,
}

/// The partition in force.
#[derive(Default)]
pub(super) struct Cut {
    /// Its index in [`super::DataConfig::partitions`]; `None` while no partition is on.
    partition: Option<usize>,
    /// Which nodes are cut off; empty while no partition is on.
    cut_off: Vec<bool>,
    /// The links across it.
    links: Vec<(u32, u32)>,
    /// Whether those links have timed out and been dropped.
    broken: bool,
    /// Pieces in flight across it, with the bytes they still had to send.
    stalled: Vec<(Flow, PieceIndex, f64)>,
    /// Messages sent across it, waiting in their streams.
    held: Vec<(u32, u32, Msg)>,
}

impl Cut {
    /// The nodes it cuts off.
    pub(super) fn cut_off_nodes(&self) -> u32 {
        self.cut_off.iter().filter(|&&c| c).count() as u32
    }
}

impl DataPlane {
    /// Whether a message from `from` reaches `to` now.
    pub(super) fn reachable(&self, from: u32, to: u32) -> bool {
        let c = &self.cut.cut_off;
        c.is_empty() || c[from as usize] == c[to as usize]
    }

    /// Keeps a message sent across the partition until its link heals or breaks.
    pub(super) fn hold(&mut self, from: u32, to: u32, msg: Msg) {
        if !self.cut.broken {
            self.cut.held.push((from, to, msg));
        }
    }

    /// Nodes stop at once: their flows end unfinished, their neighbours see the links break.
    pub(super) fn crash(&mut self, ids: &[u32]) {
        let mut touched = BTreeSet::new();
        for &id in ids {
            let i = id as usize;
            if i >= self.swarms.len() || self.crashed[i] {
                continue;
            }
            self.crashed[i] = true;
            if self.outcome.completed_at[i].is_none() {
                self.outcome.crashed += 1;
            } else {
                // It had the release, but it is gone: it no longer counts as holding it.
                self.outcome.completed_at[i] = None;
                self.complete -= 1;
                self.outcome.crashed += 1;
            }
            self.flows.remove_node(id);
            for p in std::mem::take(&mut self.links[i]) {
                self.links[p as usize].retain(|&l| l != id);
                if !self.crashed[p as usize] {
                    self.swarms[p as usize].handle_peer_left(PeerKey(u64::from(id)));
                    touched.insert(p);
                }
            }
            // Its peer tables go with it.
            let count = self.config.layout.piece_count();
            self.swarms[i] = Swarm::new(
                Config::default(),
                self.config.layout,
                Bitfield::new(count),
                0,
            );
        }
        self.after_fault(touched);
    }

    /// The `i`-th partition starts: the flows across it stall, and its links break after
    /// [`LINK_TIMEOUT`] unless it heals first.
    pub(super) fn partition(&mut self, i: usize) {
        let nodes = std::mem::take(&mut self.config.partitions[i].nodes);
        let heal = self.config.partitions[i].heal;
        let mut cut_off = vec![false; self.swarms.len()];
        for &id in &nodes {
            if let Some(c) = cut_off.get_mut(id as usize) {
                *c = true;
            }
        }
        let mut touched = BTreeSet::new();
        let mut links = Vec::new();
        let mut stalled = Vec::new();
        for &a in &nodes {
            let Some(theirs) = self.links.get(a as usize) else {
                continue;
            };
            for &b in theirs.iter().filter(|&&b| !cut_off[b as usize]) {
                links.push((a, b));
                for (e, left) in self.flows.take_between(a, b, self.now) {
                    stalled.push((e.flow, e.piece, left));
                }
                touched.extend([a, b]);
            }
        }
        self.cut = Cut {
            partition: Some(i),
            cut_off,
            links,
            broken: false,
            stalled,
            held: Vec::new(),
        };
        let timeout = self.now + LINK_TIMEOUT;
        if heal.is_none_or(|h| h > timeout) {
            self.schedule(timeout, 0, 0, Msg::LinksTimeout(i));
        }
        // The caps the stalled flows held go to the others.
        self.after_fault(touched);
    }

    /// The links across the `i`-th partition time out: both ends drop them, with what was in
    /// flight.
    pub(super) fn break_links(&mut self, i: usize) {
        if self.cut.partition != Some(i) || self.cut.broken {
            return;
        }
        self.cut.broken = true;
        self.cut.stalled.clear();
        self.cut.held.clear();
        let mut touched = BTreeSet::new();
        for &(a, b) in &self.cut.links {
            if self.crashed[a as usize] || self.crashed[b as usize] {
                continue;
            }
            self.links[a as usize].retain(|&l| l != b);
            self.links[b as usize].retain(|&l| l != a);
            self.swarms[a as usize].handle_peer_left(PeerKey(u64::from(b)));
            self.swarms[b as usize].handle_peer_left(PeerKey(u64::from(a)));
            touched.extend([a, b]);
        }
        self.after_fault(touched);
    }

    /// The `i`-th partition heals: links that held resume what was stalled on them, links that
    /// broke connect again and exchange bitfields.
    pub(super) fn heal(&mut self, i: usize) {
        if self.cut.partition != Some(i) {
            return;
        }
        let cut = std::mem::take(&mut self.cut);
        let now = self.now;
        let mut touched = BTreeSet::new();
        let alive =
            |p: &DataPlane, a: u32, b: u32| !p.crashed[a as usize] && !p.crashed[b as usize];
        if cut.broken {
            for (a, b) in cut.links {
                if alive(self, a, b) && !self.links[a as usize].contains(&b) {
                    self.connect(a, b);
                }
            }
        } else {
            for (flow, piece, left) in cut.stalled {
                if alive(self, flow.from, flow.to) {
                    self.flows.add(flow, piece, left, now);
                    touched.extend([flow.from, flow.to]);
                }
            }
            for (from, to, msg) in cut.held {
                let at = now + self.latency(from, to);
                self.schedule(at, from, to, msg);
            }
        }
        self.after_fault(touched);
    }

    /// `a` and `b` become swarm neighbours and send each other their bitfields.
    fn connect(&mut self, a: u32, b: u32) {
        let (ka, kb) = (PeerKey(u64::from(a)), PeerKey(u64::from(b)));
        if self.swarms[a as usize]
            .handle_peer_joined(kb, b == 0)
            .is_err()
        {
            return;
        }
        if self.swarms[b as usize]
            .handle_peer_joined(ka, a == 0)
            .is_err()
        {
            self.swarms[a as usize].handle_peer_left(kb);
            return;
        }
        self.links[a as usize].push(b);
        self.links[b as usize].push(a);
        let have = Arc::new(self.swarms[a as usize].have().clone());
        self.send(a, b, Msg::Have(have));
        let have = Arc::new(self.swarms[b as usize].have().clone());
        self.send(b, a, Msg::Have(have));
    }

    /// New rates for the flows of the nodes a fault touched, and their next moves.
    fn after_fault(&mut self, touched: BTreeSet<u32>) {
        let around: Vec<u32> = touched.iter().copied().collect();
        self.flows.reshare(&around, self.now);
        self.book_flows();
        for p in touched {
            if !self.crashed[p as usize] {
                self.act(p);
            }
        }
    }
}
