//! The swarm scheduler: which piece to ask of which peer, and which request to serve next.
//!
//! One [`Swarm`] runs per release on every machine that holds or wants it. It knows the pieces
//! this machine has verified, each peer's have-bitfield, the requests in flight both ways, and
//! what each peer has delivered. It does no IO and reads no clock: the driver passes `now` (time
//! since any fixed epoch) and a seed for its random choices, so the same inputs give the same
//! outputs in the daemon, in tests and in the simulator.
//!
//! # Driving a swarm
//!
//! Feed events with the `handle_*` methods as they happen: a peer joined or left, its have
//! bitfield or a delta arrived, a piece arrived (and whether it verified), a request from a peer
//! arrived, an upload finished. Then call [`Swarm::poll_action`] until it returns `None` and carry
//! out each [`Action`]. Call [`Swarm::handle_timeout`] when the time from [`Swarm::poll_timeout`]
//! has passed. Nothing happens between calls.
//!
//! # Policy
//!
//! - **Piece choice:** the first [`Config::random_first_pieces`] pieces at random, then rarest
//!   first (fewest peers have it; ties at random), then endgame: once every missing piece that any
//!   peer has is requested, the remaining ones are also asked of up to
//!   [`Config::endgame_duplicates`] more peers, and the losers are cancelled when one arrives.
//!   Outside endgame a piece is requested from one peer at a time.
//! - **Slow peers get fewer requests:** each peer is kept [`Config::queue_target_secs`] of its
//!   measured rate in flight, between the minimum and maximum per peer.
//! - **Origin protection:** a peer marked as the origin is asked only for pieces that no other
//!   responsive peer has (a peer whose requests sit unanswered stops counting after
//!   [`Config::origin_endgame_wait`]). The origin serves a bounded number of
//!   [upload slots](Config::upload_slots) spread over peers and serves first the pieces it has
//!   sent least often. It declines a request for a piece it is already sending to another peer
//!   that has not announced it yet (requests that crossed): the requester asks that peer once it
//!   announces the piece, or the origin again after [`Config::decline_wait`].
//! - **Bad peers:** a piece that fails verification bans its sender for this swarm; a peer that
//!   answers "not have" for a piece it advertised loses that piece from its bitfield; a peer that
//!   lets [`Config::max_consecutive_timeouts`] requests time out is dropped.

pub mod bound;
mod bucket;
mod config;
pub mod neighbours;
mod peer;
mod peer_store;
mod tables;

pub use bucket::TokenBucket;
pub use config::Config;

use crate::bitfield::{Bitfield, BitfieldError};
use crate::content::{PieceIndex, PieceLayout};
use crate::wire::piece::RejectReason;
use litemap::LiteMap;
use peer::Peer;
use peer_store::PeerStore;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use tables::{PerPeer, UploadQueue};

/// A peer of a swarm, as a small number the driver chooses. The driver must not give the same
/// key to two different machines within one swarm: bans are kept by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey(pub u64);

/// A peer dropped as unresponsive this often (it reconnects each time) is banned from the swarm.
pub const MAX_UNRESPONSIVE_DROPS: u32 = 3;

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Ask `peer` for `piece`.
    Request {
        /// Whom to ask.
        peer: PeerKey,
        /// What to ask for.
        piece: PieceIndex,
    },
    /// Withdraw the request for `piece` from `peer`. If the piece arrives anyway it is still
    /// verified and kept.
    Cancel {
        /// Whom the request went to.
        peer: PeerKey,
        /// The piece.
        piece: PieceIndex,
    },
    /// Send `piece` to `peer`, then call [`Swarm::handle_sent`].
    Send {
        /// Who asked.
        peer: PeerKey,
        /// The piece, verified here.
        piece: PieceIndex,
    },
    /// Decline `peer`'s request for `piece`.
    Reject {
        /// Who asked.
        peer: PeerKey,
        /// The piece.
        piece: PieceIndex,
        /// Why.
        reason: RejectReason,
    },
    /// Tell every peer that this machine now has `piece`.
    Announce {
        /// The newly verified piece.
        piece: PieceIndex,
    },
    /// Close the connection to `peer` for this swarm. The peer is already forgotten.
    Disconnect {
        /// The peer.
        peer: PeerKey,
        /// Why.
        reason: DropReason,
    },
}

/// Why a peer was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// It sent a piece that failed verification; it is banned from this swarm for good.
    Corrupt {
        /// The bad piece.
        piece: PieceIndex,
    },
    /// Too many requests in a row timed out or broke off. It may be tried again later, unless
    /// this happened [`MAX_UNRESPONSIVE_DROPS`] times: then it is banned ([`Swarm::is_banned`]).
    Unresponsive,
}

/// The outcome of checking a received piece against the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// The piece hashed to its listed chaining value and is stored.
    Verified,
    /// The piece did not hash to its listed chaining value; nothing was stored.
    Corrupt,
}

/// Why an event about a peer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    /// The peer is not in the swarm (never added, dropped, or banned).
    #[error("peer {0:?} is not in this swarm")]
    Unknown(PeerKey),
    /// The peer is banned from this swarm.
    #[error("peer {0:?} is banned from this swarm")]
    Banned(PeerKey),
    /// A bitfield of the wrong length for this release.
    #[error("have-bitfield does not fit the release: {0}")]
    Bitfield(#[from] BitfieldError),
    /// A piece index past the end of the release.
    #[error("piece {0} is past the last piece of the release")]
    NoSuchPiece(PieceIndex),
}

/// Counters a swarm keeps for status and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent.
    pub requests: u64,
    /// Requests sent in endgame for a piece already requested elsewhere.
    pub endgame_requests: u64,
    /// Verified pieces that arrived when the piece was already here.
    pub duplicate_pieces: u64,
    /// Pieces that failed verification.
    pub corrupt_pieces: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests to the origin withdrawn because another peer got the piece first.
    pub origin_spared: u64,
    /// "Not have" answers for pieces a peer had advertised.
    pub false_haves: u64,
    /// Verified bytes received.
    pub bytes_down: u64,
    /// Bytes sent.
    pub bytes_up: u64,
    /// Pieces sent.
    pub pieces_up: u64,
    /// Pieces received and verified (each counted once).
    pub pieces_down: u64,
    /// Pieces sent that this machine had sent before (to any peer).
    pub pieces_resent: u64,
    /// At an origin: requests it declined because the piece was on its way to another peer.
    pub declined_sent_elsewhere: u64,
    /// Requests of ours a peer declined as sent elsewhere (asked again later).
    pub sent_elsewhere: u64,
}

/// What a swarm reports about one peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSummary {
    /// The peer.
    pub peer: PeerKey,
    /// Whether it is the origin.
    pub is_origin: bool,
    /// Pieces it has.
    pub have: u32,
    /// Our requests in flight to it.
    pub in_flight: u32,
    /// Its measured delivery rate.
    pub rate_bytes_per_sec: Option<f64>,
    /// Verified bytes received from it.
    pub bytes_down: u64,
    /// Bytes sent to it.
    pub bytes_up: u64,
}

/// The scheduler of one release's swarm on one machine. See the [module docs](self).
#[derive(Debug)]
pub struct Swarm {
    config: Config,
    layout: PieceLayout,
    have: Bitfield,
    peers: LiteMap<PeerKey, Peer, PeerStore>,
    /// How many of `peers` are origins: most swarms have none, and then the origin checks that
    /// would walk every peer are skipped.
    origin_peers: u32,
    /// The latest `busy_until` ever set on a peer: once it has passed, no peer is busy and
    /// nothing walks the peers to find one.
    busy_until_latest: Duration,
    /// Our requests in flight, with the time each was sent.
    in_flight: PerPeer<PieceIndex, Duration>,
    /// Pieces a peer declined as sent elsewhere, and until when they are not asked of it again.
    declined: PerPeer<u32, Duration>,
    /// Peers' requests to us that wait for an upload slot.
    queue: UploadQueue,
    banned: BTreeSet<PeerKey>,
    /// How often each peer was dropped as unresponsive; at [`MAX_UNRESPONSIVE_DROPS`] it is banned.
    unresponsive_drops: BTreeMap<PeerKey, u32>,
    /// Per piece: how many peers have it.
    availability: Vec<u32>,
    /// Per piece: how many peers other than the origin have it.
    availability_without_origin: Vec<u32>,
    /// Per piece: how many of our requests for it are in flight.
    requested: Vec<u32>,
    /// Per piece: how often this machine has sent it.
    sent: Vec<u32>,
    /// At an origin, per piece: the peer its first copy is going to (empty elsewhere).
    first_recipient: Vec<Option<PeerKey>>,
    uploads_in_progress: u32,
    upload_cursor: Option<PeerKey>,
    actions: VecDeque<Action>,
    rng: SmallRng,
    stats: Stats,
}

impl Swarm {
    /// A swarm for a release with `layout`, of which this machine has verified `have`.
    ///
    /// # Panics
    ///
    /// If `have` does not have one bit per piece of `layout`.
    pub fn new(config: Config, layout: PieceLayout, have: Bitfield, seed: u64) -> Self {
        let count = layout.piece_count();
        assert_eq!(
            have.len(),
            count,
            "have-bitfield length must equal the piece count"
        );
        let slots = usize::try_from(count).unwrap_or(usize::MAX);
        let is_origin = config.is_origin;
        Self {
            config,
            layout,
            have,
            peers: LiteMap::from_sorted_store_unchecked(PeerStore::default()),
            origin_peers: 0,
            busy_until_latest: Duration::ZERO,
            in_flight: PerPeer::new(),
            declined: PerPeer::new(),
            queue: UploadQueue::default(),
            banned: BTreeSet::new(),
            unresponsive_drops: BTreeMap::new(),
            availability: vec![0; slots],
            availability_without_origin: vec![0; slots],
            requested: vec![0; slots],
            sent: vec![0; slots],
            first_recipient: if is_origin {
                vec![None; slots]
            } else {
                Vec::new()
            },
            uploads_in_progress: 0,
            upload_cursor: None,
            actions: VecDeque::new(),
            rng: SmallRng::seed_from_u64(seed),
            stats: Stats::default(),
        }
    }

    // ---- getters -------------------------------------------------------------------------

    /// The pieces this machine has verified.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every piece is verified here.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// The release's layout.
    pub fn layout(&self) -> PieceLayout {
        self.layout
    }

    /// Counters since the swarm started.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether `peer` is banned from this swarm.
    pub fn is_banned(&self, peer: PeerKey) -> bool {
        self.banned.contains(&peer)
    }

    /// Banned peers, in key order.
    pub fn banned(&self) -> impl Iterator<Item = PeerKey> + '_ {
        self.banned.iter().copied()
    }

    /// Whether `peer` is in the swarm now.
    pub fn contains(&self, peer: PeerKey) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Whether a request for `piece` to `peer` is in flight.
    pub fn is_requested(&self, peer: PeerKey, piece: PieceIndex) -> bool {
        self.in_flight.contains(peer, piece)
    }

    /// Our requests in flight to `peer`.
    pub fn in_flight(&self, peer: PeerKey) -> u32 {
        len_u32(self.in_flight.count(peer))
    }

    /// How many requests `peer` may have in flight now (its share by measured rate).
    pub fn in_flight_limit(&self, peer: PeerKey) -> u32 {
        self.peers.get(&peer).map_or(0, |p| self.limit(p))
    }

    /// Pieces being sent now, over all peers.
    pub fn uploads_in_progress(&self) -> u32 {
        self.uploads_in_progress
    }

    /// Requests from peers waiting for an upload slot, over all peers.
    pub fn queued_requests(&self) -> u32 {
        len_u32(self.queue.len())
    }

    /// One summary per peer, in key order.
    pub fn peers(&self) -> impl Iterator<Item = PeerSummary> + '_ {
        self.peers.iter().map(|(&key, p)| PeerSummary {
            peer: key,
            is_origin: p.is_origin,
            have: p.have.count(),
            in_flight: len_u32(self.in_flight.count(key)),
            rate_bytes_per_sec: p.rate_bytes_per_sec(),
            bytes_down: p.bytes_down,
            bytes_up: p.bytes_up,
        })
    }

    // ---- inputs --------------------------------------------------------------------------

    /// A peer joined the swarm, with nothing known of its pieces yet.
    ///
    /// # Errors
    ///
    /// [`PeerError::Banned`] if the peer was banned from this swarm: the driver closes it.
    pub fn handle_peer_joined(&mut self, peer: PeerKey, is_origin: bool) -> Result<(), PeerError> {
        if self.banned.contains(&peer) {
            return Err(PeerError::Banned(peer));
        }
        if !self.peers.contains_key(&peer) {
            self.reserve_peer();
            let state = Peer::new(self.layout.piece_count(), is_origin);
            self.peers.insert(peer, state);
            self.origin_peers += u32::from(is_origin);
        }
        Ok(())
    }

    /// A peer left (its connection closed). Its requests to us are dropped and ours to it become
    /// free to ask elsewhere.
    pub fn handle_peer_left(&mut self, peer: PeerKey) {
        self.forget(peer);
    }

    /// A peer's full have-bitfield, replacing what was known.
    ///
    /// # Errors
    ///
    /// If the peer is unknown or the bitfield has the wrong length; the driver drops the peer.
    pub fn handle_have(&mut self, peer: PeerKey, have: Bitfield) -> Result<(), PeerError> {
        if have.len() != self.layout.piece_count() {
            return Err(PeerError::Bitfield(BitfieldError::WrongLength {
                len: self.layout.piece_count(),
                expected: usize::try_from(self.layout.piece_count().div_ceil(8))
                    .unwrap_or(usize::MAX),
                got: have.as_bytes().len(),
            }));
        }
        let state = self.peers.get_mut(&peer).ok_or(PeerError::Unknown(peer))?;
        let old = std::mem::replace(&mut state.have, have);
        let is_origin = state.is_origin;
        for i in old.iter() {
            self.count_have(i, is_origin, false);
        }
        let new: Vec<u32> = self.peers[&peer].have.iter().collect();
        for i in new {
            self.count_have(i, is_origin, true);
        }
        Ok(())
    }

    /// Pieces a peer verified since its last bitfield.
    ///
    /// # Errors
    ///
    /// If the peer is unknown or a piece is out of range; the driver drops the peer.
    pub fn handle_have_delta(
        &mut self,
        peer: PeerKey,
        pieces: &[PieceIndex],
    ) -> Result<(), PeerError> {
        let count = self.layout.piece_count();
        if let Some(&bad) = pieces.iter().find(|p| p.0 >= count) {
            return Err(PeerError::NoSuchPiece(bad));
        }
        let is_origin = self
            .peers
            .get(&peer)
            .ok_or(PeerError::Unknown(peer))?
            .is_origin;
        // Piece by piece, without collecting them: this runs for every announcement.
        for &p in pieces {
            let added = self
                .peers
                .get_mut(&peer)
                .is_some_and(|state| state.have.insert(p.0));
            if added {
                self.count_have(p.0, is_origin, true);
                if !is_origin {
                    self.spare_origin(p.0);
                }
            }
        }
        Ok(())
    }

    /// A piece arrived from `peer` and was checked. A verified piece is already stored by the
    /// driver; a corrupt one bans the peer.
    pub fn handle_piece(
        &mut self,
        peer: PeerKey,
        piece: PieceIndex,
        received: Received,
        now: Duration,
    ) {
        if !self.layout.contains(piece) {
            return;
        }
        let requested_at = self.in_flight.remove(peer, piece);
        if requested_at.is_some() {
            self.requested[idx(piece)] -= 1;
        }
        match received {
            Received::Corrupt => {
                self.stats.corrupt_pieces += 1;
                if self.peers.contains_key(&peer) {
                    self.forget(peer);
                    self.actions.push_back(Action::Disconnect {
                        peer,
                        reason: DropReason::Corrupt { piece },
                    });
                }
                self.banned.insert(peer);
            }
            Received::Verified => {
                let len = self.layout.piece_len(piece);
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.bytes_down += u64::from(len);
                    state.record_delivery(len, requested_at.unwrap_or(now), now);
                }
                if !self.have.insert(piece.0) {
                    self.stats.duplicate_pieces += 1;
                    return;
                }
                self.stats.bytes_down += u64::from(len);
                self.stats.pieces_down += 1;
                self.actions.push_back(Action::Announce { piece });
                // Endgame losers: withdraw the same request from everyone else.
                let losers: Vec<PeerKey> = self
                    .in_flight
                    .iter()
                    .filter(|&(_, p, _)| p == piece)
                    .map(|(other, _, _)| other)
                    .collect();
                for other in losers {
                    self.in_flight.remove(other, piece);
                    self.requested[idx(piece)] -= 1;
                    self.actions
                        .push_back(Action::Cancel { peer: other, piece });
                }
            }
        }
    }

    /// The piece stream for `piece` from `peer` broke (ended early, was reset or stalled). The
    /// piece is asked again; like a timeout, it counts towards dropping the peer.
    pub fn handle_request_failed(&mut self, peer: PeerKey, piece: PieceIndex, now: Duration) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if self.in_flight.remove(peer, piece).is_some() {
            self.requested[idx(piece)] -= 1;
        }
        state.consecutive_timeouts += 1;
        state.set_busy_until(now + self.config.busy_backoff);
        self.busy_until_latest = self.busy_until_latest.max(state.busy_until());
        if state.consecutive_timeouts >= self.config.max_consecutive_timeouts {
            self.drop_unresponsive(peer);
        }
    }

    /// `peer` declined our request for `piece`.
    pub fn handle_rejected(
        &mut self,
        peer: PeerKey,
        piece: PieceIndex,
        reason: RejectReason,
        now: Duration,
    ) {
        // A piece past the end comes only from a confused or hostile peer; nothing to undo.
        if !self.layout.contains(piece) {
            return;
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if self.in_flight.remove(peer, piece).is_some() {
            self.requested[idx(piece)] -= 1;
        }
        match reason {
            RejectReason::NotHave => {
                let is_origin = state.is_origin;
                if state.have.remove(piece.0) {
                    self.stats.false_haves += 1;
                    self.count_have(piece.0, is_origin, false);
                }
            }
            RejectReason::Busy => {
                state.set_busy_until(now + self.config.busy_backoff);
                self.busy_until_latest = self.busy_until_latest.max(state.busy_until());
            }
            RejectReason::SentElsewhere => {
                self.stats.sent_elsewhere += 1;
                self.declined
                    .insert(peer, piece.0, now + self.config.decline_wait);
            }
            RejectReason::UnknownRelease => {
                let old =
                    std::mem::replace(&mut state.have, Bitfield::new(self.layout.piece_count()));
                let is_origin = state.is_origin;
                for i in old.iter() {
                    self.count_have(i, is_origin, false);
                }
            }
        }
    }

    /// `peer` asked us for `piece`. The answer comes later as [`Action::Send`] or at once as
    /// [`Action::Reject`].
    pub fn handle_request(&mut self, peer: PeerKey, piece: PieceIndex) {
        let max_queued = self.config.max_queued_per_peer as usize;
        let has = self.layout.contains(piece) && self.have.contains(piece.0);
        let in_transit_elsewhere = has && self.in_transit_elsewhere(piece, peer);
        if !self.peers.contains_key(&peer) {
            return;
        }
        let reason = if !has {
            RejectReason::NotHave
        } else if in_transit_elsewhere {
            self.stats.declined_sent_elsewhere += 1;
            RejectReason::SentElsewhere
        } else if self.queue.count(peer) >= max_queued {
            RejectReason::Busy
        } else {
            if !self.queue.of(peer).any(|q| q.piece == piece) {
                self.queue.push(peer, piece);
            }
            return;
        };
        self.actions.push_back(Action::Reject {
            peer,
            piece,
            reason,
        });
    }

    /// `peer` withdrew its request for `piece`. A piece already being sent is finished by the
    /// driver (or aborted, followed by [`Swarm::handle_sent`] with `sent: false`).
    pub fn handle_cancel(&mut self, peer: PeerKey, piece: PieceIndex) {
        self.queue.remove_where(peer, |p| p == piece);
    }

    /// A [`Action::Send`] finished: the whole piece was handed to the transport (`sent`), or the
    /// send failed or was aborted.
    pub fn handle_sent(&mut self, peer: PeerKey, piece: PieceIndex, sent: bool) {
        self.uploads_in_progress = self.uploads_in_progress.saturating_sub(1);
        if let Some(state) = self.peers.get_mut(&peer) {
            state.sending = state.sending.saturating_sub(1);
            if sent {
                state.bytes_up += u64::from(self.layout.piece_len(piece));
            }
        }
        if !sent
            && let Some(first) = self.first_recipient.get_mut(idx(piece))
            && *first == Some(peer)
        {
            *first = None;
        }
        if sent && self.layout.contains(piece) {
            if self.sent[idx(piece)] > 0 {
                self.stats.pieces_resent += 1;
            }
            self.sent[idx(piece)] += 1;
            self.stats.pieces_up += 1;
            self.stats.bytes_up += u64::from(self.layout.piece_len(piece));
        }
    }

    /// The store found `pieces` bad after all (its whole-payload check failed): they are missing
    /// again and will be fetched anew.
    pub fn handle_lost(&mut self, pieces: &[PieceIndex]) {
        for piece in pieces {
            self.have.remove(piece.0);
        }
    }

    /// Time passed: requests older than [`Config::request_timeout`] are cancelled, and peers
    /// with too many timeouts in a row are dropped.
    pub fn handle_timeout(&mut self, now: Duration) {
        let timeout = self.config.request_timeout;
        let mut dropped = Vec::new();
        self.declined.retain(|_, _, &until| until > now);
        for (&key, state) in &mut self.peers {
            let expired: Vec<PieceIndex> = self
                .in_flight
                .of(key)
                .filter(|&(_, &at)| now.saturating_sub(at) >= timeout)
                .map(|(piece, _)| piece)
                .collect();
            for piece in expired {
                self.in_flight.remove(key, piece);
                self.requested[idx(piece)] -= 1;
                self.stats.timeouts += 1;
                state.consecutive_timeouts += 1;
                self.actions.push_back(Action::Cancel { peer: key, piece });
            }
            if state.consecutive_timeouts >= self.config.max_consecutive_timeouts {
                dropped.push(key);
            }
        }
        for peer in dropped {
            self.drop_unresponsive(peer);
        }
    }

    // ---- outputs -------------------------------------------------------------------------

    /// The next thing to do, or `None` when there is nothing until the next event or timeout.
    pub fn poll_action(&mut self, now: Duration) -> Option<Action> {
        if self.actions.is_empty() {
            self.schedule_uploads();
            self.schedule_requests(now);
        }
        self.actions.pop_front()
    }

    /// When to call [`Swarm::handle_timeout`] (and poll again) at the latest.
    pub fn poll_timeout(&self, now: Duration) -> Option<Duration> {
        let timeout = self.config.request_timeout;
        // With an origin in the swarm, also wake when a request becomes old enough for its
        // holder to count as stalled, so the origin is asked then (see `responsive_holders`).
        let wait = self.config.origin_endgame_wait;
        let has_origin = self.origin_peers > 0;
        let request = self.in_flight.values().map(|&at| at + timeout);
        let stall = self
            .in_flight
            .values()
            .map(|&at| at + wait)
            .filter(|&t| has_origin && t > now);
        let busy = (self.busy_until_latest > now)
            .then(|| {
                self.peers
                    .values()
                    .filter_map(|p| (p.busy_until() > now).then_some(p.busy_until()))
            })
            .into_iter()
            .flatten();
        // A declined piece may be asked again when its wait ends.
        let declined = self.declined.values().copied().filter(|&t| t > now);
        request.chain(stall).chain(busy).chain(declined).min()
    }

    // ---- internals -----------------------------------------------------------------------

    /// Makes room for one more peer, growing the table by a quarter rather than doubling it
    /// ([`PeerStore`]).
    fn reserve_peer(&mut self) {
        self.peers.reserve(1);
    }

    fn drop_unresponsive(&mut self, peer: PeerKey) {
        self.forget(peer);
        let drops = self.unresponsive_drops.entry(peer).or_insert(0);
        *drops += 1;
        if *drops >= MAX_UNRESPONSIVE_DROPS {
            self.banned.insert(peer);
        }
        self.actions.push_back(Action::Disconnect {
            peer,
            reason: DropReason::Unresponsive,
        });
    }

    fn forget(&mut self, peer: PeerKey) {
        let Some(state) = self.peers.remove(&peer) else {
            return;
        };
        self.origin_peers -= u32::from(state.is_origin);
        for i in state.have.iter() {
            self.count_have(i, state.is_origin, false);
        }
        for piece in self.in_flight.remove_peer(peer) {
            self.requested[idx(piece)] -= 1;
        }
        self.declined.remove_peer(peer);
        self.queue.remove_peer(peer);
        self.uploads_in_progress -= state.sending.min(self.uploads_in_progress);
    }

    /// Origin protection: a request to the origin for a piece another peer now has is withdrawn,
    /// so the piece is asked of that peer instead.
    fn spare_origin(&mut self, i: u32) {
        if self.origin_peers == 0 {
            return;
        }
        for (&key, _) in self.peers.iter().filter(|(_, p)| p.is_origin) {
            if self.in_flight.remove(key, PieceIndex(i)).is_some() {
                self.requested[i as usize] -= 1;
                self.stats.origin_spared += 1;
                self.actions.push_back(Action::Cancel {
                    peer: key,
                    piece: PieceIndex(i),
                });
            }
        }
    }

    fn count_have(&mut self, piece: u32, is_origin: bool, added: bool) {
        let i = piece as usize;
        let adjust = |n: &mut u32| {
            if added {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
        };
        adjust(&mut self.availability[i]);
        if !is_origin {
            adjust(&mut self.availability_without_origin[i]);
        }
    }

    /// The key of the peer at `index` in key order.
    fn peer_key_at(&self, index: usize) -> PeerKey {
        self.peers
            .get_indexed(index)
            .map_or(PeerKey(u64::MAX), |(&k, _)| k)
    }

    fn limit(&self, peer: &Peer) -> u32 {
        let c = &self.config;
        let Some(rate) = peer.rate_bytes_per_sec() else {
            return c.initial_in_flight_per_peer;
        };
        let pieces = rate * c.queue_target_secs / f64::from(self.layout.piece_size_bytes());
        // Truncation is fine: the value is clamped to a small range right after.
        (pieces.ceil() as u32).clamp(c.min_in_flight_per_peer, c.max_in_flight_per_peer)
    }

    fn schedule_uploads(&mut self) {
        let len = self.peers.len();
        let slots = self
            .config
            .upload_slots
            .min(self.pieces_within(self.config.max_upload_bytes));
        // With nothing queued there is nothing to send (and an origin nothing to decline).
        if len == 0 || self.uploads_in_progress >= slots || self.queue.is_empty() {
            return;
        }
        // Round-robin over peers, starting after the one served last. The peers do not change
        // in the loop, so it walks them by position.
        let start = self
            .upload_cursor
            .map_or(0, |c| match self.peers.find_index(&c) {
                Ok(i) => i + 1,
                Err(i) => i,
            });
        let mut idle_rounds = 0;
        let mut at = start;
        while self.uploads_in_progress < slots && idle_rounds < len {
            let key = self.peer_key_at(at % len);
            at += 1;
            let Some(piece) = self.next_upload(key) else {
                idle_rounds += 1;
                continue;
            };
            idle_rounds = 0;
            self.uploads_in_progress += 1;
            self.upload_cursor = Some(key);
            self.actions.push_back(Action::Send { peer: key, piece });
        }
    }

    fn next_upload(&mut self, key: PeerKey) -> Option<PieceIndex> {
        let per_peer = self.config.upload_slots_per_peer;
        let is_origin = self.config.is_origin;
        if is_origin {
            self.decline_queued_in_transit(key);
        }
        let waiting = self.queue.count(key);
        if waiting == 0 || self.peers.get(&key)?.sending >= per_peer {
            return None;
        }
        let at = if is_origin {
            // The origin sends first what it has sent least, then what fewest peers have; a
            // request passed over as often as the queue is long goes next, so none starves.
            let limit = len_u32(waiting);
            let (at, _) = self.queue.of(key).enumerate().min_by_key(|(_, q)| {
                (
                    q.passed < limit,
                    self.sent[idx(q.piece)],
                    self.availability[idx(q.piece)],
                )
            })?;
            at
        } else {
            0
        };
        let piece = self.queue.take(key, at)?;
        self.peers.get_mut(&key)?.sending += 1;
        if let Some(first) = self.first_recipient.get_mut(idx(piece))
            && first.is_none()
        {
            *first = Some(key);
        }
        Some(piece)
    }

    /// Whether `piece`'s first copy is on its way from this origin to a peer other than `peer`
    /// that does not have it yet.
    fn in_transit_elsewhere(&self, piece: PieceIndex, peer: PeerKey) -> bool {
        self.first_recipient
            .get(idx(piece))
            .copied()
            .flatten()
            .filter(|&k| k != peer)
            .and_then(|k| self.peers.get(&k))
            .is_some_and(|k| !k.have.contains(piece.0))
    }

    /// Declines the requests queued by `key` whose piece has gone to another peer since they
    /// were queued (two requests that crossed wait in two queues).
    fn decline_queued_in_transit(&mut self, key: PeerKey) {
        if !self.peers.contains_key(&key) {
            return;
        }
        let declined: Vec<PieceIndex> = self
            .queue
            .of(key)
            .map(|q| q.piece)
            .filter(|&p| self.in_transit_elsewhere(p, key))
            .collect();
        if declined.is_empty() {
            return;
        }
        self.queue.remove_where(key, |p| declined.contains(&p));
        for piece in declined {
            self.stats.declined_sent_elsewhere += 1;
            self.actions.push_back(Action::Reject {
                peer: key,
                piece,
                reason: RejectReason::SentElsewhere,
            });
        }
    }

    fn schedule_requests(&mut self, now: Duration) {
        if self.have.is_full() || self.peers.is_empty() {
            return;
        }
        let budget = self.pieces_within(self.config.max_in_flight_bytes);
        let mut in_flight = len_u32(self.in_flight.len());
        if in_flight >= budget {
            return;
        }
        let endgame = self.is_endgame();
        // Pieces some responsive peer other than the origin has: the origin is spared those.
        // Requests added below do not change which peers are stalled, so once per call is enough.
        let spare = (self.origin_peers > 0).then(|| self.responsive_holders(now));
        let len = self.peers.len();
        // Start at a random peer so no peer is always asked first. The peers do not change in
        // the loop, so it walks them by position.
        let offset = self.rng.random_range(0..len);
        for n in 0..len {
            let key = self.peer_key_at((offset + n) % len);
            loop {
                if in_flight >= budget {
                    return;
                }
                let state = &self.peers[&key];
                if state.busy_until() > now
                    || len_u32(self.in_flight.count(key)) >= self.limit(state)
                {
                    break;
                }
                let Some((piece, duplicate)) = self.pick(key, endgame, spare.as_ref(), now) else {
                    break;
                };
                self.in_flight.insert(key, piece, now);
                in_flight += 1;
                self.requested[idx(piece)] += 1;
                self.stats.requests += 1;
                if duplicate {
                    self.stats.endgame_requests += 1;
                }
                self.actions.push_back(Action::Request { peer: key, piece });
            }
        }
    }

    /// How many whole pieces fit in `bytes`, at least one.
    fn pieces_within(&self, bytes: u64) -> u32 {
        let piece = u64::from(self.layout.piece_size_bytes()).max(1);
        u32::try_from(bytes / piece).unwrap_or(u32::MAX).max(1)
    }

    /// Endgame starts when no missing piece is both unrequested and available from some peer.
    fn is_endgame(&self) -> bool {
        !self
            .have
            .missing()
            .any(|i| self.requested[i as usize] == 0 && self.availability[i as usize] > 0)
    }

    /// The piece to ask `key` for next, and whether it is an endgame duplicate.
    fn pick(
        &mut self,
        key: PeerKey,
        endgame: bool,
        spare: Option<&Bitfield>,
        now: Duration,
    ) -> Option<(PieceIndex, bool)> {
        let state = &self.peers[&key];
        let random_first = self.have.count() < self.config.random_first_pieces;
        let mut best: Option<(u32, u32)> = None; // (score, piece)
        let mut ties = 0u32;
        for i in self.have.missing_in(&state.have) {
            let at = i as usize;
            if self.in_flight.contains(key, PieceIndex(i))
                || self.declined.get(key, i).is_some_and(|&until| until > now)
            {
                continue;
            }
            let requested = self.requested[at];
            if state.is_origin
                && self.availability_without_origin[at] > 0
                && spare.is_some_and(|s| s.contains(i))
                && !(endgame
                    && requested > 0
                    && self.requested_before(i, now, self.config.origin_endgame_wait))
            {
                continue;
            }
            let score = if requested == 0 {
                if random_first {
                    0
                } else {
                    self.availability[at]
                }
            } else if endgame && requested <= self.config.endgame_duplicates {
                // Fewest copies in flight first; after every fresh piece.
                u32::MAX / 2 + requested
            } else {
                continue;
            };
            match best {
                Some((s, _)) if score > s => {}
                Some((s, _)) if score == s => {
                    // Reservoir sampling keeps each tie equally likely.
                    ties += 1;
                    if self.rng.random_range(0..ties) == 0 {
                        best = Some((score, i));
                    }
                }
                _ => {
                    best = Some((score, i));
                    ties = 1;
                }
            }
        }
        best.map(|(score, i)| (PieceIndex(i), score >= u32::MAX / 2))
    }
}

impl Swarm {
    /// The pieces held by peers other than the origin that are not stalled. A peer is stalled
    /// when its oldest request is older than [`Config::origin_endgame_wait`] (or three pieces'
    /// time at its measured rate, if longer) and nothing arrived from it since: a peer that
    /// advertises pieces and never sends them stops sparing the origin after that wait instead
    /// of after the request timeout.
    fn responsive_holders(&self, now: Duration) -> Bitfield {
        let piece_bytes = f64::from(self.layout.piece_size_bytes());
        let mut holders = Bitfield::new(self.layout.piece_count());
        for (&key, p) in self.peers.iter().filter(|(_, p)| !p.is_origin) {
            // A slow peer gets longer: three of its pieces' time at its measured rate.
            let wait = p
                .rate_bytes_per_sec()
                .map_or(self.config.origin_endgame_wait, |rate| {
                    self.config.origin_endgame_wait.max(Duration::from_secs_f64(
                        (3.0 * piece_bytes / rate.max(1.0)).min(600.0),
                    ))
                });
            let stalled = p.consecutive_timeouts > 0
                || self
                    .in_flight
                    .of(key)
                    .map(|(_, &at)| at)
                    .min()
                    .is_some_and(|oldest| {
                        now.saturating_sub(oldest) >= wait
                            && p.last_delivery().is_none_or(|delivered| delivered < oldest)
                    });
            if !stalled {
                holders.union_with(&p.have);
            }
        }
        holders
    }

    /// Whether some request for piece `i` is at least `wait` old.
    fn requested_before(&self, i: u32, now: Duration, wait: Duration) -> bool {
        self.in_flight
            .iter()
            .any(|(_, piece, &at)| piece.0 == i && now.saturating_sub(at) >= wait)
    }
}

fn idx(piece: PieceIndex) -> usize {
    piece.0 as usize
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
