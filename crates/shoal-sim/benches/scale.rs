//! How far the control-plane harness scales: memory per node and simulated events per second.
//!
//! `cargo bench -p shoal-sim --bench scale` runs 10,000 and 100,000 nodes (override with
//! `SHOAL_SIM_NODES=10000,100000`) through 60 simulated seconds of joining and idling, with the
//! source broadcasting heartbeats, then 10 idle seconds more, and prints the resident memory the
//! nodes added, the event rate, the most events queued at once, and what idling costs a node a
//! second (timer wake-ups and messages by kind). Under `cargo test` it runs 2,000 nodes for 40 seconds as a smoke test.

#[path = "support/sizes.rs"]
mod sizes;

use shoal_sim::{Config, Network};
use std::time::{Duration, Instant};

/// The idle window measured after the join storm has settled.
const IDLE: Duration = Duration::from_secs(10);

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
        "nodes    simulated  events      events/s   messages    queue peak  RSS added  bytes/node  nodes/GB  reach"
    );
    let mut idle = Vec::new();
    for nodes in sizes {
        let before = rss_bytes();
        let started = Instant::now();
        let mut net = Network::new(Config::default(), nodes);
        net.run_for(span);
        let settled = net.stats().clone();
        net.run_for(IDLE);
        idle.push((nodes, settled, net.stats().clone()));
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
            "{nodes:<8} {:>7.0} s  {:<10}  {:>9.0}  {:<10}  {:<10}  {:>6.0} MB  {:>10.0}  {:>8.0}  {reached}/{total}",
            (span + IDLE + Duration::from_secs(5)).as_secs_f64(),
            stats.events,
            stats.events as f64 / wall,
            stats.messages,
            stats.queue_peak,
            added as f64 / 1e6,
            per_node,
            1e9 / per_node.max(1.0),
        );
    }
    println!();
    println!(
        "idle, per node and simulated second, over {} s after settling:",
        IDLE.as_secs()
    );
    for (nodes, before, after) in idle {
        let rate = |a: u64, b: u64| (b - a) as f64 / IDLE.as_secs_f64() / f64::from(nodes);
        let kinds: Vec<String> = after
            .sent_by_kind
            .iter()
            .map(|(kind, n)| {
                (
                    kind,
                    rate(before.sent_by_kind.get(kind).copied().unwrap_or(0), *n),
                )
            })
            .filter(|(_, r)| *r >= 0.005)
            .map(|(kind, r)| format!("{kind} {r:.2}"))
            .collect();
        println!(
            "{nodes:<8} events {:.2}: timer wake-ups {:.2}, messages {:.2} ({})",
            rate(before.events, after.events),
            rate(before.timers, after.timers),
            rate(before.messages, after.messages),
            kinds.join(", ")
        );
    }
}
