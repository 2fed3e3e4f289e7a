//! Rollout directives: what the coordinator broadcasts about a rollout.
//!
//! Every directive is a whole snapshot of the rollout as the conductor sees it (its spec, the
//! cells opened so far and the latest action), not a delta. A node that missed some, or joined
//! late and synced only the newest, knows everything it needs from the one it has. Directives
//! travel in signed broadcast envelopes; each carries the rollout's own rising sequence number
//! and an expiry, so a replayed or stale one is refused by the node even in a fresh envelope.

use super::plan::Size;
use super::selector::Selector;
use crate::content::RootHash;
use crate::labels::{MAX_LABEL_BYTES, MAX_LABELS};
use crate::manifest::MAX_NAME_BYTES;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most cells (stage, region, fault domain) a directive opens.
pub const MAX_OPEN_CELLS: usize = 1024;
/// How long a directive stays valid after it is issued.
pub const DIRECTIVE_TTL_SECS: u64 = 3600;

/// A release by identity and order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Its version string, as published.
    pub version: String,
    /// Its root hash (the release id).
    pub root: RootHash,
    /// Its release counter, which only grows per service.
    pub counter: u64,
}

/// One stage as nodes see it: whom it covers and up to which hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRule {
    /// Which nodes it covers.
    pub select: Selector,
    /// Its size in the plan.
    pub size: Size,
    /// Nodes of the selector whose hash is at most this are in the stage (0 during the census of
    /// a count stage: nobody yet).
    pub threshold: u64,
}

/// What the rollout is: fixed when it starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The rollout's id.
    pub rollout: u64,
    /// The service it rolls out.
    pub service: String,
    /// The release it rolls out.
    pub release: Release,
    /// The label naming a node's region.
    pub label_region: String,
    /// The label naming its fault domain.
    pub label_fault_domain: String,
    /// Nodes with any of these labels are skipped.
    pub skip_labels: BTreeMap<String, String>,
    /// The stages, in order.
    pub stages: Vec<StageRule>,
}

/// A cell of the fleet: nodes of one stage in one region and fault domain.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cell {
    /// The stage's index in the plan.
    pub stage: u8,
    /// The region label's value ("" if the node has none).
    pub region: String,
    /// The fault-domain label's value ("" if none).
    pub fault_domain: String,
}

impl Cell {
    /// Whether its label values keep the label size limit.
    pub fn is_well_formed(&self) -> bool {
        self.region.len() <= MAX_LABEL_BYTES && self.fault_domain.len() <= MAX_LABEL_BYTES
    }
}

/// The latest decision about the rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Count the nodes each stage would cover; nobody activates.
    Census,
    /// Nodes learn their stage; those in open cells activate.
    Wave,
    /// No new cells open; nodes already activating finish.
    Pause,
    /// Nodes that activated the release go back to the release they ran before it; with
    /// `revert: false` they keep it and nothing more happens.
    Abort {
        /// Whether to go back.
        revert: bool,
    },
    /// Every node running the service goes to `to`, an earlier release, even though its counter
    /// is lower.
    Rollback {
        /// The release to go back to.
        to: Release,
    },
    /// Every stage is done.
    Complete,
}

/// A signed-in-envelope snapshot of a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// Rises with every directive of this rollout; a node acts only on a higher one.
    pub seq: u32,
    /// Unix time after which nodes refuse it.
    pub expires_at_unix: u64,
    /// The latest decision.
    pub action: Action,
    /// The rollout.
    pub spec: Spec,
    /// Cells whose nodes activate, in the order they were opened.
    pub open: Vec<Cell>,
}

impl Directive {
    /// Whether it keeps the size limits; one that does not is refused.
    pub fn is_well_formed(&self) -> bool {
        let label = |t: &String| t.len() <= MAX_LABEL_BYTES;
        let spec = &self.spec;
        self.open.len() <= MAX_OPEN_CELLS
            && self.open.iter().all(Cell::is_well_formed)
            && spec.service.len() <= MAX_NAME_BYTES
            && spec.release.version.len() <= MAX_NAME_BYTES
            && label(&spec.label_region)
            && label(&spec.label_fault_domain)
            && spec.skip_labels.len() <= MAX_LABELS
            && spec.skip_labels.iter().all(|(k, v)| label(k) && label(v))
            && self.spec.stages.len() <= super::plan::MAX_STAGES
            && self.spec.stages.iter().all(|s| s.select.is_well_formed())
            && self
                .open
                .iter()
                .all(|c| usize::from(c.stage) < self.spec.stages.len())
    }

    /// Postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes and checks the size limits; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes::<Directive>(bytes)
            .ok()
            .filter(Directive::is_well_formed)
    }
}
