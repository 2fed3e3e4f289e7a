//! Deciding what garbage collection removes.

use crate::{Store, fsutil};
use shoal_core::content::RootHash;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Why a directory is collected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcReason {
    /// The release directory could not be opened.
    Broken(String),
    /// The release is older than the newest `1 + keep_previous` of its service.
    Retention,
    /// The store exceeds its byte budget and this is among the oldest collectable releases.
    Budget,
}

/// One directory to remove.
#[derive(Clone, Debug)]
pub struct GcAction {
    /// The release, unless the directory is broken.
    pub root: Option<RootHash>,
    /// `service@version`, unless the directory is broken.
    pub name: Option<String>,
    /// The directory.
    pub dir: PathBuf,
    /// Bytes it occupies.
    pub bytes: u64,
    /// Why it goes.
    pub reason: GcReason,
}

/// What a collection removes, and what is left.
#[derive(Clone, Debug)]
pub struct GcPlan {
    /// Directories to remove, in order.
    pub remove: Vec<GcAction>,
    /// The store's bytes before.
    pub used_bytes_before: u64,
    /// The store's bytes after.
    pub used_bytes_after: u64,
    /// The budget, if any.
    pub budget_bytes: Option<u64>,
    /// Bytes still over budget after removing everything collectable (pinned and newest releases
    /// are never collected); zero when the store fits.
    pub over_budget_bytes: u64,
}

/// Plans a collection that also makes room for `incoming_bytes` more within the budget.
pub(crate) fn plan(store: &Store, incoming_bytes: u64) -> GcPlan {
    let used_before = store.used_bytes();
    let mut remove: Vec<GcAction> = store
        .broken()
        .iter()
        .map(|b| GcAction {
            root: None,
            name: None,
            bytes: fsutil::allocated_bytes(&b.dir),
            dir: b.dir.clone(),
            reason: GcReason::Broken(b.reason.clone()),
        })
        .collect();

    // Newest first within each service: by release counter, then creation time, then root, so the
    // order is total and the plan deterministic.
    let mut by_service: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for release in store.releases() {
        by_service
            .entry(release.manifest().service.as_str())
            .or_default()
            .push(release);
    }
    let mut collectable = Vec::new();
    for releases in by_service.values_mut() {
        releases.sort_by_key(|r| {
            let m = r.manifest();
            std::cmp::Reverse((m.release_counter, m.created_at_unix_secs, m.root))
        });
        for (rank, release) in releases.iter().enumerate() {
            if rank == 0 || release.is_pinned() {
                continue;
            }
            let action = GcAction {
                root: Some(release.root()),
                name: Some(release.manifest().name()),
                dir: release.dir().to_owned(),
                bytes: fsutil::allocated_bytes(release.dir()),
                reason: GcReason::Retention,
            };
            if rank > store.config().keep_previous {
                remove.push(action);
            } else {
                let m = release.manifest();
                collectable.push(((m.created_at_unix_secs, m.release_counter, m.root), action));
            }
        }
    }

    let mut used = used_before.saturating_sub(remove.iter().map(|a| a.bytes).sum());
    let mut over_budget_bytes = 0;
    if let Some(budget) = store.config().budget_bytes {
        let target = budget.saturating_sub(incoming_bytes);
        collectable.sort_by_key(|(key, _)| *key);
        for (_, mut action) in collectable {
            if used <= target {
                break;
            }
            used = used.saturating_sub(action.bytes);
            action.reason = GcReason::Budget;
            remove.push(action);
        }
        over_budget_bytes = used.saturating_sub(target);
    }
    GcPlan {
        remove,
        used_bytes_before: used_before,
        used_bytes_after: used,
        budget_bytes: store.config().budget_bytes,
        over_budget_bytes,
    }
}
