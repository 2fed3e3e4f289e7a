//! `shoal-sim`: runs a scenario file with the real swarm scheduler for every node.

use clap::{Parser, Subcommand};
use shoal_sim::run::{self, available_bytes, bytes_per_node, rss_bytes};
use shoal_sim::scenario::Scenario;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "shoal-sim",
    version,
    about = "Simulates a Shoal fleet from a scenario file"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario and reports completion against the bound, origin bytes and the run's cost.
    Run {
        /// The scenario file (see simulations/).
        scenario: PathBuf,
        /// Directory for summary.json, completion.csv and .svg, timeline.csv and the plots of it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed of every random choice (overrides the scenario's `seed`); the same seed replays
        /// the same run. `SEED=` in the environment does the same.
        #[arg(long, env = "SEED")]
        seed: Option<u64>,
        /// Nodes, the origin included (overrides `fleet.nodes`).
        #[arg(long)]
        nodes: Option<u32>,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            scenario,
            out,
            seed,
            nodes,
            json,
        } => match run_scenario(&scenario, out, seed, nodes, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("shoal-sim: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_scenario(
    path: &std::path::Path,
    out: Option<PathBuf>,
    seed: Option<u64>,
    nodes: Option<u32>,
    json: bool,
) -> Result<(), String> {
    let s = Scenario::load(path).map_err(|e| e.to_string())?;
    let seed = seed.unwrap_or(s.seed);
    let nodes = nodes.unwrap_or(s.nodes);
    if !(2..=shoal_sim::scenario::MAX_NODES).contains(&nodes) {
        return Err(format!(
            "--nodes {nodes}: use 2 to {} (the origin and at least one receiver)",
            shoal_sim::scenario::MAX_NODES
        ));
    }
    let per_node = bytes_per_node(
        s.layout.piece_count(),
        u64::from(s.layout.piece_size_bytes()),
        s.neighbours,
    ) + if s.plan.is_some() {
        run::CONTROL_BYTES_PER_NODE
    } else {
        0
    };
    let need = u64::from(nodes) * per_node;
    if let Some(available) = available_bytes()
        && need > available
    {
        return Err(format!(
            "{} nodes of {} pieces need about {} ({} a node: a part per piece, a part per swarm neighbour and, with a rollout, the control plane; fleet.neighbours = {}) and this machine has {} available: lower --nodes (at most about {} fit), fleet.neighbours or the piece count",
            nodes,
            s.layout.piece_count(),
            shoal_core::units::human_bytes(need),
            shoal_core::units::human_bytes(per_node),
            s.neighbours,
            shoal_core::units::human_bytes(available),
            available / per_node
        ));
    }
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_line = Instant::now();
    let progress = |simulated: Duration, events: u64| {
        if last_line.elapsed() < Duration::from_millis(500) {
            return;
        }
        last_line = Instant::now();
        let wall = started.elapsed().as_secs_f64();
        let line = format!(
            "shoal-sim: {:>9.1} simulated s, {:>10} events, {:>9.0} events/s, {} resident",
            simulated.as_secs_f64(),
            events,
            events as f64 / wall.max(1e-9),
            shoal_core::units::human_bytes(rss_bytes())
        );
        let mut err = std::io::stderr();
        if tty {
            let _ = write!(err, "\r{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
    };
    let (summary, outcome, timeline) = run::run(&s, seed, nodes, progress)?;
    if tty && started.elapsed() >= Duration::from_millis(500) {
        eprintln!();
    }
    if let Some(dir) = &out {
        run::write_outputs(dir, &summary, &outcome, &timeline)?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(|e| e.to_string())?
        );
    } else {
        let secs = |v: Option<f64>| v.map_or("never".into(), |v| format!("{v:.2} s"));
        println!(
            "{} nodes, {} in {} pieces, {}/{} complete ({} crashed) after {:.2} simulated s",
            summary.nodes,
            shoal_core::units::human_bytes(summary.release_bytes),
            s.layout.piece_count(),
            summary.complete_nodes,
            summary.nodes,
            summary.crashed_nodes,
            summary.simulated_secs
        );
        println!(
            "last complete {} ({}x the bound of {:.2} s), median {}, p99 {}",
            secs(summary.last_complete_secs),
            summary
                .last_over_bound
                .map_or("-".into(), |r| format!("{r:.2}")),
            summary.kumar_ross_secs,
            secs(summary.p50_complete_secs),
            secs(summary.p99_complete_secs)
        );
        println!(
            "origin sent {} ({:.2} copies); {} events in {:.2} wall s ({:.0}/s), peak RSS {}",
            shoal_core::units::human_bytes(summary.origin_bytes),
            summary.origin_copies,
            summary.events,
            summary.wall_secs,
            summary.events_per_sec,
            shoal_core::units::human_bytes(summary.peak_rss_bytes)
        );
        if let Some(r) = &summary.rollout {
            let opened = r.waves.iter().filter(|w| w.started_secs.is_some()).count();
            let last = r
                .waves
                .iter()
                .filter_map(|w| w.healthy_secs)
                .reduce(f64::max);
            println!(
                "rollout {}: {} of {} waves opened, the last healthy at {}; {} nodes activated{}",
                r.rollout_state,
                opened,
                r.waves.len(),
                secs(last),
                r.activated_nodes,
                r.reason
                    .as_ref()
                    .map_or_else(String::new, |why| format!(" ({why})"))
            );
        }
        if let Some(dir) = &out {
            println!(
                "wrote {}/summary.json, completion.csv and .svg, timeline.csv, {}",
                dir.display(),
                if summary.rollout.is_some() {
                    "origin.svg, waves.svg, states.svg, coordinator.svg"
                } else {
                    "origin.svg"
                }
            );
        }
    }
    if summary.last_complete_secs.is_none() {
        return Err(format!(
            "only {} of {} nodes completed by the run's end at {:.1} simulated s (limit_secs {}): {} crashed, {} behind a partition that had not healed",
            summary.complete_nodes,
            summary.nodes,
            summary.simulated_secs,
            s.limit_secs,
            summary.crashed_nodes,
            summary.partitioned_nodes
        ));
    }
    Ok(())
}
