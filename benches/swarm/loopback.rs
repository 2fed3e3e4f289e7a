//! One uncapped pair over 127.0.0.1 inside the origin's namespace: what TCP gives
//! (`iperf3`, one stream) next to `shoal seed` and `shoal fetch` of a large payload.

use super::config::System;
use super::processes::{self, Procs, Report};
use super::systems::{Bench, shoal_release};
use super::{Args, exec, files};
use anyhow::{Context as _, Result, bail, ensure};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The loopback figures.
pub struct LoopbackRun {
    /// `iperf3`'s received throughput, one TCP stream.
    pub iperf_bits_per_sec: f64,
    /// Shoal's run, when Shoal is among the systems and the loopback payload is not empty.
    pub shoal: Option<ShoalLoopback>,
}

/// Shoal over loopback.
pub struct ShoalLoopback {
    /// The payload size.
    pub bytes: u64,
    /// From starting `shoal fetch` to its JSON line.
    pub secs: f64,
    /// CPU time of the whole `shoal fetch` process.
    pub fetch_cpu_secs: f64,
    /// CPU time `shoal seed` used while the fetch ran (from `/proc`, so its start-up is
    /// left out).
    pub seed_cpu_secs: f64,
}

/// Runs `iperf3`, then Shoal.
///
/// # Errors
///
/// Whatever fails, naming the command.
pub fn run(bench: &Bench<'_>) -> Result<LoopbackRun> {
    let iperf_bits_per_sec = iperf(bench)?;
    println!(
        "iperf3, one TCP stream over 127.0.0.1 for {} s: {:.2} Gbit/s",
        bench.config.iperf_secs,
        iperf_bits_per_sec / 1e9
    );
    let shoal = if bench.config.systems.contains(&System::Shoal) && bench.config.loopback_bytes > 0
    {
        let s = shoal(bench)?;
        let gbit = s.bytes as f64 * 8.0 / s.secs / 1e9;
        println!(
            "shoal seed + shoal fetch over 127.0.0.1: {} in {:.2} s, {gbit:.2} Gbit/s ({:.2}x iperf3); fetch CPU {:.2} s, seed CPU during the fetch {:.2} s",
            super::units::mib(s.bytes),
            s.secs,
            gbit * 1e9 / iperf_bits_per_sec,
            s.fetch_cpu_secs,
            s.seed_cpu_secs
        );
        Some(s)
    } else {
        println!(
            "shoal loopback: not run (shoal is not in SHOAL_BENCH_SYSTEMS, or SHOAL_BENCH_LOOPBACK_BYTES is 0)"
        );
        None
    };
    Ok(LoopbackRun {
        iperf_bits_per_sec,
        shoal,
    })
}

const IPERF_PORT: u16 = 5201;

fn iperf(bench: &Bench<'_>) -> Result<f64> {
    let ns = &bench.swarm.hosts[0].netns;
    let iperf3 = bench.tools.get("iperf3");
    let dir = bench.work.join("iperf3");
    let mut procs = Procs::new(bench.tools.get("ip"), &dir)?;
    let port = IPERF_PORT.to_string();
    let server = procs.spawn(
        ns,
        "iperf3 server",
        iperf3,
        ["-s", "-1", "-B", "127.0.0.1", "-p", &port],
        false,
    )?;
    bench.swarm.wait_listening(
        bench.tools.get("ss"),
        0,
        &format!("127.0.0.1:{port}"),
        Duration::from_secs(30),
        || procs.check_running(server),
    )?;
    let secs = bench.config.iperf_secs.to_string();
    let out = exec::output(
        Command::new(bench.tools.get("ip"))
            .args(["netns", "exec", ns])
            .arg(iperf3)
            .args(["-c", "127.0.0.1", "-p", &port, "-t", &secs, "-J"]),
        Duration::from_secs(u64::from(bench.config.iperf_secs) + 60),
    )?;
    procs.stop_all()?;
    let report: serde_json::Value =
        serde_json::from_slice(&out).context("iperf3 -J printed something that is not JSON")?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 -J has no end.sum_received.bits_per_second: {report}"))
}

fn shoal(bench: &Bench<'_>) -> Result<ShoalLoopback> {
    let shoal = std::path::Path::new(env!("CARGO_BIN_EXE_shoal"));
    let ns = &bench.swarm.hosts[0].netns;
    let dir = bench.work.join("loopback");
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = bench.config.loopback_bytes;
    let payload = dir.join("payload");
    files::write_payload(&payload, bytes)?;
    let root = files::b3sum(bench.tools, &payload)?;
    let release = shoal_release(bench, &dir, &payload, &root)?;

    let mut procs = Procs::new(bench.tools.get("ip"), &dir.join("logs"))?;
    let seed_data: PathBuf = dir.join("seed-data");
    let fetch_data: PathBuf = dir.join("fetch-data");
    std::fs::create_dir(&fetch_data).context("cannot create the fetch data directory")?;
    let seed = procs.spawn(
        ns,
        "shoal seed (loopback)",
        shoal,
        Args::new("seed")
            .arg(&release.manifest)
            .opt("--file", &payload)
            .opt("--trust", &release.trust)
            .opt("--data-dir", &seed_data)
            .opt("--listen", "127.0.0.1:7070"),
        false,
    )?;
    bench.swarm.wait_listening(
        bench.tools.get("ss"),
        0,
        "127.0.0.1:7070",
        Duration::from_secs(120),
        || procs.check_running(seed),
    )?;
    // Ten times what 100 MB/s would take, plus a minute.
    let timeout = Duration::from_secs_f64(bytes as f64 / 1e7 + 60.0);
    let seed_cpu_before = processes::cpu_secs_so_far(procs.pid(seed))?;
    let start = Instant::now();
    let fetch = procs.spawn(
        ns,
        "shoal fetch (loopback)",
        shoal,
        Args::new("fetch")
            .arg(&release.manifest)
            .opt("--trust", &release.trust)
            .opt("--data-dir", &fetch_data)
            .opt("--listen", "127.0.0.1:7071")
            .opt("--peer", "127.0.0.1:7070")
            .opt("--seed-secs", format!("{:.0}", timeout.as_secs_f64()))
            .arg("--json"),
        true,
    )?;
    let deadline = start + timeout;
    let (secs, value) = loop {
        let Some(event) = procs.next_event(deadline) else {
            super::interrupt::check()?;
            bail!(
                "shoal fetch over loopback timed out after {} s",
                timeout.as_secs()
            );
        };
        match event.report {
            Report::Json(v) if event.proc == fetch => {
                ensure!(v.get("root").is_some(), "shoal fetch failed: {v}");
                break (event.at.duration_since(start).as_secs_f64(), v);
            }
            Report::NotJson(e) => bail!("shoal fetch printed something that is not JSON: {e}"),
            Report::Exited { status, .. } => {
                return Err(procs.failure(event.proc, status, "exited before the fetch completed"));
            }
            Report::Json(_) => {}
        }
    };
    let seed_cpu_secs = processes::cpu_secs_so_far(procs.pid(seed))? - seed_cpu_before;
    procs.stop_all()?;
    let path = value["path"]
        .as_str()
        .with_context(|| format!("shoal fetch printed no path: {value}"))?;
    files::verify_all(bench.tools, &[PathBuf::from(path)], &root)?;
    let fetch_cpu_secs = procs.usage(fetch).map(|u| u.cpu_secs).unwrap_or(f64::NAN);
    drop(procs);
    // Two copies of a large payload: give the memory back before anything else runs.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ShoalLoopback {
        bytes,
        secs,
        fetch_cpu_secs,
        seed_cpu_secs,
    })
}
