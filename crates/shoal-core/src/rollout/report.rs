//! What nodes report about a rollout, added up the broadcast tree.
//!
//! A node's own report says which cell (stage, region, fault domain) it is in and its state;
//! during a census it says which stages' selectors it matches and, for exact-count stages, its
//! hash. A parent's report is the sum of its own and its children's. Every list is bounded, so a
//! report stays small at any fleet size; a report that had to drop entries says so
//! (`truncated`), and the conductor takes no decision on it.

use super::directive::Cell;
use serde::{Deserialize, Serialize};

/// States a node of a rollout can be in, as counted.
pub const STATES: usize = 5;
/// The most cells a report counts.
pub const MAX_CELLS: usize = 1024;
/// The most census candidates per stage (the k smallest hashes).
pub const MAX_CANDIDATES: usize = super::plan::MAX_EXACT_COUNT as usize;
/// The most failure reasons a report carries (the most frequent).
pub const MAX_REASONS: usize = 4;
/// The most failed node names a report carries.
pub const MAX_FAILED_SAMPLE: usize = 8;
/// The longest failure reason kept, in bytes.
pub const MAX_REASON_BYTES: usize = 160;
/// The longest node name in a failure sample, in bytes.
pub const MAX_NODE_NAME_BYTES: usize = 128;

/// A node's state in a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum NodeState {
    /// In a stage whose cell is not open yet.
    Pending = 0,
    /// Activating the release.
    Activating = 1,
    /// Running the release, healthy.
    Healthy = 2,
    /// The release failed here; the node went back to its previous release.
    Failed = 3,
    /// Went back to the previous release on the coordinator's word (abort with revert, rollback).
    Reverted = 4,
}

/// Counts of one cell per [`NodeState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellCount {
    /// The cell.
    pub cell: Cell,
    /// Nodes per state, indexed by [`NodeState`].
    pub counts: [u32; STATES],
}

/// A node that matches an exact-count stage during the census, with its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The stage.
    pub stage: u8,
    /// The node's hash for the rollout.
    pub hash: u64,
}

/// The report of a subtree for one rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutReport {
    /// The rollout.
    pub rollout: u64,
    /// The directive sequence the reporting nodes have seen, at least (the smallest of them).
    pub seq: u32,
    /// Nodes that know the rollout.
    pub nodes: u32,
    /// Nodes skipped (maintenance, opted out, drained).
    pub excluded: u32,
    /// Nodes in no stage.
    pub unassigned: u32,
    /// Census: nodes matching each stage's selector per region and fault domain (state index 0).
    pub census: Vec<CellCount>,
    /// Census: the smallest hashes of nodes matching each exact-count stage, sorted by stage
    /// then hash, at most [`MAX_CANDIDATES`] per stage.
    pub candidates: Vec<Candidate>,
    /// Nodes per cell and state, sorted by cell.
    pub cells: Vec<CellCount>,
    /// The most frequent failure reasons with their counts.
    pub reasons: Vec<(String, u32)>,
    /// Names of some failed nodes.
    pub failed_sample: Vec<String>,
    /// Whether entries were dropped to keep the limits.
    pub truncated: bool,
}

impl RolloutReport {
    /// An empty report for `rollout`.
    pub fn new(rollout: u64, seq: u32) -> Self {
        RolloutReport {
            rollout,
            seq,
            nodes: 0,
            excluded: 0,
            unassigned: 0,
            census: Vec::new(),
            candidates: Vec::new(),
            cells: Vec::new(),
            reasons: Vec::new(),
            failed_sample: Vec::new(),
            truncated: false,
        }
    }

    /// Adds `other` (a child's report for the same rollout) to this one.
    pub fn add(&mut self, other: &RolloutReport) {
        debug_assert_eq!(self.rollout, other.rollout);
        self.seq = self.seq.min(other.seq);
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.excluded = self.excluded.saturating_add(other.excluded);
        self.unassigned = self.unassigned.saturating_add(other.unassigned);
        self.truncated |= other.truncated;
        for c in &other.census {
            self.truncated |= !add_cell(&mut self.census, c);
        }
        for c in &other.cells {
            self.truncated |= !add_cell(&mut self.cells, c);
        }
        self.candidates.extend(other.candidates.iter().cloned());
        self.candidates.sort_by_key(|c| (c.stage, c.hash));
        self.candidates.dedup();
        let mut kept = Vec::with_capacity(self.candidates.len());
        for c in self.candidates.drain(..) {
            let same = kept
                .iter()
                .filter(|k: &&Candidate| k.stage == c.stage)
                .count();
            if same < MAX_CANDIDATES {
                kept.push(c);
            }
        }
        self.candidates = kept;
        for (reason, n) in &other.reasons {
            match self.reasons.iter_mut().find(|(r, _)| r == reason) {
                Some((_, m)) => *m = m.saturating_add(*n),
                None => self.reasons.push((reason.clone(), *n)),
            }
        }
        self.reasons
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.reasons.truncate(MAX_REASONS);
        for name in &other.failed_sample {
            if self.failed_sample.len() < MAX_FAILED_SAMPLE && !self.failed_sample.contains(name) {
                self.failed_sample.push(name.clone());
            }
        }
    }

    /// The counts of `cell`, zero if it has none.
    pub fn cell(&self, cell: &Cell) -> [u32; STATES] {
        self.cells
            .binary_search_by(|c| c.cell.cmp(cell))
            .map_or([0; STATES], |i| self.cells[i].counts)
    }

    /// Whether it keeps the size limits; one from a peer that does not is refused.
    pub fn is_well_formed(&self) -> bool {
        let sorted = |v: &[CellCount]| v.windows(2).all(|w| w[0].cell < w[1].cell);
        let short = |v: &[CellCount]| v.iter().all(|c| c.cell.is_well_formed());
        self.cells.len() <= MAX_CELLS
            && short(&self.cells)
            && short(&self.census)
            && self
                .failed_sample
                .iter()
                .all(|n| n.len() <= MAX_NODE_NAME_BYTES)
            && self.census.len() <= MAX_CELLS
            && sorted(&self.cells)
            && sorted(&self.census)
            && self.candidates.len() <= MAX_CANDIDATES * super::plan::MAX_STAGES
            && self.reasons.len() <= MAX_REASONS
            && self
                .reasons
                .iter()
                .all(|(r, _)| r.len() <= MAX_REASON_BYTES)
            && self.failed_sample.len() <= MAX_FAILED_SAMPLE
    }
}

/// Adds `count` into the sorted `cells`; false if it had to be dropped (the list is full).
fn add_cell(cells: &mut Vec<CellCount>, count: &CellCount) -> bool {
    match cells.binary_search_by(|c| c.cell.cmp(&count.cell)) {
        Ok(i) => {
            for (mine, theirs) in cells[i].counts.iter_mut().zip(count.counts) {
                *mine = mine.saturating_add(theirs);
            }
            true
        }
        Err(_) if cells.len() >= MAX_CELLS => false,
        Err(i) => {
            cells.insert(i, count.clone());
            true
        }
    }
}

/// Cuts a failure reason to [`MAX_REASON_BYTES`] on a character boundary.
pub fn short_reason(reason: &str) -> String {
    cut(reason, MAX_REASON_BYTES)
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(stage: u8, region: &str) -> Cell {
        Cell {
            stage,
            region: region.into(),
            fault_domain: "1".into(),
        }
    }

    #[test]
    fn reports_add_up_and_stay_bounded() {
        let mut a = RolloutReport::new(1, 3);
        a.nodes = 1;
        a.cells.push(CellCount {
            cell: cell(0, "r1"),
            counts: [0, 0, 1, 0, 0],
        });
        a.candidates.push(Candidate { stage: 0, hash: 5 });
        a.reasons.push(("health check failed".into(), 1));
        let mut b = RolloutReport::new(1, 2);
        b.nodes = 2;
        b.cells.push(CellCount {
            cell: cell(0, "r1"),
            counts: [0, 0, 1, 1, 0],
        });
        b.cells.push(CellCount {
            cell: cell(1, "r2"),
            counts: [1, 0, 0, 0, 0],
        });
        b.candidates.push(Candidate { stage: 0, hash: 2 });
        b.reasons.push(("health check failed".into(), 1));
        a.add(&b);
        assert_eq!(a.nodes, 3);
        assert_eq!(a.seq, 2);
        assert_eq!(a.cell(&cell(0, "r1")), [0, 0, 2, 1, 0]);
        assert_eq!(a.cell(&cell(1, "r2")), [1, 0, 0, 0, 0]);
        assert_eq!(a.candidates[0].hash, 2);
        assert_eq!(a.reasons, vec![("health check failed".to_owned(), 2)]);
        assert!(a.is_well_formed());
        for h in 0..200 {
            let mut c = RolloutReport::new(1, 3);
            c.candidates.push(Candidate { stage: 0, hash: h });
            a.add(&c);
        }
        assert_eq!(a.candidates.len(), MAX_CANDIDATES);
        assert_eq!(a.candidates[0].hash, 0);
        assert!(!a.truncated);
    }

    #[test]
    fn over_long_names_from_a_peer_are_not_well_formed() {
        let mut r = RolloutReport::new(1, 1);
        r.cells.push(CellCount {
            cell: cell(0, &"r".repeat(65)),
            counts: [1, 0, 0, 0, 0],
        });
        assert!(!r.is_well_formed(), "a region longer than a label");
        let mut r = RolloutReport::new(1, 1);
        r.failed_sample.push("n".repeat(MAX_NODE_NAME_BYTES + 1));
        assert!(!r.is_well_formed(), "a node name too long");
    }

    #[test]
    fn a_full_cell_list_marks_the_report_truncated() {
        let mut a = RolloutReport::new(1, 1);
        for i in 0..=MAX_CELLS {
            let mut c = RolloutReport::new(1, 1);
            c.cells.push(CellCount {
                cell: cell(0, &format!("r{i}")),
                counts: [1, 0, 0, 0, 0],
            });
            a.add(&c);
        }
        assert_eq!(a.cells.len(), MAX_CELLS);
        assert!(a.truncated);
    }
}
