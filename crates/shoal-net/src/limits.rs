//! Host-wide bandwidth caps: one token bucket per direction, shared by every connection.

use shoal_core::swarm::TokenBucket;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Burst allowance of each bucket: a few chunks, so a cap holds over tens of milliseconds.
pub const BURST_BYTES: u64 = 256 * 1024;

/// The upload and download caps of one process.
#[derive(Debug)]
pub struct Limits {
    epoch: Instant,
    up: Option<Mutex<TokenBucket>>,
    down: Option<Mutex<TokenBucket>>,
}

impl Limits {
    /// Caps in bytes per second; `None` is unlimited.
    pub fn new(up_bytes_per_sec: Option<u64>, down_bytes_per_sec: Option<u64>) -> Self {
        let epoch = Instant::now();
        let bucket = |rate: Option<u64>| {
            rate.filter(|&r| r > 0)
                .map(|r| Mutex::new(TokenBucket::new(r, BURST_BYTES, Duration::ZERO)))
        };
        Self {
            epoch,
            up: bucket(up_bytes_per_sec),
            down: bucket(down_bytes_per_sec),
        }
    }

    /// Waits until `bytes` may be sent.
    pub async fn upload(&self, bytes: usize) {
        Self::take(&self.up, self.epoch, bytes).await;
    }

    /// Waits until `bytes` may be received.
    pub async fn download(&self, bytes: usize) {
        Self::take(&self.down, self.epoch, bytes).await;
    }

    async fn take(bucket: &Option<Mutex<TokenBucket>>, epoch: Instant, bytes: usize) {
        let Some(bucket) = bucket else { return };
        let wait = {
            let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
            bucket.take(bytes as u64, epoch.elapsed())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
