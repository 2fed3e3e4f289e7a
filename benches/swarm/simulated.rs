//! The same run in `shoal-sim`'s data plane (the real swarm scheduler over max-min fair flows),
//! next to the real one: the simulator's agreement with reality, as ratios.

use crate::systems::{Bench, SystemRun};
use shoal_core::content::PieceLayout;
use shoal_sim::dataplane::{DataConfig, DataPlane};
use std::time::Duration;

/// One line: the simulated p50 and last completion, and real over simulated for each.
pub fn compare(bench: &Bench<'_>, real: &SystemRun) -> anyhow::Result<String> {
    let config = bench.config;
    let layout = PieceLayout::new(config.payload_bytes, config.piece_bytes())?;
    let rate = config.rate.bits_per_sec as f64 / 8.0;
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
    Ok(format!(
        "simulated (shoal-sim data plane, same hosts, caps, payload and pieces): p50 {:.2} s, max {:.2} s, origin {:.2} copies; real / simulated: p50 {:.2}, max {:.2}",
        median(&sim),
        last(&sim),
        outcome.origin_bytes as f64 / config.payload_bytes as f64,
        median(&got) / median(&sim),
        last(&got) / last(&sim),
    ))
}
