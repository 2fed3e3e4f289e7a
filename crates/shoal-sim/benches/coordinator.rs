//! What the coordinator (the broadcast source) receives per second as the fleet grows, at idle
//! and during a rollout run by the real conductor and the real rollout agent on every node.
//!
//! `cargo bench -p shoal-sim --bench coordinator` runs 1,000, 10,000 and 100,000 nodes (override
//! with `SHOAL_SIM_NODES=1000,10000`): 50 simulated seconds to join and settle, 20 s at idle,
//! then a rollout of 2.0 over every node (plan canary 1 / pilot 20% / broad 100%, zero bake, one
//! region and one fault domain at a time; staging 200 ms, switching 300 ms, two health checks
//! 500 ms apart). It prints the messages the source received per simulated second at idle and
//! during the rollout (all, and health reports), the rollout's simulated duration and waves, and
//! checks that every node ends on 2.0. Under `cargo test` it runs 1,000 nodes as a smoke test.

#[path = "support/sizes.rs"]
mod sizes;

use shoal_core::activation::Policy;
use shoal_core::rollout::Plan;
use shoal_sim::rollouts::release;
use shoal_sim::{Config, Model, Network};
use std::time::{Duration, Instant};

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
deadline_secs = 300
on_failure = "pause"

[[stage]]
name = "pilot"
size = "20%"
bake_secs = 0
success = "100%"
failure_threshold = "1%"
deadline_secs = 300
on_failure = "pause"

[[stage]]
name = "broad"
size = "100%"
bake_secs = 0
success = "100%"
failure_threshold = "1%"
deadline_secs = 300
on_failure = "pause"
"#;

/// Messages (all, health) the source received since `from`, per second of `secs`.
fn rates(net: &Network, from: (u64, u64), secs: f64) -> (f64, f64) {
    (
        (net.stats().source_received - from.0) as f64 / secs,
        (net.stats().source_health - from.1) as f64 / secs,
    )
}

fn main() {
    let sizes = sizes::sizes(&[1_000, 10_000, 100_000], &[1_000]);
    println!(
        "nodes    idle msgs/s  rollout msgs/s  rollout health/s  rollout s  waves  directives  wall s"
    );
    for nodes in sizes {
        let started = Instant::now();
        let mut net = Network::new(Config::default(), nodes);
        let v2 = release("2.0", 2);
        let quick = Model::quick("web", release("1.0", 1));
        net.enable_rollouts(Model {
            distributed: vec![v2.clone()],
            policy: Policy {
                grace: Duration::from_secs(10),
                ..quick.policy
            },
            ..quick
        });
        net.run_for(Duration::from_secs(50));
        let at = (net.stats().source_received, net.stats().source_health);
        net.run_for(Duration::from_secs(20));
        let (idle, _) = rates(&net, at, 20.0);

        let at = (net.stats().source_received, net.stats().source_health);
        let begun = net.now();
        let plan = Plan::from_toml(PLAN).expect("the benchmark's plan parses");
        let id = net.start_rollout(plan, v2).expect("the rollout starts");
        let limit = begun + Duration::from_secs(3600);
        let state = loop {
            net.run_for(Duration::from_millis(250));
            let state = net.rollout_status(id).expect("the rollout exists").state;
            if state != "running" || net.now() >= limit {
                break state;
            }
        };
        let secs = (net.now() - begun).as_secs_f64();
        let (during, health) = rates(&net, at, secs);
        let status = net.rollout_status(id).expect("the rollout exists");
        println!(
            "{nodes:<8} {idle:>11.1}  {during:>14.1}  {health:>16.1}  {secs:>9.1}  {:>5}  {:>10}  {:>6.1}",
            status.waves.len(),
            net.rollout_stats().directives,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(state, "completed", "{:#?}", net.rollout_records());
        let behind = net
            .alive()
            .filter(|&n| n != 0)
            .filter(|&n| net.service(n).is_none_or(|(r, _)| r.version != "2.0"))
            .count();
        assert_eq!(behind, 0, "nodes not on 2.0 after the rollout completed");
    }
}
