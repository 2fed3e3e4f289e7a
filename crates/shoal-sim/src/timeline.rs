//! A run over time: what the fleet looked like at each sample (nodes holding the release, the
//! coordinator's counts per rollout state and per wave, origin bytes, messages the coordinator
//! received), written as `timeline.csv` and drawn by [`crate::plot`].

use shoal_core::rollout::report::{NodeState, RolloutReport, STATES};
use std::fmt::Write as _;
use std::time::Duration;

/// How often a run samples the fleet, in simulated time.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// The fleet at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Simulated seconds.
    pub secs: f64,
    /// Nodes holding the release verified, the origin included.
    pub complete: u32,
    /// Piece bytes the origin has sent so far.
    pub origin_bytes: u64,
    /// Messages the coordinator has received so far.
    pub coordinator_messages: u64,
    /// The coordinator's counts of the rollout's nodes per [`NodeState`].
    pub states: [u32; STATES],
    /// The coordinator's count of healthy nodes in each wave, in wave order (waves not cut yet
    /// are missing).
    pub wave_healthy: Vec<u32>,
}

impl Sample {
    /// The rollout part of a sample from the coordinator's report and the waves' cells.
    pub fn rollout_counts(
        &mut self,
        report: &RolloutReport,
        waves: &[shoal_core::rollout::conductor::Wave],
    ) {
        for c in &report.cells {
            for (total, n) in self.states.iter_mut().zip(c.counts) {
                *total += n;
            }
        }
        self.wave_healthy = waves
            .iter()
            .map(|w| {
                w.cells
                    .iter()
                    .map(|c| report.cell(c)[NodeState::Healthy as usize])
                    .sum()
            })
            .collect();
    }
}

/// The samples of a run, in time order.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// Samples, one per [`SAMPLE_INTERVAL`].
    pub samples: Vec<Sample>,
}

impl Timeline {
    /// `timeline.csv`: one row per sample; the per-wave columns are `wave1_healthy`, ...
    pub fn csv(&self) -> String {
        let waves = self.waves();
        let mut out = String::from(
            "secs,complete,origin_bytes,coordinator_messages,pending,activating,healthy,failed,reverted",
        );
        for w in 1..=waves {
            let _ = write!(out, ",wave{w}_healthy");
        }
        out.push('\n');
        for s in &self.samples {
            let _ = write!(
                out,
                "{:.3},{},{},{}",
                s.secs, s.complete, s.origin_bytes, s.coordinator_messages
            );
            for n in s.states {
                let _ = write!(out, ",{n}");
            }
            for w in 0..waves {
                let _ = write!(out, ",{}", s.wave_healthy.get(w).copied().unwrap_or(0));
            }
            out.push('\n');
        }
        out
    }

    /// Waves the last sample knows.
    pub fn waves(&self) -> usize {
        self.samples.last().map_or(0, |s| s.wave_healthy.len())
    }

    /// `(secs, value)` of every sample.
    pub fn series(&self, value: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
        self.samples.iter().map(|s| (s.secs, value(s))).collect()
    }

    /// Messages per second the coordinator received, per sample interval.
    pub fn coordinator_rate(&self) -> Vec<(f64, f64)> {
        self.samples
            .windows(2)
            .map(|w| {
                let dt = (w[1].secs - w[0].secs).max(1e-9);
                let n = w[1].coordinator_messages - w[0].coordinator_messages;
                (w[1].secs, n as f64 / dt)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: f64, messages: u64, waves: Vec<u32>) -> Sample {
        Sample {
            secs,
            complete: 3,
            origin_bytes: 10,
            coordinator_messages: messages,
            states: [1, 0, 2, 0, 0],
            wave_healthy: waves,
        }
    }

    #[test]
    fn the_csv_has_a_column_per_wave_and_pads_early_samples() {
        let t = Timeline {
            samples: vec![sample(0.0, 0, vec![]), sample(0.5, 4, vec![1, 2])],
        };
        let csv = t.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].ends_with(",reverted,wave1_healthy,wave2_healthy"));
        assert_eq!(lines[1], "0.000,3,10,0,1,0,2,0,0,0,0");
        assert_eq!(lines[2], "0.500,3,10,4,1,0,2,0,0,1,2");
    }

    #[test]
    fn the_coordinator_rate_is_messages_per_second_between_samples() {
        let t = Timeline {
            samples: vec![sample(0.0, 0, vec![]), sample(0.5, 4, vec![])],
        };
        assert_eq!(t.coordinator_rate(), vec![(0.5, 8.0)]);
    }
}
