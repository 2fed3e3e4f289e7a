//! What a running process reports about itself: the JSON of `GET /v1/status` and of
//! `shoal status --node ADDR --json`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A process's status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's peer id.
    pub peer_id: String,
    /// The address it listens on (QUIC on UDP, control API on TCP).
    pub listen: Option<SocketAddr>,
    /// Its labels.
    pub labels: String,
    /// Open connections.
    pub connections: Vec<ConnectionStatus>,
    /// Releases it holds or fetches.
    pub releases: Vec<ReleaseStatus>,
    /// Peers refused on the data plane for a missing or invalid admission certificate.
    #[serde(default)]
    pub refused_peers: u64,
    /// Piece streams dropped for delivering slower than the protocol's minimum rate.
    #[serde(default)]
    pub slow_piece_streams: u64,
    /// Connection attempts refused before their handshake: the node was full, too many
    /// handshakes were in progress, or the source address was over its rate.
    #[serde(default)]
    pub refused_connections: u64,
    /// Peers that refused this node, with the reason they gave.
    #[serde(default)]
    pub refused_by: Vec<Refusal>,
}

/// A peer that refused this node on the data plane.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refusal {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Why, in its words.
    pub reason: String,
}

/// One open connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// The remote peer id.
    pub peer_id: String,
    /// The remote address.
    pub addr: SocketAddr,
    /// The remote labels, once its hello arrived.
    pub labels: String,
    /// The smoothed round-trip time in microseconds.
    pub rtt_micros: u64,
    /// UDP bytes sent on the connection, QUIC headers and retransmissions included.
    pub udp_sent_bytes: u64,
    /// UDP datagrams sent on the connection.
    #[serde(default)]
    pub udp_sent_datagrams: u64,
    /// Send calls those datagrams took: fewer than the datagrams when segmentation offload (GSO)
    /// batches them.
    #[serde(default)]
    pub udp_send_calls: u64,
    /// Bytes QUIC declared lost (and sent again).
    pub lost_bytes: u64,
    /// Congestion events (losses or ECN marks that cut the window).
    pub congestion_events: u64,
}

/// One release's swarm on this node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReleaseStatus {
    /// The release's root hash (hex).
    pub root: String,
    /// `service@version`.
    pub name: String,
    /// Whether this node is the release's origin.
    pub origin: bool,
    /// Pieces verified here.
    pub have: u32,
    /// Pieces in the release.
    pub total: u32,
    /// Whether every piece is verified and the payload matches the root.
    pub complete: bool,
    /// The payload's size.
    pub size_bytes: u64,
    /// Where the payload is.
    pub path: String,
    /// Seconds from the swarm's start until it completed here (fetching nodes only).
    pub completed_after_secs: Option<f64>,
    /// Verified bytes received from peers.
    pub bytes_down: u64,
    /// Bytes sent to peers.
    pub bytes_up: u64,
    /// Verified pieces received from peers.
    #[serde(default)]
    pub pieces_down: u64,
    /// Pieces sent to peers.
    #[serde(default)]
    pub pieces_up: u64,
    /// Pieces that failed verification (each bans its sender).
    pub corrupt_pieces: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Pieces peers advertised but then said they did not have.
    pub false_haves: u64,
    /// Pieces sent that this node had sent before.
    #[serde(default)]
    pub pieces_resent: u64,
    /// Requests declined because the piece was on its way to another peer (at an origin).
    #[serde(default)]
    pub declined_sent_elsewhere: u64,
    /// Requests of this node that a peer declined as sent elsewhere.
    #[serde(default)]
    pub sent_elsewhere: u64,
    /// Requests sent in endgame for a piece already requested from another peer.
    #[serde(default)]
    pub endgame_requests: u64,
    /// Requests to the origin withdrawn because another peer got the piece first.
    #[serde(default)]
    pub origin_spared: u64,
    /// Pieces being sent now.
    pub uploads_in_progress: u32,
    /// Requests from peers waiting for an upload slot.
    pub queued_requests: u32,
    /// Swarm peers.
    pub peers: Vec<PeerStatus>,
    /// Peers banned from this swarm.
    pub banned: Vec<BannedPeer>,
    /// A failure that stopped the swarm here (for example a full disk), if any.
    pub error: Option<String>,
}

/// A swarm peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its peer id.
    pub peer_id: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it is the origin.
    pub origin: bool,
    /// Pieces it has.
    pub have: u32,
    /// Our requests in flight to it.
    pub in_flight: u32,
    /// Its measured delivery rate.
    pub rate_bytes_per_sec: Option<f64>,
    /// Verified bytes from it.
    pub bytes_down: u64,
    /// Bytes to it.
    pub bytes_up: u64,
}

/// A banned peer and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BannedPeer {
    /// Its peer id.
    pub peer_id: String,
    /// Its address when banned.
    pub addr: SocketAddr,
    /// Why.
    pub reason: String,
}
