//! Properties of the control plane, checked on thousands of simulated nodes running the real core.
//!
//! Each property runs over a few seeds chosen by proptest; a failure prints the seed, and the same
//! seed replays the same run.

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use shoal_sim::{Config, Network, NodeId};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

fn network(nodes: u32, seed: u64) -> Network {
    let config = Config {
        seed,
        ..Config::default()
    };
    let mut net = Network::new(config, nodes);
    net.run_for(SETTLE);
    net
}

/// Crashes `fraction` of the nodes other than the source, chosen at random.
fn crash_fraction(net: &mut Network, fraction: f64, seed: u64) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = net.alive().filter(|&id| id != 0).collect();
    ids.shuffle(&mut SmallRng::seed_from_u64(seed));
    let victims: Vec<NodeId> = ids[..(ids.len() as f64 * fraction) as usize].to_vec();
    for &id in &victims {
        net.crash(id);
    }
    victims
}

fn broadcast_and_wait(net: &mut Network) -> (usize, usize) {
    broadcast_and_wait_keep(net, false)
}

fn broadcast_and_wait_keep(net: &mut Network, keep: bool) -> (usize, usize) {
    let seq = net.broadcast(keep);
    net.run_for(Duration::from_secs(5));
    net.reach(seq)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn without_failures_every_broadcast_reaches_every_node(seed in any::<u64>(), nodes in 1000u32..2000) {
        let mut net = network(nodes, seed);
        // Views fill through shuffles and neighbour requests after the join storm.
        net.run_for(SETTLE);
        prop_assert_eq!(net.components(), 1);
        let capacity = Config::default().control.active_view_capacity;
        for id in net.alive() {
            let active = net.node(id).unwrap().active().len();
            prop_assert!(active >= capacity, "node {id} has {active} neighbours");
        }
        for keep in [true, false, false] {
            let (reached, total) = broadcast_and_wait_keep(&mut net, keep);
            prop_assert_eq!(reached, total, "seed {}", seed);
        }
    }

    #[test]
    fn every_view_of_a_small_mesh_fills(seed in any::<u64>(), nodes in 8u32..40) {
        // Few nodes, so most are one over capacity: a short node must still find a place.
        let mut net = network(nodes, seed);
        net.run_for(SETTLE);
        let capacity = Config::default().control.active_view_capacity;
        for id in net.alive() {
            let active = net.node(id).unwrap().active().len();
            prop_assert!(active >= capacity, "node {id} of {nodes} has {active} neighbours, seed {seed}");
        }
    }

    #[test]
    fn after_half_the_nodes_crash_the_next_broadcast_reaches_every_survivor(seed in any::<u64>()) {
        let mut net = network(2000, seed);
        crash_fraction(&mut net, 0.5, seed);
        net.run_for(Duration::from_secs(20));
        let (reached, total) = broadcast_and_wait(&mut net);
        prop_assert_eq!(reached, total, "seed {}", seed);
    }

    #[test]
    fn after_80_percent_crash_the_next_broadcast_reaches_995_permille(seed in any::<u64>()) {
        let mut net = network(2000, seed);
        crash_fraction(&mut net, 0.8, seed);
        net.run_for(Duration::from_secs(20));
        let (reached, total) = broadcast_and_wait(&mut net);
        prop_assert!(reached * 1000 >= total * 995, "{reached} of {total}, seed {seed}");
    }

    #[test]
    fn a_healed_partition_becomes_one_overlay_and_broadcasts_cross_it(seed in any::<u64>()) {
        let mut net = network(1000, seed);
        net.partition(|id| (id % 2) as u8);
        net.run_for(Duration::from_secs(30));
        let (reached, total) = broadcast_and_wait(&mut net);
        prop_assert!(reached < total, "the partition holds: {reached} of {total}");
        net.heal();
        net.run_for(Duration::from_secs(40));
        prop_assert_eq!(net.components(), 1, "seed {}", seed);
        let (reached, total) = broadcast_and_wait(&mut net);
        prop_assert_eq!(reached, total, "seed {}", seed);
    }

    #[test]
    fn aggregated_counts_equal_the_truth_after_churn(seed in any::<u64>()) {
        let mut net = network(1000, seed);
        crash_fraction(&mut net, 0.1, seed);
        net.run_for(Duration::from_secs(5));
        for _ in 0..50 {
            net.add_node();
        }
        net.run_for(Duration::from_secs(5));
        crash_fraction(&mut net, 0.05, seed ^ 1);
        // Detection, view repair, tree repair and reports climbing the tree's depth.
        net.run_for(Duration::from_secs(60));
        let truth = net.alive().filter(|&id| id != 0).count() as u32;
        let fleet = net.fleet().unwrap();
        prop_assert_eq!(fleet.nodes, truth, "seed {}", seed);
        prop_assert_eq!(fleet.states[1], truth);
    }
}
