//! How long the coordinator takes to count the whole fleet again after all its neighbours die
//! at once, over 40 seeds of a 1,000-node network.
//!
//! `cargo run --release -p shoal-sim --example blind_recovery` prints the minimum, median, 90th
//! percentile and maximum simulated seconds from the deaths until the coordinator's count equals
//! the survivors.

#[path = "support/spread.rs"]
mod spread;

use shoal_sim::{Config, Network, NodeId};
use std::time::Duration;

const SEEDS: u64 = 40;

fn main() {
    let mut times = Vec::new();
    for seed in 0..SEEDS {
        let config = Config {
            seed: seed * 7919 + 3,
            ..Config::default()
        };
        let mut net = Network::new(config, 1000);
        net.run_for(Duration::from_secs(30));
        let neighbours: Vec<NodeId> = net
            .node(0)
            .expect("the source runs")
            .active()
            .iter()
            .map(|n| n.entry.peer)
            .collect();
        for &id in &neighbours {
            net.crash(id);
        }
        let truth = 999 - neighbours.len() as u32;
        let died = net.now();
        let mut recovered = None;
        net.run_for_checking(Duration::from_secs(30), |n| {
            if recovered.is_none() && n.fleet().is_some_and(|f| f.nodes == truth) {
                recovered = Some(n.now() - died);
            }
        });
        let secs = recovered.map_or(f64::INFINITY, |d| d.as_secs_f64());
        times.push(secs);
    }
    println!("{SEEDS} seeds: recovered after {}", spread::spread(times));
}
