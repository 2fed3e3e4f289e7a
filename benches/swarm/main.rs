//! Swarm distribution benchmark: one origin and many receivers on capped links, with Shoal, an
//! HTTP server and BitTorrent distributing the same payload over the same network, one after
//! another, plus a single uncapped loopback pair next to `iperf3`.
//!
//! Run with `cargo bench --bench swarm` as root (network namespaces need it); `benches/README.md`
//! describes the set-up and the figures. Without `--bench` (under `cargo test --all-targets`) it
//! runs a tiny configuration as a smoke test that fails if any receiver's payload does not verify.
//!
//! The model: every host is a network namespace with one veth pair into a shared Linux bridge.
//! A `tc tbf` qdisc on each side of the pair caps the host's upload (egress of the namespace side)
//! and download (egress of the bridge side). Host 0 is the origin and holds the payload; hosts
//! `1..N` are receivers that start at the same instant. A receiver is complete when its tool says
//! so (Shoal's JSON line, `curl` exiting, aria2's download-complete hook); the harness takes the
//! time from the common start. Payloads are checked with `b3sum` after every run.
//!
//! Configuration is by environment variable; see [`config::Config::from_env`].

use anyhow::{Context as _, Result, ensure};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod config; // SHOAL_BENCH_* settings
mod exec; // running commands with timeouts
mod files; // payloads, b3sum checks
mod interrupt; // Ctrl-C
mod loopback; // the uncapped pair over 127.0.0.1
mod namespaces; // hosts, bridge, tbf caps
mod processes; // starting, timing and stopping the systems' processes
mod report; // tables
mod setup; // the tools each system needs
mod simulated; // the same run in shoal-sim
mod systems; // shoal, http and bittorrent runs
mod units;

/// Real over simulated last completion the smoke run accepts. A few seconds of a debug build
/// on a loaded machine, where starting the processes is a good part of the run, cannot hold the
/// goal's 10%, but a simulator finishing in half or twice the real time is broken.
const SMOKE_AGREEMENT: std::ops::RangeInclusive<f64> = 0.5..=2.0;

/// The QUIC congestion controller Shoal runs with: `SHOAL_BENCH_CONGESTION` (`bbr`, `cubic`,
/// `newreno`); by default the one `shoal` itself defaults to.
fn congestion() -> String {
    std::env::var("SHOAL_BENCH_CONGESTION").unwrap_or_else(|_| "cubic".into())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` passes nothing: smoke mode then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    match bench(smoke) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Skipped(why)) => {
            eprintln!("SKIPPED swarm bench: {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("swarm bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a benchmark run ended when it did not fail.
enum Outcome {
    Done,
    Skipped(String),
}

fn bench(smoke: bool) -> Result<Outcome> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Outcome::Skipped("needs root for network namespaces".into()));
    }
    let config = config::Config::from_env(smoke)?;
    interrupt::install();
    if !smoke {
        setup::install();
    }
    let tools = match setup::Tools::find(&config) {
        Ok(tools) => tools,
        Err(missing) => {
            return Ok(Outcome::Skipped(format!(
                "missing {}: run scripts/bench-setup (as root) to install them",
                missing.join(", ")
            )));
        }
    };

    println!("{}", config.describe());
    remove_stale_work_dirs();
    let work = work_dir()?;
    let payload_dir = work.path().join("payload");
    std::fs::create_dir(&payload_dir).context("cannot create the payload directory")?;
    let payload = payload_dir.join("payload");
    let started = Instant::now();
    files::write_payload(&payload, config.payload_bytes)?;
    let payload_root = files::b3sum(&tools, &payload)?;
    println!(
        "payload: {} in {} (generated in {:.1} s), BLAKE3 {payload_root}",
        units::mib(config.payload_bytes),
        payload.display(),
        started.elapsed().as_secs_f64()
    );

    namespaces::remove_stale(&tools);
    let swarm = namespaces::Swarm::build(&tools, config.hosts, config.rate)?;
    println!(
        "swarm: {} hosts on bridge {}, every link capped at {} each way (tbf burst {} KiB, latency {} ms)",
        config.hosts,
        swarm.bridge(),
        config.rate,
        namespaces::tbf_burst_bytes(config.rate) >> 10,
        namespaces::TBF_LATENCY_MS
    );

    let bench = systems::Bench {
        config: &config,
        tools: &tools,
        swarm: &swarm,
        work: work.path(),
        payload: &payload,
        payload_root: &payload_root,
    };
    let mut results = Vec::new();
    let mut disagreement = None;
    for &system in &config.systems {
        println!();
        println!("== {system} ==");
        let result = systems::run(&bench, system);
        interrupt::check()?;
        match &result {
            Ok(run) => {
                println!("{}", report::detail(&bench, run));
                if system == config::System::Shoal {
                    match simulated::compare(&bench, run) {
                        Ok(a) => {
                            println!("{}", a.line);
                            if config.smoke && !SMOKE_AGREEMENT.contains(&a.last_ratio) {
                                disagreement = Some(format!(
                                    "the simulator (real / simulated last completion {:.2}, outside {SMOKE_AGREEMENT:?})",
                                    a.last_ratio
                                ));
                            }
                        }
                        Err(e) => {
                            println!("simulated run FAILED: {e:#}");
                            disagreement = Some("the simulated run".into());
                        }
                    }
                }
            }
            Err(e) => println!("{system} FAILED: {e:#}"),
        }
        results.push((system, result));
    }

    println!();
    println!("== loopback, one pair, no caps ==");
    let loopback = loopback::run(&bench);
    if let Err(e) = &loopback {
        println!("loopback FAILED: {e:#}");
    }

    println!();
    println!("Command: {}", config.command());
    println!();
    println!("{}", report::table(&bench, &results));
    if let Ok(lo) = &loopback {
        println!("{}", report::loopback_table(lo));
    }

    let failed: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(s, _)| s.to_string())
        .chain(loopback.is_err().then(|| "loopback".to_string()))
        .chain(disagreement)
        .collect();
    ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(Outcome::Done)
}

/// Work directories are named with this and the process id, so a later run can find what a
/// killed run left.
const WORK_DIR_PREFIX: &str = "shoal-swarm-";

/// Where work directories go: tmpfs when `/dev/shm` exists, so disk speed does not enter the
/// figures.
fn work_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    }
}

/// A fresh directory for payloads and receiver data, removed when dropped.
fn work_dir() -> Result<tempfile::TempDir> {
    let parent = work_parent();
    tempfile::Builder::new()
        .prefix(&format!("{WORK_DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a work directory in {}", parent.display()))
}

/// Removes work directories of earlier runs that are no longer alive (payload copies are large).
fn remove_stale_work_dirs() {
    let parent = work_parent();
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(WORK_DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing {} left by an earlier run", entry.path().display());
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                eprintln!("warning: cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

/// A command line: words, and options whose values may be paths.
#[derive(Default)]
struct Args(Vec<std::ffi::OsString>);

impl Args {
    /// Starts with `words`, split at whitespace: `Args::new("keys generate")`.
    fn new(words: &str) -> Args {
        Args::default().words(words)
    }

    /// Adds `words`, split at whitespace.
    fn words(mut self, words: &str) -> Args {
        self.0.extend(words.split_whitespace().map(Into::into));
        self
    }

    /// Adds one argument as it is (a path, an address).
    fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Args {
        self.0.push(arg.as_ref().to_os_string());
        self
    }

    /// Adds `flag` and its value.
    fn opt(self, flag: &str, value: impl AsRef<std::ffi::OsStr>) -> Args {
        self.arg(flag).arg(value)
    }
}

impl IntoIterator for Args {
    type Item = std::ffi::OsString;
    type IntoIter = std::vec::IntoIter<std::ffi::OsString>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
