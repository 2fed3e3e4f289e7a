//! A token bucket: the host-wide upload and download caps.

use std::time::Duration;

/// Bytes per second with a burst allowance, refilled from the time the caller passes in.
///
/// A driver keeps one bucket per direction for the whole host and asks it before moving each
/// chunk of bytes; [`TokenBucket::take`] says how long to wait when the bucket is empty. Tokens
/// may go negative by one chunk, so a chunk larger than the burst still passes, late.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_bytes_per_sec: u64,
    burst_bytes: u64,
    tokens: i128,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket. `now` is the driver's clock (any fixed epoch).
    ///
    /// # Panics
    ///
    /// If `rate_bytes_per_sec` is zero: an unlimited direction has no bucket.
    pub fn new(rate_bytes_per_sec: u64, burst_bytes: u64, now: Duration) -> Self {
        assert!(
            rate_bytes_per_sec > 0,
            "a token bucket needs a positive rate"
        );
        Self {
            rate_bytes_per_sec,
            burst_bytes,
            tokens: i128::from(burst_bytes),
            last: now,
        }
    }

    /// The configured rate.
    pub fn rate_bytes_per_sec(&self) -> u64 {
        self.rate_bytes_per_sec
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        let added = elapsed.as_nanos() * u128::from(self.rate_bytes_per_sec) / 1_000_000_000;
        let added = i128::try_from(added).unwrap_or(i128::MAX);
        self.tokens = self
            .tokens
            .saturating_add(added)
            .min(i128::from(self.burst_bytes));
    }

    /// Takes `bytes` and returns how long the caller must wait before sending them: zero when the
    /// bucket had enough. The bytes are taken either way, so callers must not retry.
    pub fn take(&mut self, bytes: u64, now: Duration) -> Duration {
        self.refill(now);
        self.tokens -= i128::from(bytes);
        if self.tokens >= 0 {
            return Duration::ZERO;
        }
        let deficit = u128::try_from(-self.tokens).unwrap_or(u128::MAX);
        let nanos = deficit * 1_000_000_000 / u128::from(self.rate_bytes_per_sec);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_rate_matches_the_configured_rate() {
        let rate = 12_500_000; // 100 Mbit/s
        let mut bucket = TokenBucket::new(rate, 256 * 1024, Duration::ZERO);
        let mut now = Duration::ZERO;
        let chunk = 64 * 1024;
        let mut sent = 0u64;
        while now < Duration::from_secs(10) {
            now += bucket.take(chunk, now);
            sent += chunk;
        }
        // Ten seconds of rate plus the initial burst, give or take one chunk.
        let expected = rate * 10 + 256 * 1024;
        assert!(
            sent.abs_diff(expected) <= 2 * chunk,
            "sent {sent}, expected {expected}"
        );
    }

    #[test]
    fn burst_passes_without_waiting_then_waits() {
        let mut bucket = TokenBucket::new(1000, 500, Duration::ZERO);
        assert_eq!(bucket.take(500, Duration::ZERO), Duration::ZERO);
        assert_eq!(bucket.take(100, Duration::ZERO), Duration::from_millis(100));
        // Time passing refills, but never past the burst.
        let later = Duration::from_secs(100);
        assert_eq!(bucket.take(500, later), Duration::ZERO);
        assert_eq!(bucket.take(1, later), Duration::from_millis(1));
    }
}
