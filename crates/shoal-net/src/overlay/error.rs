//! Errors of the overlay's handle.

use libp2p_identity::PeerId;
use std::net::SocketAddr;
use std::time::Duration;

/// Why [`Overlay::send`](super::Overlay::send) did not queue a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer's queue holds [`Config::peer_queue_frames`](super::Config::peer_queue_frames)
    /// frames already; this one was dropped (and counted in
    /// [`Stats::frames_dropped`](super::Stats::frames_dropped)).
    #[error("queue for peer {peer} is full; frame dropped")]
    QueueFull {
        /// The peer.
        peer: PeerId,
    },
    /// The frame is longer than [`Config::max_frame_bytes`](super::Config::max_frame_bytes);
    /// a peer with the same configuration would cut the link on it.
    #[error("frame of {len} bytes exceeds the overlay limit of {max_bytes} bytes")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The overlay was shut down.
    #[error("overlay is shut down")]
    Closed,
}

/// Why [`Overlay::request`](super::Overlay::request) got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The overlay was shut down.
    #[error("overlay is shut down")]
    Closed,
    /// The request is longer than [`Config::max_frame_bytes`](super::Config::max_frame_bytes).
    #[error("request of {len} bytes exceeds the overlay limit of {max_bytes} bytes")]
    TooLarge {
        /// The request's length.
        len: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// No connection to `addr` (nobody answered, or not the expected peer).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// What libp2p reported.
        reason: String,
    },
    /// The peer did not accept an admission stream.
    #[error("peer {peer} at {addr} refused the admission stream: {reason}")]
    Open {
        /// The peer.
        peer: PeerId,
        /// Its address.
        addr: SocketAddr,
        /// What libp2p reported.
        reason: String,
    },
    /// The stream failed, or the answer was longer than the frame limit.
    #[error("admission exchange with {peer} failed: {reason}")]
    Stream {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: String,
    },
    /// The peer closed the stream without answering (its owner dropped the request).
    #[error("peer {peer} closed the admission stream without an answer")]
    NoAnswer {
        /// The peer.
        peer: PeerId,
    },
    /// The whole exchange took longer than the caller allowed.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// The address dialled.
        addr: SocketAddr,
        /// The caller's limit.
        timeout: Duration,
    },
}
