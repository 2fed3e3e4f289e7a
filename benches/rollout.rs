//! Rollout benchmark: how fast a plan goes through a fleet of real processes, what it costs the
//! coordinator, and how fast a failed canary is back on the previous release. A coordinator and
//! N nodes on loopback (the harness is tests/support/mesh.rs); no root needed.
//!
//! Run with `cargo bench -p shoal --bench rollout`. Without `--bench` (under `cargo test
//! --all-targets`) it runs a smoke configuration (6 nodes) that fails unless every figure was
//! produced.
//!
//! Every node runs a supervised service whose health check appends the time of each passing
//! check to `passes` in the service's working directory. For each fleet size:
//!
//! - release 1.0 is published and waited for on every node (distribution runs ahead), then
//!   rolled out with a plan of canary 1 / pilot 20% / broad 100%, zero bake, one region at a
//!   time; the figure is the time from `shoal rollout start` to the rollout completed;
//! - **per wave**, the delay from the wave's last node healthy (its second passing check after
//!   the wave opened, from the `passes` files) to the next wave's directive (its `opened_at`, or
//!   the completion for the last wave);
//! - **coordinator load**: control frames the coordinator received per second during the
//!   rollout (`frames_received` of `shoal members --json`), beside the same figure at idle
//!   just before;
//! - at the largest size, a **bad release** (2.0, whose health check fails): the time from the
//!   canary's own failure (its switch to 2.0 plus the grace period) to its second passing check
//!   on 1.0 again;
//! - **agreement with the simulator**: the same plan, fleet shape and health policy run by
//!   `shoal_sim` (`rollout_agreement.rs`), with the switch time this run measured; each wave's
//!   time from opened to passed on both sides and the ratio of their means (the smoke run fails
//!   outside 0.67-1.5).
//!
//! Configuration: `SHOAL_ROLLOUT_NODES` (comma-separated fleet sizes, default `10,30,50`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mesh.rs"]
mod harness;
#[path = "rollout_agreement.rs"]
mod rollout_agreement;

use harness::{Mesh, Work};
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The health check's grace period.
const GRACE_SECS: u64 = 4;
/// Passing checks in a row that make a node healthy.
const PASSES: u32 = 2;
/// Between health checks.
const INTERVAL_SECS: f64 = 0.25;
/// How long the mesh has to form and count every node.
const SETTLED_WITHIN: Duration = Duration::from_secs(120);
/// How long a rollout may take before the run fails.
const ROLLOUT_WITHIN: Duration = Duration::from_secs(600);
/// How far the smoke run's simulated wave times may be from the real ones: a loaded 2-core
/// machine stretches a few short waves more than 10%.
const SMOKE_AGREEMENT: std::ops::RangeInclusive<f64> = 0.67..=1.5;
/// The idle window before each rollout.
const IDLE: Duration = Duration::from_secs(5);

const PLAN: &str = r#"
one_region_at_a_time = true
fault_domain_by_fault_domain = false

[[stage]]
name = "canary"
select = { region = "r1" }
size = "1"
on_failure = "rollback"

[[stage]]
name = "pilot"
size = "20%"
on_failure = "rollback"

[[stage]]
name = "broad"
size = "100%"
on_failure = "rollback"
"#;

fn services() -> String {
    format!(
        r#"[[service]]
name = "web"
mode = "supervise"
health = {{ command = ["sh", "-c", "test \"$(cat version)\" = \"$SHOAL_VERSION\" && echo \"$SHOAL_VERSION $(date +%s%N)\" >> passes"], grace_secs = {GRACE_SECS}, passes = {PASSES}, interval_secs = {INTERVAL_SECS} }}
"#
    )
}

fn app(writes: &str) -> String {
    format!(
        "#!/bin/sh\necho \"$SHOAL_VERSION $(date +%s%N)\" >> started\necho \"{writes}\" > version\nexec sleep 1000000\n"
    )
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `VERSION TIME` lines of a node's file, for `version`.
fn times(mesh: &Mesh, i: usize, file: &str, version: &str) -> Vec<u128> {
    let path = mesh.nodes[i].data_dir.join("services/web/work").join(file);
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (v, t) = l.split_once(' ')?;
            (v == version).then(|| t.parse().ok())?
        })
        .collect()
}

fn ns(v: &Value) -> u128 {
    u128::from(v["secs"].as_u64().unwrap()) * 1_000_000_000
        + u128::from(v["nanos"].as_u64().unwrap())
}

fn frames_received(mesh: &Mesh) -> u64 {
    mesh.coordinator
        .api
        .members()
        .unwrap()
        .frames_received
        .unwrap_or(0)
}

struct Figures {
    nodes: usize,
    waves: usize,
    total_secs: f64,
    delays_secs: Vec<f64>,
    /// Each wave's time from opened to passed.
    wave_secs: Vec<f64>,
    /// The same waves in the simulator, or why they are missing.
    simulated_wave_secs: Result<Vec<f64>, String>,
    idle_frames_per_sec: f64,
    rollout_frames_per_sec: f64,
    bad_back_secs: Option<f64>,
}

fn publish(work: &Work, mesh: &mut Mesh, version: &str, counter: u64, writes: &str) {
    let file = work.file(&format!("web-{version}"));
    std::fs::write(&file, app(writes)).unwrap();
    mesh.publish(&file, "web", version, counter, SETTLED_WITHIN);
}

/// Starts a rollout of `version` and waits until it is `state`; returns its status and the
/// start time (ns).
fn roll_out(mesh: &mut Mesh, version: &str, state: &str) -> (Value, u128) {
    let started = now_ns();
    let id = mesh.start_rollout("plan.toml", "web", version);
    let status = mesh.wait(
        &format!("rollout of {version} is {state}"),
        ROLLOUT_WITHIN,
        |m| {
            let s = m.rollout_status(id)?;
            if s["state"] == state {
                Ok(s)
            } else if s["state"] == "running" {
                Err(s["state"].to_string())
            } else {
                panic!("rollout of {version} ended {}: {s}", s["state"])
            }
        },
    );
    (status, started)
}

/// From a wave's opening to its slowest node's second passing check, averaged over the waves;
/// each node counted in the last wave opened before its service started.
fn slowest_healthy_secs(mesh: &Mesh, nodes: usize, waves: &[Value]) -> Option<f64> {
    let opened: Vec<u128> = waves.iter().map(|w| ns(&w["opened_at"])).collect();
    let mut slowest: Vec<Option<u128>> = vec![None; waves.len()];
    for i in 0..nodes {
        let Some(start) = times(mesh, i, "started", "1.0").first().copied() else {
            continue;
        };
        let Some(w) = opened.iter().rposition(|&o| o <= start) else {
            continue;
        };
        let passes: Vec<u128> = times(mesh, i, "passes", "1.0")
            .into_iter()
            .filter(|&t| t >= start)
            .collect();
        if let Some(&healthy) = passes.get(PASSES as usize - 1) {
            let took = healthy - opened[w];
            slowest[w] = Some(slowest[w].map_or(took, |s| s.max(took)));
        }
    }
    let took: Vec<f64> = slowest.iter().flatten().map(|&t| t as f64 / 1e9).collect();
    (!took.is_empty()).then(|| took.iter().sum::<f64>() / took.len() as f64)
}

fn measure(nodes: usize, bad: bool) -> Figures {
    let work = Work::new(&format!("bench-rollout-{nodes}"));
    std::fs::write(work.file("services.toml"), services()).unwrap();
    std::fs::write(work.file("plan.toml"), PLAN).unwrap();
    let mut mesh = Mesh::start_loopback_with(&work, nodes, &["--services", "services.toml"]);
    let n = nodes as u64;
    mesh.wait("the coordinator counts every node", SETTLED_WITHIN, |m| {
        let counted = m.coordinator.api.fleet()?.nodes;
        (counted == n)
            .then_some(())
            .ok_or(format!("{counted} of {n}"))
    });
    publish(&work, &mut mesh, "1.0", 1, "1.0");

    let before = frames_received(&mesh);
    std::thread::sleep(IDLE);
    let idle_frames_per_sec = (frames_received(&mesh) - before) as f64 / IDLE.as_secs_f64();

    let before = frames_received(&mesh);
    let t0 = Instant::now();
    let (status, started) = roll_out(&mut mesh, "1.0", "completed");
    let total_secs = t0.elapsed().as_secs_f64();
    let rollout_frames_per_sec = (frames_received(&mesh) - before) as f64 / total_secs;
    let completed = started + (total_secs * 1e9) as u128;

    // Per wave: last node healthy (its second pass after the wave opened) to the next directive.
    let waves = status["waves"].as_array().unwrap().clone();
    let mut delays_secs = Vec::new();
    let mut wave_secs = Vec::new();
    for (w, wave) in waves.iter().enumerate() {
        let opened = ns(&wave["opened_at"]);
        wave_secs.push(ns(&wave["passed_at"]).saturating_sub(opened) as f64 / 1e9);
        let next = waves
            .get(w + 1)
            .map_or(ns(&wave["passed_at"]), |n| ns(&n["opened_at"]));
        let cells: Vec<(String, String)> = wave["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["region"].as_str().unwrap().to_owned(),
                    c["fault_domain"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut last_healthy = None;
        for (i, labels) in (0..nodes).map(|i| (i, harness::spread_labels(i))) {
            let in_wave = cells.iter().any(|(r, f)| {
                labels.contains(&format!("region={r},")) && labels.contains(&format!("fd={f},"))
            });
            let passes: Vec<u128> = times(&mesh, i, "passes", "1.0")
                .into_iter()
                .filter(|t| *t >= opened)
                .collect();
            if in_wave && passes.len() >= 2 && passes[1] <= next {
                last_healthy = Some(last_healthy.map_or(passes[1], |l: u128| l.max(passes[1])));
            }
        }
        if let Some(last) = last_healthy {
            delays_secs.push((next.saturating_sub(last)) as f64 / 1e9);
        }
    }
    let _ = completed;
    let simulated_wave_secs = match slowest_healthy_secs(&mesh, nodes, &waves) {
        None => Err("no node's passing checks were recorded".to_owned()),
        Some(healthy) => {
            // The wave gate waits for its slowest node: the modelled executor takes as long
            // from directive to healthy (a switch, then `PASSES` checks `INTERVAL_SECS` apart)
            // as the slowest node of a real wave took, on average over the waves.
            let check_secs = 0.005;
            let switch_secs =
                (healthy - f64::from(PASSES - 1) * INTERVAL_SECS - f64::from(PASSES) * check_secs)
                    .max(0.0);
            let executor = rollout_agreement::Executor {
                switch_secs,
                check_secs,
                grace_secs: GRACE_SECS as f64,
                passes: PASSES,
                interval_secs: INTERVAL_SECS,
            };
            println!(
                "[bench-rollout-{nodes}] simulating the rollout: a wave's slowest node was healthy {healthy:.3} s after it opened (mean over the waves), so the modelled switch takes {switch_secs:.3} s"
            );
            let plan = work.file("plan.toml");
            let dir = plan.parent().unwrap().to_path_buf();
            rollout_agreement::wave_secs(nodes, &plan, &executor, &dir)
        }
    };

    let bad_back_secs = bad.then(|| {
        publish(&work, &mut mesh, "2.0", 2, "broken");
        let (_, _) = roll_out(&mut mesh, "2.0", "rolled_back");
        let canary = (0..nodes)
            .find(|&i| !times(&mesh, i, "started", "2.0").is_empty())
            .expect("a canary started 2.0");
        let switched = times(&mesh, canary, "started", "2.0")[0];
        let failed = switched + u128::from(GRACE_SECS) * 1_000_000_000;
        let back = mesh.wait("the canary is healthy on 1.0 again", ROLLOUT_WITHIN, |m| {
            // Its checks of 1.0 after 1.0 started again (the grace period's end, by the
            // node's clock, may come a moment before `failed` by the script's).
            let restarted = times(m, canary, "started", "1.0")
                .into_iter()
                .find(|t| *t > switched)
                .ok_or("1.0 not started again yet".to_owned())?;
            let passes: Vec<u128> = times(m, canary, "passes", "1.0")
                .into_iter()
                .filter(|t| *t >= restarted)
                .collect();
            passes.get(1).copied().ok_or("not yet".to_owned())
        });
        (back.saturating_sub(failed)) as f64 / 1e9
    });
    Figures {
        nodes,
        waves: waves.len(),
        total_secs,
        delays_secs,
        wave_secs,
        simulated_wave_secs,
        idle_frames_per_sec,
        rollout_frames_per_sec,
        bad_back_secs,
    }
}

fn main() -> ExitCode {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = if smoke {
        vec![6]
    } else {
        std::env::var("SHOAL_ROLLOUT_NODES")
            .unwrap_or_else(|_| "10,30,50".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    };
    println!(
        "rollout bench{}: fleet sizes {sizes:?}",
        if smoke { " (smoke run)" } else { "" }
    );
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mut all = Vec::new();
    for &n in &sizes {
        all.push(measure(n, n == largest));
    }
    println!();
    println!(
        "| nodes | waves | start to completed | per-wave delay median / max | coordinator frames/s idle / rollout |"
    );
    println!("|---|---|---|---|---|");
    let mut ok = true;
    for f in &all {
        let mut d = f.delays_secs.clone();
        d.sort_by(f64::total_cmp);
        ok &= !d.is_empty() && d.len() == f.waves;
        let median = d.get(d.len() / 2).copied().unwrap_or(f64::NAN);
        let max = d.last().copied().unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {:.1} s | {median:.2} s / {max:.2} s | {:.1} / {:.1} |",
            f.nodes, f.waves, f.total_secs, f.idle_frames_per_sec, f.rollout_frames_per_sec
        );
        if let Some(b) = f.bad_back_secs {
            println!(
                "bad release at {} nodes: canary healthy on 1.0 again {b:.2} s after its own failure (switch + {GRACE_SECS} s grace)",
                f.nodes
            );
        }
    }
    println!();
    for f in &all {
        match &f.simulated_wave_secs {
            Ok(sim) if !sim.is_empty() && !f.wave_secs.is_empty() => {
                println!(
                    "{}",
                    rollout_agreement::describe(f.nodes, &f.wave_secs, sim)
                );
                let ratio = rollout_agreement::ratio(&f.wave_secs, sim);
                if smoke && !SMOKE_AGREEMENT.contains(&ratio) {
                    eprintln!(
                        "rollout bench: simulated wave times are {ratio:.3} of the real ones at {} nodes, outside {SMOKE_AGREEMENT:?}",
                        f.nodes
                    );
                    ok = false;
                }
            }
            Ok(sim) => {
                println!(
                    "agreement at {} nodes  not compared: {} real waves passed, {} simulated",
                    f.nodes,
                    f.wave_secs.len(),
                    sim.len()
                );
                ok = false;
            }
            Err(e) => {
                println!("agreement at {} nodes  simulated run FAILED: {e}", f.nodes);
                ok = false;
            }
        }
    }
    println!();
    println!(
        "Command: cargo bench -p shoal --bench rollout   (SHOAL_ROLLOUT_NODES={})",
        sizes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    if ok && all.iter().any(|f| f.bad_back_secs.is_some()) {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "rollout bench: some figure is missing or out of bounds (a wave without its delay, no bad-release figure, or no agreement)"
        );
        ExitCode::FAILURE
    }
}
