//! What a swarm knows about one peer: its pieces, its rate, and what it has cost us.
//!
//! Requests in flight, declined pieces and queued requests live in the swarm's own tables
//! (`tables.rs`), not here: at any time only a few peers have any, and a node with a few dozen
//! neighbours in a simulated fleet of millions cannot afford a collection per peer.

use crate::bitfield::Bitfield;
use std::time::Duration;

/// A peer of one swarm, as the scheduler sees it.
#[derive(Debug)]
pub(super) struct Peer {
    /// Pieces the peer says it has verified.
    pub(super) have: Bitfield,
    /// Whether the peer is the release's origin.
    pub(super) is_origin: bool,
    /// Measured delivery rate, once a piece has arrived.
    pub(super) rate_bytes_per_sec: Option<f64>,
    /// When the last piece from the peer arrived.
    pub(super) last_delivery: Option<Duration>,
    /// Requests that timed out since the last piece arrived.
    pub(super) consecutive_timeouts: u32,
    /// No new requests before this time (the peer said `Busy`).
    pub(super) busy_until: Duration,
    /// Pieces we are sending to the peer now.
    pub(super) sending: u32,
    /// Verified bytes received from the peer.
    pub(super) bytes_down: u64,
    /// Bytes sent to the peer.
    pub(super) bytes_up: u64,
}

impl Peer {
    pub(super) fn new(piece_count: u32, is_origin: bool) -> Self {
        Self {
            have: Bitfield::new(piece_count),
            is_origin,
            rate_bytes_per_sec: None,
            last_delivery: None,
            consecutive_timeouts: 0,
            busy_until: Duration::ZERO,
            sending: 0,
            bytes_down: 0,
            bytes_up: 0,
        }
    }

    /// Folds one delivery into the rate estimate. With several requests in flight, the time a
    /// piece took is counted from the later of its request and the previous delivery, so the
    /// estimate measures the peer's service rate, not the length of our queue at it.
    pub(super) fn record_delivery(
        &mut self,
        len_bytes: u32,
        requested_at: Duration,
        now: Duration,
    ) {
        let start = self
            .last_delivery
            .map_or(requested_at, |last| last.max(requested_at));
        let secs = now.saturating_sub(start).as_secs_f64().max(1e-4);
        let sample = f64::from(len_bytes) / secs;
        self.rate_bytes_per_sec = Some(match self.rate_bytes_per_sec {
            None => sample,
            Some(rate) => 0.75 * rate + 0.25 * sample,
        });
        self.last_delivery = Some(now);
        self.consecutive_timeouts = 0;
    }
}
