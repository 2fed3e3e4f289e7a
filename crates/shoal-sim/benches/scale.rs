//! How far the control-plane harness scales: memory per node and simulated events per second.
//!
//! `cargo bench -p shoal-sim --bench scale` runs 10,000 and 100,000 nodes (override with
//! `SHOAL_SIM_NODES=10000,100000`) through 60 simulated seconds of joining and idling, with the
//! source broadcasting heartbeats, then prints the resident memory the nodes added and the event
//! rate. Under `cargo test` it runs 2,000 nodes for 40 seconds as a smoke test.

#[path = "support/sizes.rs"]
mod sizes;

use shoal_sim::{Config, Network};
use std::time::{Duration, Instant};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let bench = sizes::is_bench();
    let sizes = sizes::sizes(&[10_000, 100_000], &[2_000]);
    // Long enough for the join storm to settle: a group of nodes that formed apart from the
    // source notices after `stale_after` (15 s) and joins again through a seed.
    let span = if bench {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(40)
    };
    println!(
        "nodes    simulated  events      events/s   messages    RSS added  bytes/node  nodes/GB  reach"
    );
    for nodes in sizes {
        let before = rss_bytes();
        let started = Instant::now();
        let mut net = Network::new(Config::default(), nodes);
        net.run_for(span);
        let seq = net.broadcast(false);
        net.run_for(Duration::from_secs(5));
        let wall = started.elapsed().as_secs_f64();
        let added = rss_bytes().saturating_sub(before);
        let (reached, total) = net.reach(seq);
        let stats = net.stats();
        assert_eq!(
            reached, total,
            "the broadcast after settling reaches every node"
        );
        let per_node = added as f64 / f64::from(nodes);
        println!(
            "{nodes:<8} {:>7.0} s  {:<10}  {:>9.0}  {:<10}  {:>6.0} MB  {:>10.0}  {:>8.0}  {reached}/{total}",
            (span + Duration::from_secs(5)).as_secs_f64(),
            stats.events,
            stats.events as f64 / wall,
            stats.messages,
            added as f64 / 1e6,
            per_node,
            1e9 / per_node.max(1.0),
        );
    }
}
