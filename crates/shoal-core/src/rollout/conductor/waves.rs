//! Cutting a rollout into waves from the cells its nodes reported.

use crate::rollout::directive::Cell;
use crate::rollout::plan::Plan;
use crate::rollout::report::RolloutReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// One wave: the cells it opens and what it expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// Its stage.
    pub stage: u8,
    /// Its cells.
    pub cells: Vec<Cell>,
    /// Nodes expected in its cells: those the assignment found, or more if more reported since.
    pub expected: u32,
    /// Nodes the assignment found in its cells.
    #[serde(default)]
    pub assigned: u32,
    /// When it was opened.
    pub opened_at: Option<Duration>,
    /// When it passed.
    pub passed_at: Option<Duration>,
}

/// Cuts the assigned cells into waves: stage by stage; one region at a time if the plan says
/// so; `max_parallel_fault_domains` fault domains of a region at a time if it goes fault domain
/// by fault domain.
pub(super) fn cut_waves(plan: &Plan, report: &RolloutReport) -> Vec<Wave> {
    let mut waves = Vec::new();
    for stage in 0..plan.stages.len() {
        let stage_index = u8::try_from(stage).unwrap_or(u8::MAX);
        let cells: Vec<(Cell, u32)> = report
            .cells
            .iter()
            .filter(|c| c.cell.stage == stage_index)
            .map(|c| (c.cell.clone(), c.counts.iter().sum::<u32>()))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut groups: BTreeMap<String, Vec<(Cell, u32)>> = BTreeMap::new();
        for (cell, n) in cells {
            let key = if plan.one_region_at_a_time {
                cell.region.clone()
            } else {
                String::new()
            };
            groups.entry(key).or_default().push((cell, n));
        }
        for (_, cells) in groups {
            let chunk = if plan.fault_domain_by_fault_domain {
                usize::try_from(plan.max_parallel_fault_domains).unwrap_or(1)
            } else {
                cells.len().max(1)
            };
            for part in cells.chunks(chunk.max(1)) {
                let found = part.iter().map(|(_, n)| n).sum();
                waves.push(Wave {
                    stage: stage_index,
                    cells: part.iter().map(|(c, _)| c.clone()).collect(),
                    expected: found,
                    assigned: found,
                    opened_at: None,
                    passed_at: None,
                });
            }
        }
    }
    waves
}

pub(super) fn describe(cells: &[Cell]) -> String {
    let parts: Vec<String> = cells
        .iter()
        .map(|c| format!("{}/{}", c.region, c.fault_domain))
        .collect();
    parts.join(" ")
}
