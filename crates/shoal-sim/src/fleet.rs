//! A release's whole life on the simulated fleet: the control plane ([`Network`]: membership,
//! broadcast, the health tree, the real conductor and every node's real rollout agent) and the
//! data plane ([`DataPlane`]: every node's real swarm scheduler over max-min fair flows) in one
//! event loop. The release is published at time zero and every node starts fetching it, as an
//! announcement makes it in the daemon; a node's agent hears that its store holds the release
//! the moment the data plane completes it there, so a wave's nodes activate only once they hold
//! it. The rollout starts at [`Activation::start_secs`].
//!
//! Node 0 is the publisher's host: the coordinator in the control plane and the origin in the
//! data plane. It runs no rollout agent and is in no wave.

use crate::dataplane::{DataConfig, DataPlane, Outcome};
use crate::rollouts::{UNIX_AT_START, release};
use crate::scenario::Activation;
use crate::timeline::{SAMPLE_INTERVAL, Sample, Timeline};
use crate::{Config, Model, Network, NodeId};
use serde::Serialize;
use shoal_core::activation::Policy;
use shoal_core::rollout::Plan;
use shoal_core::rollout::conductor::{RolloutState, Status};
use shoal_core::rollout::report::NodeState;
use std::collections::BTreeSet;
use std::time::Duration;

/// What the rollout did, as `summary.json` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutOutcome {
    /// The conductor's state at the end: `completed`, `rolled_back`, `paused` (a plan's
    /// `on_failure = "pause"`: the run ends there), `running` (the time limit came first), ...
    pub rollout_state: String,
    /// Why it stopped, if it did.
    pub reason: Option<String>,
    /// Its waves in order.
    pub waves: Vec<WaveOutcome>,
    /// Nodes that ever switched to the new release.
    pub activated_nodes: u32,
    /// Directives the conductor broadcast.
    pub directives: u64,
    /// Messages the coordinator received over the run (membership, health reports).
    pub coordinator_messages: u64,
}

/// One wave of the rollout.
#[derive(Clone, Debug, Serialize)]
pub struct WaveOutcome {
    /// Its stage's name.
    pub stage: String,
    /// The regions of its cells, comma-separated.
    pub region: String,
    /// Nodes the conductor assigned to it.
    pub nodes: u32,
    /// When it opened, simulated seconds; `None` if it never did.
    pub started_secs: Option<f64>,
    /// When it passed; `None` if it never did.
    pub healthy_secs: Option<f64>,
    /// Its nodes the health tree last counted failed or reverted.
    pub failed: u32,
}

/// A rollout to run beside the distribution.
pub struct Rollout {
    /// The plan.
    pub plan: Plan,
    /// Its timing and the modelled executor.
    pub activation: Activation,
    /// Nodes on which the release fails its health checks, and from when (`None`: a good
    /// release).
    pub bad: Option<(Duration, Option<BTreeSet<NodeId>>)>,
}

/// Runs the distribution of `data` and `rollout` together until the rollout has finished (or
/// paused) and the release is everywhere it can get, or `data.limit` passes. `progress` hears the
/// simulated time and events so far now and then.
///
/// # Errors
///
/// If the conductor refuses to start the rollout.
pub fn run(
    data: DataConfig,
    rollout: Rollout,
    mut progress: impl FnMut(Duration, u64),
    timeline: &mut Timeline,
) -> Result<(Outcome, RolloutOutcome), String> {
    let limit = data.limit;
    let mut faults = control_faults(&data).into_iter().peekable();
    let mut net = Network::new(
        Config {
            seed: data.seed,
            regions: data.regions,
            fault_domains: data.fault_domains,
            racks: data.racks,
            rack_latency: data.latency.rack,
            fault_domain_latency: data.latency.fault_domain,
            region_latency: data.latency.region,
            remote_latency: data.latency.remote,
            ..Config::default()
        },
        data.nodes,
    );
    let running = release("1.0", 1);
    let new = release("2.0", 2);
    let a = rollout.activation;
    let secs = Duration::from_secs_f64;
    let (bad, bad_from, bad_nodes) = match rollout.bad {
        Some((from, nodes)) => (BTreeSet::from([new.root]), from, nodes),
        None => (BTreeSet::new(), Duration::ZERO, None),
    };
    net.enable_rollouts(Model {
        service: "app".into(),
        running,
        distributed: Vec::new(),
        announced: vec![new.root],
        bad,
        bad_nodes,
        bad_from,
        prepare: secs(a.prepare_secs),
        switch: secs(a.switch_secs),
        check: secs(a.check_secs),
        policy: Policy {
            grace: secs(a.health_grace_secs),
            passes: a.health_passes,
            interval: secs(a.health_interval_secs),
        },
    });
    let mut plane = DataPlane::new(data);
    let start = secs(a.start_secs);
    let mut id = None;
    let mut steps = 0u64;
    let mut next_sample = Duration::ZERO;
    loop {
        let now = net.now();
        if id.is_none() && now >= start {
            id = Some(
                net.start_rollout(rollout.plan.clone(), new.clone())
                    .map_err(|e| format!("the conductor refused the rollout: {e}"))?,
            );
        }
        // A paused rollout ends the run too: no operator is there to resume it. Checked at every
        // step, so only the state is asked for, not the whole status.
        let finished = id
            .and_then(|id| net.rollout_state(id))
            .is_some_and(|s| !matches!(s, RolloutState::Running | RolloutState::Planned));
        if finished && (plane.is_done() || plane.next_at().is_none()) {
            break;
        }
        let data_at = plane.next_at().unwrap_or(Duration::MAX);
        let fault_at = faults.peek().map_or(Duration::MAX, |c| c.0);
        let mut at = net
            .next_at()
            .unwrap_or(Duration::MAX)
            .min(data_at)
            .min(fault_at);
        if id.is_none() {
            at = at.min(start);
        }
        at = at.min(next_sample);
        if at > limit {
            net.run_until(limit);
            break;
        }
        net.run_until(at);
        if next_sample <= at {
            timeline.samples.push(sample(&net, &plane, id));
            next_sample += SAMPLE_INTERVAL;
        }
        if fault_at <= at
            && let Some((_, fault)) = faults.next()
        {
            // The data plane meets the same faults at the same times from its own schedule.
            match fault {
                ControlFault::Crash(ids) => {
                    for node in ids {
                        net.crash(node);
                    }
                }
                ControlFault::Partition(ids) => {
                    net.partition(|id| u8::from(ids.binary_search(&id).is_ok()));
                }
                ControlFault::Heal => net.heal(),
            }
        }
        if data_at <= at
            && let Some(node) = plane.step()
        {
            net.release_complete(node, new.root);
        }
        steps += 1;
        if steps.is_multiple_of(65_536) {
            progress(net.now(), plane.events() + net.stats().events);
        }
    }
    // The end, where it falls between two samples.
    if timeline
        .samples
        .last()
        .is_none_or(|l| l.secs < net.now().as_secs_f64())
    {
        timeline.samples.push(sample(&net, &plane, id));
    }
    let status = id.and_then(|id| net.rollout_status(id));
    let fleet = net.fleet();
    let mut outcome = plane.finish();
    outcome.events += net.stats().events;
    outcome.simulated = outcome.simulated.max(net.now());
    let report = fleet
        .as_ref()
        .and_then(|f| f.rollouts.iter().find(|r| Some(r.rollout) == id));
    let waves = status
        .as_ref()
        .map_or_else(Vec::new, |s| waves(s, &rollout.plan, report));
    let stats = net.rollout_stats();
    Ok((
        outcome,
        RolloutOutcome {
            rollout_state: status
                .as_ref()
                .map_or_else(|| "not started".into(), |s| s.state.clone()),
            reason: status.as_ref().and_then(|s| s.reason.clone()),
            waves,
            activated_nodes: stats.activated_nodes,
            directives: stats.directives,
            coordinator_messages: net.stats().source_received,
        },
    ))
}

/// A fault as the control plane meets it.
enum ControlFault {
    Crash(Vec<NodeId>),
    /// These nodes (sorted) are cut off from the rest.
    Partition(Vec<NodeId>),
    Heal,
}

/// The crashes and partitions of `data`, in time order.
fn control_faults(data: &DataConfig) -> Vec<(Duration, ControlFault)> {
    let mut faults: Vec<(Duration, ControlFault)> = data
        .crashes
        .iter()
        .map(|(at, ids)| (*at, ControlFault::Crash(ids.clone())))
        .collect();
    for p in &data.partitions {
        faults.push((p.at, ControlFault::Partition(p.nodes.clone())));
        if let Some(heal) = p.heal {
            faults.push((heal, ControlFault::Heal));
        }
    }
    // Stable: a heal and the next partition at the same instant keep their order.
    faults.sort_by_key(|f| f.0);
    faults
}

/// The fleet now: the data plane's counts, and the coordinator's counts of the rollout `id`.
fn sample(net: &Network, plane: &DataPlane, id: Option<u64>) -> Sample {
    let mut s = Sample {
        secs: net.now().as_secs_f64(),
        complete: plane.complete_nodes(),
        origin_bytes: plane.origin_bytes(),
        coordinator_messages: net.stats().source_received,
        ..Sample::default()
    };
    let fleet = net.fleet();
    let report = fleet
        .as_ref()
        .and_then(|f| f.rollouts.iter().find(|r| Some(r.rollout) == id));
    if let (Some(report), Some(status)) = (report, id.and_then(|id| net.rollout_status(id))) {
        s.rollout_counts(report, &status.waves);
    }
    s
}

fn waves(
    status: &Status,
    plan: &Plan,
    report: Option<&shoal_core::rollout::report::RolloutReport>,
) -> Vec<WaveOutcome> {
    let since_start =
        |at: Option<Duration>| at.map(|t| t.saturating_sub(UNIX_AT_START).as_secs_f64());
    status
        .waves
        .iter()
        .map(|w| {
            let mut regions: Vec<&str> = w.cells.iter().map(|c| c.region.as_str()).collect();
            regions.dedup();
            let failed = report.map_or(0, |r| {
                w.cells
                    .iter()
                    .map(|c| {
                        let counts = r.cell(c);
                        counts[NodeState::Failed as usize] + counts[NodeState::Reverted as usize]
                    })
                    .sum()
            });
            WaveOutcome {
                stage: plan
                    .stages
                    .get(usize::from(w.stage))
                    .map_or_else(String::new, |s| s.name.clone()),
                region: regions.join(","),
                nodes: w.expected,
                started_secs: since_start(w.opened_at),
                healthy_secs: since_start(w.passed_at),
                failed,
            }
        })
        .collect()
}
