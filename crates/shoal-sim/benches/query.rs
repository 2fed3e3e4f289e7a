//! How long a fleet query takes to come back complete, and whether its answer is exact, at
//! fleet sizes the daemon tests cannot reach.
//!
//! `cargo bench -p shoal-sim --bench query` runs 10,000 and 100,000 nodes (override with
//! `SHOAL_SIM_NODES=10000,100000`), every one with the real agent machine and rollout agent. Once
//! the source counts every node it asks three queries in turn, as `shoal query` does: one
//! region (`--select region=r1`), nodes not running a version (`--version-not web@2.0`, which is
//! every node) and one fault domain. For each it prints the simulated time from
//! the broadcast until every counted node had answered, the matches against the truth counted
//! from the nodes themselves, and the wall time the simulation took. Under `cargo test` it runs
//! 2,000 nodes as a smoke test.

#[path = "support/sizes.rs"]
mod sizes;

use shoal_core::query::{Query, VersionRef};
use shoal_sim::rollouts::release;
use shoal_sim::{Config, Model, Network};
use std::time::{Duration, Instant};

/// The step between looks at the source's summary: the resolution of the figures.
const STEP: Duration = Duration::from_millis(50);
/// How long the fleet has to form before the bench calls it a failure.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);
/// How long a query may take before the bench calls it a failure.
const LIMIT: Duration = Duration::from_secs(60);

/// Whether a node in (region, fault domain) matches, by the nodes' own places.
type Truth = Box<dyn Fn(u32, u32) -> bool>;

fn main() {
    let sizes = sizes::sizes(&[10_000, 100_000], &[2_000]);
    println!(
        "nodes    query                    complete after  answered/fleet   matched  truth    sample  wall"
    );
    for nodes in sizes {
        let mut net = Network::new(Config::default(), nodes);
        net.enable_rollouts(Model::quick("web", release("1.0", 1)));
        // Until the source counts every node: a query is complete against that count.
        while net.fleet().map_or(0, |s| s.nodes) < nodes - 1 {
            assert!(net.now() < SETTLE_LIMIT, "the fleet count did not settle");
            net.run_for(Duration::from_secs(5));
        }
        println!(
            "{nodes:<8} the source counts every node after {:.0} s",
            net.now().as_secs_f64()
        );
        // One fault domain: the one of a node in the middle of the fleet.
        let place = net.node(nodes / 2).expect("running").me().place;
        let cell = format!("region=r{},fd={}", place.region, place.fault_domain);
        let in_cell = move |r: u32, f: u32| r == place.region && f == place.fault_domain;
        let queries: [(&str, &str, Option<&str>, Truth); 3] = [
            ("region=r1", "region=r1", None, Box::new(|r, _| r == 1)),
            (
                "version-not web@2.0",
                "",
                Some("web@2.0"),
                Box::new(|_, _| true),
            ),
            (&cell, &cell, None, Box::new(in_cell)),
        ];
        for (id, (name, select, version_not, truth)) in (1u64..).zip(queries) {
            let truth = net
                .alive()
                .filter(|&n| n != 0)
                .filter(|&n| {
                    net.node(n).is_some_and(|node| {
                        truth(node.me().place.region, node.me().place.fault_domain)
                    })
                })
                .count();
            let query = Query {
                id,
                select: select.parse().expect("labels"),
                version_not: version_not.map(|v| v.parse::<VersionRef>().expect("version")),
                state: None,
                limit: 50,
                expires_unix_secs: net.unix_now() + 120,
            };
            let wall = Instant::now();
            let (fleet, after) = net.run_query(query, STEP, LIMIT);
            let answer = fleet
                .answer
                .clone()
                .unwrap_or_else(|| panic!("{name}: no answer"));
            println!(
                "{nodes:<8} {name:<24} {:>9.2} s     {:>7}/{:<7}  {:<7}  {truth:<7}  {:<6}  {:.1} s",
                after.as_secs_f64(),
                answer.answered,
                fleet.fleet,
                answer.matched,
                answer.sample.len(),
                wall.elapsed().as_secs_f64(),
            );
            assert!(fleet.is_complete(), "{name}: not complete after {after:?}");
            assert_eq!(answer.matched as usize, truth, "{name}: wrong count");
        }
    }
}
