//! The census and assignment phases: when their counts are final, what the census fixes, and
//! the fault domains that go silent before the waves are cut.
//!
//! Every fault domain heard from during these phases is remembered with the most nodes it
//! reported. One that falls silent (cut off by a partition, or gone) holds the phase: waves cut
//! without it would leave it out of the rollout unnoticed. The phase goes on once it is heard
//! again, or aborts naming it.
//!
//! A phase aborts once it has made no progress for [`Config::census_timeout`] (no more nodes
//! answered, and the fleet count stayed in its band), or at [`Config::census_limit`] from its
//! start. A fleet of 100,000 nodes started together still moves its count by more than 1% a
//! minute and a half later; a census that aborted a minute after it began gave up on a fleet
//! that was still joining.

use super::waves::cut_waves;
use super::{Conductor, Phase, Rollout, RolloutState};
use crate::rollout::directive::Action;
use crate::rollout::plan::{MAX_EXACT_COUNT, Size};
use crate::rollout::report::RolloutReport;
use crate::rollout::selector::fraction_threshold;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the fleet count says at this step.
#[derive(Clone, Copy, Debug)]
pub(super) struct Counts {
    /// Every node of the fleet has answered the latest directive, and nothing was dropped.
    pub complete: bool,
    /// The count has held still, with no sudden drop settling.
    pub settled: bool,
    /// The count has stayed within the census band for the census settle time.
    pub steady: bool,
    /// The fleet count.
    pub fleet: u32,
}

/// A fault domain heard from: region, fault domain, and the most nodes it reported.
pub(super) type Domain = (String, String, u32);

/// The fault domains `report` hears nodes from, with how many: in the census the nodes matching
/// a stage (a node may match several, so the largest count), in the assignment every node.
fn domains(report: &RolloutReport, census: bool) -> BTreeMap<(String, String), u32> {
    let mut out: BTreeMap<(String, String), u32> = BTreeMap::new();
    let cells = if census {
        &report.census
    } else {
        &report.cells
    };
    for c in cells {
        let n = if census {
            c.counts[0]
        } else {
            c.counts.iter().sum()
        };
        if n == 0 {
            continue;
        }
        let key = (c.cell.region.clone(), c.cell.fault_domain.clone());
        let entry = out.entry(key).or_default();
        *entry = if census { (*entry).max(n) } else { *entry + n };
    }
    out
}

/// Adds what `present` hears to `heard`, and returns the domains of `heard` it does not hear.
fn silent(heard: &mut Vec<Domain>, present: &BTreeMap<(String, String), u32>) -> Vec<Domain> {
    for ((region, fd), &n) in present {
        match heard.iter_mut().find(|d| &d.0 == region && &d.1 == fd) {
            Some(d) => d.2 = d.2.max(n),
            None => heard.push((region.clone(), fd.clone(), n)),
        }
    }
    heard.sort();
    heard
        .iter()
        .filter(|(region, fd, _)| !present.contains_key(&(region.clone(), fd.clone())))
        .cloned()
        .collect()
}

impl Conductor {
    /// When the census or assignment of `r`, begun at `since`, aborts unless it completes:
    /// [`Config::census_timeout`] after its last progress (more nodes answering, or the fleet
    /// count leaving its band), and [`Config::census_limit`] after `since` at the latest.
    pub(super) fn census_deadline(&self, r: &Rollout, since: Duration) -> Duration {
        self.census_deadline_after(r.answered.1, since)
    }

    /// [`Conductor::census_deadline`] for a phase whose answers last grew at `answered_at`.
    fn census_deadline_after(&self, answered_at: Duration, since: Duration) -> Duration {
        let progress = since
            .max(answered_at)
            .max(self.fleet.band_since().unwrap_or(since));
        (progress + self.config.census_timeout).min(since + self.config.census_limit)
    }

    /// A step of the census (`census`) or the assignment, begun at `since`.
    pub(super) fn step_census(
        &mut self,
        now: Duration,
        id: u64,
        census: bool,
        since: Duration,
        report: Option<RolloutReport>,
        counts: Counts,
    ) {
        let what = if census { "census" } else { "assignment" };
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        let answered = report.as_ref().map_or(0, |rep| rep.nodes);
        if answered > r.answered.0 {
            r.answered = (answered, now);
        }
        let answered_at = r.answered.1;
        let gone = match &report {
            Some(rep) => silent(&mut r.heard, &domains(rep, census)),
            None => Vec::new(),
        };
        if gone.is_empty() {
            r.silent_recorded = false;
        } else if counts.complete && !r.silent_recorded {
            r.silent_recorded = true;
            let names: Vec<String> = gone.iter().map(|(r, fd, _)| format!("{r}/{fd}")).collect();
            let text = format!(
                "{what} waits: nothing heard from {} since it reported nodes",
                names.join(" ")
            );
            self.record(now, id, None, text);
        }
        if counts.settled && counts.steady && counts.complete && gone.is_empty() {
            match (census, report) {
                (true, Some(rep)) => self.finish_census(now, id, rep),
                (false, Some(rep)) => self.finish_assignment(now, id, &rep),
                _ => {}
            }
        } else if now >= self.census_deadline_after(answered_at, since) {
            let mut reason = if now >= since + self.config.census_limit {
                format!(
                    "the {what} did not settle within its limit of {:?}: {answered} of {} nodes answered",
                    self.config.census_limit, counts.fleet
                )
            } else {
                format!(
                    "the {what} did not settle: nothing changed for {:?}, {answered} of {} nodes answered",
                    self.config.census_timeout, counts.fleet
                )
            };
            if !counts.steady {
                reason.push_str(&format!(
                    "; the fleet count had stayed within {}% for {:?} of the {:?} needed",
                    f64::from(self.config.census_band_bp) / 100.0,
                    self.fleet.steady_for(now),
                    self.config.census_settle
                ));
            }
            if !gone.is_empty() {
                let names: Vec<String> = gone
                    .iter()
                    .map(|(region, fd, n)| format!("{region}/{fd} ({n} nodes)"))
                    .collect();
                reason.push_str(&format!(
                    "; nothing was heard since from fault domains that reported nodes: {}",
                    names.join(", ")
                ));
            }
            self.finish(now, id, RolloutState::Aborted, reason);
        }
    }

    fn finish_census(&mut self, now: Duration, id: u64, census: RolloutReport) {
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        let mut empty = Vec::new();
        for (i, stage) in r.spec.stages.iter_mut().enumerate() {
            let stage_index = u8::try_from(i).unwrap_or(u8::MAX);
            let matching: u32 = census
                .census
                .iter()
                .filter(|c| c.cell.stage == stage_index)
                .map(|c| c.counts[0])
                .sum();
            if matching == 0 {
                empty.push(r.plan.stages[i].name.clone());
                continue;
            }
            stage.threshold = match stage.size {
                Size::Percent(bp) => fraction_threshold(bp),
                Size::Count(k) if k >= matching => u64::MAX,
                Size::Count(k) if k <= MAX_EXACT_COUNT => {
                    let hashes: Vec<u64> = census
                        .candidates
                        .iter()
                        .filter(|c| c.stage == stage_index)
                        .map(|c| c.hash)
                        .collect();
                    let k = usize::try_from(k).unwrap_or(usize::MAX);
                    hashes
                        .get(k.saturating_sub(1))
                        .or(hashes.last())
                        .copied()
                        .unwrap_or(u64::MAX)
                }
                Size::Count(k) => {
                    let bp = (u64::from(k) * 10_000).div_ceil(u64::from(matching));
                    fraction_threshold(u16::try_from(bp.min(10_000)).unwrap_or(10_000))
                }
            };
        }
        r.census = Some(census.clone());
        if !empty.is_empty() {
            let reason = format!(
                "stage {} selects no node (census: {} nodes, {} excluded)",
                empty.join(", "),
                census.nodes,
                census.excluded
            );
            let state = if r.dry_run {
                RolloutState::Planned
            } else {
                RolloutState::Aborted
            };
            self.finish(now, id, state, reason);
            return;
        }
        if r.dry_run {
            self.finish(now, id, RolloutState::Planned, "census done".into());
            return;
        }
        r.phase = Phase::Assigning { since: now };
        r.answered = (0, now);
        r.action = Action::Wave;
        self.record(
            now,
            id,
            None,
            format!(
                "census done: {} nodes, {} excluded; nodes assign themselves",
                census.nodes, census.excluded
            ),
        );
        self.send(now, id);
    }

    fn finish_assignment(&mut self, now: Duration, id: u64, report: &RolloutReport) {
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        r.waves = cut_waves(&r.plan, report);
        r.phase = Phase::Waves;
        let summary = format!(
            "assignment done: {} waves over {} nodes",
            r.waves.len(),
            r.waves.iter().map(|w| w.expected).sum::<u32>()
        );
        self.record(now, id, None, summary);
        self.open_wave(now, id, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(pairs: &[(&str, u32)]) -> BTreeMap<(String, String), u32> {
        pairs
            .iter()
            .map(|(fd, n)| (("r1".to_string(), (*fd).to_string()), *n))
            .collect()
    }

    #[test]
    fn a_domain_heard_once_and_then_not_is_silent_until_heard_again() {
        let mut heard = Vec::new();
        assert!(silent(&mut heard, &present(&[("a", 3), ("b", 2)])).is_empty());
        assert_eq!(
            silent(&mut heard, &present(&[("a", 4)])),
            vec![("r1".into(), "b".into(), 2)]
        );
        assert!(silent(&mut heard, &present(&[("a", 4), ("b", 1)])).is_empty());
        assert_eq!(
            heard[0],
            ("r1".into(), "a".into(), 4),
            "the most it reported"
        );
    }
}
