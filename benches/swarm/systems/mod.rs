//! The three systems, each run on the same hosts: start the origin, wait until it serves,
//! start every receiver at once, time each receiver's completion, stop everything, verify.

use super::config::{Config, System};
use super::namespaces::Swarm;
use super::processes::{self, Event, Procs, Report, Usage};
use super::setup::Tools;
use super::{Args, exec, files};
use anyhow::{Context as _, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod bittorrent;
mod http;
mod shoal;

pub use shoal::shoal_release;

/// How long an origin may take to start serving.
const ORIGIN_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a preparation command (key generation, hashing, `mktorrent`) may take.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often completion marker files are polled.
const MARKER_POLL: Duration = Duration::from_millis(10);

/// What every system's run shares.
pub struct Bench<'a> {
    /// The run's configuration.
    pub config: &'a Config,
    /// The programs.
    pub tools: &'a Tools,
    /// The hosts.
    pub swarm: &'a Swarm,
    /// A scratch directory (on tmpfs when possible).
    pub work: &'a Path,
    /// The payload file, on the origin.
    pub payload: &'a Path,
    /// The payload's BLAKE3 hash in hex.
    pub payload_root: &'a str,
}

impl Bench<'_> {
    /// The Kumar-Ross lower bound on the time to give every receiver the payload:
    /// `max(S/u_s, S/d_min, N*S/(u_s + sum u_i))`; every upload and download here is the
    /// same rate.
    pub fn bound_secs(&self) -> f64 {
        let rate = self.config.rate.bytes_per_sec();
        shoal_core::swarm::bound::kumar_ross_secs(
            self.config.payload_bytes,
            u32::try_from(self.config.receivers()).unwrap_or(u32::MAX),
            rate,
            rate,
        )
    }

    /// How long receivers may take before the run counts as failed: ten times the bound or
    /// twice what the origin alone needs to upload one copy to every receiver (HTTP's
    /// expected time), whichever is longer, plus a minute for start-up.
    pub fn deadline_secs(&self) -> f64 {
        let s = self.config.payload_bytes as f64;
        let one_by_one = self.config.receivers() as f64 * s / self.config.rate.bytes_per_sec();
        (10.0 * self.bound_secs()).max(2.0 * one_by_one) + 60.0
    }

    fn ip_of(&self, host: usize) -> String {
        self.swarm.hosts[host].ip.to_string()
    }

    fn netns(&self, host: usize) -> &str {
        &self.swarm.hosts[host].netns
    }
}

/// The figures of one system's run.
pub struct SystemRun {
    /// Completion time of each receiver, in receiver order, from the common start.
    pub completion_secs: Vec<f64>,
    /// What the origin's link carried out from the receivers' start to the last completion.
    pub origin_sent_bytes: u64,
    /// The origin's serving process (for BitTorrent, the seeder; the tracker is separate).
    pub origin: Usage,
    /// The tracker, for BitTorrent.
    pub tracker: Option<Usage>,
    /// Each receiver process.
    pub receivers: Vec<Usage>,
}

/// Runs `system` with fresh receiver data directories, removed afterwards.
///
/// # Errors
///
/// When anything fails or times out, or a receiver's payload does not verify.
pub fn run(bench: &Bench<'_>, system: System) -> Result<SystemRun> {
    let dir = bench.work.join(system.to_string());
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = match system {
        System::Shoal => shoal::run(bench, &dir),
        System::Http => http::run(bench, &dir),
        System::Bittorrent => bittorrent::run(bench, &dir),
    };
    // Receiver copies are big; logs are small and stay until the work directory goes.
    for host in 1..bench.config.hosts {
        let _ = std::fs::remove_dir_all(receiver_dir(&dir, host));
    }
    result
}

fn receiver_dir(dir: &Path, host: usize) -> PathBuf {
    dir.join(format!("receiver-{host}"))
}

fn create_receiver_dirs(bench: &Bench<'_>, dir: &Path) -> Result<()> {
    for host in 1..bench.config.hosts {
        let d = receiver_dir(dir, host);
        std::fs::create_dir(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    Ok(())
}

/// How a receiver says it is complete.
enum Done {
    /// A JSON object with a `root` on stdout (Shoal); other objects are failures.
    Json,
    /// Exiting with status 0 (`curl`).
    Exit,
    /// This file appearing, holding the Unix time of completion (aria2's hook).
    Marker(Vec<PathBuf>),
}

/// What the wait for the receivers returns.
struct Waited {
    completion_secs: Vec<f64>,
    json: Vec<Option<serde_json::Value>>,
    origin_sent_bytes: u64,
}

/// Waits until every receiver in `receivers` (process ids) is complete, with the origin's
/// processes in `origin` still running, then reads the origin's byte count.
fn wait_receivers(
    bench: &Bench<'_>,
    procs: &mut Procs,
    receivers: &[usize],
    origin: &[usize],
    done: &Done,
    start: (Instant, SystemTime),
    tx_before: u64,
) -> Result<Waited> {
    let deadline = start.0 + Duration::from_secs_f64(bench.deadline_secs());
    let mut progress = Progress {
        receivers,
        origin,
        done,
        start: start.0,
        start_unix_secs: start
            .1
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64(),
        completion_secs: vec![None; receivers.len()],
        json: vec![None; receivers.len()],
    };
    while !progress.is_complete() {
        super::interrupt::check()?;
        if Instant::now() >= deadline {
            bail!(
                "timed out after {:.0} s; not complete: {}",
                bench.deadline_secs(),
                progress.late(procs).join(", ")
            );
        }
        let wait_until = match done {
            Done::Marker(_) => (Instant::now() + MARKER_POLL).min(deadline),
            _ => deadline,
        };
        if let Some(event) = procs.next_event(wait_until) {
            progress.handle(procs, event)?;
        }
        progress.poll_markers()?;
    }
    let tx_after = bench.swarm.tx_bytes(0)?;
    Ok(Waited {
        completion_secs: progress.completion_secs.into_iter().flatten().collect(),
        json: progress.json,
        origin_sent_bytes: tx_after.saturating_sub(tx_before),
    })
}

/// The receivers' state while the harness waits for them.
struct Progress<'a> {
    receivers: &'a [usize],
    origin: &'a [usize],
    done: &'a Done,
    start: Instant,
    start_unix_secs: f64,
    completion_secs: Vec<Option<f64>>,
    json: Vec<Option<serde_json::Value>>,
}

impl Progress<'_> {
    fn is_complete(&self) -> bool {
        self.completion_secs.iter().all(Option::is_some)
    }

    /// The labels of the receivers not complete yet.
    fn late<'p>(&self, procs: &'p Procs) -> Vec<&'p str> {
        self.receivers
            .iter()
            .zip(&self.completion_secs)
            .filter(|(_, c)| c.is_none())
            .map(|(&p, _)| procs.label(p))
            .collect()
    }

    /// Takes one event: a completion, or a failure of a receiver or of the origin.
    fn handle(&mut self, procs: &Procs, event: Event) -> Result<()> {
        let secs = event.at.saturating_duration_since(self.start).as_secs_f64();
        let label = procs.label(event.proc);
        let Some(r) = self.receivers.iter().position(|&p| p == event.proc) else {
            return match event.report {
                Report::Exited { status, .. } if self.origin.contains(&event.proc) => {
                    Err(procs.failure(event.proc, status, "exited while receivers were running"))
                }
                _ => Ok(()),
            };
        };
        let is_complete = self.completion_secs[r].is_some();
        match (event.report, self.done) {
            (Report::Json(value), Done::Json) if !is_complete => {
                ensure!(
                    value.get("root").is_some(),
                    "{label} printed a JSON object without a root, so it failed: {value}"
                );
                self.completion_secs[r] = Some(secs);
                self.json[r] = Some(value);
            }
            (Report::NotJson(e), _) => {
                bail!("{label} printed something that is not JSON on stdout: {e}")
            }
            (Report::Exited { status, .. }, Done::Exit) if !is_complete => {
                if !processes::is_success(status) {
                    return Err(procs.failure(event.proc, status, "failed"));
                }
                self.completion_secs[r] = Some(secs);
            }
            (Report::Exited { status, .. }, _) if !is_complete => {
                return Err(procs.failure(event.proc, status, "exited before it was complete"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Looks for completion markers (aria2's hook). The hook writes a marker under another
    /// name and renames it, so a marker that exists is whole.
    fn poll_markers(&mut self) -> Result<()> {
        let Done::Marker(markers) = self.done else {
            return Ok(());
        };
        for (marker, completion) in markers.iter().zip(&mut self.completion_secs) {
            if completion.is_some() {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(marker) {
                let at_unix_secs: f64 = text.trim().parse().with_context(|| {
                    format!("{} holds {text:?}, not a Unix time", marker.display())
                })?;
                *completion = Some((at_unix_secs - self.start_unix_secs).max(0.0));
            }
        }
        Ok(())
    }
}

/// Collects the usage of every process after `stop_all`.
fn usages(procs: &Procs, ids: &[usize]) -> Vec<Usage> {
    ids.iter()
        .map(|&id| procs.usage(id).unwrap_or_default())
        .collect()
}

fn now() -> (Instant, SystemTime) {
    (Instant::now(), SystemTime::now())
}
