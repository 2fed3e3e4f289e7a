//! What an overlay reports to its owner.

use bytes::Bytes;
use libp2p_identity::PeerId;
use tokio::sync::oneshot;

/// An event from the overlay to its owner, read from the receiver [`start`](super::start)
/// returns.
///
/// The queue is bounded ([`Config::event_queue`](super::Config::event_queue)): an owner that
/// stops reading stops the readers of inbound streams, which stalls those peers' streams (QUIC
/// flow control), not the rest of the overlay.
#[derive(Debug)]
pub enum Event {
    /// A frame from an inbound control stream of `peer`, after its hello passed `check_hello`.
    /// Frames of one stream arrive in the order the peer sent them.
    Frame {
        /// The authenticated peer that sent the frame.
        peer: PeerId,
        /// The frame, exactly as the peer queued it.
        frame: Bytes,
    },
    /// An admission request from `peer`, which need not have passed `check_hello`: this is the
    /// one protocol unadmitted peers may use.
    Request {
        /// The authenticated peer that asks.
        peer: PeerId,
        /// The request.
        body: Bytes,
        /// Where the answer goes. Dropping it closes the stream unanswered; an answer later than
        /// [`Config::reply_timeout`](super::Config::reply_timeout) or longer than
        /// [`Config::max_frame_bytes`](super::Config::max_frame_bytes) is not delivered.
        reply: oneshot::Sender<Bytes>,
    },
    /// The link to `peer` is down: its last connection closed, a dial to it failed, or our
    /// control stream to it broke. Frames still queued for it are lost; the next
    /// [`Overlay::send`](super::Overlay::send) dials again.
    ///
    /// Reported at most once per peer until it is delivered, but it may be reported again
    /// (a broken stream followed by the closed connection), and for peers the owner never
    /// linked with (a failed admission dial): treat it as idempotent. Frames the peer's streams
    /// delivered before the link went down may still follow it.
    Disconnected {
        /// The peer.
        peer: PeerId,
    },
}
