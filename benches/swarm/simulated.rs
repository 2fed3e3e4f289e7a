//! The same run in `shoal-sim`'s data plane (the real swarm scheduler over max-min fair flows),
//! next to the real one: the simulator's agreement with reality, as ratios.

use crate::systems::{Bench, SystemRun};
use shoal_core::content::PieceLayout;
use shoal_sim::dataplane::{DataConfig, DataPlane};
use std::time::Duration;

/// Piece bytes a link capped by `tc tbf` carries per byte it counts. tbf counts whole Ethernet
/// frames; a full QUIC datagram on a 1500-byte MTU is a 1514-byte frame (14 Ethernet, 20 IPv4,
/// 8 UDP) whose 1472-byte UDP payload holds about 35 bytes of QUIC (a short header with an
/// 8-byte connection id and a 2-byte packet number, a STREAM frame header, the 16-byte AEAD
/// tag), so 1437 of the 1514 bytes are the piece's. The simulator's caps carry piece bytes
/// only; the comparison gives it the real link's piece rate. Acknowledgements and
/// retransmissions are left out.
pub const PIECE_BYTES_PER_WIRE_BYTE: f64 = 1437.0 / 1514.0;

/// What the simulated run gave next to the real one.
pub struct Agreement {
    /// The line the benchmark prints.
    pub line: String,
    /// Real over simulated, last completion.
    pub last_ratio: f64,
}

/// The simulated p50 and last completion, and real over simulated for each.
pub fn compare(bench: &Bench<'_>, real: &SystemRun) -> anyhow::Result<Agreement> {
    let config = bench.config;
    let layout = PieceLayout::new(config.payload_bytes, config.piece_bytes())?;
    let rate = config.rate.bits_per_sec as f64 / 8.0 * PIECE_BYTES_PER_WIRE_BYTE;
    let plane = DataPlane::new(DataConfig {
        limit: Duration::from_secs(86_400),
        ..DataConfig::uniform(config.hosts as u32, layout, rate)
    });
    let outcome = plane.run(|_, _| {});
    let mut sim: Vec<f64> = outcome.completed_at[1..]
        .iter()
        .map(|t| t.map_or(f64::INFINITY, |t| t.as_secs_f64()))
        .collect();
    sim.sort_by(f64::total_cmp);
    let mut got = real.completion_secs.clone();
    got.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[(v.len() - 1) / 2];
    let last = |v: &[f64]| v[v.len() - 1];
    let last_ratio = last(&got) / last(&sim);
    Ok(Agreement {
        line: format!(
            "simulated (shoal-sim data plane, same hosts and payload, the caps' piece rate {:.1}% of \
             the frames tbf counts): p50 {:.2} s, max {:.2} s, origin {:.2} copies; real / \
             simulated: p50 {:.2}, max {last_ratio:.2}",
            PIECE_BYTES_PER_WIRE_BYTE * 100.0,
            median(&sim),
            last(&sim),
            outcome.origin_bytes as f64 / config.payload_bytes as f64,
            median(&got) / median(&sim),
        ),
        last_ratio,
    })
}
