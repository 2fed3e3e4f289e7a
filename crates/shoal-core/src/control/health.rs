//! Health summaries: counts of nodes per state and per release, added up the broadcast tree,
//! and the reports children send their parents.

use super::Peer;
use super::message::Message;
use super::node::{ChildReport, Node};
use crate::content::RootHash;
use crate::rollout::RolloutReport;
use serde::{Deserialize, Serialize};

/// Most releases a summary counts. When a subtree knows more, the ones held by the fewest nodes
/// are left out, so the releases that matter to most of the fleet are always counted.
pub const MAX_SUMMARY_RELEASES: usize = 16;
/// Most rollouts a summary reports on; older ones are left out.
pub const MAX_SUMMARY_ROLLOUTS: usize = 4;

/// A node's status, by the fleet convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Status {
    /// Not known yet.
    Unknown = 0,
    /// Running as intended.
    Healthy = 1,
    /// Running, with a problem worth a look.
    Degraded = 2,
    /// Not doing its job.
    Failed = 3,
}

/// How many nodes of a subtree hold one release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCount {
    /// The release.
    pub root: RootHash,
    /// Nodes that hold it complete and verified.
    pub complete: u32,
    /// Nodes still fetching it.
    pub fetching: u32,
}

/// Counts over a subtree of the broadcast tree: one node's own summary, or a parent's sum of its
/// own and its children's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Nodes counted.
    pub nodes: u32,
    /// Nodes per [`Status`], indexed by its value.
    pub states: [u32; 4],
    /// Per release, sorted by root; at most [`MAX_SUMMARY_RELEASES`].
    pub releases: Vec<ReleaseCount>,
    /// Per rollout, sorted by id; at most [`MAX_SUMMARY_ROLLOUTS`] (the newest).
    pub rollouts: Vec<RolloutReport>,
}

impl Summary {
    /// The summary of a single node with `status`, holding `releases` (root, complete).
    pub fn node(status: Status, releases: impl IntoIterator<Item = (RootHash, bool)>) -> Self {
        let mut summary = Summary {
            nodes: 1,
            states: [0; 4],
            releases: Vec::new(),
            rollouts: Vec::new(),
        };
        summary.states[status as usize] = 1;
        for (root, complete) in releases {
            summary.add_release(ReleaseCount {
                root,
                complete: u32::from(complete),
                fetching: u32::from(!complete),
            });
        }
        summary.trim();
        summary
    }

    /// Adds `other`'s counts to this one.
    pub fn add(&mut self, other: &Summary) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        for (mine, theirs) in self.states.iter_mut().zip(other.states) {
            *mine = mine.saturating_add(theirs);
        }
        for release in &other.releases {
            self.add_release(*release);
        }
        for report in &other.rollouts {
            self.add_rollout(report);
        }
        self.trim();
    }

    /// Adds one rollout's report (a node's own, or a child's sum).
    pub fn add_rollout(&mut self, report: &RolloutReport) {
        match self
            .rollouts
            .binary_search_by_key(&report.rollout, |r| r.rollout)
        {
            Ok(i) => self.rollouts[i].add(report),
            Err(i) => self.rollouts.insert(i, report.clone()),
        }
        while self.rollouts.len() > MAX_SUMMARY_ROLLOUTS {
            self.rollouts.remove(0);
        }
    }

    /// The count for `root`, if this summary has one.
    pub fn release(&self, root: &RootHash) -> Option<&ReleaseCount> {
        self.releases
            .binary_search_by(|r| r.root.cmp(root))
            .ok()
            .map(|i| &self.releases[i])
    }

    /// Whether this summary keeps the size limits; one from a peer that does not is refused.
    pub fn is_well_formed(&self) -> bool {
        self.releases.len() <= MAX_SUMMARY_RELEASES
            && self.releases.windows(2).all(|w| w[0].root < w[1].root)
            && self.rollouts.len() <= MAX_SUMMARY_ROLLOUTS
            && self
                .rollouts
                .windows(2)
                .all(|w| w[0].rollout < w[1].rollout)
            && self.rollouts.iter().all(RolloutReport::is_well_formed)
    }

    fn add_release(&mut self, release: ReleaseCount) {
        match self
            .releases
            .binary_search_by(|r| r.root.cmp(&release.root))
        {
            Ok(i) => {
                let r = &mut self.releases[i];
                r.complete = r.complete.saturating_add(release.complete);
                r.fetching = r.fetching.saturating_add(release.fetching);
            }
            Err(i) => self.releases.insert(i, release),
        }
    }

    fn trim(&mut self) {
        while self.releases.len() > MAX_SUMMARY_RELEASES {
            let held = |r: &ReleaseCount| u64::from(r.complete) + u64::from(r.fetching);
            let least = (0..self.releases.len())
                .min_by_key(|&i| (held(&self.releases[i]), self.releases[i].root))
                .unwrap_or(0);
            self.releases.remove(least);
        }
    }
}

impl<P: Peer> Node<P> {
    pub(super) fn on_health(&mut self, from: P, epoch: u64, summary: Option<Summary>) {
        let now = self.now;
        let Some(n) = self.neighbour_mut(&from) else {
            // Only neighbours can be children; a report from anyone else is stale.
            return;
        };
        if n.child.as_ref().is_some_and(|c| c.epoch >= epoch) {
            return;
        }
        let rollouts_changed =
            n.child.as_ref().map(|c| &c.summary.rollouts) != summary.as_ref().map(|s| &s.rollouts);
        n.child = summary.map(|summary| ChildReport {
            epoch,
            summary,
            received: now,
        });
        if rollouts_changed {
            self.report_soon();
        }
    }

    /// Moves the next report up to [`Config::health_urgent_gap`](super::Config) after the last
    /// one (never earlier than now), for a change a rollout gate waits on.
    pub(super) fn report_soon(&mut self) {
        let at = (self.last_report + self.config.health_urgent_gap).max(self.now);
        if at < self.next_health {
            self.next_health = at;
        }
    }

    /// A new broadcast came first from `parent`: report to it from now on, and withdraw the
    /// report from the previous parent so nothing is counted twice.
    pub(super) fn set_parent(&mut self, parent: P) {
        if self.parent == Some(parent) {
            return;
        }
        self.parent = Some(parent);
        if let Some(old) = self.reported_to.take()
            && old != parent
        {
            self.epoch += 1;
            let epoch = self.epoch;
            self.send(
                old,
                Message::Health {
                    epoch,
                    summary: None,
                },
            );
        }
        // Report at once so the new parent's counts settle without waiting an interval.
        self.report();
    }

    pub(super) fn health_timers(&mut self) {
        let now = self.now;
        let expiry = self.config.health_expiry;
        for n in &mut self.active {
            if n.child
                .as_ref()
                .is_some_and(|c| now.saturating_sub(c.received) > expiry)
            {
                n.child = None;
            }
        }
        if now >= self.next_health {
            self.next_health = now + self.config.health_interval;
            self.report();
        }
    }

    fn report(&mut self) {
        let Some(parent) = self.parent else { return };
        if !self.is_neighbour(&parent) {
            return;
        }
        self.epoch += 1;
        let message = Message::Health {
            epoch: self.epoch,
            summary: Some(self.subtree()),
        };
        self.last_report = self.now;
        self.reported_to = Some(parent);
        self.send(parent, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(n: u8) -> RootHash {
        RootHash([n; 32])
    }

    #[test]
    fn sums_states_and_releases() {
        let mut total = Summary::default();
        total.add(&Summary::node(Status::Healthy, [(root(1), true)]));
        total.add(&Summary::node(
            Status::Healthy,
            [(root(1), false), (root(2), true)],
        ));
        total.add(&Summary::node(Status::Failed, []));
        assert_eq!(total.nodes, 3);
        assert_eq!(total.states, [0, 2, 0, 1]);
        let r1 = total.release(&root(1)).unwrap();
        assert_eq!((r1.complete, r1.fetching), (1, 1));
        assert_eq!(total.release(&root(2)).unwrap().complete, 1);
        assert!(total.is_well_formed());
    }

    #[test]
    fn keeps_the_most_held_releases_when_over_the_limit() {
        let mut total = Summary::default();
        for n in 0..=MAX_SUMMARY_RELEASES as u8 {
            let holders = if n == 3 { 1 } else { 2 };
            for _ in 0..holders {
                total.add(&Summary::node(Status::Healthy, [(root(n), true)]));
            }
        }
        assert_eq!(total.releases.len(), MAX_SUMMARY_RELEASES);
        assert!(total.release(&root(3)).is_none());
        assert!(total.is_well_formed());
    }
}
