//! Health summaries: counts of nodes per state and per release, added up the broadcast tree,
//! and the reports children send their parents.
//!
//! Counting goes in rounds so that no node is ever counted twice. Every broadcast opens a round
//! (its sequence number); a node's parent for the round is the neighbour that delivered that
//! broadcast first, so a round's parents form a tree (each parent had the broadcast before its
//! child). A node sends its reports for the round only to that parent, tagged with the round,
//! and adds up only children's reports of its own round. A node that moves, or whose parent
//! dies, is counted again from the next round, never in two subtrees at once. Reports go on
//! change (a rollout change within a fraction of a second, any other within the interval) and
//! once per round, so the source's heartbeat is the slow refresh. The source shows the previous
//! round's total until the new round has caught up with it or the settle time has passed.
//!
//! A node that restarted quickly could still be counted by its old parent from its last run,
//! since nothing tells that parent the old run is gone until its failure detector does; a node
//! therefore sends no report for a hold time after it starts, longer than detection takes.

use super::Peer;
use super::message::Message;
use super::node::{ChildReport, ClosedRound, Node};
use crate::content::RootHash;
use crate::query::{MAX_QUERIES, QueryAnswer};
use crate::rollout::RolloutReport;
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    /// Answers to fleet queries, sorted by id; at most [`MAX_QUERIES`] (the newest).
    #[serde(default)]
    pub queries: Vec<QueryAnswer>,
}

impl Summary {
    /// The summary of a single node with `status`, holding `releases` (root, complete).
    pub fn node(status: Status, releases: impl IntoIterator<Item = (RootHash, bool)>) -> Self {
        let mut summary = Summary {
            nodes: 1,
            states: [0; 4],
            releases: Vec::new(),
            rollouts: Vec::new(),
            queries: Vec::new(),
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
        for answer in &other.queries {
            self.add_query(answer);
        }
        self.trim();
    }

    /// Adds one query's answer (a node's own, or a child's sum).
    pub fn add_query(&mut self, answer: &QueryAnswer) {
        match self.queries.binary_search_by_key(&answer.id, |q| q.id) {
            Ok(i) => self.queries[i].add(answer),
            Err(i) => self.queries.insert(i, answer.clone()),
        }
        while self.queries.len() > MAX_QUERIES {
            self.queries.remove(0);
        }
    }

    /// The answer to query `id`, if this summary has one.
    pub fn query(&self, id: u64) -> Option<&QueryAnswer> {
        self.queries
            .binary_search_by_key(&id, |q| q.id)
            .ok()
            .map(|i| &self.queries[i])
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
            && self.queries.len() <= MAX_QUERIES
            && self.queries.windows(2).all(|w| w[0].id < w[1].id)
            && self.queries.iter().all(QueryAnswer::is_well_formed)
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
    pub(super) fn on_health(&mut self, from: P, epoch: u64, round: u64, summary: Summary) {
        let Some(n) = self.neighbour_mut(&from) else {
            // Only neighbours can be children; a report from anyone else is stale.
            return;
        };
        // Reports are ordered by round, then by epoch. A child that restarted with the same
        // identity counts its epochs from the start again; its parent, which may not have
        // noticed the restart, takes its report of a later round, and a late report of the old
        // run, from an earlier round, changes nothing.
        if n.child
            .as_ref()
            .is_some_and(|c| (c.round, c.epoch) >= (round, epoch))
        {
            return;
        }
        let before = n.child.take().filter(|c| c.round == round);
        // While a round's tree forms (a child's first report, or more nodes under it) and when
        // a rollout's counts change, the report travels up at once; other changes within the
        // interval.
        let urgent = before.as_ref().is_none_or(|c| {
            c.summary.nodes != summary.nodes
                || c.summary.rollouts != summary.rollouts
                || c.summary.queries != summary.queries
        });
        let changed = before.as_ref().map(|c| &c.summary) != Some(&summary);
        n.child = Some(ChildReport {
            epoch,
            round,
            summary,
        });
        if round == self.latest && changed {
            self.report_changed(urgent);
        }
    }

    /// Something this node reports changed: report it, soon if a rollout gate may wait on it,
    /// otherwise within the interval.
    ///
    /// Early in a round, while children of the round before have not reported in this one, a
    /// report waits for them (at most a `health_interval` from the round's start), so a node
    /// sends one report a round carrying its whole subtree instead of one for each child's
    /// arrival.
    pub(super) fn report_changed(&mut self, urgent: bool) {
        self.dirty = true;
        let waiting_until = self.round_started + self.config.health_interval;
        let at = if urgent && self.now < waiting_until && self.awaits_children() {
            waiting_until
        } else if urgent {
            (self.last_report + self.config.health_urgent_gap).max(self.now)
        } else {
            // What can wait shares the next tick's wake-up.
            self.on_tick((self.last_report + self.config.health_interval).max(self.now))
        };
        if at < self.next_health {
            self.next_health = at;
        }
    }

    /// A neighbour reported in round `awaited_round` but not yet in this one.
    fn awaits_children(&self) -> bool {
        let awaited = self.awaited_round;
        self.active.iter().any(|n| {
            n.child
                .as_ref()
                .is_some_and(|c| c.round == awaited && c.round != self.latest)
        })
    }

    /// A newer broadcast came first from `parent`: a new round after `previous`. This node
    /// reports to it from now on, and only children's reports of this round count (see the
    /// module docs).
    pub(super) fn start_round(&mut self, parent: P, previous: u64) {
        self.parent = Some(parent);
        self.awaited_round = previous;
        self.round_started = self.now;
        self.report_changed(true);
    }

    /// On the source, before a broadcast opens a new round: keeps what it shows of the fleet
    /// until the new round's counts have caught up.
    pub(super) fn close_round(&mut self) {
        let (round, summary) = self.shown();
        let since = match &self.closed {
            Some(c) if c.round == round => c.since,
            _ => self.now,
        };
        self.closed = Some(ClosedRound {
            round,
            summary,
            since,
        });
    }

    /// Own summary plus the reports of children in this node's round.
    pub(super) fn round_sum(&self) -> Summary {
        let mut total = self.own.clone();
        for child in self.active.iter().filter_map(|n| n.child.as_ref()) {
            if child.round == self.latest {
                total.add(&child.summary);
            }
        }
        total
    }

    pub(super) fn health_timers(&mut self) {
        if self.now < self.next_health {
            return;
        }
        self.next_health = Duration::MAX;
        let hold_until = self.started + self.config.health_hold;
        if self.now < hold_until {
            // Just started: a report from a run before a restart may still be counted where
            // it went, until that node notices the old run is gone.
            self.next_health = hold_until;
            return;
        }
        if self.dirty {
            self.report();
        }
    }

    fn report(&mut self) {
        let Some(parent) = self.parent else { return };
        if !self.is_neighbour(&parent) {
            return;
        }
        self.dirty = false;
        self.epoch += 1;
        let message = Message::Health {
            epoch: self.epoch,
            round: self.latest,
            summary: self.round_sum(),
        };
        self.last_report = self.now;
        self.stats.health_reports_sent += 1;
        self.send(parent, message);
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::Envelope;
    use super::super::testing::{node_with_neighbours, sends};
    use super::super::{Config, Node};
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    /// The health reports a node sends up to `until`, waking when it asks to, with the times sent.
    fn reports_until(node: &mut Node<u32>, until: Duration) -> Vec<(Duration, u64)> {
        let mut sent = Vec::new();
        loop {
            let at = node.poll_timeout();
            if at > until {
                return sent;
            }
            node.handle_timeout(at);
            for (_, message) in sends(node) {
                if let Message::Health { round, .. } = message {
                    sent.push((at, round));
                }
            }
        }
    }

    fn round(node: &mut Node<u32>, at: Duration, seq: u64) {
        let envelope = Arc::new(Envelope::unsigned(seq, false, Bytes::new()));
        node.handle_message(at, 1, Message::Gossip { envelope });
    }

    /// Child 2 reports `summary` for `round` of its run `epoch`.
    fn child_sends(node: &mut Node<u32>, at: Duration, epoch: u64, round: u64, summary: Summary) {
        node.handle_message(
            at,
            2,
            Message::Health {
                epoch,
                round,
                summary,
            },
        );
    }

    fn child_reports(node: &mut Node<u32>, at: Duration, epoch: u64, round: u64) {
        child_sends(node, at, epoch, round, Summary::node(Status::Healthy, []));
    }

    #[test]
    fn a_round_report_waits_for_the_children_of_the_round_before() {
        // Neighbour 1 delivers the rounds (the parent); neighbour 2 reports (a child).
        let mut node = node_with_neighbours(&[1, 2], 3);
        node.set_own_summary(Summary::node(Status::Healthy, []));
        let second = Duration::from_secs(1);
        let mut now = Config::default().health_hold + second;
        round(&mut node, now, 1);
        child_reports(&mut node, now, 1, 1);
        reports_until(&mut node, now + second * 2);

        now += second * 3;
        round(&mut node, now, 2);
        let early = reports_until(&mut node, now + Duration::from_millis(500));
        assert!(early.is_empty(), "waits for the child: {early:?}");
        now += Duration::from_millis(500);
        child_reports(&mut node, now, 2, 2);
        let sent = reports_until(&mut node, now + Duration::from_millis(100));
        assert_eq!(
            sent,
            vec![(now, 2)],
            "one report as soon as the child's is in"
        );

        // A child that stays silent is waited for a health interval, no longer.
        now += second * 3;
        round(&mut node, now, 3);
        let sent = reports_until(&mut node, now + second * 2);
        assert_eq!(sent, vec![(now + Config::default().health_interval, 3)]);
    }

    #[test]
    fn a_child_that_restarted_is_counted_from_its_next_round() {
        // Neighbour 1 delivers the rounds; neighbour 2 is a child with a subtree of its own.
        let mut node = node_with_neighbours(&[1, 2], 3);
        node.set_own_summary(Summary::node(Status::Healthy, []));
        let subtree_of = |nodes: u32| {
            let mut s = Summary::default();
            for _ in 0..nodes {
                s.add(&Summary::node(Status::Healthy, []));
            }
            s
        };
        let report = |node: &mut Node<u32>, at, epoch, round, nodes| {
            child_sends(node, at, epoch, round, subtree_of(nodes));
        };
        let second = Duration::from_secs(1);
        let mut now = Config::default().health_hold + second;
        round(&mut node, now, 5);
        report(&mut node, now, 40, 5, 2);
        assert_eq!(node.subtree().nodes, 3);

        // The child restarts with the same identity; its epochs start again.
        now += second;
        round(&mut node, now, 6);
        report(&mut node, now, 1, 6, 4);
        assert_eq!(
            node.subtree().nodes,
            5,
            "the new run's report of the new round counts"
        );

        // A late report of the old run, from the round before, changes nothing.
        report(&mut node, now, 39, 5, 9);
        assert_eq!(node.subtree().nodes, 5);
    }

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
