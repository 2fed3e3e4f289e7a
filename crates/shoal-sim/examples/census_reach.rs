//! Whether a census started during the join storm reaches every node: the control plane of
//! `simulations/fleet-3m.toml` (3 regions of 4 fault domains of 8 racks, seed 1), every node
//! starting at once, the plan `simulations/plans/canary-pilot-broad.toml` started at 30 s.
//!
//! `cargo run --release -p shoal-sim --example census_reach [NODES]` (default 10,000) prints,
//! at 89 s (just before the census's 60 s timeout), how many nodes never delivered each
//! envelope the source broadcast from 30 s on, how many nodes the coordinator counts in the
//! rollout against the fleet, and the conductor's records. The envelopes sent while the overlay
//! was still merging stay missing in some nodes (the broadcast's repair does not reach them);
//! the census's resends (`conductor::Config::census_resend`) reach them.

use shoal_core::activation::Policy;
use shoal_core::rollout::Plan;
use shoal_sim::rollouts::release;
use shoal_sim::{Config, Model, Network};
use std::collections::BTreeSet;
use std::time::Duration;

const PLAN: &str = include_str!("../../../simulations/plans/canary-pilot-broad.toml");

fn main() {
    let nodes: u32 = std::env::args()
        .nth(1)
        .map_or(10_000, |n| n.parse().expect("NODES is a number"));
    let config = Config {
        seed: 1,
        regions: 3,
        fault_domains: 4,
        racks: 8,
        ..Config::default()
    };
    let mut net = Network::new(config, nodes);
    let new = release("2.0", 2);
    net.enable_rollouts(Model {
        service: "app".into(),
        running: release("1.0", 1),
        distributed: Vec::new(),
        announced: vec![new.root],
        bad: BTreeSet::new(),
        bad_nodes: None,
        bad_from: Duration::ZERO,
        prepare: Duration::from_secs(1),
        switch: Duration::from_secs(2),
        check: Duration::from_secs(1),
        policy: Policy {
            grace: Duration::from_secs(5),
            passes: 3,
            interval: Duration::from_secs(1),
        },
    });
    net.run_until(Duration::from_secs(30));
    let first = net.node(0).expect("the source runs").latest() + 1;
    let id = net
        .start_rollout(Plan::from_toml(PLAN).expect("the plan parses"), new)
        .expect("the rollout starts");
    net.run_until(Duration::from_secs(89));
    let latest = net.node(0).expect("the source runs").latest();
    println!("{nodes} nodes at 89 s; envelopes {first}..={latest} broadcast from 30 s on:");
    for seq in first..=latest {
        let missing = net
            .alive()
            .filter(|&n| net.node(n).is_some_and(|node| !node.has_delivered(seq)))
            .count();
        println!("  envelope {seq}: {missing} nodes never delivered it");
    }
    let fleet = net.fleet().expect("the source runs");
    let counted = fleet
        .rollouts
        .iter()
        .find(|r| r.rollout == id)
        .map_or(0, |r| r.nodes);
    println!(
        "the coordinator counts {counted} nodes in the rollout of {} in the fleet",
        fleet.nodes
    );
    for record in net.rollout_records() {
        println!("  {}", record.event);
    }
}
