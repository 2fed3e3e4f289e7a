//! Rollout plans: the TOML file that `shoal rollout plan|start` and the simulator read.
//!
//! A plan is an ordered list of stages (canary, pilot, broad, ...) and a few plan-wide rules.
//! Sizes are **cumulative within a stage's selector**: a stage brings the share of its selected
//! nodes that run the release up to its size, so a pilot of `20%` after a canary of `1` adds
//! about 20% minus the canary. That is what lets a node decide for itself, from one hash, which
//! stage it belongs to, and why thresholds only grow.

use super::selector::Selector;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// The most stages a plan may have.
pub const MAX_STAGES: usize = 16;
/// The largest stage given as a count that is sized exactly (by the k smallest node hashes);
/// larger counts become a fraction of the hash space.
pub const MAX_EXACT_COUNT: u32 = 64;
/// The longest bake time or deadline a plan may ask for: one week.
pub const MAX_STAGE_SECS: u64 = 7 * 24 * 3600;

/// Why a plan file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// Not TOML, or keys or values the plan format does not have.
    #[error("{0}")]
    Syntax(String),
    /// A plan with no `[[stage]]`.
    #[error("the plan has no [[stage]]: add at least one (name, size, ...)")]
    NoStages,
    /// More stages than [`MAX_STAGES`].
    #[error("the plan has {0} stages; at most {MAX_STAGES} are allowed")]
    TooManyStages(usize),
    /// A value out of range, naming the stage, the key and the value.
    #[error("stage {stage:?}: {key} = {value:?}: {why}")]
    Value {
        /// The stage's name.
        stage: String,
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What is wrong and what is allowed.
        why: String,
    },
    /// Two stages share a name.
    #[error("two stages are named {0:?}: stage names must differ")]
    DuplicateStage(String),
    /// A plan-wide value out of range.
    #[error("{key} = {value}: {why}")]
    Rule {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// What is allowed.
        why: &'static str,
    },
}

/// How many of a stage's selected nodes run the release once the stage is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Size {
    /// Exactly this many (or all, if fewer match).
    Count(u32),
    /// This share, in basis points (1/100 of a percent), 1 to 10,000.
    Percent(u16),
}

/// A count, or a share of the wave, used by success criteria and failure thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Amount {
    /// This many nodes.
    Count(u32),
    /// This share of the wave, in basis points.
    Percent(u16),
}

impl Amount {
    /// The number of nodes this amounts to in a wave of `expected`, rounded up.
    pub fn of(self, expected: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(bp) => {
                let n = u64::from(expected) * u64::from(bp);
                u32::try_from(n.div_ceil(10_000)).unwrap_or(u32::MAX)
            }
        }
    }
}

/// When a wave counts as a success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Success {
    /// Every expected node healthy.
    Strict,
    /// At least this share of the expected nodes healthy, and at least `min_count` of them (or
    /// all, if fewer are expected).
    Percent {
        /// Basis points.
        bp: u16,
        /// The fewest healthy nodes that can pass.
        min_count: u32,
    },
}

/// What a stage does when its failure threshold is reached or its deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OnFailure {
    /// Stop starting new nodes and wait for the operator.
    Pause,
    /// Send every node that activated the release back to the previous one.
    Rollback,
}

/// One stage of a plan, checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stage {
    /// Its name, shown in status and the audit log.
    pub name: String,
    /// Which nodes it covers (all must match).
    pub select: Selector,
    /// How many of them run the release when it is done.
    pub size: Size,
    /// How long a wave's success criteria must hold before the next wave starts.
    pub bake_secs: u64,
    /// When a wave counts as a success.
    pub success: Success,
    /// Failed nodes in a wave that stop the stage.
    pub failure_threshold: Amount,
    /// How long a wave may take to meet its criteria.
    pub deadline_secs: u64,
    /// What to do when it fails.
    pub on_failure: OnFailure,
}

/// A checked plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// Waves never span two regions, and a region finishes a stage before the next starts.
    pub one_region_at_a_time: bool,
    /// Waves inside a region go fault domain by fault domain.
    pub fault_domain_by_fault_domain: bool,
    /// Fault domains of one region in one wave, at most.
    pub max_parallel_fault_domains: u32,
    /// The label naming a node's region.
    pub label_region: String,
    /// The label naming its fault domain.
    pub label_fault_domain: String,
    /// Nodes carrying any of these labels with this value are skipped.
    pub skip_labels: BTreeMap<String, String>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default = "yes")]
    one_region_at_a_time: bool,
    #[serde(default = "yes")]
    fault_domain_by_fault_domain: bool,
    #[serde(default = "one")]
    max_parallel_fault_domains: u32,
    #[serde(default = "default_region")]
    label_region: String,
    #[serde(default = "default_fault_domain")]
    label_fault_domain: String,
    #[serde(default = "default_skip")]
    skip_labels: BTreeMap<String, String>,
    #[serde(default)]
    stage: Vec<StageFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    name: String,
    #[serde(default)]
    select: BTreeMap<String, String>,
    size: String,
    #[serde(default)]
    bake_secs: u64,
    #[serde(default = "default_success")]
    success: String,
    #[serde(default)]
    min_healthy: u32,
    #[serde(default = "default_threshold")]
    failure_threshold: String,
    #[serde(default = "default_deadline")]
    deadline_secs: u64,
    #[serde(default = "default_on_failure")]
    on_failure: String,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_region() -> String {
    "region".into()
}
fn default_fault_domain() -> String {
    "fd".into()
}
fn default_skip() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("maintenance".to_owned(), "true".to_owned()),
        ("rollout".to_owned(), "opt-out".to_owned()),
    ])
}
fn default_success() -> String {
    "100%".into()
}
fn default_threshold() -> String {
    "1".into()
}
fn default_deadline() -> u64 {
    600
}
fn default_on_failure() -> String {
    "rollback".into()
}

/// Parses `"25%"`, `"12.5%"` into basis points (1 to 10,000).
fn percent(text: &str) -> Option<u16> {
    let number = text.strip_suffix('%')?.trim();
    let value: f64 = number.parse().ok()?;
    if !(value > 0.0 && value <= 100.0) {
        return None;
    }
    let bp = (value * 100.0).round();
    (1.0..=10_000.0).contains(&bp).then_some(bp as u16)
}

/// Parses a count of at least 1 (`"3"`) or a percent (`"25%"`).
fn amount(text: &str) -> Option<Amount> {
    if let Some(bp) = percent(text) {
        return Some(Amount::Percent(bp));
    }
    match text.trim().parse::<u32>() {
        Ok(n) if n > 0 => Some(Amount::Count(n)),
        _ => None,
    }
}

const AMOUNT_HELP: &str = "give a count of at least 1, or a percent above 0% and at most 100%";

impl Plan {
    /// Parses and checks a plan file's text.
    ///
    /// # Errors
    ///
    /// [`PlanError`] naming the key, the value and what is allowed: unknown keys, sizes or
    /// percents out of range, no stages, duplicate names.
    pub fn from_toml(text: &str) -> Result<Plan, PlanError> {
        let file: PlanFile = toml::from_str(text).map_err(|e| PlanError::Syntax(e.to_string()))?;
        if file.stage.is_empty() {
            return Err(PlanError::NoStages);
        }
        if file.stage.len() > MAX_STAGES {
            return Err(PlanError::TooManyStages(file.stage.len()));
        }
        if file.max_parallel_fault_domains == 0 {
            return Err(PlanError::Rule {
                key: "max_parallel_fault_domains",
                value: "0".into(),
                why: "must be at least 1",
            });
        }
        let mut stages = Vec::with_capacity(file.stage.len());
        for s in file.stage {
            if stages.iter().any(|t: &Stage| t.name == s.name) {
                return Err(PlanError::DuplicateStage(s.name));
            }
            stages.push(stage(s)?);
        }
        Ok(Plan {
            one_region_at_a_time: file.one_region_at_a_time,
            fault_domain_by_fault_domain: file.fault_domain_by_fault_domain,
            max_parallel_fault_domains: file.max_parallel_fault_domains,
            label_region: file.label_region,
            label_fault_domain: file.label_fault_domain,
            skip_labels: file.skip_labels,
            stages,
        })
    }

    /// Whether a node with these labels is skipped by the plan (maintenance, opted out).
    pub fn skips(&self, labels: &crate::labels::Labels) -> bool {
        self.skip_labels
            .iter()
            .any(|(k, v)| labels.get(k) == Some(v.as_str()))
    }
}

fn stage(s: StageFile) -> Result<Stage, PlanError> {
    let bad = |key: &'static str, value: &str, why: &str| PlanError::Value {
        stage: s.name.clone(),
        key,
        value: value.to_owned(),
        why: why.to_owned(),
    };
    if s.name.is_empty() || s.name.len() > 32 {
        return Err(bad("name", &s.name, "give a name of 1 to 32 characters"));
    }
    let select = Selector::new(s.select).map_err(|why| bad("select", "", &why))?;
    let size = match amount(&s.size) {
        Some(Amount::Count(n)) => Size::Count(n),
        Some(Amount::Percent(bp)) => Size::Percent(bp),
        None => return Err(bad("size", &s.size, AMOUNT_HELP)),
    };
    let success = if s.success == "strict" {
        Success::Strict
    } else {
        match percent(&s.success) {
            Some(bp) => Success::Percent {
                bp,
                min_count: s.min_healthy,
            },
            None => {
                return Err(bad(
                    "success",
                    &s.success,
                    "give \"strict\" or a percent above 0% and at most 100%",
                ));
            }
        }
    };
    let failure_threshold = amount(&s.failure_threshold)
        .ok_or_else(|| bad("failure_threshold", &s.failure_threshold, AMOUNT_HELP))?;
    let on_failure = match s.on_failure.as_str() {
        "pause" => OnFailure::Pause,
        "rollback" => OnFailure::Rollback,
        other => return Err(bad("on_failure", other, "give \"pause\" or \"rollback\"")),
    };
    if s.bake_secs > MAX_STAGE_SECS {
        return Err(bad(
            "bake_secs",
            &s.bake_secs.to_string(),
            "at most a week (604800)",
        ));
    }
    if s.deadline_secs == 0 || s.deadline_secs > MAX_STAGE_SECS {
        return Err(bad(
            "deadline_secs",
            &s.deadline_secs.to_string(),
            "give 1 to 604800 seconds",
        ));
    }
    Ok(Stage {
        name: s.name,
        select,
        size,
        bake_secs: s.bake_secs,
        success,
        failure_threshold,
        deadline_secs: s.deadline_secs,
        on_failure,
    })
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Count(n) => write!(f, "{n}"),
            Size::Percent(bp) => write!(f, "{}%", f64::from(*bp) / 100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
one_region_at_a_time = true
fault_domain_by_fault_domain = true
label_fault_domain = "fd"
label_region = "region"

[[stage]]
name = "canary"
select = { region = "r1" }
size = "1"
bake_secs = 5
success = "100%"
failure_threshold = "1"
deadline_secs = 120
on_failure = "rollback"

[[stage]]
name = "pilot"
size = "20%"
success = "90%"
min_healthy = 2
failure_threshold = "10%"
on_failure = "pause"

[[stage]]
name = "broad"
size = "100%"
success = "strict"
"#;

    #[test]
    fn the_documented_plan_parses() {
        let plan = Plan::from_toml(PLAN).unwrap();
        assert_eq!(plan.stages.len(), 3);
        let canary = &plan.stages[0];
        assert_eq!(canary.size, Size::Count(1));
        assert_eq!(canary.on_failure, OnFailure::Rollback);
        assert_eq!(canary.select.get("region"), Some("r1"));
        let pilot = &plan.stages[1];
        assert_eq!(pilot.size, Size::Percent(2000));
        assert_eq!(
            pilot.success,
            Success::Percent {
                bp: 9000,
                min_count: 2
            }
        );
        assert_eq!(pilot.failure_threshold, Amount::Percent(1000));
        assert_eq!(plan.stages[2].success, Success::Strict);
        assert_eq!(plan.max_parallel_fault_domains, 1);
    }

    #[test]
    fn bad_plans_are_refused_naming_what_is_wrong() {
        let cases = [
            ("bogus = 1\n[[stage]]\nname = \"a\"\nsize = \"1\"", "bogus"),
            (
                "[[stage]]\nname = \"a\"\nsize = \"1\"\ncolour = \"red\"",
                "colour",
            ),
            ("[[stage]]\nname = \"a\"\nsize = \"0\"", "size"),
            ("[[stage]]\nname = \"a\"\nsize = \"101%\"", "101%"),
            ("[[stage]]\nname = \"a\"\nsize = \"-3\"", "-3"),
            (
                "[[stage]]\nname = \"a\"\nsize = \"1\"\nsuccess = \"0%\"",
                "success",
            ),
            (
                "[[stage]]\nname = \"a\"\nsize = \"1\"\nfailure_threshold = \"0\"",
                "failure_threshold",
            ),
            (
                "[[stage]]\nname = \"a\"\nsize = \"1\"\non_failure = \"panic\"",
                "on_failure",
            ),
            (
                "[[stage]]\nname = \"a\"\nsize = \"1\"\n[[stage]]\nname = \"a\"\nsize = \"2\"",
                "two stages",
            ),
            ("one_region_at_a_time = true", "no [[stage]]"),
            (
                "max_parallel_fault_domains = 0\n[[stage]]\nname = \"a\"\nsize = \"1\"",
                "at least 1",
            ),
        ];
        for (text, needle) in cases {
            let err = Plan::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn amounts_round_up() {
        assert_eq!(Amount::Percent(1000).of(15), 2);
        assert_eq!(Amount::Percent(10_000).of(7), 7);
        assert_eq!(Amount::Count(3).of(100), 3);
        assert_eq!(percent("12.5%"), Some(1250));
        assert_eq!(percent("0.001%"), None);
    }

    #[test]
    fn skip_labels_default_to_maintenance_and_opt_out() {
        let plan = Plan::from_toml("[[stage]]\nname = \"a\"\nsize = \"1\"").unwrap();
        let labels = |t: &str| t.parse::<crate::labels::Labels>().unwrap();
        assert!(plan.skips(&labels("region=r1,maintenance=true")));
        assert!(plan.skips(&labels("rollout=opt-out")));
        assert!(!plan.skips(&labels("region=r1,maintenance=false")));
    }
}
