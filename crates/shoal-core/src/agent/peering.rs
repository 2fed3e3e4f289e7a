//! The data plane's connections: which addresses to dial and when, which of two connections
//! between the same peers stays, which peers each peer hears of, and the `Have`s that arrive for
//! a release before this node holds it.
//!
//! One [`Peering`] per process, shared by the swarms of every release: a connection carries all
//! of them. It does no IO; the driver dials, closes and sends what [`Peering::poll_output`] says
//! and reports back what happened. Time is a [`Duration`] since the driver's epoch; randomness
//! comes from the seed given to [`Peering::new`].
//!
//! - **Static peers** ([`Peering::add_static`]) are kept: a failed dial is retried after a
//!   backoff that doubles up to [`Config::max_backoff`], and a closed connection is dialled
//!   again after the shortest backoff.
//! - **Learned peers** (from membership through [`Peering::connect`], or from peer exchange
//!   through [`Peering::learned`]) get [`Config::learned_attempts`] dials at most.
//! - **Duplicates**: when two peers dial each other at once, the connection dialled by the
//!   smaller peer id stays, on both sides, so they agree without talking.
//! - **Peer exchange**: a peer whose hello was accepted hears of everyone here, everyone here hears
//!   of it, and every [`Config::exchange_interval`] each peer hears of a random sample of the
//!   others. A node dials learned peers only while it has room ([`Config::max_peers`]), close
//!   ones first but always some from anywhere ([`neighbours::choose`]).
//! - **Early `Have`s**: a peer announces its releases once, when the connection opens. A release
//!   this node adds later picks those peers up with [`Peering::claim`].

pub mod gate;

use crate::bitfield::Bitfield;
use crate::content::{PieceIndex, RootHash};
use crate::labels::Labels;
use crate::swarm::neighbours;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::IteratorRandom;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::time::Duration;

/// An address a node can be dialled at.
pub trait Address: Copy + Ord + Debug {
    /// Whether dialling it can reach anybody (not a wildcard, not port 0).
    fn is_dialable(&self) -> bool;
}

impl Address for std::net::SocketAddr {
    fn is_dialable(&self) -> bool {
        !self.ip().is_unspecified() && self.port() != 0
    }
}

impl Address for u32 {
    fn is_dialable(&self) -> bool {
        true
    }
}

/// How a node keeps its connections.
#[derive(Clone, Debug)]
pub struct Config {
    /// Connections counted (open or being dialled) beyond which learned peers are not dialled.
    pub max_peers: usize,
    /// How often every peer hears of a sample of the others.
    pub exchange_interval: Duration,
    /// Most peers named in one exchange.
    pub max_exchanged: usize,
    /// Wait before redialling a static peer, doubled after each failure.
    pub min_backoff: Duration,
    /// Longest wait between two dials of a static peer.
    pub max_backoff: Duration,
    /// Dials of a learned peer before it is given up.
    pub learned_attempts: u32,
    /// Wait after a learned peer's first failed dial, doubled after each further one.
    pub learned_retry: Duration,
    /// Most releases per connection whose early `Have` is kept.
    pub max_unclaimed: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_peers: 40,
            exchange_interval: Duration::from_secs(10),
            max_exchanged: crate::wire::piece::MAX_EXCHANGED_PEERS,
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            learned_attempts: 3,
            learned_retry: Duration::from_millis(500),
            max_unclaimed: 16,
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<A, I> {
    /// Dial `addr`; then report [`Peering::connected`] or [`Peering::dial_failed`].
    Dial(A),
    /// Close connection `conn` to `peer`: a duplicate of the one that stays.
    Close {
        /// The peer.
        peer: I,
        /// The connection to close.
        conn: u64,
    },
    /// Tell `to` of these peers (address and labels).
    SendPeers {
        /// The peer told.
        to: I,
        /// The peers it hears of.
        peers: Vec<(A, Labels)>,
    },
}

/// Whether a new connection stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It is the peer's connection now (an older one, if any, is closed by an [`Output::Close`]).
    Keep,
    /// The other connection between the two peers stays: close this one.
    Duplicate,
}

/// A release's `Have` kept for a release not held yet: pieces and whether the peer is its origin.
pub type EarlyHave = (Bitfield, bool);

struct Link<A> {
    conn: u64,
    addr: A,
    dialed_by_me: bool,
    /// `None` until the peer's hello was accepted.
    labels: Option<Labels>,
    unclaimed: BTreeMap<RootHash, EarlyHave>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Static { backoff: Duration },
    Learned { attempt: u32 },
}

struct Target {
    kind: Kind,
    dialing: bool,
    due: Option<Duration>,
}

/// Counts for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Dials asked for.
    pub dials: u64,
    /// Dials that failed.
    pub failed_dials: u64,
    /// Connections closed as duplicates.
    pub duplicates: u64,
    /// Learned peers given up after their last attempt.
    pub given_up: u64,
}

/// The connection keeper. See the module documentation.
pub struct Peering<A, I> {
    config: Config,
    me: I,
    own_addr: A,
    labels: Labels,
    rng: SmallRng,
    links: BTreeMap<I, Link<A>>,
    targets: BTreeMap<A, Target>,
    next_exchange: Duration,
    out: VecDeque<Output<A, I>>,
    stats: Stats,
}

impl<A: Address, I: Copy + Ord + Debug> Peering<A, I> {
    /// A node `me` listening on `own_addr` with `labels`; `seed` drives every random choice.
    pub fn new(
        config: Config,
        me: I,
        own_addr: A,
        labels: Labels,
        seed: u64,
        now: Duration,
    ) -> Self {
        let next_exchange = now + config.exchange_interval;
        Self {
            config,
            me,
            own_addr,
            labels,
            rng: SmallRng::seed_from_u64(seed),
            links: BTreeMap::new(),
            targets: BTreeMap::new(),
            next_exchange,
            out: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.links.len()
    }

    /// Whether a connection to `addr` is open.
    pub fn is_connected_to(&self, addr: A) -> bool {
        self.links.values().any(|l| l.addr == addr)
    }

    /// A peer's labels, once its hello was accepted.
    pub fn labels(&self, peer: I) -> Option<&Labels> {
        self.links.get(&peer).and_then(|l| l.labels.as_ref())
    }

    /// Keeps a connection to `addr` for as long as the node runs.
    pub fn add_static(&mut self, addr: A) {
        if addr == self.own_addr || !addr.is_dialable() {
            return;
        }
        let target = self.targets.entry(addr).or_insert(Target {
            kind: Kind::Static {
                backoff: self.config.min_backoff,
            },
            dialing: false,
            due: None,
        });
        target.kind = Kind::Static {
            backoff: self.config.min_backoff,
        };
        if !target.dialing && !self.links.values().any(|l| l.addr == addr) {
            target.dialing = true;
            target.due = None;
            self.stats.dials += 1;
            self.out.push_back(Output::Dial(addr));
        }
    }

    /// Connects to a swarm peer found through membership, unless already connected or dialling.
    pub fn connect(&mut self, addr: A) {
        if self.is_new(addr) {
            self.dial_learned(addr);
        }
    }

    /// Whether `addr` is a peer this node could dial and has not met: not itself, not a
    /// wildcard, not connected, not being dialled.
    fn is_new(&self, addr: A) -> bool {
        addr != self.own_addr
            && addr.is_dialable()
            && !self.targets.contains_key(&addr)
            && !self.is_connected_to(addr)
    }

    fn dial_learned(&mut self, addr: A) {
        let target = Target {
            kind: Kind::Learned { attempt: 0 },
            dialing: true,
            due: None,
        };
        self.targets.insert(addr, target);
        self.stats.dials += 1;
        self.out.push_back(Output::Dial(addr));
    }

    /// A dial of `addr` ended without a connection (or with one that never became a link).
    pub fn dial_failed(&mut self, addr: A, now: Duration) {
        let Some(target) = self.targets.get_mut(&addr) else {
            return;
        };
        target.dialing = false;
        self.stats.failed_dials += 1;
        match &mut target.kind {
            Kind::Static { backoff } => {
                target.due = Some(now + *backoff);
                *backoff = (*backoff * 2).min(self.config.max_backoff);
            }
            Kind::Learned { attempt } => {
                *attempt += 1;
                if *attempt >= self.config.learned_attempts {
                    self.targets.remove(&addr);
                    self.stats.given_up += 1;
                } else {
                    target.due = Some(now + self.config.learned_retry * (1 << (*attempt - 1)));
                }
            }
        }
    }

    /// Connection `conn` to `peer` at `addr` is up (`dialed_by_me` if this node dialled it).
    /// A [`Verdict::Duplicate`] must be closed by the driver; with [`Verdict::Keep`] an older
    /// connection to the same peer, if any, is closed through [`Output::Close`].
    pub fn connected(&mut self, peer: I, conn: u64, addr: A, dialed_by_me: bool) -> Verdict {
        if let Some(target) = self.targets.get_mut(&addr) {
            match target.kind {
                Kind::Static { .. } => {
                    target.dialing = false;
                    target.due = None;
                    target.kind = Kind::Static {
                        backoff: self.config.min_backoff,
                    };
                }
                Kind::Learned { .. } => {
                    self.targets.remove(&addr);
                }
            }
        }
        if let Some(old) = self.links.get(&peer) {
            // Between two peers the connection dialled by the smaller id stays. Two connections
            // dialled the same way: the newer one stays (the older is a dead one not reaped yet).
            let keeper_dialed_by_me = self.me < peer;
            let new_wins = old.dialed_by_me == dialed_by_me || dialed_by_me == keeper_dialed_by_me;
            self.stats.duplicates += 1;
            if !new_wins {
                return Verdict::Duplicate;
            }
            self.out.push_back(Output::Close {
                peer,
                conn: old.conn,
            });
        }
        self.links.insert(
            peer,
            Link {
                conn,
                addr,
                dialed_by_me,
                labels: None,
                unclaimed: BTreeMap::new(),
            },
        );
        Verdict::Keep
    }

    /// `peer`'s hello on connection `conn` was accepted: it hears of everyone here (a random
    /// sample of at most [`Config::max_exchanged`]) and everyone here hears of it.
    pub fn hello(&mut self, peer: I, conn: u64, labels: Labels) {
        let Some(link) = self.links.get_mut(&peer).filter(|l| l.conn == conn) else {
            return;
        };
        link.labels = Some(labels.clone());
        let addr = link.addr;
        let others: Vec<I> = self
            .links
            .iter()
            .filter(|(p, l)| **p != peer && l.labels.is_some())
            .map(|(p, _)| *p)
            .collect();
        let sample = self.sample(peer);
        if !sample.is_empty() {
            self.out.push_back(Output::SendPeers {
                to: peer,
                peers: sample,
            });
        }
        for other in others {
            self.out.push_back(Output::SendPeers {
                to: other,
                peers: vec![(addr, labels.clone())],
            });
        }
    }

    /// Connection `conn` to `peer` has closed. A static peer is dialled again after the shortest
    /// backoff.
    pub fn disconnected(&mut self, peer: I, conn: u64, now: Duration) {
        let Some(link) = self.links.get(&peer).filter(|l| l.conn == conn) else {
            return;
        };
        let addr = link.addr;
        self.links.remove(&peer);
        if let Some(target) = self.targets.get_mut(&addr)
            && matches!(target.kind, Kind::Static { .. })
            && !target.dialing
        {
            target.due = Some(now + self.config.min_backoff);
        }
    }

    /// Peers that `from` told this node of: some are dialled while there is room.
    pub fn learned(&mut self, from: I, peers: Vec<(A, Labels)>) {
        if !self.links.contains_key(&from) {
            return;
        }
        let dialing = self.targets.values().filter(|t| t.dialing).count();
        let free = self
            .config
            .max_peers
            .saturating_sub(self.links.len() + dialing);
        if free == 0 {
            return;
        }
        let mut candidates: Vec<(A, Labels)> = peers
            .into_iter()
            .take(self.config.max_exchanged)
            .filter(|(addr, _)| self.is_new(*addr))
            .collect();
        candidates.sort_by_key(|c| c.0);
        candidates.dedup_by(|a, b| a.0 == b.0);
        if candidates.is_empty() {
            return;
        }
        let labels: Vec<Labels> = candidates.iter().map(|(_, l)| l.clone()).collect();
        let chosen = neighbours::choose(
            &self.labels,
            &labels,
            free,
            (free / 4).max(1),
            &mut self.rng,
        );
        for i in chosen {
            self.dial_learned(candidates[i].0);
        }
    }

    /// Keeps `peer`'s `Have` for `root`, a release this node does not hold yet (at most
    /// [`Config::max_unclaimed`] releases per connection).
    pub fn keep_have(&mut self, peer: I, conn: u64, root: RootHash, have: Bitfield, origin: bool) {
        let max = self.config.max_unclaimed;
        if let Some(link) = self.links.get_mut(&peer).filter(|l| l.conn == conn)
            && (link.unclaimed.len() < max || link.unclaimed.contains_key(&root))
        {
            link.unclaimed.insert(root, (have, origin));
        }
    }

    /// Adds pieces from `peer`'s `HaveDelta` to a kept `Have` (indices outside it are ignored:
    /// they are untrusted).
    pub fn keep_delta(&mut self, peer: I, conn: u64, root: RootHash, pieces: &[PieceIndex]) {
        let Some(link) = self.links.get_mut(&peer).filter(|l| l.conn == conn) else {
            return;
        };
        if let Some((have, _)) = link.unclaimed.get_mut(&root) {
            for piece in pieces {
                if piece.0 < have.len() {
                    have.insert(piece.0);
                }
            }
        }
    }

    /// The kept `Have`s for `root`, now that this node holds it: per peer, its connection and
    /// what it has. They are forgotten here.
    pub fn claim(&mut self, root: RootHash) -> Vec<(I, u64, EarlyHave)> {
        self.links
            .iter_mut()
            .filter_map(|(peer, link)| {
                link.unclaimed
                    .remove(&root)
                    .map(|have| (*peer, link.conn, have))
            })
            .collect()
    }

    /// Feeds time in: redials that are due, and the periodic exchange.
    pub fn handle_timeout(&mut self, now: Duration) {
        let due: Vec<A> = self
            .targets
            .iter()
            .filter(|(_, t)| !t.dialing && t.due.is_some_and(|d| d <= now))
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            let connected = self.is_connected_to(addr);
            let Some(target) = self.targets.get_mut(&addr) else {
                continue;
            };
            target.due = None;
            if connected {
                continue;
            }
            target.dialing = true;
            self.stats.dials += 1;
            self.out.push_back(Output::Dial(addr));
        }
        if now >= self.next_exchange {
            self.next_exchange = now + self.config.exchange_interval;
            let peers: Vec<I> = self
                .links
                .iter()
                .filter(|(_, l)| l.labels.is_some())
                .map(|(p, _)| *p)
                .collect();
            for peer in peers {
                let sample = self.sample(peer);
                if !sample.is_empty() {
                    self.out.push_back(Output::SendPeers {
                        to: peer,
                        peers: sample,
                    });
                }
            }
        }
    }

    /// When [`Peering::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Duration {
        self.targets
            .values()
            .filter(|t| !t.dialing)
            .filter_map(|t| t.due)
            .fold(self.next_exchange, Duration::min)
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output<A, I>> {
        self.out.pop_front()
    }

    /// A random sample of the admitted peers other than `to`.
    fn sample(&mut self, to: I) -> Vec<(A, Labels)> {
        self.links
            .iter()
            .filter(|(p, _)| **p != to)
            .filter_map(|(_, l)| l.labels.as_ref().map(|labels| (l.addr, labels.clone())))
            .choose_multiple(&mut self.rng, self.config.max_exchanged)
    }
}

#[cfg(test)]
mod tests;
