//! The fleet count as the conductor sees it: whether it has held still long enough to decide
//! on, whether it fell suddenly, and whether it has stayed near one value for a census.
//!
//! During a join storm the count at the root of the health tree is far below the truth and
//! jumps about while the tree forms: in the simulator, 10,000 nodes started together count
//! anywhere from 0 to 994 for 40 s, with plateaus of over 2 s, before reaching 9,999 within
//! 2 s. A census taken on such a plateau fixes thresholds on a tenth of the fleet. So a census
//! (and an assignment) waits until every count for [`Config::census_settle`] has stayed within
//! [`Config::census_band_bp`] of one value; the wave gates then count the nodes that join later.

use super::Config;
use std::time::Duration;

#[derive(Debug, Default)]
pub(super) struct FleetCount {
    /// The count as last reported, and since when it held.
    latest: Option<(u32, Duration)>,
    /// The highest count since the last sudden drop.
    recent_peak: u32,
    /// Until when a sudden drop holds decisions.
    unsettled_until: Duration,
    /// The count the band is centred on, and since when every count stayed within it.
    band: Option<(u32, Duration)>,
}

impl FleetCount {
    /// Takes in the latest count.
    pub(super) fn observe(&mut self, config: &Config, now: Duration, nodes: u32) {
        match self.latest {
            Some((n, _)) if n == nodes => {}
            _ => self.latest = Some((nodes, now)),
        }
        if nodes > self.recent_peak {
            self.recent_peak = nodes;
        }
        let floor = u64::from(self.recent_peak) * u64::from(10_000 - config.drop_bp) / 10_000;
        if u64::from(nodes) < floor {
            // A sudden drop: hold decisions until the counts have settled again.
            self.unsettled_until = now + config.settle;
            self.recent_peak = nodes;
        }
        let within = |centre: u32| {
            let margin = u64::from(centre) * u64::from(config.census_band_bp) / 10_000;
            u64::from(nodes).abs_diff(u64::from(centre)) <= margin
        };
        match self.band {
            Some((centre, _)) if within(centre) => {}
            _ => self.band = Some((nodes, now)),
        }
    }

    /// The latest count (0 before any).
    pub(super) fn nodes(&self) -> u32 {
        self.latest.map_or(0, |(n, _)| n)
    }

    /// Whether the count has held still for [`Config::settle`] and no sudden drop is settling.
    pub(super) fn is_settled(&self, config: &Config, now: Duration) -> bool {
        now >= self.unsettled_until
            && self
                .latest
                .is_some_and(|(_, since)| now >= since + config.settle)
    }

    /// Since when every count has stayed within the band.
    pub(super) fn band_since(&self) -> Option<Duration> {
        self.band.map(|(_, since)| since)
    }

    /// How long every count has stayed within the band.
    pub(super) fn steady_for(&self, now: Duration) -> Duration {
        self.band
            .map_or(Duration::ZERO, |(_, since)| now.saturating_sub(since))
    }

    /// Whether the count is steady enough for a census: within the band for
    /// [`Config::census_settle`].
    pub(super) fn is_steady(&self, config: &Config, now: Duration) -> bool {
        self.band.is_some() && self.steady_for(now) >= config.census_settle
    }

    /// When the count would become settled or steady if nothing changes.
    pub(super) fn deadlines(&self, config: &Config) -> impl Iterator<Item = Duration> {
        let settled = self.latest.map(|(_, since)| since + config.settle);
        let steady = self.band.map(|(_, since)| since + config.census_settle);
        settled.into_iter().chain(steady)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_count_within_the_band_keeps_it_and_one_outside_restarts_it() {
        let config = Config::default();
        let mut fleet = FleetCount::default();
        fleet.observe(&config, secs(0), 10_000);
        fleet.observe(&config, secs(4), 10_050);
        fleet.observe(&config, secs(8), 9_950);
        assert_eq!(fleet.steady_for(secs(10)), secs(10));
        assert!(fleet.is_steady(&config, secs(10)));
        fleet.observe(&config, secs(11), 10_101);
        assert_eq!(fleet.steady_for(secs(12)), secs(1));
        assert!(!fleet.is_steady(&config, secs(12)));
        assert!(fleet.deadlines(&config).any(|t| t == secs(21)));
    }

    #[test]
    fn a_growing_count_is_never_steady() {
        let config = Config::default();
        let mut fleet = FleetCount::default();
        for s in 0..60 {
            fleet.observe(&config, secs(s), 100 + 20 * u32::try_from(s).unwrap_or(0));
            assert!(!fleet.is_steady(&config, secs(s)), "at {s} s");
        }
    }

    #[test]
    fn a_sudden_drop_holds_decisions_for_the_settle_time() {
        let config = Config::default();
        let mut fleet = FleetCount::default();
        fleet.observe(&config, secs(0), 1000);
        assert!(fleet.is_settled(&config, secs(5)));
        fleet.observe(&config, secs(6), 800);
        fleet.observe(&config, secs(7), 800);
        assert!(!fleet.is_settled(&config, secs(7)));
        assert!(fleet.is_settled(&config, secs(8)));
    }
}
