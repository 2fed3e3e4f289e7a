//! Which incoming connection attempts a node takes on: a cap on connections, a cap on handshakes
//! in progress, and a rate per source address, so a peer opening connections as fast as it can
//! is refused before any cryptography and costs a bounded amount of memory.
//!
//! The driver asks [`Gate::incoming`] for every attempt, before the handshake, and reports
//! [`Gate::handshake_done`] when an accepted handshake ends (either way). Time is a [`Duration`]
//! since the driver's epoch; the gate does no IO.

use std::collections::BTreeMap;
use std::time::Duration;

/// The gate's limits.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// Connections open or being set up beyond which attempts are refused.
    pub max_connections: usize,
    /// Handshakes in progress beyond which attempts are refused.
    pub max_handshakes: usize,
    /// Attempts one source address may make at once before its rate applies.
    pub source_burst: u32,
    /// Attempts per second one source address may make once its burst is spent.
    pub source_per_sec: f64,
    /// Source addresses remembered; when full, the sources back to a full burst are forgotten
    /// (they would be allowed anyway) and, if none is, new sources are refused until some are.
    pub max_sources: usize,
}

impl Default for GateConfig {
    /// 256 connections, 64 handshakes at once, and per source a burst of 16 attempts and 4 a
    /// second after it: an honest node dials each peer once and redials after a backoff of at
    /// least 250 ms, so it stays far below these.
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_handshakes: 64,
            source_burst: 16,
            source_per_sec: 4.0,
            max_sources: 4096,
        }
    }
}

/// Why an attempt was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// [`GateConfig::max_connections`] are open or being set up.
    Full,
    /// [`GateConfig::max_handshakes`] are in progress.
    Handshakes,
    /// The source address spent its burst and is over its rate.
    SourceRate,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Full => "this node has as many connections as it takes",
            Refused::Handshakes => "too many handshakes are in progress",
            Refused::SourceRate => "this address opens connections too fast",
        })
    }
}

/// Counts of what the gate decided, for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Attempts taken on.
    pub accepted: u64,
    /// Attempts refused because the node was full.
    pub refused_full: u64,
    /// Attempts refused because too many handshakes were in progress.
    pub refused_handshakes: u64,
    /// Attempts refused for their source's rate.
    pub refused_rate: u64,
}

#[derive(Clone, Copy, Debug)]
struct Source {
    tokens: f64,
    last: Duration,
}

/// The gate. See the module documentation.
#[derive(Debug)]
pub struct Gate<A> {
    config: GateConfig,
    handshakes: usize,
    sources: BTreeMap<A, Source>,
    stats: GateStats,
}

impl<A: Ord + Copy> Gate<A> {
    /// A gate with nothing in progress.
    pub fn new(config: GateConfig) -> Self {
        Self {
            config,
            handshakes: 0,
            sources: BTreeMap::new(),
            stats: GateStats::default(),
        }
    }

    /// Decides on an attempt from `source` while `open` connections are established. On `Ok` the
    /// attempt counts as a handshake in progress until [`handshake_done`](Self::handshake_done).
    ///
    /// # Errors
    ///
    /// [`Refused`] says why the attempt must be refused.
    pub fn incoming(&mut self, source: A, open: usize, now: Duration) -> Result<(), Refused> {
        let refused = if open + self.handshakes >= self.config.max_connections {
            Some(Refused::Full)
        } else if self.handshakes >= self.config.max_handshakes {
            Some(Refused::Handshakes)
        } else if !self.take_token(source, now) {
            Some(Refused::SourceRate)
        } else {
            None
        };
        match refused {
            Some(why) => {
                match why {
                    Refused::Full => self.stats.refused_full += 1,
                    Refused::Handshakes => self.stats.refused_handshakes += 1,
                    Refused::SourceRate => self.stats.refused_rate += 1,
                }
                Err(why)
            }
            None => {
                self.handshakes += 1;
                self.stats.accepted += 1;
                Ok(())
            }
        }
    }

    /// An accepted attempt's handshake ended, whether or not it succeeded.
    pub fn handshake_done(&mut self) {
        self.handshakes = self.handshakes.saturating_sub(1);
    }

    /// Handshakes in progress.
    pub fn handshakes(&self) -> usize {
        self.handshakes
    }

    /// What the gate decided so far.
    pub fn stats(&self) -> GateStats {
        self.stats
    }

    /// Takes one attempt from `source`'s bucket; `false` if it is empty (or no source can be
    /// remembered).
    fn take_token(&mut self, source: A, now: Duration) -> bool {
        let burst = f64::from(self.config.source_burst);
        let rate = self.config.source_per_sec;
        let refill =
            |s: &Source| (s.tokens + now.saturating_sub(s.last).as_secs_f64() * rate).min(burst);
        if !self.sources.contains_key(&source) && self.sources.len() >= self.config.max_sources {
            self.sources.retain(|_, s| refill(s) < burst);
            if self.sources.len() >= self.config.max_sources {
                return false;
            }
        }
        let entry = self.sources.entry(source).or_insert(Source {
            tokens: burst,
            last: now,
        });
        let tokens = refill(entry);
        entry.last = entry.last.max(now);
        if tokens < 1.0 {
            entry.tokens = tokens;
            return false;
        }
        entry.tokens = tokens - 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GateConfig {
        GateConfig {
            max_connections: 10,
            max_handshakes: 4,
            source_burst: 3,
            source_per_sec: 2.0,
            max_sources: 2,
        }
    }

    const T0: Duration = Duration::ZERO;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut gate = Gate::new(config());
        for _ in 0..3 {
            assert_eq!(gate.incoming(1u32, 0, T0), Ok(()));
            gate.handshake_done();
        }
        assert_eq!(gate.incoming(1, 0, T0), Err(Refused::SourceRate));
        // Another source is not held back by the first.
        assert_eq!(gate.incoming(2, 0, T0), Ok(()));
        gate.handshake_done();
        // Half a second refills one attempt at two a second.
        let later = Duration::from_millis(500);
        assert_eq!(gate.incoming(1, 0, later), Ok(()));
        gate.handshake_done();
        assert_eq!(gate.incoming(1, 0, later), Err(Refused::SourceRate));
        let stats = gate.stats();
        assert_eq!((stats.accepted, stats.refused_rate), (5, 2));
    }

    #[test]
    fn connections_and_handshakes_are_capped() {
        let mut gate = Gate::new(GateConfig {
            source_burst: 100,
            max_sources: 100,
            ..config()
        });
        for source in 0..4u32 {
            assert_eq!(gate.incoming(source, 0, T0), Ok(()));
        }
        assert_eq!(gate.incoming(9, 0, T0), Err(Refused::Handshakes));
        gate.handshake_done();
        assert_eq!(gate.handshakes(), 3);
        // Seven open and three handshaking fill the ten.
        assert_eq!(gate.incoming(9, 7, T0), Err(Refused::Full));
        assert_eq!(gate.incoming(9, 6, T0), Ok(()));
        assert_eq!(gate.stats().refused_full, 1);
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let mut gate = Gate::new(config());
        assert_eq!(gate.incoming(1u32, 0, T0), Ok(()));
        assert_eq!(gate.incoming(2, 0, T0), Ok(()));
        // Both remembered sources are below a full burst: a third cannot be remembered yet.
        assert_eq!(gate.incoming(3, 0, T0), Err(Refused::SourceRate));
        // Once they have refilled they are forgotten, and the new source is taken on.
        assert_eq!(gate.incoming(3, 0, Duration::from_secs(2)), Ok(()));
        assert!(gate.sources.len() <= 2);
    }
}
