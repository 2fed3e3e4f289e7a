//! One scenario run: the data plane driven to completion (with the rollout beside it, if the
//! scenario has one), and what it reports (`summary.json`,
//! the completion curve as CSV and SVG).

use crate::dataplane::{self, DataConfig, DataPlane, Outcome};
use crate::fleet::{self, Rollout, RolloutOutcome};
use crate::plot;
use crate::scenario::{FaultKind, Scenario};
use crate::timeline::Timeline;
use serde::Serialize;
use shoal_core::rollout::Plan;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes of memory one simulated node's control plane takes beside its data plane when the
/// scenario has a rollout (membership, broadcast, health, the agent machine and its rollout
/// agent): heaptrack found 18.7 KB a node for `rollout-300.toml --nodes 1000` on 2026-12-04,
/// and 12.5 KB on 2026-12-06 once a directive was decoded once for the whole fleet; this keeps
/// a quarter above that.
pub const CONTROL_BYTES_PER_NODE: u64 = 16 * 1024;

/// Bytes of memory one simulated node's data plane takes, at most, for a release of `pieces`
/// pieces of `piece_bytes` with `neighbours` swarm neighbours:
///
/// - the fixed part;
/// - per piece, the swarm's four counters (16 bytes) and a bit of the own bitfield;
/// - per neighbour, its peer entry, its bitfield and its share of the links and of the first
///   announcements in the event queue (248 bytes beside the bitfield: 280 until a peer entry
///   went from 112 bytes to 80 on 2026-12-06);
/// - per request in flight, its entries in the requester's table and action queue and in the
///   sender's upload queue (160 bytes with their tables' slack): a node has in flight what the
///   swarm's byte budget allows plus the endgame's duplicates, at most every piece, and the
///   requests a fleet's nodes receive are the ones its nodes sent.
///
/// Checked against the `memory_estimate_covers_a_run` test, which on 2026-12-03 found 19.7 KB a
/// node at 64 pieces of 64 KiB, 34.5 KB at 256 of 64 KiB, and heaptrack found 15.6 KB a node
/// for the `fleet-3m` shape at 1,000 nodes (150 pieces of 64 MiB, 40 neighbours). On
/// 2026-12-06, with 80-byte peer entries, the test found 14.5, 22.8 and 9.5 KB (at 150 pieces
/// of 16 MiB).
pub fn bytes_per_node(pieces: u32, piece_bytes: u64, neighbours: usize) -> u64 {
    let config = shoal_core::swarm::Config::default();
    let pieces = u64::from(pieces);
    let bitfield = pieces.div_ceil(8);
    // An allocation's bookkeeping and rounding.
    let bitfield_alloc = bitfield.div_ceil(16) * 16 + 16;
    let budget = (config.max_in_flight_bytes / piece_bytes.max(1)).max(1)
        + u64::from(config.endgame_duplicates);
    let per_peer = u64::from(config.max_in_flight_per_peer) * neighbours as u64;
    let in_flight = budget.min(pieces).min(per_peer);
    4096 + pieces * 16
        + bitfield_alloc
        + neighbours as u64 * (bitfield_alloc + 248)
        + in_flight * 160
}

/// The run's figures: `summary.json`, and what `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The scenario file.
    pub scenario: String,
    /// The seed the run used.
    pub seed: u64,
    /// Nodes, the origin included.
    pub nodes: u32,
    /// Nodes that hold the release verified at the end, the origin included.
    pub complete_nodes: u32,
    /// Nodes that crashed (scenario faults).
    pub crashed_nodes: u32,
    /// Nodes cut off by a partition that had not healed at the end.
    pub partitioned_nodes: u32,
    /// Simulated seconds at the end.
    pub simulated_secs: f64,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
    /// Events handled.
    pub events: u64,
    /// Events per wall-clock second.
    pub events_per_sec: f64,
    /// The process's peak resident memory.
    pub peak_rss_bytes: u64,
    /// The release's size.
    pub release_bytes: u64,
    /// Its piece size.
    pub piece_bytes: u64,
    /// The Kumar-Ross lower bound on the last completion for the scenario's caps.
    pub kumar_ross_secs: f64,
    /// When the last node held the release verified; `null` if some never did.
    pub last_complete_secs: Option<f64>,
    /// `last_complete_secs` over `kumar_ross_secs`.
    pub last_over_bound: Option<f64>,
    /// Median and 99th percentile of the receivers' completion times.
    pub p50_complete_secs: Option<f64>,
    /// See `p50_complete_secs`.
    pub p99_complete_secs: Option<f64>,
    /// Piece bytes the origin sent.
    pub origin_bytes: u64,
    /// `origin_bytes` over the release's size.
    pub origin_copies: f64,
    /// Piece bytes sent by all nodes.
    pub bytes_sent: u64,
    /// With a `[rollout]`: `rollout_state`, `reason`, `waves` and the rollout's counters.
    #[serde(flatten)]
    pub rollout: Option<RolloutOutcome>,
}

/// The data-plane configuration a scenario describes, with `seed` and `nodes` overriding it.
pub fn data_config(s: &Scenario, seed: u64, nodes: u32) -> DataConfig {
    DataConfig {
        nodes,
        regions: s.regions,
        fault_domains: s.fault_domains,
        racks: s.racks,
        upload: s.upload as f64,
        download: s.download as f64,
        layout: s.layout,
        neighbours: s.neighbours,
        latency: s.latency,
        seed,
        limit: Duration::from_secs(s.limit_secs),
        crashes: crashes(s, seed, nodes),
        partitions: partitions(s, seed, nodes),
        flow_model: crate::flowtable::FlowModel::Local,
    }
}

/// The scenario's crash faults as node lists: in the fault's region (or anywhere), the given
/// fraction of the nodes, picked by the seed.
fn crashes(s: &Scenario, seed: u64, nodes: u32) -> Vec<(Duration, Vec<u32>)> {
    fault_nodes(s, seed, nodes, FaultKind::Crash)
}

/// The scenario's partitions: the nodes each cuts off from the rest, picked as for a crash, and
/// when it starts and heals.
fn partitions(s: &Scenario, seed: u64, nodes: u32) -> Vec<dataplane::Partition> {
    let lengths = s
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::Partition)
        .map(|f| f.duration_secs);
    fault_nodes(s, seed, nodes, FaultKind::Partition)
        .into_iter()
        .zip(lengths)
        .map(|((at, nodes), length)| dataplane::Partition {
            at,
            heal: length.map(|d| at + Duration::from_secs_f64(d)),
            nodes,
        })
        .collect()
}

/// The nodes each fault of `kind` hits, with its time: in the fault's region (or anywhere), the
/// given fraction of the nodes, picked by the seed.
fn fault_nodes(s: &Scenario, seed: u64, nodes: u32, kind: FaultKind) -> Vec<(Duration, Vec<u32>)> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    s.faults
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind == kind)
        .map(|(i, f)| {
            let mut ids: Vec<u32> = (0..nodes)
                .filter(|&id| {
                    f.region.is_none_or(|r| {
                        dataplane::place_of(id, s.regions, s.fault_domains, s.racks).region == r
                    })
                })
                .collect();
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ ((i as u64 + 1) << 32));
            ids.shuffle(&mut rng);
            ids.truncate((f.fraction * ids.len() as f64).ceil() as usize);
            ids.sort_unstable();
            (Duration::from_secs_f64(f.at_secs), ids)
        })
        .collect()
}

/// Runs a scenario: its distribution and, with a `[rollout]`, the rollout beside it;
/// `progress` hears the simulated time and events so far now and then.
///
/// # Errors
///
/// A plan that cannot be read or does not parse (naming its file), or a rollout the conductor
/// refuses.
pub fn run(
    s: &Scenario,
    seed: u64,
    nodes: u32,
    progress: impl FnMut(Duration, u64),
) -> Result<(Summary, Outcome, Timeline), String> {
    let started = Instant::now();
    let config = data_config(s, seed, nodes);
    let mut timeline = Timeline::default();
    let (outcome, rollout) = match &s.plan {
        None => (
            DataPlane::new(config).run_sampled(progress, &mut timeline),
            None,
        ),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "{}: [rollout] plan {}: {e}",
                    s.path.display(),
                    path.display()
                )
            })?;
            let plan = Plan::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let bad = fault_nodes(s, seed, nodes, FaultKind::BadRelease)
                .into_iter()
                .reduce(|(at, mut a), (b_at, b)| {
                    a.extend(b);
                    (at.min(b_at), a)
                })
                .map(|(at, ids)| (at, Some(ids.into_iter().collect())));
            let rollout = Rollout {
                plan,
                activation: s.activation,
                bad,
            };
            let (outcome, r) = fleet::run(config, rollout, progress, &mut timeline)?;
            (outcome, Some(r))
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let bytes = s.layout.size_bytes();
    let bound = shoal_core::swarm::bound::kumar_ross_secs(
        bytes,
        nodes - 1,
        s.upload as f64,
        s.download as f64,
    );
    let times = outcome.receiver_secs();
    let all = outcome.last_complete().is_some() && !times.is_empty();
    let quantile = |q: f64| {
        all.then(|| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1])
    };
    let last = outcome.last_complete().map(|d| d.as_secs_f64());
    let summary = Summary {
        scenario: s.path.display().to_string(),
        seed,
        nodes,
        complete_nodes: outcome.completed_at.iter().flatten().count() as u32,
        crashed_nodes: outcome.crashed,
        partitioned_nodes: outcome.partitioned,
        simulated_secs: outcome.simulated.as_secs_f64(),
        wall_secs: wall,
        events: outcome.events,
        events_per_sec: outcome.events as f64 / wall.max(1e-9),
        peak_rss_bytes: peak_rss_bytes(),
        release_bytes: bytes,
        piece_bytes: u64::from(s.layout.piece_size_bytes()),
        kumar_ross_secs: bound,
        last_complete_secs: last,
        last_over_bound: last.map(|l| l / bound),
        p50_complete_secs: quantile(0.5),
        p99_complete_secs: quantile(0.99),
        origin_bytes: outcome.origin_bytes,
        origin_copies: outcome.origin_bytes as f64 / bytes as f64,
        bytes_sent: outcome.bytes_sent,
        rollout,
    };
    Ok((summary, outcome, timeline))
}

/// The process's peak resident memory (`VmHWM`), 0 where `/proc` does not say.
pub fn peak_rss_bytes() -> u64 {
    proc_status_kib("VmHWM:") * 1024
}

/// The process's resident memory now (`VmRSS`).
pub fn rss_bytes() -> u64 {
    proc_status_kib("VmRSS:") * 1024
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Memory the machine has for the run (`MemAvailable`), if `/proc` says.
pub fn available_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Writes what a run reports into `dir`: `summary.json`; `completion.csv` (each receiver's
/// completion time, sorted) and `completion.svg` (their CDF); `timeline.csv` (the fleet every
/// half simulated second) and from it `origin.svg` (origin bytes over time), and with a rollout
/// `waves.svg` (the share of each wave's nodes healthy over time), `states.svg` (nodes per
/// state) and `coordinator.svg` (messages per second the coordinator received).
///
/// # Errors
///
/// The first file that could not be written, with its path.
pub fn write_outputs(
    dir: &Path,
    summary: &Summary,
    outcome: &Outcome,
    timeline: &Timeline,
) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create it: {e}", dir.display()))?;
    let write = |name: &str, body: String| {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(|e| format!("{}: cannot write it: {e}", path.display()))
    };
    let json = serde_json::to_string_pretty(summary).map_err(|e| e.to_string())?;
    write("summary.json", json + "\n")?;
    let times = outcome.receiver_secs();
    let mut csv = String::from("receivers_complete,secs\n");
    for (i, t) in times.iter().enumerate() {
        csv.push_str(&format!("{},{t:.6}\n", i + 1));
    }
    write("completion.csv", csv)?;
    let title = |what: &str| {
        format!(
            "{} nodes, {} release: {what}",
            summary.nodes,
            shoal_core::units::human_bytes(summary.release_bytes)
        )
    };
    let svg = plot::cdf_svg(
        &times,
        summary.nodes.saturating_sub(1),
        summary.kumar_ross_secs,
        &title("receivers complete over time"),
    )
    .map_err(|e| format!("completion.svg: {e}"))?;
    write("completion.svg", svg)?;
    write("timeline.csv", timeline.csv())?;
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let origin = vec![(
        "origin MiB sent".to_owned(),
        timeline.series(|s| mib(s.origin_bytes)),
    )];
    let svg = plot::lines_svg(&title("origin bytes sent"), "MiB", &origin)
        .map_err(|e| format!("origin.svg: {e}"))?;
    write("origin.svg", svg)?;
    let Some(rollout) = &summary.rollout else {
        return Ok(());
    };
    let waves: Vec<(String, Vec<(f64, f64)>)> = rollout
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let nodes = f64::from(w.nodes.max(1));
            let share =
                timeline.series(|s| f64::from(s.wave_healthy.get(i).copied().unwrap_or(0)) / nodes);
            (
                format!("{} {} ({} nodes)", w.stage, w.region, w.nodes),
                share,
            )
        })
        .collect();
    let svg = plot::lines_svg(
        &title("share of each wave healthy"),
        "share healthy",
        &waves,
    )
    .map_err(|e| format!("waves.svg: {e}"))?;
    write("waves.svg", svg)?;
    let mut states = vec![(
        "holding the release".to_owned(),
        timeline.series(|s| f64::from(s.complete)),
    )];
    for (i, name) in ["pending", "activating", "healthy", "failed", "reverted"]
        .iter()
        .enumerate()
    {
        states.push((
            (*name).to_owned(),
            timeline.series(|s| f64::from(s.states[i])),
        ));
    }
    let svg = plot::lines_svg(&title("nodes per state"), "nodes", &states)
        .map_err(|e| format!("states.svg: {e}"))?;
    write("states.svg", svg)?;
    let rate = vec![(
        "coordinator messages/s".to_owned(),
        timeline.coordinator_rate(),
    )];
    let svg = plot::lines_svg(
        &title("messages the coordinator received"),
        "per second",
        &rate,
    )
    .map_err(|e| format!("coordinator.svg: {e}"))?;
    write("coordinator.svg", svg)
}
