//! What the coordinator (the broadcast source) receives per second as the fleet grows: health
//! reports and everything else, at idle and while every node's rollout report changes as a wave
//! would make it.
//!
//! `cargo bench -p shoal-sim --bench coordinator` runs 1,000, 10,000 and 100,000 nodes (override
//! with `SHOAL_SIM_NODES=1000,10000`): 40 simulated seconds to join and settle, 20 s at idle,
//! then 20 s in which every node changes its report for a rollout once, at a random moment of
//! the first 10 s (as nodes of a wave turn healthy), then settles. It prints the messages the
//! source received per simulated second in each window and checks that its count of the changed
//! reports equals the fleet. Under `cargo test` it runs 1,000 nodes as a smoke test.

#[path = "support/sizes.rs"]
mod sizes;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_core::control::{Status, Summary};
use shoal_core::rollout::RolloutReport;
use shoal_sim::{Config, Network};
use std::time::{Duration, Instant};

/// A node's summary with its report for rollout 1, `changed` or not yet.
fn with_report(changed: bool) -> Summary {
    let mut summary = Summary::node(Status::Healthy, []);
    let mut report = RolloutReport::new(1, 1);
    report.nodes = 1;
    if changed {
        report.excluded = 1;
    } else {
        report.unassigned = 1;
    }
    summary.add_rollout(&report);
    summary
}

/// Messages (all, health) the source received over `span`, per simulated second.
fn window(net: &mut Network, span: Duration) -> (f64, f64) {
    let (all, health) = (net.stats().source_received, net.stats().source_health);
    net.run_for(span);
    let secs = span.as_secs_f64();
    (
        (net.stats().source_received - all) as f64 / secs,
        (net.stats().source_health - health) as f64 / secs,
    )
}

fn main() {
    let sizes = sizes::sizes(&[1_000, 10_000, 100_000], &[1_000]);
    println!("nodes    idle msgs/s  idle health/s  wave msgs/s  wave health/s  counted  wall s");
    for nodes in sizes {
        let started = Instant::now();
        let mut net = Network::new(Config::default(), nodes);
        net.run_for(Duration::from_secs(40));
        for id in net.alive().filter(|&id| id != 0).collect::<Vec<_>>() {
            net.set_own_summary_at(id, net.now(), with_report(false));
        }
        net.run_for(Duration::from_secs(10));
        let (idle, idle_health) = window(&mut net, Duration::from_secs(20));
        let mut rng = SmallRng::seed_from_u64(u64::from(nodes));
        let now = net.now();
        for id in net.alive().filter(|&id| id != 0).collect::<Vec<_>>() {
            let at = now + Duration::from_millis(rng.random_range(0..10_000));
            net.set_own_summary_at(id, at, with_report(true));
        }
        let (wave, wave_health) = window(&mut net, Duration::from_secs(20));
        let fleet = net.fleet().expect("the source runs");
        let counted = fleet.rollouts.first().map_or(0, |r| r.excluded);
        println!(
            "{nodes:<8} {idle:>11.1}  {idle_health:>13.1}  {wave:>11.1}  {wave_health:>13.1}  {counted:>7}  {:>6.1}",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            counted,
            nodes - 1,
            "the source counts every node's changed report once"
        );
    }
}
