//! The Kumar-Ross lower bound: the least time in which one origin can give every receiver a
//! payload when each node's upload and download are capped (Kumar and Ross, "Peer-assisted file
//! distribution: the minimum distribution time", 2006).

/// The bound in seconds for `receivers` nodes to get `bytes` from one origin, every node with
/// upload `upload` and download `download` bytes per second: the origin must send every byte
/// once, the slowest receiver must take them all, and all the uploads together must carry one
/// copy per receiver. With one upload cap for every node the third never exceeds the first; it
/// stays so the formula reads as the paper's.
pub fn kumar_ross_secs(bytes: u64, receivers: u32, upload: f64, download: f64) -> f64 {
    let f = bytes as f64;
    let n = f64::from(receivers);
    let by_origin = f / upload;
    let by_download = f / download;
    let by_total_upload = n * f / (upload * (n + 1.0));
    by_origin.max(by_download).max(by_total_upload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_of_the_three_limits_wins() {
        // 100 bytes at 10 B/s: the origin alone needs 10 s.
        assert_eq!(kumar_ross_secs(100, 3, 10.0, 10.0), 10.0);
        // A slow download dominates.
        assert_eq!(kumar_ross_secs(100, 3, 10.0, 5.0), 20.0);
    }
}
