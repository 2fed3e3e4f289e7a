//! What `shoal rollout status` shows of a rollout.

use super::{Conductor, Phase, RolloutState};
use crate::rollout::directive::Cell;
use crate::rollout::report::{NodeState, RolloutReport};
use serde::{Deserialize, Serialize};

pub use super::waves::Wave;

/// Per-stage counts for status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStatus {
    /// The stage's name.
    pub name: String,
    /// `pending`, `running`, `passed` or `failed`.
    pub state: String,
    /// Healthy nodes in its opened cells.
    pub healthy: u32,
    /// Failed or reverted nodes in its opened cells.
    pub failed: u32,
    /// Activating nodes.
    pub activating: u32,
    /// Nodes expected in the stage (from the assignment).
    pub expected: u32,
}

/// A rollout's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Its id.
    pub id: u64,
    /// The service.
    pub service: String,
    /// The release's version.
    pub version: String,
    /// Its state.
    pub state: String,
    /// Per stage.
    pub stages: Vec<StageStatus>,
    /// The wave being run (index), if any.
    pub wave: Option<u32>,
    /// Its waves.
    pub waves: Vec<Wave>,
    /// Why it stopped, if it did.
    pub reason: Option<String>,
    /// Census: nodes matching each stage's selector, by (stage, region, fault domain).
    pub census: Vec<(Cell, u32)>,
    /// Nodes the census counted.
    pub nodes: u32,
    /// Nodes skipped by the census.
    pub excluded: u32,
    /// The most frequent failure reasons.
    pub reasons: Vec<(String, u32)>,
    /// Some failed nodes.
    pub failed_sample: Vec<String>,
}

impl Conductor {
    /// The status of `id`.
    pub fn status(&self, id: u64) -> Option<Status> {
        let r = self.rollouts.get(&id)?;
        let empty = RolloutReport::new(id, 0);
        let report = r.report.as_ref().unwrap_or(&empty);
        let stages = r
            .plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let waves: Vec<(usize, &Wave)> = r
                    .waves
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| usize::from(w.stage) == i)
                    .collect();
                let mut counts = [0u32; 5];
                for (_, w) in waves.iter().filter(|(_, w)| w.opened_at.is_some()) {
                    for c in &w.cells {
                        for (sum, n) in counts.iter_mut().zip(report.cell(c)) {
                            *sum += n;
                        }
                    }
                }
                let state = if waves.is_empty() || waves.iter().all(|(_, w)| w.opened_at.is_none())
                {
                    "pending"
                } else if waves.iter().all(|(_, w)| w.passed_at.is_some()) {
                    "passed"
                } else if matches!(r.state, RolloutState::RolledBack | RolloutState::Paused)
                    && waves.iter().any(|(j, _)| *j == r.wave)
                    && r.reason.is_some()
                {
                    "failed"
                } else {
                    "running"
                };
                StageStatus {
                    name: s.name.clone(),
                    state: state.into(),
                    healthy: counts[NodeState::Healthy as usize],
                    failed: counts[NodeState::Failed as usize]
                        + counts[NodeState::Reverted as usize],
                    activating: counts[NodeState::Activating as usize],
                    expected: waves.iter().map(|(_, w)| w.expected).sum(),
                }
            })
            .collect();
        let census = r.census.as_ref();
        Some(Status {
            id,
            service: r.spec.service.clone(),
            version: r.spec.release.version.clone(),
            state: r.state.as_str().into(),
            stages,
            wave: (r.phase == Phase::Waves && r.wave < r.waves.len())
                .then(|| u32::try_from(r.wave).unwrap_or(u32::MAX)),
            waves: r.waves.clone(),
            reason: r.reason.clone(),
            census: census.map_or_else(Vec::new, |c| {
                c.census
                    .iter()
                    .map(|cc| (cc.cell.clone(), cc.counts[0]))
                    .collect()
            }),
            nodes: census.map_or(0, |c| c.nodes),
            excluded: census.map_or(0, |c| c.excluded),
            reasons: report.reasons.clone(),
            failed_sample: report.failed_sample.clone(),
        })
    }
}
