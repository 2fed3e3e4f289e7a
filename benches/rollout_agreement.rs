//! The rollout benchmark's plan run again in the simulator, for the agreement check: the same
//! plan, the same fleet shape (two regions, the coordinator as the source), loopback latency
//! and the same health policy, with the real conductor and the real rollout agents over simulated links
//! (`shoal_sim::run`). The executor is the one modelled part: its switch time is the one the
//! real run measured, so what is compared is everything the core decides and carries (directives
//! down the broadcast, health counts up the tree, the conductor's wave gates).

use std::path::Path;

/// Simulated seconds before the rollout starts: the payload is everywhere long before.
const START_SECS: f64 = 30.0;
/// One-way latency between any two nodes, in milliseconds: the real fleet is on loopback,
/// whatever its labels say (the simulator's defaults put 40 ms between regions).
const LOOPBACK_MS: f64 = 0.05;

/// The executor as the real run measured it and the health policy it ran.
pub struct Executor {
    /// From a wave's directive to the service started on a node (median over the nodes).
    pub switch_secs: f64,
    /// One health check (a `sh -c` test of a file).
    pub check_secs: f64,
    /// The policy's grace after a switch.
    pub grace_secs: f64,
    /// Passing checks in a row that make a node healthy.
    pub passes: u32,
    /// Between checks.
    pub interval_secs: f64,
}

/// Each wave's time from opened to passed, in simulated seconds, for `plan` over `nodes` nodes
/// spread over two regions as the loopback mesh spreads them, plus the coordinator as the
/// source. The scenario is written into `dir`.
pub fn wave_secs(
    nodes: usize,
    plan: &Path,
    executor: &Executor,
    dir: &Path,
) -> Result<Vec<f64>, String> {
    let text = format!(
        r#"seed = 1
[fleet]
nodes = {fleet}
regions = 2
fault_domains = 2
racks = 1
upload = "1gbit"
download = "1gbit"
latency = {{ rack_ms = {LOOPBACK_MS}, fault_domain_ms = {LOOPBACK_MS}, region_ms = {LOOPBACK_MS}, remote_ms = {LOOPBACK_MS} }}
[release]
size = "64KiB"
piece_size = "64KiB"
[rollout]
plan = "{plan}"
start_secs = {START_SECS}
prepare_secs = 0
switch_secs = {switch}
check_secs = {check}
health_grace_secs = {grace}
health_passes = {passes}
health_interval_secs = {interval}
"#,
        fleet = nodes + 1,
        plan = plan.display(),
        switch = executor.switch_secs,
        check = executor.check_secs,
        grace = executor.grace_secs,
        passes = executor.passes,
        interval = executor.interval_secs,
    );
    let path = dir.join("agreement-scenario.toml");
    std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    let scenario = shoal_sim::scenario::Scenario::load(&path).map_err(|e| e.to_string())?;
    let (summary, _, _) = shoal_sim::run::run(&scenario, scenario.seed, scenario.nodes, |_, _| {})?;
    let rollout = summary
        .rollout
        .ok_or_else(|| "the simulated run has no rollout".to_owned())?;
    if rollout.rollout_state != "completed" {
        return Err(format!(
            "the simulated rollout ended {}: {}",
            rollout.rollout_state,
            rollout.reason.unwrap_or_default()
        ));
    }
    rollout
        .waves
        .iter()
        .map(|w| match (w.started_secs, w.healthy_secs) {
            (Some(s), Some(h)) => Ok(h - s),
            _ => Err(format!(
                "simulated wave {} ({}) never passed",
                w.stage, w.region
            )),
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Simulated over real for the mean wave duration. The means, not wave by wave: which nodes a
/// stage's share picks depends on their ids, so a region's pilot may be empty in one run and
/// not in the other, and the two sides may cut a different number of waves.
pub fn ratio(real: &[f64], simulated: &[f64]) -> f64 {
    mean(simulated) / mean(real)
}

/// The line the benchmark prints: every wave's duration on both sides and the ratio of their
/// means against the goal.
pub fn describe(nodes: usize, real: &[f64], simulated: &[f64]) -> String {
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let ratio = ratio(real, simulated);
    let verdict = if (0.9..=1.1).contains(&ratio) {
        "within"
    } else {
        "outside"
    };
    format!(
        "agreement at {nodes} nodes  wave opened to passed: real {} s (mean {:.3}), simulated {} s \
         (mean {:.3}); simulated/real {ratio:.3}, {verdict} the 10% goal",
        list(real),
        mean(real),
        list(simulated),
        mean(simulated),
    )
}
