//! How long the coordinator's count takes to come back to the truth after churn, over 40 seeds
//! of a 1,000-node network: the churn of the property test
//! `aggregated_counts_never_exceed_their_round_and_equal_the_truth_after_churn` (10% crash, 50
//! nodes join 5 s later, 5% more crash 5 s after that).
//!
//! `cargo run --release -p shoal-sim --example churn_recovery` prints the minimum, median, 90th
//! percentile and maximum simulated seconds from the last crashes until the count equals the
//! survivors and stays equal for the two minutes watched.

#[path = "support/spread.rs"]
mod spread;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use shoal_sim::{Config, Network, NodeId};
use std::time::Duration;

const SEEDS: u64 = 40;
const WATCH: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_millis(500);

fn crash_fraction(net: &mut Network, fraction: f64, seed: u64) {
    let mut ids: Vec<NodeId> = net.alive().filter(|&id| id != 0).collect();
    ids.shuffle(&mut SmallRng::seed_from_u64(seed));
    for &id in &ids[..(ids.len() as f64 * fraction) as usize] {
        net.crash(id);
    }
}

/// Seconds from the last crashes until the count equals the truth from then on.
fn recovery(seed: u64) -> f64 {
    let config = Config {
        seed,
        ..Config::default()
    };
    let mut net = Network::new(config, 1000);
    net.run_for(Duration::from_secs(30));
    crash_fraction(&mut net, 0.1, seed);
    net.run_for(Duration::from_secs(5));
    for _ in 0..50 {
        net.add_node();
    }
    net.run_for(Duration::from_secs(5));
    crash_fraction(&mut net, 0.05, seed ^ 1);
    let truth = net.alive().filter(|&id| id != 0).count() as u32;
    let mut since = None;
    let mut watched = Duration::ZERO;
    while watched < WATCH {
        net.run_for(STEP);
        watched += STEP;
        let equal = net.fleet().is_some_and(|f| f.nodes == truth);
        since = match (equal, since) {
            (true, None) => Some(watched),
            (true, kept) => kept,
            (false, _) => None,
        };
    }
    since.map_or(f64::INFINITY, |d| d.as_secs_f64())
}

fn main() {
    let times: Vec<f64> = (0..SEEDS).map(|s| recovery(s * 7919 + 11)).collect();
    println!(
        "{SEEDS} seeds: the count equals the survivors from {} after the last crashes",
        spread::spread(times)
    );
}
