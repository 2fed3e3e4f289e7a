//! Scenario files (`simulations/*.toml`): the fleet's shape and caps, the release, and what the
//! run does to them. Every error names the file and the key, and says what is allowed.

use crate::dataplane::Latencies;
use serde::Deserialize;
use shoal_core::content::PieceLayout;
use shoal_core::units::{parse_rate, parse_size};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A checked scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file it came from.
    pub path: PathBuf,
    /// The seed of every random choice (`seed`).
    pub seed: u64,
    /// Nodes, the origin included (`fleet.nodes`).
    pub nodes: u32,
    /// `fleet.regions`.
    pub regions: u32,
    /// `fleet.fault_domains`, per region.
    pub fault_domains: u32,
    /// `fleet.racks`, per fault domain.
    pub racks: u32,
    /// `fleet.upload`, bytes per second.
    pub upload: u64,
    /// `fleet.download`, bytes per second.
    pub download: u64,
    /// `fleet.neighbours`: swarm neighbours per node (default 40, the daemon's).
    pub neighbours: usize,
    /// `[fleet.latency]`: one-way latency by topology distance (`rack_ms`, `fault_domain_ms`,
    /// `region_ms`, `remote_ms`; defaults 0.2, 0.5, 2 and 40).
    pub latency: Latencies,
    /// `release.size` and `release.piece_size`.
    pub layout: PieceLayout,
    /// `limit_secs`: simulated time after which the run gives up (default 86400).
    pub limit_secs: u64,
    /// `[rollout] plan`, resolved against the scenario's directory.
    pub plan: Option<PathBuf>,
    /// The rest of `[rollout]`: when it starts and how long the modelled executor takes.
    pub activation: Activation,
    /// `[[fault]]` entries, in time order.
    pub faults: Vec<Fault>,
}

/// When a scenario's rollout starts and how its modelled executor and health checks behave
/// (`[rollout]`; each key in seconds, with its default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Activation {
    /// `start_secs` (30): when the rollout starts; the release is published at zero.
    pub start_secs: f64,
    /// `prepare_secs` (1): staging a release.
    pub prepare_secs: f64,
    /// `switch_secs` (2): switching the service to it.
    pub switch_secs: f64,
    /// `check_secs` (0.1): one health check.
    pub check_secs: f64,
    /// `health_grace_secs` (5): the service policy's grace after a switch.
    pub health_grace_secs: f64,
    /// `health_passes` (3): passing checks in a row that make a node healthy.
    pub health_passes: u32,
    /// `health_interval_secs` (1): between checks.
    pub health_interval_secs: f64,
}

impl Default for Activation {
    fn default() -> Self {
        Activation {
            start_secs: 30.0,
            prepare_secs: 1.0,
            switch_secs: 2.0,
            check_secs: 0.1,
            health_grace_secs: 5.0,
            health_passes: 3,
            health_interval_secs: 1.0,
        }
    }
}

/// A fault on the scenario's schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// When, in simulated seconds.
    pub at_secs: f64,
    /// What.
    pub kind: FaultKind,
    /// The region it hits (1-based), or every region.
    pub region: Option<u32>,
    /// The share of the region's nodes it hits, above 0 and at most 1.
    pub fraction: f64,
    /// A partition's length, seconds; `None`: it never heals. Only partitions have one.
    pub duration_secs: Option<f64>,
}

/// Kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The nodes stop: their state is gone, their links break.
    Crash,
    /// The nodes are cut off from the rest, for `duration_secs` or for good.
    Partition,
    /// The release fails its health checks on the nodes.
    BadRelease,
}

impl FaultKind {
    /// Its name in a scenario file.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Partition => "partition",
            FaultKind::BadRelease => "bad_release",
        }
    }
}

/// Refuses partitions that overlap in time: the simulator keeps one cut at a time.
fn one_partition_at_a_time(faults: &[Fault]) -> Result<(), String> {
    let mut cuts: Vec<(usize, &Fault)> = faults
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind == FaultKind::Partition)
        .collect();
    cuts.sort_by(|a, b| a.1.at_secs.total_cmp(&b.1.at_secs));
    for pair in cuts.windows(2) {
        let ((i, first), (j, next)) = (pair[0], pair[1]);
        let heals = first.duration_secs.map(|d| first.at_secs + d);
        if heals.is_none_or(|h| next.at_secs < h) {
            let until =
                heals.map_or_else(|| "never heals".to_owned(), |h| format!("heals at {h} s"));
            return Err(format!(
                "fault[{j}] is a partition at {} s, but the partition of fault[{i}] (at {} s) {until}: partitions run one at a time; start it later or end the first sooner with duration_secs",
                next.at_secs, first.at_secs
            ));
        }
    }
    Ok(())
}

/// A scenario that cannot be run, with the file and the key.
#[derive(Debug)]
pub struct ScenarioError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ScenarioError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    seed: Option<u64>,
    limit_secs: Option<u64>,
    fleet: FleetFile,
    release: ReleaseFile,
    rollout: Option<RolloutFile>,
    #[serde(default)]
    fault: Vec<FaultFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    nodes: i64,
    #[serde(default = "one")]
    regions: i64,
    #[serde(default = "one")]
    fault_domains: i64,
    #[serde(default = "one")]
    racks: i64,
    upload: String,
    download: String,
    neighbours: Option<i64>,
    latency: Option<LatencyFile>,
}

/// `[fleet.latency]`: one-way latency in milliseconds by how close two nodes are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyFile {
    rack_ms: Option<f64>,
    fault_domain_ms: Option<f64>,
    region_ms: Option<f64>,
    remote_ms: Option<f64>,
}

fn one() -> i64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseFile {
    size: String,
    piece_size: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutFile {
    plan: String,
    start_secs: Option<f64>,
    prepare_secs: Option<f64>,
    switch_secs: Option<f64>,
    check_secs: Option<f64>,
    health_grace_secs: Option<f64>,
    health_passes: Option<i64>,
    health_interval_secs: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultFile {
    at_secs: f64,
    kind: FaultKind,
    region: Option<i64>,
    fraction: Option<f64>,
    duration_secs: Option<f64>,
}

/// The most nodes a scenario may name.
pub const MAX_NODES: u32 = 10_000_000;

impl Scenario {
    /// Reads and checks a scenario file.
    ///
    /// # Errors
    ///
    /// [`ScenarioError`] for a file that cannot be read, TOML that does not parse (with the
    /// line), unknown keys, and values out of range.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            path: path.to_path_buf(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Checks a scenario's text; `path` names it in errors and anchors the plan's path.
    ///
    /// # Errors
    ///
    /// As [`Scenario::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let err = |message: String| ScenarioError {
            path: path.to_path_buf(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| err(e.to_string().trim().into()))?;
        let count = |key: &str, value: i64, min: i64, max: i64| {
            if value < min || value > max {
                Err(err(format!("{key} is {value}: use {min} to {max}")))
            } else {
                Ok(value as u32)
            }
        };
        let fleet = &file.fleet;
        let nodes = count("fleet.nodes", fleet.nodes, 2, i64::from(MAX_NODES)).map_err(|e| {
            if fleet.nodes < 2 {
                err(format!(
                    "fleet.nodes is {}: a fleet needs the origin and at least one receiver (2 or more)",
                    fleet.nodes
                ))
            } else {
                e
            }
        })?;
        let regions = count("fleet.regions", fleet.regions, 1, 1000)?;
        let fault_domains = count("fleet.fault_domains", fleet.fault_domains, 1, 1000)?;
        let racks = count("fleet.racks", fleet.racks, 1, 100_000)?;
        let rate = |key: &str, text: &str| parse_rate(text).map_err(|e| err(format!("{key}: {e}")));
        let upload = rate("fleet.upload", &fleet.upload)?;
        let download = rate("fleet.download", &fleet.download)?;
        let neighbours = match fleet.neighbours {
            None => 40,
            Some(n) => count("fleet.neighbours", n, 1, 1000)? as usize,
        };
        let latency = match &fleet.latency {
            None => Latencies::default(),
            Some(l) => {
                let ms = |key: &str, value: Option<f64>, default: Duration| match value {
                    None => Ok(default),
                    Some(v) if v.is_finite() && (0.0..=10_000.0).contains(&v) => {
                        Ok(Duration::from_secs_f64(v / 1000.0))
                    }
                    Some(v) => Err(err(format!(
                        "fleet.latency.{key} is {v}: use 0 to 10000 milliseconds"
                    ))),
                };
                let d = Latencies::default();
                Latencies {
                    rack: ms("rack_ms", l.rack_ms, d.rack)?,
                    fault_domain: ms("fault_domain_ms", l.fault_domain_ms, d.fault_domain)?,
                    region: ms("region_ms", l.region_ms, d.region)?,
                    remote: ms("remote_ms", l.remote_ms, d.remote)?,
                }
            }
        };
        let size = parse_size(&file.release.size).map_err(|e| err(format!("release.size: {e}")))?;
        let piece = match &file.release.piece_size {
            None => u64::from(shoal_core::content::default_piece_size(size)),
            Some(text) => parse_size(text).map_err(|e| err(format!("release.piece_size: {e}")))?,
        };
        let layout = PieceLayout::new(size, piece)
            .map_err(|e| err(format!("release.size {size} in pieces of {piece}: {e}")))?;
        let limit_secs = file.limit_secs.unwrap_or(86_400);
        if limit_secs == 0 {
            return Err(err(
                "limit_secs is 0: give the simulated seconds after which the run stops".into(),
            ));
        }
        let mut activation = Activation::default();
        let mut plan = None;
        if let Some(r) = &file.rollout {
            let p = PathBuf::from(&r.plan);
            plan = Some(if p.is_absolute() {
                p
            } else {
                path.parent().unwrap_or(Path::new(".")).join(p)
            });
            let secs = |key: &str, value: Option<f64>, default: f64| match value {
                None => Ok(default),
                Some(v) if v.is_finite() && (0.0..=limit_secs as f64).contains(&v) => Ok(v),
                Some(v) => Err(err(format!(
                    "rollout.{key} is {v}: use 0 to limit_secs ({limit_secs}) seconds"
                ))),
            };
            let d = Activation::default();
            activation = Activation {
                start_secs: secs("start_secs", r.start_secs, d.start_secs)?,
                prepare_secs: secs("prepare_secs", r.prepare_secs, d.prepare_secs)?,
                switch_secs: secs("switch_secs", r.switch_secs, d.switch_secs)?,
                check_secs: secs("check_secs", r.check_secs, d.check_secs)?,
                health_grace_secs: secs(
                    "health_grace_secs",
                    r.health_grace_secs,
                    d.health_grace_secs,
                )?,
                health_passes: match r.health_passes {
                    None => d.health_passes,
                    Some(n) => count("rollout.health_passes", n, 1, 1000)?,
                },
                health_interval_secs: secs(
                    "health_interval_secs",
                    r.health_interval_secs,
                    d.health_interval_secs,
                )?,
            };
        }
        let mut faults = Vec::new();
        for (i, f) in file.fault.iter().enumerate() {
            let key = format!("fault[{i}]");
            if !f.at_secs.is_finite() || f.at_secs < 0.0 || f.at_secs > limit_secs as f64 {
                return Err(err(format!(
                    "{key}.at_secs is {}: use 0 to limit_secs ({limit_secs}) seconds",
                    f.at_secs
                )));
            }
            let region = match f.region {
                None => None,
                Some(r) if r >= 1 && r <= i64::from(regions) => Some(r as u32),
                Some(r) => {
                    return Err(err(format!(
                        "{key}.region is {r}: the fleet has regions 1 to {regions}"
                    )));
                }
            };
            let fraction = f.fraction.unwrap_or(1.0);
            if !(fraction > 0.0 && fraction <= 1.0) {
                return Err(err(format!(
                    "{key}.fraction is {fraction}: use a share above 0 and at most 1"
                )));
            }
            if f.kind == FaultKind::BadRelease && plan.is_none() {
                return Err(err(format!(
                    "{key}.kind is bad_release but the scenario has no [rollout]: a bad release shows only when it is activated"
                )));
            }
            let duration_secs = match (f.duration_secs, f.kind) {
                (None, _) => None,
                (Some(d), FaultKind::Partition) if d > 0.0 && d <= limit_secs as f64 => Some(d),
                (Some(d), FaultKind::Partition) => {
                    return Err(err(format!(
                        "{key}.duration_secs is {d}: use above 0 to limit_secs ({limit_secs}) seconds, or leave it out for a partition that never heals"
                    )));
                }
                (Some(_), kind) => {
                    return Err(err(format!(
                        "{key}.duration_secs is set on a {} fault: only a partition heals; remove the key",
                        kind.name()
                    )));
                }
            };
            faults.push(Fault {
                at_secs: f.at_secs,
                kind: f.kind,
                region,
                fraction,
                duration_secs,
            });
        }
        one_partition_at_a_time(&faults).map_err(err)?;
        faults.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
        Ok(Scenario {
            path: path.to_path_buf(),
            seed: file.seed.unwrap_or(1),
            nodes,
            regions,
            fault_domains,
            racks,
            upload,
            download,
            neighbours,
            latency,
            layout,
            limit_secs,
            plan,
            activation,
            faults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
seed = 7
[fleet]
nodes = 16
upload = "100mbit"
download = "100mbit"
[release]
size = "256MiB"
piece_size = "1MiB"
"#;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(Path::new("sims/x.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_plain_scenario_parses_with_defaults() {
        let s = parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.seed, s.nodes, s.regions, s.racks), (7, 16, 1, 1));
        assert_eq!(s.upload, 12_500_000);
        assert_eq!(s.layout.piece_count(), 256);
        assert_eq!(s.neighbours, 40);
        assert!(s.plan.is_none() && s.faults.is_empty());
    }

    #[test]
    fn latencies_default_and_can_be_set_by_distance() {
        let s = parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.latency.remote, Latencies::default().remote);
        let s = parse(&format!(
            "{GOOD}[fleet.latency]\nremote_ms = 0.05\nrack_ms = 0\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.latency.remote, Duration::from_micros(50));
        assert_eq!(s.latency.rack, Duration::ZERO);
        assert_eq!(s.latency.region, Latencies::default().region);
    }

    #[test]
    fn bad_scenarios_name_the_file_and_the_key() {
        let cases = [
            (GOOD.replace("nodes = 16", "nodes = 16\nnodez = 3"), "nodez"),
            (GOOD.replace("nodes = 16", "nodes = 0"), "fleet.nodes is 0"),
            (
                GOOD.replace("\"100mbit\"\ndownload", "\"fast\"\ndownload"),
                "fleet.upload",
            ),
            (GOOD.replace("256MiB", "lots"), "release.size"),
            (GOOD.replace("\"1MiB\"", "\"3000\""), "release.size"),
            (
                format!("{GOOD}[[fault]]\nat_secs = 5\nkind = \"crash\"\nregion = 2\n"),
                "fault[0].region is 2",
            ),
            (
                format!("{GOOD}[[fault]]\nat_secs = 5\nkind = \"meteor\"\n"),
                "meteor",
            ),
            (
                format!("{GOOD}[[fault]]\nat_secs = 1e30\nkind = \"crash\"\n"),
                "fault[0].at_secs is 1000000000000000000000000000000",
            ),
            (
                format!("{GOOD}[[fault]]\nat_secs = 5\nkind = \"bad_release\"\n"),
                "no [rollout]",
            ),
            (
                format!("{GOOD}[fleet.latency]\nremote_ms = -1\n"),
                "fleet.latency.remote_ms is -1",
            ),
            (format!("{GOOD}[fleet.latency]\nwan_ms = 3\n"), "wan_ms"),
            (
                format!("{GOOD}[[fault]]\nat_secs = 5\nkind = \"crash\"\nduration_secs = 3\n"),
                "fault[0].duration_secs is set on a crash fault",
            ),
            (
                format!("{GOOD}[[fault]]\nat_secs = 5\nkind = \"partition\"\nduration_secs = 0\n"),
                "fault[0].duration_secs is 0",
            ),
            (
                format!(
                    "{GOOD}[[fault]]\nat_secs = 5\nkind = \"partition\"\nduration_secs = 1e30\n"
                ),
                "fault[0].duration_secs is 1000000000000000000000000000000",
            ),
            (
                format!(
                    "{GOOD}[[fault]]\nat_secs = 9\nkind = \"partition\"\n[[fault]]\nat_secs = 5\nkind = \"partition\"\nduration_secs = 10\n"
                ),
                "fault[0] is a partition at 9 s, but the partition of fault[1] (at 5 s) heals at 15 s",
            ),
            ("[fleet\n".to_string(), "line 1"),
        ];
        for (text, want) in cases {
            let e = parse(&text).expect_err(&text);
            assert!(e.starts_with("sims/x.toml: "), "{e}");
            assert!(e.contains(want), "{e:?} does not mention {want:?}");
        }
    }

    #[test]
    fn partitions_in_turn_parse_with_their_lengths() {
        let s = parse(&format!(
            "{GOOD}[[fault]]\nat_secs = 30\nkind = \"partition\"\n[[fault]]\nat_secs = 5\nkind = \"partition\"\nduration_secs = 25\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let lengths: Vec<_> = s
            .faults
            .iter()
            .map(|f| (f.at_secs, f.duration_secs))
            .collect();
        assert_eq!(lengths, [(5.0, Some(25.0)), (30.0, None)]);
    }

    #[test]
    fn the_plan_is_found_beside_the_scenario() {
        let s = parse(&format!("{GOOD}[rollout]\nplan = \"plans/p.toml\"\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.plan, Some(PathBuf::from("sims/plans/p.toml")));
    }
}
