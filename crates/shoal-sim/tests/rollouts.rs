//! Rollouts over the simulated control plane: the real conductor at the source and the real
//! rollout agent on every node, directives by broadcast and counts by the health tree.

use shoal_core::rollout::Plan;
use shoal_sim::rollouts::release;
use shoal_sim::{Config, Model, Network};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const NODES: u32 = 600;
const STEP: Duration = Duration::from_millis(250);
const LIMIT: Duration = Duration::from_secs(900);

const PLAN: &str = r#"
one_region_at_a_time = true
fault_domain_by_fault_domain = true
max_parallel_fault_domains = 1
label_region = "region"
label_fault_domain = "fd"

[[stage]]
name = "canary"
size = "1"
bake_secs = 0
success = "100%"
failure_threshold = "1"
deadline_secs = 120
on_failure = "rollback"

[[stage]]
name = "pilot"
size = "20%"
bake_secs = 0
success = "100%"
failure_threshold = "1"
deadline_secs = 120
on_failure = "rollback"

[[stage]]
name = "broad"
size = "100%"
bake_secs = 0
success = "100%"
failure_threshold = "1"
deadline_secs = 120
on_failure = "rollback"
"#;

fn network(seed: u64, bad: bool) -> Network {
    network_after(seed, bad, Duration::from_secs(40))
}

/// The network of [`network`], run for `warmup` before the rollout.
fn network_after(seed: u64, bad: bool, warmup: Duration) -> Network {
    let config = Config {
        seed,
        ..Config::default()
    };
    let mut net = Network::new(config, NODES);
    let v2 = release("2.0", 2);
    net.enable_rollouts(Model {
        distributed: vec![v2.clone()],
        bad: if bad {
            BTreeSet::from([v2.root])
        } else {
            BTreeSet::new()
        },
        ..Model::quick("web", release("1.0", 1))
    });
    net.run_for(warmup);
    net
}

/// Runs until rollout `id` leaves `running`, calling `sample` every step; its final state.
fn run_rollout(net: &mut Network, id: u64, mut sample: impl FnMut(&Network)) -> String {
    let until = net.now() + LIMIT;
    while net.now() < until {
        net.run_for(STEP);
        sample(net);
        let state = net.rollout_status(id).expect("the rollout exists").state;
        if state != "running" {
            return state;
        }
    }
    panic!("rollout {id} still running after {LIMIT:?}");
}

/// The regions (by place) with a node whose service is not settled.
fn activating_regions(net: &Network) -> BTreeSet<u32> {
    net.alive()
        .filter(|&id| id != 0)
        .filter(|&id| net.service(id).is_some_and(|(_, steady)| !steady))
        .filter_map(|id| net.node(id).map(|n| n.me().place.region))
        .collect()
}

#[test]
fn a_good_release_goes_region_by_region_to_every_node() {
    for seed in [3, 4] {
        let mut net = network(seed, false);
        let id = net
            .start_rollout(Plan::from_toml(PLAN).expect("plan"), release("2.0", 2))
            .expect("starts");
        let mut seen_regions: BTreeMap<u32, usize> = BTreeMap::new();
        let state = run_rollout(&mut net, id, |net| {
            let regions = activating_regions(net);
            assert!(
                regions.len() <= 1,
                "seed {seed}: regions {regions:?} activating at once"
            );
            for r in regions {
                *seen_regions.entry(r).or_default() += 1;
            }
        });
        assert_eq!(
            state,
            "completed",
            "seed {seed}: {:#?}",
            net.rollout_records()
        );
        for node in net.alive().filter(|&id| id != 0) {
            let (running, steady) = net.service(node).expect("every node runs");
            assert_eq!(running.version, "2.0", "seed {seed}: node {node}");
            assert!(steady, "seed {seed}: node {node} still activating");
        }
        assert_eq!(net.rollout_stats().activated_nodes, NODES - 1);
        assert_eq!(
            seen_regions.len(),
            3,
            "seed {seed}: every region was seen activating"
        );
        let status = net.rollout_status(id).expect("status");
        assert_eq!(status.waves[0].expected, 1, "the canary is one node");
        assert!(
            status.waves.iter().all(|w| w.cells.len() == 1),
            "one fault domain per wave"
        );
    }
}

#[test]
fn a_bad_release_is_stopped_at_the_canary_and_rolled_back() {
    let mut net = network(5, true);
    let id = net
        .start_rollout(Plan::from_toml(PLAN).expect("plan"), release("2.0", 2))
        .expect("starts");
    let state = run_rollout(&mut net, id, |_| {});
    assert_eq!(state, "rolled_back", "{:#?}", net.rollout_records());
    assert_eq!(
        net.rollout_stats().activated_nodes,
        1,
        "a node outside the canary activated the bad release"
    );
    // The canary goes back, checks the previous release and settles on it.
    net.run_for(Duration::from_secs(30));
    for node in net.alive().filter(|&id| id != 0) {
        let (running, steady) = net.service(node).expect("every node runs");
        assert_eq!(running.version, "1.0", "node {node}");
        assert!(steady, "node {node} still activating");
    }
}

#[test]
fn a_rollout_started_during_the_join_storm_counts_every_node() {
    for seed in [6, 7] {
        let mut net = network_after(seed, false, Duration::from_secs(1));
        let id = net
            .start_rollout(Plan::from_toml(PLAN).expect("plan"), release("2.0", 2))
            .expect("starts");
        let state = run_rollout(&mut net, id, |_| {});
        assert_eq!(
            state,
            "completed",
            "seed {seed}: {:#?}",
            net.rollout_records()
        );
        let status = net.rollout_status(id).expect("status");
        let assigned: u32 = status.waves.iter().map(|w| w.assigned).sum();
        assert_eq!(
            assigned,
            NODES - 1,
            "seed {seed}: the assignment found every node: {:#?}",
            net.rollout_records()
        );
        assert_eq!(
            status.waves[0].expected, 1,
            "seed {seed}: the canary is one node"
        );
        assert_eq!(net.rollout_stats().activated_nodes, NODES - 1);
    }
}
