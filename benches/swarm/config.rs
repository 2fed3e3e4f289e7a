//! What a run measures: read from `SHOAL_BENCH_*` environment variables, with defaults for
//! the real benchmark and a tiny smoke configuration.

use anyhow::{Context as _, Result, bail, ensure};
use std::fmt;

/// A distribution system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// `shoal seed` on the origin, `shoal fetch` on every receiver.
    Shoal,
    /// nginx on the origin, `curl` on every receiver.
    Http,
    /// opentracker and an aria2 seeder on the origin, aria2 on every receiver.
    Bittorrent,
}

impl System {
    fn parse(text: &str) -> Result<System> {
        match text.trim() {
            "shoal" => Ok(System::Shoal),
            "http" => Ok(System::Http),
            "bittorrent" => Ok(System::Bittorrent),
            other => bail!(
                "SHOAL_BENCH_SYSTEMS names {other:?}: use a comma list of shoal, http and bittorrent"
            ),
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Shoal => "shoal",
            System::Http => "http",
            System::Bittorrent => "bittorrent",
        })
    }
}

/// A link rate, as `tc` takes it (`100mbit`), kept in bits per second.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Bits per second; `tc` units are decimal (`1mbit` is 1 000 000 bit/s).
    pub bits_per_sec: u64,
}

impl Rate {
    fn parse(text: &str) -> Result<Rate> {
        let t = text.trim().to_ascii_lowercase();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let multiplier: u64 = match unit {
            "bit" => 1,
            "kbit" => 1_000,
            "mbit" => 1_000_000,
            "gbit" => 1_000_000_000,
            _ => bail!(
                "SHOAL_BENCH_RATE is {text:?}: use a whole number with bit, kbit, mbit or gbit, as in 100mbit"
            ),
        };
        let number: u64 = number
            .parse()
            .with_context(|| format!("SHOAL_BENCH_RATE is {text:?}: no number before the unit"))?;
        let bits_per_sec = number
            .checked_mul(multiplier)
            .filter(|&b| (8_000..=100_000_000_000).contains(&b))
            .with_context(|| {
                format!("SHOAL_BENCH_RATE is {text:?}: use a rate from 8kbit to 100gbit")
            })?;
        Ok(Rate { bits_per_sec })
    }

    /// The rate in bytes per second.
    pub fn bytes_per_sec(self) -> f64 {
        self.bits_per_sec as f64 / 8.0
    }

    /// The rate as a `tc` argument.
    pub fn tc_arg(self) -> String {
        format!("{}bit", self.bits_per_sec)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bits_per_sec as f64;
        if b >= 1e9 {
            write!(f, "{} Gbit/s", b / 1e9)
        } else if b >= 1e6 {
            write!(f, "{} Mbit/s", b / 1e6)
        } else {
            write!(f, "{} kbit/s", b / 1e3)
        }
    }
}

/// The most hosts: addresses are `10.77.0.1` to `10.77.0.250`.
pub const MAX_HOSTS: usize = 250;

/// One run's configuration.
#[derive(Debug)]
pub struct Config {
    /// Smoke mode: a tiny configuration that must pass, run under `cargo test`.
    pub smoke: bool,
    /// Hosts, the origin included (`SHOAL_BENCH_NODES`).
    pub hosts: usize,
    /// Upload and download cap of every host (`SHOAL_BENCH_RATE`).
    pub rate: Rate,
    /// The rate as it was given, for the command line.
    pub rate_text: String,
    /// Payload size (`SHOAL_BENCH_BYTES`).
    pub payload_bytes: u64,
    /// Systems to run, in this order (`SHOAL_BENCH_SYSTEMS`).
    pub systems: Vec<System>,
    /// Payload size of the loopback pair; 0 skips Shoal's loopback run
    /// (`SHOAL_BENCH_LOOPBACK_BYTES`).
    pub loopback_bytes: u64,
    /// How long `iperf3` measures.
    pub iperf_secs: u32,
    /// Piece size for Shoal and the torrent (`SHOAL_BENCH_PIECE_BYTES`); `None` uses Shoal's
    /// default for the payload size, for both.
    pub piece_bytes: Option<u64>,
}

impl Config {
    /// Reads the configuration. Defaults: 16 hosts, `100mbit`, 256 MiB, all three systems,
    /// a 2 GiB loopback payload; in smoke mode 4 hosts, `50mbit`, 16 MiB, Shoal and HTTP,
    /// 64 MiB loopback, a 2-second `iperf3` (a payload long enough next to the processes'
    /// start for the agreement check to mean something). A variable that is set always wins.
    ///
    /// # Errors
    ///
    /// A variable that is set but not valid, named with its value.
    pub fn from_env(smoke: bool) -> Result<Config> {
        let hosts: usize = number("SHOAL_BENCH_NODES", if smoke { 4 } else { 16 })?;
        ensure!(
            (2..=MAX_HOSTS).contains(&hosts),
            "SHOAL_BENCH_NODES is {hosts}: use 2 to {MAX_HOSTS} (the origin and at least one receiver)"
        );
        let rate_text = text("SHOAL_BENCH_RATE", if smoke { "50mbit" } else { "100mbit" })
            .trim()
            .to_string();
        let rate = Rate::parse(&rate_text)?;
        let payload_bytes: u64 = number(
            "SHOAL_BENCH_BYTES",
            if smoke { 16 << 20 } else { 256 << 20 },
        )?;
        ensure!(payload_bytes > 0, "SHOAL_BENCH_BYTES must be above 0");
        let default_systems = if smoke {
            "shoal,http"
        } else {
            "shoal,http,bittorrent"
        };
        let systems = text("SHOAL_BENCH_SYSTEMS", default_systems)
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(System::parse)
            .collect::<Result<Vec<_>>>()?;
        let loopback_bytes: u64 = number(
            "SHOAL_BENCH_LOOPBACK_BYTES",
            if smoke { 64 << 20 } else { 2 << 30 },
        )?;
        let piece_bytes = match std::env::var("SHOAL_BENCH_PIECE_BYTES") {
            Ok(v) => {
                let bytes: u64 = v.trim().parse().with_context(|| {
                    format!("SHOAL_BENCH_PIECE_BYTES is {v:?}: use a number of bytes")
                })?;
                ensure!(
                    bytes.is_power_of_two() && (1 << 15..=1 << 26).contains(&bytes),
                    "SHOAL_BENCH_PIECE_BYTES is {bytes}: use a power of two from 32768 to 67108864"
                );
                Some(bytes)
            }
            Err(_) => None,
        };
        Ok(Config {
            smoke,
            hosts,
            rate,
            rate_text,
            payload_bytes,
            systems,
            loopback_bytes,
            iperf_secs: if smoke { 2 } else { 10 },
            piece_bytes,
        })
    }

    /// The receivers: every host but the origin.
    pub fn receivers(&self) -> usize {
        self.hosts - 1
    }

    /// The piece size both Shoal and the torrent use.
    pub fn piece_bytes(&self) -> u64 {
        self.piece_bytes.unwrap_or_else(|| {
            u64::from(shoal_core::content::default_piece_size(self.payload_bytes))
        })
    }

    /// One line saying what this run measures.
    pub fn describe(&self) -> String {
        let systems: Vec<String> = self.systems.iter().map(|s| s.to_string()).collect();
        format!(
            "swarm benchmark{}: {} hosts (1 origin, {} receivers), {} up and down per host, {} payload, {} pieces, systems {}",
            if self.smoke { " (smoke)" } else { "" },
            self.hosts,
            self.receivers(),
            self.rate,
            super::units::mib(self.payload_bytes),
            super::units::mib(self.piece_bytes()),
            systems.join(",")
        )
    }

    /// The command that repeats this run.
    pub fn command(&self) -> String {
        let systems: Vec<String> = self.systems.iter().map(|s| s.to_string()).collect();
        let mut cmd = format!(
            "SHOAL_BENCH_NODES={} SHOAL_BENCH_RATE={} SHOAL_BENCH_BYTES={} SHOAL_BENCH_SYSTEMS={} SHOAL_BENCH_LOOPBACK_BYTES={}",
            self.hosts,
            self.rate_text,
            self.payload_bytes,
            systems.join(","),
            self.loopback_bytes
        );
        if let Some(p) = self.piece_bytes {
            cmd.push_str(&format!(" SHOAL_BENCH_PIECE_BYTES={p}"));
        }
        if self.smoke {
            cmd.push_str(" cargo test -p shoal --bench swarm");
        } else {
            cmd.push_str(" cargo bench --bench swarm");
        }
        cmd
    }
}

fn text(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .with_context(|| format!("{name} is {v:?}: use a whole number")),
        Err(_) => Ok(default),
    }
}
