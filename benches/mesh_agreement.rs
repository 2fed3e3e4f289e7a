//! The mesh benchmark's idle window run again in the simulator, for the agreement check: the same
//! control-plane core (`shoal_core::control::Node` with the daemon's configuration) for the same
//! number of nodes and a source with the coordinator's heartbeat, over simulated links, counting
//! the messages the nodes send as the real mesh counts the frames its nodes send.

use std::time::Duration;

/// Simulated time before the window: the join storm of a few dozen nodes is over well within it
/// (the `scale` benchmark settles 100,000 nodes in 60 s).
const SETTLE: Duration = Duration::from_secs(60);

/// Control messages sent per node (the source left out) per simulated second, over `window`
/// after the mesh of `nodes` nodes and a source has settled.
pub fn messages_per_node_per_sec(nodes: usize, window: Duration) -> f64 {
    let count = u32::try_from(nodes + 1).unwrap_or(u32::MAX);
    let mut net = shoal_sim::Network::new(shoal_sim::Config::default(), count);
    net.run_for(SETTLE);
    let before = net.stats().clone();
    net.run_for(window);
    let after = net.stats();
    let sent = (after.messages - before.messages) - (after.source_sent - before.source_sent);
    sent as f64 / window.as_secs_f64() / nodes as f64
}

/// The line the benchmark prints: both figures and their ratio against the goal.
pub fn describe(real: f64, simulated: f64) -> String {
    let ratio = simulated / real;
    let verdict = if (0.9..=1.1).contains(&ratio) {
        "within"
    } else {
        "outside"
    };
    format!(
        "agreement  control frames sent per node per second at idle: real {real:.2}, simulated \
         {simulated:.2} (shoal_sim::Network, same node count and window); simulated/real \
         {ratio:.3}, {verdict} the 10% goal"
    )
}
