//! Swarm distribution benchmark: one origin and many receivers on capped links, with Shoal, an
//! HTTP server and BitTorrent distributing the same payload over the same network, one after
//! another, plus a single uncapped loopback pair next to `iperf3`.
//!
//! Run with `cargo bench --bench swarm` as root (network namespaces need it); `benches/README.md`
//! describes the set-up and the figures. Without `--bench` (under `cargo test --all-targets`) it
//! runs a tiny configuration as a smoke test that fails if any receiver's payload does not verify.
//!
//! The model: every host is a network namespace with one veth pair into a shared Linux bridge.
//! A `tc tbf` qdisc on each side of the pair caps the host's upload (egress of the namespace side)
//! and download (egress of the bridge side). Host 0 is the origin and holds the payload; hosts
//! `1..N` are receivers that start at the same instant. A receiver is complete when its tool says
//! so (Shoal's JSON line, `curl` exiting, aria2's download-complete hook); the harness takes the
//! time from the common start. Payloads are checked with `b3sum` after every run.
//!
//! Configuration is by environment variable; see [`config::Config::from_env`].

use anyhow::{Context as _, Result, ensure};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// The QUIC congestion controller Shoal runs with: `SHOAL_BENCH_CONGESTION` (`bbr`, `cubic`,
/// `newreno`); by default the one `shoal` itself defaults to.
fn congestion() -> String {
    std::env::var("SHOAL_BENCH_CONGESTION").unwrap_or_else(|_| "cubic".into())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` passes nothing: smoke mode then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    match bench(smoke) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Skipped(why)) => {
            eprintln!("SKIPPED swarm bench: {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("swarm bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a benchmark run ended when it did not fail.
enum Outcome {
    Done,
    Skipped(String),
}

fn bench(smoke: bool) -> Result<Outcome> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Outcome::Skipped("needs root for network namespaces".into()));
    }
    let config = config::Config::from_env(smoke)?;
    interrupt::install();
    if !smoke {
        setup::install();
    }
    let tools = match setup::Tools::find(&config) {
        Ok(tools) => tools,
        Err(missing) => {
            return Ok(Outcome::Skipped(format!(
                "missing {}: run scripts/bench-setup (as root) to install them",
                missing.join(", ")
            )));
        }
    };

    println!("{}", config.describe());
    remove_stale_work_dirs();
    let work = work_dir()?;
    let payload_dir = work.path().join("payload");
    std::fs::create_dir(&payload_dir).context("cannot create the payload directory")?;
    let payload = payload_dir.join("payload");
    let started = Instant::now();
    files::write_payload(&payload, config.payload_bytes)?;
    let payload_root = files::b3sum(&tools, &payload)?;
    println!(
        "payload: {} in {} (generated in {:.1} s), BLAKE3 {payload_root}",
        units::mib(config.payload_bytes),
        payload.display(),
        started.elapsed().as_secs_f64()
    );

    namespaces::remove_stale(&tools);
    let swarm = namespaces::Swarm::build(&tools, config.hosts, config.rate)?;
    println!(
        "swarm: {} hosts on bridge {}, every link capped at {} each way (tbf burst {} KiB, latency {} ms)",
        config.hosts,
        swarm.bridge(),
        config.rate,
        namespaces::tbf_burst_bytes(config.rate) >> 10,
        namespaces::TBF_LATENCY_MS
    );

    let bench = systems::Bench {
        config: &config,
        tools: &tools,
        swarm: &swarm,
        work: work.path(),
        payload: &payload,
        payload_root: &payload_root,
    };
    let mut results = Vec::new();
    for &system in &config.systems {
        println!();
        println!("== {system} ==");
        let result = systems::run(&bench, system);
        interrupt::check()?;
        match &result {
            Ok(run) => println!("{}", report::detail(&bench, run)),
            Err(e) => println!("{system} FAILED: {e:#}"),
        }
        results.push((system, result));
    }

    println!();
    println!("== loopback, one pair, no caps ==");
    let loopback = loopback::run(&bench);
    if let Err(e) = &loopback {
        println!("loopback FAILED: {e:#}");
    }

    println!();
    println!("Command: {}", config.command());
    println!();
    println!("{}", report::table(&bench, &results));
    if let Ok(lo) = &loopback {
        println!("{}", report::loopback_table(lo));
    }

    let failed: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(s, _)| s.to_string())
        .chain(loopback.is_err().then(|| "loopback".to_string()))
        .collect();
    ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(Outcome::Done)
}

/// Work directories are named with this and the process id, so a later run can find what a
/// killed run left.
const WORK_DIR_PREFIX: &str = "shoal-swarm-";

/// Where work directories go: tmpfs when `/dev/shm` exists, so disk speed does not enter the
/// figures.
fn work_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    }
}

/// A fresh directory for payloads and receiver data, removed when dropped.
fn work_dir() -> Result<tempfile::TempDir> {
    let parent = work_parent();
    tempfile::Builder::new()
        .prefix(&format!("{WORK_DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a work directory in {}", parent.display()))
}

/// Removes work directories of earlier runs that are no longer alive (payload copies are large).
fn remove_stale_work_dirs() {
    let parent = work_parent();
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(WORK_DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing {} left by an earlier run", entry.path().display());
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                eprintln!("warning: cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

mod interrupt {
    //! Ctrl-C, `kill` and a closed terminal: the signal only sets a flag. Every wait checks it and
    //! fails, and the error unwinds through the guards that stop processes and delete namespaces.

    use std::sync::atomic::{AtomicBool, Ordering};

    static INTERRUPTED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }

    /// Catches SIGINT, SIGTERM and SIGHUP.
    pub fn install() {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        }
    }

    /// Whether a signal asked the benchmark to stop.
    pub fn is_set() -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }

    /// Fails if a signal asked the benchmark to stop.
    ///
    /// # Errors
    ///
    /// When it did.
    pub fn check() -> anyhow::Result<()> {
        anyhow::ensure!(!is_set(), "interrupted by a signal");
        Ok(())
    }
}

mod config {
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
            let number: u64 = number.parse().with_context(|| {
                format!("SHOAL_BENCH_RATE is {text:?}: no number before the unit")
            })?;
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
        /// a 2 GiB loopback payload; in smoke mode 4 hosts, 8 MiB, Shoal and HTTP, 64 MiB
        /// loopback, a 2-second `iperf3`. A variable that is set always wins.
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
            let rate_text = text("SHOAL_BENCH_RATE", "100mbit").trim().to_string();
            let rate = Rate::parse(&rate_text)?;
            let payload_bytes: u64 =
                number("SHOAL_BENCH_BYTES", if smoke { 8 << 20 } else { 256 << 20 })?;
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
}

/// A command line: words, and options whose values may be paths.
#[derive(Default)]
struct Args(Vec<std::ffi::OsString>);

impl Args {
    /// Starts with `words`, split at whitespace: `Args::new("keys generate")`.
    fn new(words: &str) -> Args {
        Args::default().words(words)
    }

    /// Adds `words`, split at whitespace.
    fn words(mut self, words: &str) -> Args {
        self.0.extend(words.split_whitespace().map(Into::into));
        self
    }

    /// Adds one argument as it is (a path, an address).
    fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Args {
        self.0.push(arg.as_ref().to_os_string());
        self
    }

    /// Adds `flag` and its value.
    fn opt(self, flag: &str, value: impl AsRef<std::ffi::OsStr>) -> Args {
        self.arg(flag).arg(value)
    }
}

impl IntoIterator for Args {
    type Item = std::ffi::OsString;
    type IntoIter = std::vec::IntoIter<std::ffi::OsString>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

mod setup {
    //! The external programs the benchmark drives, found on `PATH` (and in the `sbin`
    //! directories, which root's `PATH` does not always hold).

    use super::config::{Config, System};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// Runs `scripts/bench-setup`, which installs whatever Debian package is missing. A failure
    /// is reported and not fatal: [`Tools::find`] then says what is missing.
    pub fn install() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-setup");
        match std::process::Command::new(script).status() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("warning: {script} failed ({status})"),
            Err(e) => eprintln!("warning: cannot run {script}: {e}"),
        }
    }

    /// Absolute paths of the programs this run needs.
    pub struct Tools {
        paths: BTreeMap<&'static str, PathBuf>,
    }

    impl Tools {
        /// Finds every program `config` needs.
        ///
        /// # Errors
        ///
        /// The names of the programs that are missing.
        pub fn find(config: &Config) -> Result<Tools, Vec<String>> {
            let mut names = vec!["ip", "tc", "ss", "b3sum", "iperf3"];
            for system in &config.systems {
                names.extend_from_slice(match system {
                    System::Shoal => &[][..],
                    System::Http => &["nginx", "curl"][..],
                    System::Bittorrent => &["opentracker", "mktorrent", "aria2c", "curl"][..],
                });
            }
            let mut paths = BTreeMap::new();
            let mut missing = Vec::new();
            for name in names {
                match which(name) {
                    Some(path) => {
                        paths.insert(name, path);
                    }
                    None if !missing.iter().any(|m| m == name) => missing.push(name.to_string()),
                    None => {}
                }
            }
            if missing.is_empty() {
                Ok(Tools { paths })
            } else {
                Err(missing)
            }
        }

        /// The path of `name`, which [`Tools::find`] checked for.
        ///
        /// # Panics
        ///
        /// If `name` is not one of the programs `find` looked for: a bug in this benchmark.
        pub fn get(&self, name: &str) -> &Path {
            match self.paths.get(name) {
                Some(p) => p,
                None => panic!("the benchmark uses {name} without checking for it"),
            }
        }
    }

    fn which(name: &str) -> Option<PathBuf> {
        let path = std::env::var("PATH").unwrap_or_default();
        path.split(':')
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    }
}

mod exec {
    //! Running a short command to completion, with a time limit and errors that name it.

    use anyhow::{Context as _, Result, bail};
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Runs `cmd` to completion and returns its stdout.
    ///
    /// # Errors
    ///
    /// When it cannot start, exits unsuccessfully (the error quotes its stderr) or is still
    /// running after `timeout` (it is killed).
    pub fn output(cmd: &mut Command, timeout: Duration) -> Result<Vec<u8>> {
        run(cmd, timeout, true)
    }

    /// [`output`] for cleaning up: it keeps going after an interrupting signal.
    pub fn output_for_cleanup(cmd: &mut Command, timeout: Duration) -> Result<Vec<u8>> {
        run(cmd, timeout, false)
    }

    fn run(cmd: &mut Command, timeout: Duration, interruptible: bool) -> Result<Vec<u8>> {
        let what = describe(cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for {what}"))?
            {
                break status;
            }
            let interrupted = interruptible && super::interrupt::is_set();
            if interrupted || Instant::now() >= deadline {
                // Already exited or not: either way the wait below reaps it.
                let _ = child.kill();
                let _ = child.wait();
                super::interrupt::check()?;
                bail!("{what} did not finish within {} s", timeout.as_secs());
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if !status.success() {
            bail!(
                "{what} failed ({status}): {}",
                String::from_utf8_lossy(&stderr).trim()
            );
        }
        Ok(stdout)
    }

    /// Like [`output`], as text.
    pub fn text(cmd: &mut Command, timeout: Duration) -> Result<String> {
        let bytes = output(cmd, timeout)?;
        String::from_utf8(bytes).with_context(|| format!("{} printed non-UTF-8", describe(cmd)))
    }

    /// The command as a shell user would type it, for messages.
    pub fn describe(cmd: &Command) -> String {
        let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
        parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        parts.join(" ")
    }

    fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                // A read error leaves what was read so far, which is all a message needs.
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
}

mod namespaces {
    //! The emulated network: one namespace per host, a veth pair from each into a shared bridge,
    //! and a `tbf` qdisc on both ends of every pair.

    use super::config::Rate;
    use super::exec;
    use super::setup::Tools;
    use anyhow::{Context as _, Result, bail};
    use std::net::Ipv4Addr;
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// How long one `ip`, `tc` or `ss` call may take.
    const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

    /// The interface name inside every host's namespace.
    pub const HOST_IF: &str = "eth0";

    /// The most a tbf queue delays a packet before dropping it: a 50 ms buffer, about what a
    /// broadband link's bottleneck queue holds, so TCP sees a realistic amount of buffering.
    pub const TBF_LATENCY_MS: u64 = 50;

    /// tbf's bucket: 10 ms of traffic at the link rate, and at least 128 KiB. A bucket must hold
    /// the largest packet it passes, and veth hands over GSO packets of up to 64 KiB; 10 ms keeps
    /// the shaping smooth at kernel timer granularity (HZ=250 is a 4 ms tick) without letting
    /// bursts much above the rate through.
    pub fn tbf_burst_bytes(rate: Rate) -> u64 {
        ((rate.bytes_per_sec() / 100.0) as u64).max(128 << 10)
    }

    /// One emulated host.
    pub struct Host {
        /// Its network namespace.
        pub netns: String,
        /// The bridge-side end of its veth pair, in the root namespace.
        pub outer_if: String,
        /// Its address.
        pub ip: Ipv4Addr,
    }

    /// The hosts and their bridge. Dropping it deletes them, killing what still runs inside.
    pub struct Swarm {
        ip: PathBuf,
        bridge: String,
        /// Host 0 is the origin.
        pub hosts: Vec<Host>,
    }

    /// Names start with this and the process id, so a run finds what a crashed run left.
    const PREFIX: &str = "shb";

    impl Swarm {
        /// Builds `hosts` namespaces on one bridge with every link capped at `rate` each way.
        ///
        /// # Errors
        ///
        /// The `ip` or `tc` command that failed; what was built so far is removed.
        pub fn build(tools: &Tools, hosts: usize, rate: Rate) -> Result<Swarm> {
            let pid = std::process::id();
            let mut swarm = Swarm {
                ip: tools.get("ip").to_path_buf(),
                bridge: format!("{PREFIX}{pid}br"),
                hosts: Vec::new(),
            };
            let ip = tools.get("ip");
            let tc = tools.get("tc");
            let run = |args: &[&str], program: &std::path::Path| -> Result<()> {
                exec::output(Command::new(program).args(args), COMMAND_TIMEOUT).map(|_| ())
            };
            run(&["link", "add", &swarm.bridge, "type", "bridge"], ip)?;
            run(&["link", "set", &swarm.bridge, "up"], ip)?;
            let rate_arg = rate.tc_arg();
            let burst = format!("{}b", tbf_burst_bytes(rate));
            let latency = format!("{TBF_LATENCY_MS}ms");
            let tbf = [
                "root", "tbf", "rate", &rate_arg, "burst", &burst, "latency", &latency,
            ];
            for i in 0..hosts {
                let octet = u8::try_from(i + 1).context("too many hosts")?;
                let host = Host {
                    netns: format!("{PREFIX}-{pid}-{i}"),
                    outer_if: format!("{PREFIX}{pid}v{i}"),
                    ip: Ipv4Addr::new(10, 77, 0, octet),
                };
                run(&["netns", "add", &host.netns], ip)?;
                let (ns, outer) = (host.netns.clone(), host.outer_if.clone());
                swarm.hosts.push(host);
                let cidr = format!("10.77.0.{octet}/16");
                run(
                    &[
                        "link", "add", &outer, "type", "veth", "peer", "name", HOST_IF, "netns",
                        &ns,
                    ],
                    ip,
                )?;
                run(&["link", "set", &outer, "master", &swarm.bridge, "up"], ip)?;
                run(&["-n", &ns, "addr", "add", &cidr, "dev", HOST_IF], ip)?;
                run(&["-n", &ns, "link", "set", HOST_IF, "up"], ip)?;
                run(&["-n", &ns, "link", "set", "lo", "up"], ip)?;
                // Upload: what leaves the host. Download: what the bridge sends to the host.
                let mut upload = vec!["-n", &ns, "qdisc", "add", "dev", HOST_IF];
                upload.extend_from_slice(&tbf);
                run(&upload, tc)?;
                let mut download = vec!["qdisc", "add", "dev", &outer];
                download.extend_from_slice(&tbf);
                run(&download, tc)?;
            }
            Ok(swarm)
        }

        /// The bridge's name.
        pub fn bridge(&self) -> &str {
            &self.bridge
        }

        /// Bytes host `i` has sent on its link so far: `tx_bytes` of its namespace-side veth,
        /// which counts what left the tbf queue, with a GSO packet's headers counted once.
        ///
        /// # Errors
        ///
        /// When `ip` fails or prints something unexpected.
        pub fn tx_bytes(&self, i: usize) -> Result<u64> {
            let host = &self.hosts[i];
            let out = exec::output(
                Command::new(&self.ip).args([
                    "-j",
                    "-s",
                    "-n",
                    &host.netns,
                    "link",
                    "show",
                    "dev",
                    HOST_IF,
                ]),
                COMMAND_TIMEOUT,
            )?;
            let value: serde_json::Value =
                serde_json::from_slice(&out).context("ip -j printed something that is not JSON")?;
            value[0]["stats64"]["tx"]["bytes"]
                .as_u64()
                .with_context(|| format!("no tx byte count for {} in {}", host.netns, value))
        }

        /// Waits until something in host `i`'s namespace listens on `addr` (`IP:PORT`, TCP or
        /// UDP), as long as `alive` says the server is still running.
        ///
        /// # Errors
        ///
        /// When `alive` fails, or nothing listens after `timeout`.
        pub fn wait_listening(
            &self,
            ss: &std::path::Path,
            i: usize,
            addr: &str,
            timeout: Duration,
            mut alive: impl FnMut() -> Result<()>,
        ) -> Result<()> {
            let deadline = Instant::now() + timeout;
            loop {
                super::interrupt::check()?;
                alive()?;
                let out = exec::text(
                    Command::new(&self.ip)
                        .args(["netns", "exec", &self.hosts[i].netns])
                        .arg(ss)
                        .arg("-Hlntu"),
                    COMMAND_TIMEOUT,
                )?;
                if out.lines().any(|l| l.split_whitespace().any(|f| f == addr)) {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!("nothing listens on {addr} after {} s", timeout.as_secs());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn teardown(&mut self) {
            for host in self.hosts.drain(..) {
                kill_inside(&self.ip, &host.netns);
                if let Err(e) = exec::output_for_cleanup(
                    Command::new(&self.ip).args(["netns", "del", &host.netns]),
                    COMMAND_TIMEOUT,
                ) {
                    eprintln!("warning: {e:#}");
                }
            }
            if let Err(e) = exec::output_for_cleanup(
                Command::new(&self.ip).args(["link", "del", &self.bridge]),
                COMMAND_TIMEOUT,
            ) {
                eprintln!("warning: {e:#}");
            }
        }
    }

    impl Drop for Swarm {
        fn drop(&mut self) {
            self.teardown();
        }
    }

    /// Kills whatever still runs in `netns`: only processes this benchmark started live there.
    fn kill_inside(ip: &std::path::Path, netns: &str) {
        let Ok(pids) = exec::output_for_cleanup(
            Command::new(ip).args(["netns", "pids", netns]),
            COMMAND_TIMEOUT,
        ) else {
            return;
        };
        for pid in String::from_utf8_lossy(&pids)
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            eprintln!("warning: killing process {pid}, left running in {netns}");
            // SAFETY: kill has no memory preconditions; pid is a process in our namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Removes namespaces, bridges and veths that an earlier run, no longer alive, left behind.
    pub fn remove_stale(tools: &Tools) {
        let ip = tools.get("ip");
        let is_stale = |pid: &str| {
            pid.parse::<u32>().is_ok_and(|p| {
                p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
            })
        };
        if let Ok(list) =
            exec::output_for_cleanup(Command::new(ip).args(["netns", "list"]), COMMAND_TIMEOUT)
        {
            for name in String::from_utf8_lossy(&list)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
            {
                let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
                    continue;
                };
                if rest.split_once('-').is_some_and(|(pid, _)| is_stale(pid)) {
                    eprintln!("removing namespace {name} left by an earlier run");
                    kill_inside(ip, name);
                    if let Err(e) = exec::output_for_cleanup(
                        Command::new(ip).args(["netns", "del", name]),
                        COMMAND_TIMEOUT,
                    ) {
                        eprintln!("warning: {e:#}");
                    }
                }
            }
        }
        if let Ok(list) = exec::output_for_cleanup(
            Command::new(ip).args(["-j", "link", "show"]),
            COMMAND_TIMEOUT,
        ) {
            let links: Vec<serde_json::Value> = serde_json::from_slice(&list).unwrap_or_default();
            for link in links {
                let Some(name) = link["ifname"].as_str() else {
                    continue;
                };
                let Some(rest) = name.strip_prefix(PREFIX) else {
                    continue;
                };
                let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let kind = &rest[pid.len()..];
                let ours = kind == "br"
                    || kind
                        .strip_prefix('v')
                        .is_some_and(|n| n.parse::<u32>().is_ok());
                if ours && is_stale(&pid) {
                    eprintln!("removing interface {name} left by an earlier run");
                    if let Err(e) = exec::output_for_cleanup(
                        Command::new(ip).args(["link", "del", name]),
                        COMMAND_TIMEOUT,
                    ) {
                        eprintln!("warning: {e:#}");
                    }
                }
            }
        }
    }
}

mod processes {
    //! Long-running programs in namespaces: started in their own process group, watched by a
    //! thread that reaps them with `wait4` (for CPU time and peak RSS) and, when asked, one that
    //! parses their stdout as a stream of JSON values. Everything arrives as [`Event`]s on one
    //! channel, stamped with the instant it happened.

    use anyhow::{Context as _, Result, anyhow};
    use std::ffi::OsStr;
    use std::fs::File;
    use std::io::{BufReader, Read, Seek, SeekFrom};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// How long a process has to exit after SIGTERM before it gets SIGKILL.
    const TERM_GRACE: Duration = Duration::from_secs(5);
    /// How long a killed process has to be reaped before the benchmark gives up on it.
    const KILL_WAIT: Duration = Duration::from_secs(10);
    /// How often a wait looks for an interrupting signal.
    const INTERRUPT_POLL: Duration = Duration::from_millis(100);

    /// What a process cost over its life, from `wait4`.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Usage {
        /// User plus system CPU time, its reaped children included.
        pub cpu_secs: f64,
        /// Peak resident set size.
        pub peak_rss_bytes: u64,
    }

    /// Something a process did.
    pub enum Report {
        /// A complete JSON value on stdout.
        Json(serde_json::Value),
        /// Stdout held something that is not JSON (the parse error).
        NotJson(String),
        /// It exited; `status` is the raw `wait` status.
        Exited { status: i32, usage: Usage },
    }

    /// A [`Report`] from process `proc`, at `at`.
    pub struct Event {
        /// The index [`Procs::spawn`] returned.
        pub proc: usize,
        /// When the report arrived.
        pub at: Instant,
        /// What happened.
        pub report: Report,
    }

    struct Proc {
        label: String,
        pid: i32,
        stderr_path: PathBuf,
        exit: Option<(i32, Usage)>,
    }

    /// The processes of one system's run. Dropping it stops the ones still running.
    pub struct Procs {
        ip: PathBuf,
        logs: PathBuf,
        procs: Vec<Proc>,
        tx: mpsc::Sender<Event>,
        rx: mpsc::Receiver<Event>,
    }

    impl Procs {
        /// No processes yet; their stdout and stderr go to files in `logs`.
        pub fn new(ip: &Path, logs: &Path) -> Result<Procs> {
            std::fs::create_dir_all(logs)
                .with_context(|| format!("cannot create {}", logs.display()))?;
            let (tx, rx) = mpsc::channel();
            Ok(Procs {
                ip: ip.to_path_buf(),
                logs: logs.to_path_buf(),
                procs: Vec::new(),
                tx,
                rx,
            })
        }

        /// Starts `program` in `netns`. With `json_stdout` its stdout is parsed as JSON values,
        /// each an [`Event`]; otherwise it goes to a file. Returns the process's index.
        ///
        /// # Errors
        ///
        /// When the process cannot start.
        pub fn spawn<I, S>(
            &mut self,
            netns: &str,
            label: &str,
            program: &Path,
            args: I,
            json_stdout: bool,
        ) -> Result<usize>
        where
            I: IntoIterator<Item = S>,
            S: AsRef<OsStr>,
        {
            use std::os::unix::process::CommandExt;
            let id = self.procs.len();
            let file_label: String = label
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let stderr_path = self.logs.join(format!("{id}-{file_label}.stderr"));
            let stdout_path = self.logs.join(format!("{id}-{file_label}.stdout"));
            // `ip netns exec` execs the program, so the child's pid is the program's, and wait4
            // on it measures the program itself.
            let mut cmd = Command::new(&self.ip);
            cmd.args(["netns", "exec", netns])
                .arg(program)
                .args(args)
                .stdin(Stdio::null())
                .process_group(0);
            // Its own process group keeps Ctrl-C away from it: the benchmark stops it in order.
            // If the benchmark dies without cleaning up, the kernel kills it.
            // SAFETY: the closure runs between fork and exec and only makes one system call.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.stderr(
                File::create(&stderr_path)
                    .with_context(|| format!("cannot create {}", stderr_path.display()))?,
            );
            if json_stdout {
                cmd.stdout(Stdio::piped());
            } else {
                cmd.stdout(
                    File::create(&stdout_path)
                        .with_context(|| format!("cannot create {}", stdout_path.display()))?,
                );
            }
            let what = super::exec::describe(&cmd);
            let mut child = cmd
                .spawn()
                .with_context(|| format!("cannot start {label}: {what}"))?;
            let pid = i32::try_from(child.id()).context("process id out of range")?;
            if let Some(stdout) = child.stdout.take() {
                let tx = self.tx.clone();
                std::thread::spawn(move || read_json(id, stdout, &tx));
            }
            // The waiter thread reaps the child; `child` is dropped without waiting, which std
            // allows.
            let tx = self.tx.clone();
            std::thread::spawn(move || reap(id, pid, &tx));
            self.procs.push(Proc {
                label: label.to_string(),
                pid,
                stderr_path,
                exit: None,
            });
            Ok(id)
        }

        /// The next event, or `None` if there is none by `deadline` or a signal interrupted the
        /// benchmark. Exits are also recorded.
        pub fn next_event(&mut self, deadline: Instant) -> Option<Event> {
            loop {
                if super::interrupt::is_set() {
                    return None;
                }
                let slice_end = deadline.min(Instant::now() + INTERRUPT_POLL);
                if let Some(event) = self.recv(slice_end) {
                    return Some(event);
                }
                if Instant::now() >= deadline {
                    return None;
                }
            }
        }

        /// The next event by `deadline`, whatever signals arrive.
        fn recv(&mut self, deadline: Instant) -> Option<Event> {
            let wait = deadline.saturating_duration_since(Instant::now());
            let event = self.rx.recv_timeout(wait).ok()?;
            if let Report::Exited { status, usage } = &event.report {
                self.procs[event.proc].exit = Some((*status, *usage));
            }
            Some(event)
        }

        /// Takes every pending event, recording exits, and fails if process `id` has exited.
        ///
        /// # Errors
        ///
        /// When `id` exited: its label, exit status and the end of its stderr.
        pub fn check_running(&mut self, id: usize) -> Result<()> {
            super::interrupt::check()?;
            while self.recv(Instant::now()).is_some() {}
            match self.procs[id].exit {
                Some((status, _)) => Err(self.failure(id, status, "exited early")),
                None => Ok(()),
            }
        }

        /// An error for process `id` that ended with `status`, quoting the end of its stderr.
        pub fn failure(&self, id: usize, status: i32, what: &str) -> anyhow::Error {
            let p = &self.procs[id];
            anyhow!(
                "{} {what} ({}); stderr: {}",
                p.label,
                describe_status(status),
                tail(&p.stderr_path)
            )
        }

        /// The label of process `id`.
        pub fn label(&self, id: usize) -> &str {
            &self.procs[id].label
        }

        /// The process id of process `id`.
        pub fn pid(&self, id: usize) -> i32 {
            self.procs[id].pid
        }

        /// What process `id` cost, once it has exited.
        pub fn usage(&self, id: usize) -> Option<Usage> {
            self.procs[id].exit.map(|(_, u)| u)
        }

        /// Asks every process still running to stop (SIGTERM to its process group), kills those
        /// still there after a grace period, and waits for all of them to be reaped.
        ///
        /// # Errors
        ///
        /// When a process is still not reaped after SIGKILL.
        pub fn stop_all(&mut self) -> Result<()> {
            while self.recv(Instant::now()).is_some() {}
            self.signal_running(libc::SIGTERM);
            let grace_end = Instant::now() + TERM_GRACE;
            while self.procs.iter().any(|p| p.exit.is_none()) {
                if self.recv(grace_end).is_none() {
                    break;
                }
            }
            self.signal_running(libc::SIGKILL);
            let kill_end = Instant::now() + KILL_WAIT;
            while self.procs.iter().any(|p| p.exit.is_none()) {
                if self.recv(kill_end).is_none() {
                    let left: Vec<&str> = self
                        .procs
                        .iter()
                        .filter(|p| p.exit.is_none())
                        .map(|p| p.label.as_str())
                        .collect();
                    anyhow::bail!("still running after SIGKILL: {}", left.join(", "));
                }
            }
            Ok(())
        }

        fn signal_running(&self, signal: i32) {
            for p in self.procs.iter().filter(|p| p.exit.is_none()) {
                // SAFETY: kill has no memory preconditions. The process group is the one
                // `spawn` created, and its leader has not been reaped, so the id is still ours.
                unsafe { libc::kill(-p.pid, signal) };
            }
        }
    }

    impl Drop for Procs {
        fn drop(&mut self) {
            if let Err(e) = self.stop_all() {
                eprintln!("warning: {e:#}");
            }
        }
    }

    fn read_json(id: usize, stdout: impl Read, tx: &mpsc::Sender<Event>) {
        let values = serde_json::Deserializer::from_reader(BufReader::new(stdout))
            .into_iter::<serde_json::Value>();
        for value in values {
            let report = match value {
                Ok(v) => Report::Json(v),
                Err(e) => Report::NotJson(e.to_string()),
            };
            let stop = matches!(report, Report::NotJson(_));
            let event = Event {
                proc: id,
                at: Instant::now(),
                report,
            };
            if tx.send(event).is_err() || stop {
                return;
            }
        }
    }

    fn reap(id: usize, pid: i32, tx: &mpsc::Sender<Event>) {
        let mut status = 0;
        // SAFETY: rusage is plain data; all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: pid is a child of this process that nothing else waits for; status and ru
            // point to live, writable values.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                // Cannot happen for our own child; report it as killed so nobody waits forever.
                status = libc::SIGKILL;
                break;
            }
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let usage = Usage {
            cpu_secs: secs(ru.ru_utime) + secs(ru.ru_stime),
            peak_rss_bytes: u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024,
        };
        let _ = tx.send(Event {
            proc: id,
            at: Instant::now(),
            report: Report::Exited { status, usage },
        });
    }

    /// `exit code 3` or `killed by signal 9`.
    pub fn describe_status(status: i32) -> String {
        if libc::WIFEXITED(status) {
            format!("exit code {}", libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("wait status {status}")
        }
    }

    /// Whether `status` is a clean exit.
    pub fn is_success(status: i32) -> bool {
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    /// The last 2 KiB of a log file, on one line.
    fn tail(path: &Path) -> String {
        let read = || -> std::io::Result<String> {
            let mut f = File::open(path)?;
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(2048)))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).trim().replace('\n', " | "))
        };
        match read() {
            Ok(s) if s.is_empty() => format!("(empty; {})", path.display()),
            Ok(s) => s,
            Err(e) => format!("(cannot read {}: {e})", path.display()),
        }
    }

    /// CPU seconds (user + system) process `pid` has used so far, from `/proc`.
    ///
    /// # Errors
    ///
    /// When `/proc/PID/stat` cannot be read or parsed.
    pub fn cpu_secs_so_far(pid: i32) -> Result<f64> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // Fields after the command name, which is in parentheses and may hold spaces: state is
        // field 3, utime 14 and stime 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .with_context(|| format!("unexpected {path}: {stat}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .map(|t| t as f64)
                .with_context(|| format!("unexpected {path}: {stat}"))
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok((ticks(11)? + ticks(12)?) / hz)
    }
}

mod files {
    //! Payload files: generating them and hashing them with `b3sum`.

    use super::exec;
    use super::setup::Tools;
    use anyhow::{Context as _, Result};
    use std::io::Write;
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;

    /// Writes `bytes` of pseudo-random, incompressible data to `path` (a SplitMix64 stream).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_payload(path: &Path, bytes: u64) -> Result<()> {
        let mut file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut state: u64 = 0x5348_4f41_4c5f_4245; // "SHOAL_BE"
        let mut block = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            for word in block.chunks_exact_mut(8) {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
            }
            let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
            file.write_all(&block[..n])
                .with_context(|| format!("cannot write {}", path.display()))?;
            left -= n as u64;
        }
        Ok(())
    }

    /// The BLAKE3 hash of `path`, in hex, from `b3sum`.
    ///
    /// # Errors
    ///
    /// When `b3sum` fails or prints something that is not a hash.
    pub fn b3sum(tools: &Tools, path: &Path) -> Result<String> {
        let out = exec::text(
            Command::new(tools.get("b3sum")).arg("--no-names").arg(path),
            Duration::from_secs(600),
        )?;
        let hash = out.trim().to_string();
        anyhow::ensure!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "b3sum printed {hash:?} for {}",
            path.display()
        );
        Ok(hash)
    }

    /// Checks that every file in `paths` hashes to `root`.
    ///
    /// # Errors
    ///
    /// Names every file that is missing or differs.
    pub fn verify_all(tools: &Tools, paths: &[std::path::PathBuf], root: &str) -> Result<()> {
        let mut bad = Vec::new();
        for path in paths {
            match b3sum(tools, path) {
                Ok(h) if h == root => {}
                Ok(h) => bad.push(format!("{} has BLAKE3 {h}", path.display())),
                Err(e) => bad.push(format!("{e:#}")),
            }
        }
        anyhow::ensure!(
            bad.is_empty(),
            "{} of {} payloads do not verify against {root}: {}",
            bad.len(),
            paths.len(),
            bad.join("; ")
        );
        Ok(())
    }
}

mod systems {
    //! The three systems, each run on the same hosts: start the origin, wait until it serves,
    //! start every receiver at once, time each receiver's completion, stop everything, verify.

    use super::config::{Config, System};
    use super::namespaces::Swarm;
    use super::processes::{self, Event, Procs, Report, Usage};
    use super::setup::Tools;
    use super::{Args, exec, files};
    use anyhow::{Context as _, Result, bail, ensure};
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    /// How long an origin may take to start serving.
    const ORIGIN_START_TIMEOUT: Duration = Duration::from_secs(60);
    /// How long a preparation command (key generation, hashing, `mktorrent`) may take.
    const PREPARE_TIMEOUT: Duration = Duration::from_secs(600);
    /// How often completion marker files are polled.
    const MARKER_POLL: Duration = Duration::from_millis(10);

    /// What every system's run shares.
    pub struct Bench<'a> {
        /// The run's configuration.
        pub config: &'a Config,
        /// The programs.
        pub tools: &'a Tools,
        /// The hosts.
        pub swarm: &'a Swarm,
        /// A scratch directory (on tmpfs when possible).
        pub work: &'a Path,
        /// The payload file, on the origin.
        pub payload: &'a Path,
        /// The payload's BLAKE3 hash in hex.
        pub payload_root: &'a str,
    }

    impl Bench<'_> {
        /// The Kumar-Ross lower bound on the time to give every receiver the payload:
        /// `max(S/u_s, S/d_min, N*S/(u_s + sum u_i))`; every upload and download here is the
        /// same rate.
        pub fn bound_secs(&self) -> f64 {
            let s = self.config.payload_bytes as f64;
            let rate = self.config.rate.bytes_per_sec();
            let n = self.config.receivers() as f64;
            let by_origin = s / rate;
            let by_download = s / rate;
            let by_total_upload = n * s / (rate + n * rate);
            by_origin.max(by_download).max(by_total_upload)
        }

        /// How long receivers may take before the run counts as failed: ten times the bound or
        /// twice what the origin alone needs to upload one copy to every receiver (HTTP's
        /// expected time), whichever is longer, plus a minute for start-up.
        pub fn deadline_secs(&self) -> f64 {
            let s = self.config.payload_bytes as f64;
            let one_by_one = self.config.receivers() as f64 * s / self.config.rate.bytes_per_sec();
            (10.0 * self.bound_secs()).max(2.0 * one_by_one) + 60.0
        }

        fn ip_of(&self, host: usize) -> String {
            self.swarm.hosts[host].ip.to_string()
        }

        fn netns(&self, host: usize) -> &str {
            &self.swarm.hosts[host].netns
        }
    }

    /// The figures of one system's run.
    pub struct SystemRun {
        /// Completion time of each receiver, in receiver order, from the common start.
        pub completion_secs: Vec<f64>,
        /// What the origin's link carried out from the receivers' start to the last completion.
        pub origin_sent_bytes: u64,
        /// The origin's serving process (for BitTorrent, the seeder; the tracker is separate).
        pub origin: Usage,
        /// The tracker, for BitTorrent.
        pub tracker: Option<Usage>,
        /// Each receiver process.
        pub receivers: Vec<Usage>,
    }

    /// Runs `system` with fresh receiver data directories, removed afterwards.
    ///
    /// # Errors
    ///
    /// When anything fails or times out, or a receiver's payload does not verify.
    pub fn run(bench: &Bench<'_>, system: System) -> Result<SystemRun> {
        let dir = bench.work.join(system.to_string());
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let result = match system {
            System::Shoal => shoal(bench, &dir),
            System::Http => http(bench, &dir),
            System::Bittorrent => bittorrent(bench, &dir),
        };
        // Receiver copies are big; logs are small and stay until the work directory goes.
        for host in 1..bench.config.hosts {
            let _ = std::fs::remove_dir_all(receiver_dir(&dir, host));
        }
        result
    }

    fn receiver_dir(dir: &Path, host: usize) -> PathBuf {
        dir.join(format!("receiver-{host}"))
    }

    fn create_receiver_dirs(bench: &Bench<'_>, dir: &Path) -> Result<()> {
        for host in 1..bench.config.hosts {
            let d = receiver_dir(dir, host);
            std::fs::create_dir(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(())
    }

    /// How a receiver says it is complete.
    enum Done {
        /// A JSON object with a `root` on stdout (Shoal); other objects are failures.
        Json,
        /// Exiting with status 0 (`curl`).
        Exit,
        /// This file appearing, holding the Unix time of completion (aria2's hook).
        Marker(Vec<PathBuf>),
    }

    /// What the wait for the receivers returns.
    struct Waited {
        completion_secs: Vec<f64>,
        json: Vec<Option<serde_json::Value>>,
        origin_sent_bytes: u64,
    }

    /// Waits until every receiver in `receivers` (process ids) is complete, with the origin's
    /// processes in `origin` still running, then reads the origin's byte count.
    fn wait_receivers(
        bench: &Bench<'_>,
        procs: &mut Procs,
        receivers: &[usize],
        origin: &[usize],
        done: &Done,
        start: (Instant, SystemTime),
        tx_before: u64,
    ) -> Result<Waited> {
        let deadline = start.0 + Duration::from_secs_f64(bench.deadline_secs());
        let mut progress = Progress {
            receivers,
            origin,
            done,
            start: start.0,
            start_unix_secs: start
                .1
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            completion_secs: vec![None; receivers.len()],
            json: vec![None; receivers.len()],
        };
        while !progress.is_complete() {
            super::interrupt::check()?;
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {:.0} s; not complete: {}",
                    bench.deadline_secs(),
                    progress.late(procs).join(", ")
                );
            }
            let wait_until = match done {
                Done::Marker(_) => (Instant::now() + MARKER_POLL).min(deadline),
                _ => deadline,
            };
            if let Some(event) = procs.next_event(wait_until) {
                progress.handle(procs, event)?;
            }
            progress.poll_markers()?;
        }
        let tx_after = bench.swarm.tx_bytes(0)?;
        Ok(Waited {
            completion_secs: progress.completion_secs.into_iter().flatten().collect(),
            json: progress.json,
            origin_sent_bytes: tx_after.saturating_sub(tx_before),
        })
    }

    /// The receivers' state while the harness waits for them.
    struct Progress<'a> {
        receivers: &'a [usize],
        origin: &'a [usize],
        done: &'a Done,
        start: Instant,
        start_unix_secs: f64,
        completion_secs: Vec<Option<f64>>,
        json: Vec<Option<serde_json::Value>>,
    }

    impl Progress<'_> {
        fn is_complete(&self) -> bool {
            self.completion_secs.iter().all(Option::is_some)
        }

        /// The labels of the receivers not complete yet.
        fn late<'p>(&self, procs: &'p Procs) -> Vec<&'p str> {
            self.receivers
                .iter()
                .zip(&self.completion_secs)
                .filter(|(_, c)| c.is_none())
                .map(|(&p, _)| procs.label(p))
                .collect()
        }

        /// Takes one event: a completion, or a failure of a receiver or of the origin.
        fn handle(&mut self, procs: &Procs, event: Event) -> Result<()> {
            let secs = event.at.saturating_duration_since(self.start).as_secs_f64();
            let label = procs.label(event.proc);
            let Some(r) = self.receivers.iter().position(|&p| p == event.proc) else {
                return match event.report {
                    Report::Exited { status, .. } if self.origin.contains(&event.proc) => Err(
                        procs.failure(event.proc, status, "exited while receivers were running"),
                    ),
                    _ => Ok(()),
                };
            };
            let is_complete = self.completion_secs[r].is_some();
            match (event.report, self.done) {
                (Report::Json(value), Done::Json) if !is_complete => {
                    ensure!(
                        value.get("root").is_some(),
                        "{label} printed a JSON object without a root, so it failed: {value}"
                    );
                    self.completion_secs[r] = Some(secs);
                    self.json[r] = Some(value);
                }
                (Report::NotJson(e), _) => {
                    bail!("{label} printed something that is not JSON on stdout: {e}")
                }
                (Report::Exited { status, .. }, Done::Exit) if !is_complete => {
                    if !processes::is_success(status) {
                        return Err(procs.failure(event.proc, status, "failed"));
                    }
                    self.completion_secs[r] = Some(secs);
                }
                (Report::Exited { status, .. }, _) if !is_complete => {
                    return Err(procs.failure(event.proc, status, "exited before it was complete"));
                }
                _ => {}
            }
            Ok(())
        }

        /// Looks for completion markers (aria2's hook). The hook writes a marker under another
        /// name and renames it, so a marker that exists is whole.
        fn poll_markers(&mut self) -> Result<()> {
            let Done::Marker(markers) = self.done else {
                return Ok(());
            };
            for (marker, completion) in markers.iter().zip(&mut self.completion_secs) {
                if completion.is_some() {
                    continue;
                }
                if let Ok(text) = std::fs::read_to_string(marker) {
                    let at_unix_secs: f64 = text.trim().parse().with_context(|| {
                        format!("{} holds {text:?}, not a Unix time", marker.display())
                    })?;
                    *completion = Some((at_unix_secs - self.start_unix_secs).max(0.0));
                }
            }
            Ok(())
        }
    }

    /// Collects the usage of every process after `stop_all`.
    fn usages(procs: &Procs, ids: &[usize]) -> Vec<Usage> {
        ids.iter()
            .map(|&id| procs.usage(id).unwrap_or_default())
            .collect()
    }

    fn now() -> (Instant, SystemTime) {
        (Instant::now(), SystemTime::now())
    }

    // ---- Shoal ----

    /// The keys, trust document and manifest for a payload, made as `scripts/demo` makes them.
    pub struct Release {
        /// The signed manifest.
        pub manifest: PathBuf,
        /// The trust document.
        pub trust: PathBuf,
    }

    /// Makes keys, a trust document and a manifest of `payload` in `dir`, and checks that the
    /// manifest's root is `b3sum`'s.
    ///
    /// # Errors
    ///
    /// The `shoal` command that failed, or a root mismatch.
    pub fn shoal_release(
        bench: &Bench<'_>,
        dir: &Path,
        payload: &Path,
        root: &str,
    ) -> Result<Release> {
        let shoal = Path::new(env!("CARGO_BIN_EXE_shoal"));
        for sub in ["seed", "fetch"] {
            let help = exec::output(Command::new(shoal).args([sub, "--help"]), PREPARE_TIMEOUT);
            if let Err(e) = help {
                bail!("{} has no working `{sub}` command: {e:#}", shoal.display());
            }
        }
        let run = |args: Args| -> Result<String> {
            exec::text(
                Command::new(shoal).current_dir(dir).args(args),
                PREPARE_TIMEOUT,
            )
        };
        for role in ["root", "publisher", "coordinator"] {
            run(Args::new("keys generate")
                .opt("--role", role)
                .opt("--out", format!("{role}.key")))?;
        }
        run(Args::new("trust init")
            .opt("--root", "root.key")
            .opt("--publisher", "publisher.key.pub")
            .opt("--coordinator", "coordinator.key.pub")
            .opt("--out", "trust.json"))?;
        let out = run(Args::new("release create")
            .arg(payload)
            .opt("--service", "bench")
            .opt("--version", "1")
            .opt("--key", "publisher.key")
            .opt("--piece-size", bench.config.piece_bytes().to_string())
            .opt("--out", "bench.manifest")
            .arg("--json"))?;
        let summary: serde_json::Value = serde_json::from_str(&out)
            .context("shoal release create --json printed something that is not JSON")?;
        let manifest_root = summary["root"].as_str().unwrap_or_default();
        ensure!(
            manifest_root == root,
            "the manifest's root {manifest_root:?} is not the payload's BLAKE3 {root}"
        );
        Ok(Release {
            manifest: dir.join("bench.manifest"),
            trust: dir.join("trust.json"),
        })
    }

    /// The `--listen` port of every Shoal node.
    const SHOAL_PORT: u16 = 7070;

    fn shoal(bench: &Bench<'_>, dir: &Path) -> Result<SystemRun> {
        let shoal = Path::new(env!("CARGO_BIN_EXE_shoal"));
        let release = shoal_release(bench, dir, bench.payload, bench.payload_root)?;
        create_receiver_dirs(bench, dir)?;
        let mut procs = Procs::new(bench.tools.get("ip"), &dir.join("logs"))?;
        let origin_data = dir.join("origin-data");
        let listen = format!("{}:{SHOAL_PORT}", bench.ip_of(0));
        let seed = procs.spawn(
            bench.netns(0),
            "shoal seed (origin)",
            shoal,
            Args::new("seed")
                .arg(&release.manifest)
                .opt("--file", bench.payload)
                .opt("--trust", &release.trust)
                .opt("--data-dir", &origin_data)
                .opt("--listen", &listen)
                .opt("--congestion", crate::congestion()),
            false,
        )?;
        bench.swarm.wait_listening(
            bench.tools.get("ss"),
            0,
            &listen,
            ORIGIN_START_TIMEOUT,
            || procs.check_running(seed),
        )?;

        // Receivers keep serving until the harness stops them once all are complete.
        let seed_secs = format!("{:.0}", bench.deadline_secs() + 60.0);
        let addrs: Vec<String> = (0..bench.config.hosts)
            .map(|h| format!("{}:{SHOAL_PORT}", bench.ip_of(h)))
            .collect();
        let tx_before = bench.swarm.tx_bytes(0)?;
        let start = now();
        let mut receivers = Vec::new();
        for host in 1..bench.config.hosts {
            let data = receiver_dir(dir, host);
            let mut args = Args::new("fetch")
                .arg(&release.manifest)
                .opt("--trust", &release.trust)
                .opt("--data-dir", &data)
                .opt("--listen", &addrs[host]);
            for (other, addr) in addrs.iter().enumerate() {
                if other != host {
                    args = args.opt("--peer", addr);
                }
            }
            let args = args
                .opt("--seed-secs", &seed_secs)
                .opt("--congestion", crate::congestion())
                .arg("--json");
            let label = format!("shoal fetch (receiver {host})");
            receivers.push(procs.spawn(bench.netns(host), &label, shoal, args, true)?);
        }
        let waited = wait_receivers(
            bench,
            &mut procs,
            &receivers,
            &[seed],
            &Done::Json,
            start,
            tx_before,
        )?;
        origin_transport_summary(bench, shoal, &listen);
        procs.stop_all()?;

        let mut paths = Vec::new();
        for (value, &id) in waited.json.iter().zip(&receivers) {
            let value = value.as_ref().context("a receiver has no JSON")?;
            let root = value["root"].as_str().unwrap_or_default();
            ensure!(
                root == bench.payload_root,
                "{} reports root {root:?}, not {}",
                procs.label(id),
                bench.payload_root
            );
            let path = value["path"]
                .as_str()
                .with_context(|| format!("{} printed no path: {value}", procs.label(id)))?;
            paths.push(PathBuf::from(path));
        }
        files::verify_all(bench.tools, &paths, bench.payload_root)?;
        Ok(SystemRun {
            completion_secs: waited.completion_secs,
            origin_sent_bytes: waited.origin_sent_bytes,
            origin: procs.usage(seed).unwrap_or_default(),
            tracker: None,
            receivers: usages(&procs, &receivers),
        })
    }

    /// Prints what the origin's own counters say: application bytes sent, and the UDP bytes,
    /// losses and congestion events QUIC counted on its connections.
    fn origin_transport_summary(bench: &Bench<'_>, shoal: &Path, listen: &str) {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", bench.netns(0)])
            .arg(shoal)
            .args(["status", "--node", listen, "--json"])
            .output();
        let Ok(out) = out else { return };
        let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return;
        };
        let sum = |field: &str| -> u64 {
            status["connections"]
                .as_array()
                .map(|c| c.iter().filter_map(|c| c[field].as_u64()).sum())
                .unwrap_or(0)
        };
        let app = status["releases"][0]["bytes_up"].as_u64().unwrap_or(0);
        println!(
            "origin's own count: {} of pieces sent; QUIC sent {} in UDP payloads, declared {} lost, {} congestion events (connections still open)",
            super::units::mib(app),
            super::units::mib(sum("udp_sent_bytes")),
            super::units::mib(sum("lost_bytes")),
            sum("congestion_events")
        );
    }

    // ---- HTTP ----

    const HTTP_PORT: u16 = 8080;

    fn http(bench: &Bench<'_>, dir: &Path) -> Result<SystemRun> {
        let payload_dir = bench
            .payload
            .parent()
            .context("the payload has no directory")?;
        let name = bench
            .payload
            .file_name()
            .and_then(|n| n.to_str())
            .context("the payload has no UTF-8 file name")?;
        let nginx_dir = dir.join("nginx");
        std::fs::create_dir(&nginx_dir)
            .with_context(|| format!("cannot create {}", nginx_dir.display()))?;
        let listen = format!("{}:{HTTP_PORT}", bench.ip_of(0));
        let d = nginx_dir.display();
        // One worker with sendfile: the cheapest way a stock server sends a file.
        let conf = format!(
            "daemon off;\n\
             master_process on;\n\
             worker_processes 1;\n\
             user root;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   sendfile on;\n\
             \x20   tcp_nopush on;\n\
             \x20   default_type application/octet-stream;\n\
             \x20   client_body_temp_path {d}/body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   server {{\n\
             \x20       listen {listen};\n\
             \x20       root {};\n\
             \x20   }}\n\
             }}\n",
            payload_dir.display()
        );
        let conf_path = nginx_dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("cannot write {}", conf_path.display()))?;
        create_receiver_dirs(bench, dir)?;

        let mut procs = Procs::new(bench.tools.get("ip"), &dir.join("logs"))?;
        let server = procs.spawn(
            bench.netns(0),
            "nginx (origin)",
            bench.tools.get("nginx"),
            Args::default()
                .opt("-p", &nginx_dir)
                .opt("-c", &conf_path)
                .opt("-e", nginx_dir.join("error.log")),
            false,
        )?;
        bench.swarm.wait_listening(
            bench.tools.get("ss"),
            0,
            &listen,
            ORIGIN_START_TIMEOUT,
            || procs.check_running(server),
        )?;

        let url = format!("http://{listen}/{name}");
        let tx_before = bench.swarm.tx_bytes(0)?;
        let start = now();
        let mut receivers = Vec::new();
        let mut paths = Vec::new();
        for host in 1..bench.config.hosts {
            let out = receiver_dir(dir, host).join(name);
            let label = format!("curl (receiver {host})");
            receivers.push(procs.spawn(
                bench.netns(host),
                &label,
                bench.tools.get("curl"),
                Args::new("-sSf").opt("-o", &out).arg(&url),
                false,
            )?);
            paths.push(out);
        }
        let waited = wait_receivers(
            bench,
            &mut procs,
            &receivers,
            &[server],
            &Done::Exit,
            start,
            tx_before,
        )?;
        procs.stop_all()?;
        files::verify_all(bench.tools, &paths, bench.payload_root)?;
        Ok(SystemRun {
            completion_secs: waited.completion_secs,
            origin_sent_bytes: waited.origin_sent_bytes,
            origin: procs.usage(server).unwrap_or_default(),
            tracker: None,
            receivers: usages(&procs, &receivers),
        })
    }

    // ---- BitTorrent ----

    const TRACKER_PORT: u16 = 6969;
    const TORRENT_PORT: u16 = 6881;

    /// aria2 runs this once a receiver has every piece (before it goes on seeding), with the
    /// GID, the file count and the first file's path. It writes the time under another name and
    /// renames it, so the harness never reads half a marker.
    const HOOK: &str = "#!/bin/sh\n\
        # Written by benches/swarm.rs: marks a completed BitTorrent download with the time.\n\
        date +%s.%N > \"$3.done.tmp\" && mv \"$3.done.tmp\" \"$3.done\"\n";

    /// What the aria2 seeder and receivers share. DHT and local peer discovery are off, so
    /// peers come from the tracker (and peer exchange). `--seed-ratio=0.0` without
    /// `--seed-time` seeds until stopped: the harness stops every node once all are complete.
    fn aria2_args() -> Args {
        Args::new(
            "--no-conf=true --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
             --bt-max-peers=55 --file-allocation=none --summary-interval=0 \
             --console-log-level=warn --seed-ratio=0.0",
        )
        .opt("--listen-port", TORRENT_PORT.to_string())
    }

    fn bittorrent(bench: &Bench<'_>, dir: &Path) -> Result<SystemRun> {
        let payload_dir = bench
            .payload
            .parent()
            .context("the payload has no directory")?;
        let name = bench
            .payload
            .file_name()
            .and_then(|n| n.to_str())
            .context("the payload has no UTF-8 file name")?;
        let origin_ip = bench.ip_of(0);
        let tracker_addr = format!("{origin_ip}:{TRACKER_PORT}");
        let announce = format!("http://{tracker_addr}/announce");

        // The torrent, with the same piece size as Shoal's manifest.
        let torrent = dir.join("payload.torrent");
        let exponent = bench.config.piece_bytes().trailing_zeros().to_string();
        exec::output(
            Command::new(bench.tools.get("mktorrent"))
                .args(["-a", &announce, "-l", &exponent, "-o"])
                .arg(&torrent)
                .arg(bench.payload),
            PREPARE_TIMEOUT,
        )?;
        let shown = exec::text(
            Command::new(bench.tools.get("aria2c"))
                .arg("-S")
                .arg(&torrent),
            PREPARE_TIMEOUT,
        )?;
        let info_hash = shown
            .lines()
            .find_map(|l| l.trim().strip_prefix("Info Hash:"))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .with_context(|| format!("aria2c -S printed no info hash: {shown}"))?;
        let escaped_hash: String = (0..20)
            .map(|i| format!("%{}", &info_hash[2 * i..2 * i + 2]))
            .collect();

        // Debian's opentracker serves only whitelisted torrents, refuses to run as root, and
        // chroots into its `-d` directory, where it then reads the whitelist: give it a
        // world-readable one.
        let tracker_dir = dir.join("tracker");
        std::fs::create_dir(&tracker_dir)
            .with_context(|| format!("cannot create {}", tracker_dir.display()))?;
        std::fs::write(tracker_dir.join("whitelist.txt"), format!("{info_hash}\n"))
            .context("cannot write the tracker whitelist")?;
        set_mode(&tracker_dir, 0o755)?;
        set_mode(&tracker_dir.join("whitelist.txt"), 0o644)?;

        let hook = dir.join("complete-hook.sh");
        std::fs::write(&hook, HOOK).with_context(|| format!("cannot write {}", hook.display()))?;
        set_mode(&hook, 0o755)?;
        create_receiver_dirs(bench, dir)?;

        let mut procs = Procs::new(bench.tools.get("ip"), &dir.join("logs"))?;
        let tracker = procs.spawn(
            bench.netns(0),
            "opentracker (origin)",
            bench.tools.get("opentracker"),
            Args::default()
                .opt("-i", &origin_ip)
                .opt("-p", TRACKER_PORT.to_string())
                .opt("-P", TRACKER_PORT.to_string())
                .opt("-d", &tracker_dir)
                .opt("-u", "nobody")
                .opt("-w", "whitelist.txt"),
            false,
        )?;
        let ss = bench.tools.get("ss");
        bench
            .swarm
            .wait_listening(ss, 0, &tracker_addr, ORIGIN_START_TIMEOUT, || {
                procs.check_running(tracker)
            })?;
        // The whitelist loads in the background: wait until an announce is accepted. The probe
        // says it stopped, so the tracker lists no peer for it.
        let probe = format!(
            "{announce}?info_hash={escaped_hash}&peer_id=-SB0000-000000000000&port=1&uploaded=0&downloaded=0&left=0&event=stopped&compact=1"
        );
        poll_tracker(bench, &mut procs, tracker, &probe, |body| {
            !body.contains("failure reason")
        })?;

        let seeder = procs.spawn(
            bench.netns(0),
            "aria2c seeder (origin)",
            bench.tools.get("aria2c"),
            aria2_args()
                .words("--check-integrity=true --bt-seed-unverified=true")
                .opt("--dir", payload_dir)
                .arg(&torrent),
            false,
        )?;
        // Seeding once the tracker counts one complete peer.
        let scrape = format!("http://{tracker_addr}/scrape?info_hash={escaped_hash}");
        poll_tracker(bench, &mut procs, seeder, &scrape, |body| {
            body.contains("8:completei1e")
        })?;
        procs.check_running(tracker)?;

        let tx_before = bench.swarm.tx_bytes(0)?;
        let start = now();
        let mut receivers = Vec::new();
        let mut paths = Vec::new();
        let mut markers = Vec::new();
        for host in 1..bench.config.hosts {
            let data = receiver_dir(dir, host);
            let args = aria2_args()
                .arg("--allow-overwrite=true")
                .opt("--on-bt-download-complete", &hook)
                .opt("--dir", &data)
                .arg(&torrent);
            let label = format!("aria2c (receiver {host})");
            receivers.push(procs.spawn(
                bench.netns(host),
                &label,
                bench.tools.get("aria2c"),
                args,
                false,
            )?);
            paths.push(data.join(name));
            markers.push(data.join(format!("{name}.done")));
        }
        let waited = wait_receivers(
            bench,
            &mut procs,
            &receivers,
            &[tracker, seeder],
            &Done::Marker(markers),
            start,
            tx_before,
        )?;
        // aria2 writes its cache out when it stops, so verify after stopping.
        procs.stop_all()?;
        files::verify_all(bench.tools, &paths, bench.payload_root)?;
        Ok(SystemRun {
            completion_secs: waited.completion_secs,
            origin_sent_bytes: waited.origin_sent_bytes,
            origin: procs.usage(seeder).unwrap_or_default(),
            tracker: procs.usage(tracker),
            receivers: usages(&procs, &receivers),
        })
    }

    /// Fetches `url` with curl in the origin namespace until `ok` accepts the body, while
    /// process `id` keeps running.
    fn poll_tracker(
        bench: &Bench<'_>,
        procs: &mut Procs,
        id: usize,
        url: &str,
        ok: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + ORIGIN_START_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            procs.check_running(id)?;
            let body = exec::output(
                Command::new(bench.tools.get("ip"))
                    .args(["netns", "exec", bench.netns(0)])
                    .arg(bench.tools.get("curl"))
                    .args(["-sS", "--max-time", "5", url]),
                Duration::from_secs(10),
            );
            match body {
                Ok(b) => {
                    last = String::from_utf8_lossy(&b).into_owned();
                    if ok(&last) {
                        return Ok(());
                    }
                }
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the tracker did not get ready within {} s; last answer to {url}: {last:?}",
            ORIGIN_START_TIMEOUT.as_secs()
        )
    }

    fn set_mode(path: &Path, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", path.display()))
    }
}

mod loopback {
    //! One uncapped pair over 127.0.0.1 inside the origin's namespace: what TCP gives
    //! (`iperf3`, one stream) next to `shoal seed` and `shoal fetch` of a large payload.

    use super::config::System;
    use super::processes::{self, Procs, Report};
    use super::systems::{Bench, shoal_release};
    use super::{Args, exec, files};
    use anyhow::{Context as _, Result, bail, ensure};
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// The loopback figures.
    pub struct LoopbackRun {
        /// `iperf3`'s received throughput, one TCP stream.
        pub iperf_bits_per_sec: f64,
        /// Shoal's run, when Shoal is among the systems and the loopback payload is not empty.
        pub shoal: Option<ShoalLoopback>,
    }

    /// Shoal over loopback.
    pub struct ShoalLoopback {
        /// The payload size.
        pub bytes: u64,
        /// From starting `shoal fetch` to its JSON line.
        pub secs: f64,
        /// CPU time of the whole `shoal fetch` process.
        pub fetch_cpu_secs: f64,
        /// CPU time `shoal seed` used while the fetch ran (from `/proc`, so its start-up is
        /// left out).
        pub seed_cpu_secs: f64,
    }

    /// Runs `iperf3`, then Shoal.
    ///
    /// # Errors
    ///
    /// Whatever fails, naming the command.
    pub fn run(bench: &Bench<'_>) -> Result<LoopbackRun> {
        let iperf_bits_per_sec = iperf(bench)?;
        println!(
            "iperf3, one TCP stream over 127.0.0.1 for {} s: {:.2} Gbit/s",
            bench.config.iperf_secs,
            iperf_bits_per_sec / 1e9
        );
        let shoal = if bench.config.systems.contains(&System::Shoal)
            && bench.config.loopback_bytes > 0
        {
            let s = shoal(bench)?;
            let gbit = s.bytes as f64 * 8.0 / s.secs / 1e9;
            println!(
                "shoal seed + shoal fetch over 127.0.0.1: {} in {:.2} s, {gbit:.2} Gbit/s ({:.2}x iperf3); fetch CPU {:.2} s, seed CPU during the fetch {:.2} s",
                super::units::mib(s.bytes),
                s.secs,
                gbit * 1e9 / iperf_bits_per_sec,
                s.fetch_cpu_secs,
                s.seed_cpu_secs
            );
            Some(s)
        } else {
            println!(
                "shoal loopback: not run (shoal is not in SHOAL_BENCH_SYSTEMS, or SHOAL_BENCH_LOOPBACK_BYTES is 0)"
            );
            None
        };
        Ok(LoopbackRun {
            iperf_bits_per_sec,
            shoal,
        })
    }

    const IPERF_PORT: u16 = 5201;

    fn iperf(bench: &Bench<'_>) -> Result<f64> {
        let ns = &bench.swarm.hosts[0].netns;
        let iperf3 = bench.tools.get("iperf3");
        let dir = bench.work.join("iperf3");
        let mut procs = Procs::new(bench.tools.get("ip"), &dir)?;
        let port = IPERF_PORT.to_string();
        let server = procs.spawn(
            ns,
            "iperf3 server",
            iperf3,
            ["-s", "-1", "-B", "127.0.0.1", "-p", &port],
            false,
        )?;
        bench.swarm.wait_listening(
            bench.tools.get("ss"),
            0,
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(30),
            || procs.check_running(server),
        )?;
        let secs = bench.config.iperf_secs.to_string();
        let out = exec::output(
            Command::new(bench.tools.get("ip"))
                .args(["netns", "exec", ns])
                .arg(iperf3)
                .args(["-c", "127.0.0.1", "-p", &port, "-t", &secs, "-J"]),
            Duration::from_secs(u64::from(bench.config.iperf_secs) + 60),
        )?;
        procs.stop_all()?;
        let report: serde_json::Value =
            serde_json::from_slice(&out).context("iperf3 -J printed something that is not JSON")?;
        report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .with_context(|| format!("iperf3 -J has no end.sum_received.bits_per_second: {report}"))
    }

    fn shoal(bench: &Bench<'_>) -> Result<ShoalLoopback> {
        let shoal = std::path::Path::new(env!("CARGO_BIN_EXE_shoal"));
        let ns = &bench.swarm.hosts[0].netns;
        let dir = bench.work.join("loopback");
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let bytes = bench.config.loopback_bytes;
        let payload = dir.join("payload");
        files::write_payload(&payload, bytes)?;
        let root = files::b3sum(bench.tools, &payload)?;
        let release = shoal_release(bench, &dir, &payload, &root)?;

        let mut procs = Procs::new(bench.tools.get("ip"), &dir.join("logs"))?;
        let seed_data: PathBuf = dir.join("seed-data");
        let fetch_data: PathBuf = dir.join("fetch-data");
        std::fs::create_dir(&fetch_data).context("cannot create the fetch data directory")?;
        let seed = procs.spawn(
            ns,
            "shoal seed (loopback)",
            shoal,
            Args::new("seed")
                .arg(&release.manifest)
                .opt("--file", &payload)
                .opt("--trust", &release.trust)
                .opt("--data-dir", &seed_data)
                .opt("--listen", "127.0.0.1:7070"),
            false,
        )?;
        bench.swarm.wait_listening(
            bench.tools.get("ss"),
            0,
            "127.0.0.1:7070",
            Duration::from_secs(120),
            || procs.check_running(seed),
        )?;
        // Ten times what 100 MB/s would take, plus a minute.
        let timeout = Duration::from_secs_f64(bytes as f64 / 1e7 + 60.0);
        let seed_cpu_before = processes::cpu_secs_so_far(procs.pid(seed))?;
        let start = Instant::now();
        let fetch = procs.spawn(
            ns,
            "shoal fetch (loopback)",
            shoal,
            Args::new("fetch")
                .arg(&release.manifest)
                .opt("--trust", &release.trust)
                .opt("--data-dir", &fetch_data)
                .opt("--listen", "127.0.0.1:7071")
                .opt("--peer", "127.0.0.1:7070")
                .opt("--seed-secs", format!("{:.0}", timeout.as_secs_f64()))
                .arg("--json"),
            true,
        )?;
        let deadline = start + timeout;
        let (secs, value) = loop {
            let Some(event) = procs.next_event(deadline) else {
                super::interrupt::check()?;
                bail!(
                    "shoal fetch over loopback timed out after {} s",
                    timeout.as_secs()
                );
            };
            match event.report {
                Report::Json(v) if event.proc == fetch => {
                    ensure!(v.get("root").is_some(), "shoal fetch failed: {v}");
                    break (event.at.duration_since(start).as_secs_f64(), v);
                }
                Report::NotJson(e) => bail!("shoal fetch printed something that is not JSON: {e}"),
                Report::Exited { status, .. } => {
                    return Err(procs.failure(
                        event.proc,
                        status,
                        "exited before the fetch completed",
                    ));
                }
                Report::Json(_) => {}
            }
        };
        let seed_cpu_secs = processes::cpu_secs_so_far(procs.pid(seed))? - seed_cpu_before;
        procs.stop_all()?;
        let path = value["path"]
            .as_str()
            .with_context(|| format!("shoal fetch printed no path: {value}"))?;
        files::verify_all(bench.tools, &[PathBuf::from(path)], &root)?;
        let fetch_cpu_secs = procs.usage(fetch).map(|u| u.cpu_secs).unwrap_or(f64::NAN);
        drop(procs);
        // Two copies of a large payload: give the memory back before anything else runs.
        let _ = std::fs::remove_dir_all(&dir);
        Ok(ShoalLoopback {
            bytes,
            secs,
            fetch_cpu_secs,
            seed_cpu_secs,
        })
    }
}

mod report {
    //! Turning runs into text: a detailed block per system and markdown tables.

    use super::config::System;
    use super::loopback::LoopbackRun;
    use super::processes::Usage;
    use super::systems::{Bench, SystemRun};
    use super::units::{mib, mib_f};

    /// The value at percentile `p` (nearest rank) of `values`.
    fn percentile(values: &[f64], p: f64) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    fn cpu(usages: &[Usage]) -> (f64, f64) {
        let v: Vec<f64> = usages.iter().map(|u| u.cpu_secs).collect();
        (percentile(&v, 0.5), percentile(&v, 1.0))
    }

    fn rss(usages: &[Usage]) -> (f64, f64) {
        let v: Vec<f64> = usages.iter().map(|u| u.peak_rss_bytes as f64).collect();
        (percentile(&v, 0.5), percentile(&v, 1.0))
    }

    /// A few lines on one system's run.
    pub fn detail(bench: &Bench<'_>, run: &SystemRun) -> String {
        let t = &run.completion_secs;
        let bound = bench.bound_secs();
        let max = percentile(t, 1.0);
        let (cpu_med, cpu_max) = cpu(&run.receivers);
        let (rss_med, rss_max) = rss(&run.receivers);
        let per_receiver: Vec<String> = t.iter().map(|s| format!("{s:.2}")).collect();
        let mut text = format!(
            "{} receivers complete and verified; completion p50 {:.2} s, p99 {:.2} s, max {max:.2} s; Kumar-Ross bound {bound:.2} s, max/bound {:.2}\n\
             per receiver (s): {}\n\
             origin sent {} ({:.2}x the payload); origin CPU {:.2} s, peak RSS {}\n\
             receivers: CPU median {cpu_med:.2} s, max {cpu_max:.2} s; peak RSS median {}, max {}",
            t.len(),
            percentile(t, 0.5),
            percentile(t, 0.99),
            max / bound,
            per_receiver.join(" "),
            mib(run.origin_sent_bytes),
            run.origin_sent_bytes as f64 / bench.config.payload_bytes as f64,
            run.origin.cpu_secs,
            mib(run.origin.peak_rss_bytes),
            mib_f(rss_med),
            mib_f(rss_max),
        );
        if let Some(tracker) = run.tracker {
            text.push_str(&format!(
                "\ntracker: CPU {:.2} s, peak RSS {}",
                tracker.cpu_secs,
                mib(tracker.peak_rss_bytes)
            ));
        }
        text
    }

    /// The header of the results table; `benches/README.md` has the same columns.
    pub const HEADER: &str = "| system | p50 s | p99 s | max s | bound s | max / bound | origin sent | origin CPU s | origin peak RSS | receiver CPU s (median / max) | receiver peak RSS (median / max) |\n\
        |---|---|---|---|---|---|---|---|---|---|---|";

    /// One markdown row per system.
    pub fn table(bench: &Bench<'_>, results: &[(System, anyhow::Result<SystemRun>)]) -> String {
        let bound = bench.bound_secs();
        let mut text = format!(
            "{} hosts (1 origin, {} receivers), {} up and down per host, {} payload, {} pieces; Kumar-Ross bound {bound:.2} s\n\n{HEADER}",
            bench.config.hosts,
            bench.config.receivers(),
            bench.config.rate,
            mib(bench.config.payload_bytes),
            mib(bench.config.piece_bytes()),
        );
        for (system, result) in results {
            let row = match result {
                Ok(run) => {
                    let t = &run.completion_secs;
                    let (cpu_med, cpu_max) = cpu(&run.receivers);
                    let (rss_med, rss_max) = rss(&run.receivers);
                    format!(
                        "| {system} | {:.2} | {:.2} | {:.2} | {bound:.2} | {:.2} | {} ({:.2}x) | {:.2} | {} | {cpu_med:.2} / {cpu_max:.2} | {} / {} |",
                        percentile(t, 0.5),
                        percentile(t, 0.99),
                        percentile(t, 1.0),
                        percentile(t, 1.0) / bound,
                        mib(run.origin_sent_bytes),
                        run.origin_sent_bytes as f64 / bench.config.payload_bytes as f64,
                        run.origin.cpu_secs,
                        mib(run.origin.peak_rss_bytes),
                        mib_f(rss_med),
                        mib_f(rss_max),
                    )
                }
                Err(e) => {
                    let reason = format!("{e:#}").replace('|', "/");
                    let short: String = reason.chars().take(200).collect();
                    format!("| {system} | failed: {short} | | | | | | | | | |")
                }
            };
            text.push('\n');
            text.push_str(&row);
        }
        text
    }

    /// The loopback figures as a markdown table.
    pub fn loopback_table(run: &LoopbackRun) -> String {
        let mut text = String::from(
            "\n| loopback, one pair, no caps | Gbit/s | vs iperf3 | bytes per CPU-second |\n|---|---|---|---|",
        );
        text.push_str(&format!(
            "\n| iperf3, one TCP stream | {:.2} | 1.00x | |",
            run.iperf_bits_per_sec / 1e9
        ));
        if let Some(s) = &run.shoal {
            let bits = s.bytes as f64 * 8.0 / s.secs;
            text.push_str(&format!(
                "\n| shoal seed + fetch, {} | {:.2} | {:.2}x | fetch {:.2} GB/s, seed {:.2} GB/s |",
                mib(s.bytes),
                bits / 1e9,
                bits / run.iperf_bits_per_sec,
                s.bytes as f64 / s.fetch_cpu_secs / 1e9,
                s.bytes as f64 / s.seed_cpu_secs / 1e9,
            ));
        }
        text
    }
}

mod units {
    //! Byte counts for people.

    /// `256.0 MiB`.
    pub fn mib(bytes: u64) -> String {
        mib_f(bytes as f64)
    }

    /// `256.0 MiB`, from a float.
    pub fn mib_f(bytes: f64) -> String {
        format!("{:.1} MiB", bytes / f64::from(1u32 << 20))
    }
}
