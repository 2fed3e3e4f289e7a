//! What a swarm knows about one peer: its pieces, its rate, and what it has cost us.
//!
//! Requests in flight, declined pieces and queued requests live in the swarm's own tables
//! (`tables.rs`), not here: at any time only a few peers have any, and a node with a few dozen
//! neighbours in a simulated fleet of millions cannot afford a collection per peer.

use crate::bitfield::Bitfield;
use std::time::Duration;

/// A peer of one swarm, as the scheduler sees it.
///
/// Times are kept as nanoseconds and the rate without an `Option`: a node of a simulated fleet
/// keeps a few dozen of these, so each field's width counts (80 bytes instead of 112).
#[derive(Debug)]
pub(super) struct Peer {
    /// Pieces the peer says it has verified.
    pub(super) have: Bitfield,
    /// Verified bytes received from the peer.
    pub(super) bytes_down: u64,
    /// Bytes sent to the peer.
    pub(super) bytes_up: u64,
    /// Measured delivery rate in bytes a second, 0 until a piece has arrived: a measured rate is
    /// always above 0 (see [`Peer::rate_bytes_per_sec`]).
    rate: f64,
    /// When the last piece from the peer arrived, in nanoseconds; [`NEVER`] until one has.
    last_delivery_nanos: u64,
    /// No new requests before this time, in nanoseconds (the peer said `Busy`).
    busy_until_nanos: u64,
    /// Requests that timed out since the last piece arrived.
    pub(super) consecutive_timeouts: u32,
    /// Pieces we are sending to the peer now.
    pub(super) sending: u32,
    /// Whether the peer is the release's origin.
    pub(super) is_origin: bool,
}

/// `last_delivery_nanos` before any delivery.
const NEVER: u64 = u64::MAX;

/// A time as nanoseconds (saturating, 584 years past the start).
fn nanos(t: Duration) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(NEVER - 1)
}

impl Peer {
    pub(super) fn new(piece_count: u32, is_origin: bool) -> Self {
        Self {
            have: Bitfield::new(piece_count),
            bytes_down: 0,
            bytes_up: 0,
            rate: 0.0,
            last_delivery_nanos: NEVER,
            busy_until_nanos: 0,
            consecutive_timeouts: 0,
            sending: 0,
            is_origin,
        }
    }

    /// Measured delivery rate, once a piece has arrived.
    pub(super) fn rate_bytes_per_sec(&self) -> Option<f64> {
        (self.rate > 0.0).then_some(self.rate)
    }

    /// When the last piece from the peer arrived.
    pub(super) fn last_delivery(&self) -> Option<Duration> {
        (self.last_delivery_nanos != NEVER).then(|| Duration::from_nanos(self.last_delivery_nanos))
    }

    /// No new requests before this time (the peer said `Busy`).
    pub(super) fn busy_until(&self) -> Duration {
        Duration::from_nanos(self.busy_until_nanos)
    }

    /// The peer said `Busy`: no new requests before `until`.
    pub(super) fn set_busy_until(&mut self, until: Duration) {
        self.busy_until_nanos = nanos(until);
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
            .last_delivery()
            .map_or(requested_at, |last| last.max(requested_at));
        let secs = now.saturating_sub(start).as_secs_f64().max(1e-4);
        let sample = f64::from(len_bytes) / secs;
        self.rate = match self.rate_bytes_per_sec() {
            None => sample,
            Some(rate) => 0.75 * rate + 0.25 * sample,
        };
        self.last_delivery_nanos = nanos(now);
        self.consecutive_timeouts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_unmeasured_until_a_piece_arrives_and_keeps_its_times_exactly() {
        let mut peer = Peer::new(150, false);
        assert_eq!(
            (peer.rate_bytes_per_sec(), peer.last_delivery()),
            (None, None)
        );
        assert_eq!(peer.busy_until(), Duration::ZERO);
        let at = Duration::new(3, 123_456_789);
        peer.set_busy_until(at);
        assert_eq!(peer.busy_until(), at);
        peer.record_delivery(1 << 20, Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(peer.rate_bytes_per_sec(), Some(f64::from(1 << 20)));
        assert_eq!(peer.last_delivery(), Some(Duration::from_secs(2)));
        // A delivery at time zero is a delivery, not "never".
        let mut first = Peer::new(1, false);
        first.record_delivery(1, Duration::ZERO, Duration::ZERO);
        assert_eq!(first.last_delivery(), Some(Duration::ZERO));
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_peer_entry_takes_80_bytes() {
        // `run::bytes_per_node` in shoal-sim counts on it for a fleet's memory estimate.
        assert_eq!(std::mem::size_of::<Peer>(), 80);
    }
}
