//! Tunables of one swarm, with defaults chosen for bulk transfer on a data-centre network.

use std::time::Duration;

/// How a [`Swarm`](super::Swarm) schedules requests and uploads.
#[derive(Clone, Debug)]
pub struct Config {
    /// Requests in flight to a peer before its rate is known.
    pub initial_in_flight_per_peer: u32,
    /// The fewest requests in flight to a peer that has not been dropped.
    pub min_in_flight_per_peer: u32,
    /// The most requests in flight to any one peer.
    pub max_in_flight_per_peer: u32,
    /// How many seconds of a peer's measured rate to keep requested from it. A slow peer gets
    /// fewer requests than a fast one because its rate covers fewer pieces in this time.
    pub queue_target_secs: f64,
    /// The first this-many pieces are picked at random, so a new node quickly has something to
    /// trade; after them the rarest piece is picked first.
    pub random_first_pieces: u32,
    /// In endgame, how many extra peers may be asked for a piece that is already requested.
    pub endgame_duplicates: u32,
    /// In endgame, a piece requested this long ago from other peers may also be asked of the
    /// origin, so a peer that advertises pieces and then stalls cannot hold the last ones back
    /// until its requests time out.
    pub origin_endgame_wait: Duration,
    /// A request not answered within this time is cancelled and the piece asked elsewhere.
    pub request_timeout: Duration,
    /// After this many timeouts or broken piece streams in a row a peer is dropped as
    /// unresponsive.
    pub max_consecutive_timeouts: u32,
    /// How long a peer that answered `Busy` gets no new requests.
    pub busy_backoff: Duration,
    /// How long a peer that answered `SentElsewhere` for a piece is not asked for that piece
    /// again: about the time the peer it went to needs to receive and announce it.
    pub decline_wait: Duration,
    /// Bytes of pieces requested and not yet arrived, over all peers, beyond which no more are
    /// requested (at least one piece): what a machine holds of pieces in flight stays bounded
    /// whatever the piece size and the number of peers.
    pub max_in_flight_bytes: u64,
    /// Pieces this node sends at the same time, over all peers (its upload slots).
    pub upload_slots: u32,
    /// Bytes of pieces this node sends at the same time; fewer slots are used when pieces are
    /// large (at least one).
    pub max_upload_bytes: u64,
    /// Pieces this node sends to one peer at the same time.
    pub upload_slots_per_peer: u32,
    /// Requests from one peer that wait for an upload slot; more are answered `Busy`.
    pub max_queued_per_peer: u32,
    /// Whether this node is the release's origin. An origin is protected: its peers ask it only
    /// for pieces no other peer has, it serves first the pieces it has sent least often, and it
    /// declines a piece it is still sending to another peer (`SentElsewhere`).
    pub is_origin: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            initial_in_flight_per_peer: 4,
            min_in_flight_per_peer: 1,
            max_in_flight_per_peer: 16,
            queue_target_secs: 1.0,
            random_first_pieces: 4,
            endgame_duplicates: 2,
            origin_endgame_wait: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            max_consecutive_timeouts: 3,
            busy_backoff: Duration::from_millis(500),
            decline_wait: Duration::from_secs(1),
            max_in_flight_bytes: 32 << 20,
            upload_slots: 8,
            max_upload_bytes: 16 << 20,
            upload_slots_per_peer: 2,
            max_queued_per_peer: 32,
            is_origin: false,
        }
    }
}

impl Config {
    /// The defaults for an origin: fewer upload slots, spread over more peers.
    pub fn origin() -> Self {
        Self {
            is_origin: true,
            upload_slots: 8,
            upload_slots_per_peer: 4,
            ..Self::default()
        }
    }
}
