//! A harness for end-to-end runs of the control plane: one `shoal coordinator` and many
//! `shoal node` processes, on loopback or each in its own network namespace.
//!
//! Shared by `tests/mesh.rs`, `tests/partition.rs` and `benches/mesh.rs`, which include it with
//! `#[path]`. It drives only the `shoal` binary: keys, the trust document, tokens, releases and
//! every reading (`members`, `status`) go through its command line, as an operator's would.
//!
//! The entry points are [`Work`] (a directory with keys, a trust document, payloads, data
//! directories and logs) and [`Mesh`] (the processes). Every process writes stdout and stderr, at
//! `SHOAL_LOG=info`, to `logs/NAME.log` in the work directory. Processes die with the mesh: a
//! [`Proc`] sends SIGKILL and waits when dropped, so a panicking test leaks none, and each is
//! started with `PR_SET_PDEATHSIG`, so none outlives a test process that is itself killed. When
//! a mesh is dropped during a panic, the logs are copied to `target/tmp/mesh-logs/` and their
//! tails printed.
//!
//! Waits poll with a deadline ([`Mesh::wait`]) and say how long they took; the bounds are the
//! callers' named constants.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// The helpers every end-to-end test shares (payloads, root checks).
#[path = "mod.rs"]
pub mod common;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long one command-line call (`members`, `status`, `token create`, `announce`...) may take
/// before it counts as hung. `shoal`'s API client gives up by itself after 5 s to connect and
/// 10 s to read; `announce` also hashes the payload (32 MiB at most here).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a wait polls. One poll of a 50-node mesh runs 50 `shoal members` calls, which
/// takes a good part of a second on two cores, so polling faster gains nothing.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long a started process has to answer on its API. A coordinator binds at once; a node
/// first redeems its token at the coordinator (one request the node gives up on after 15 s).
/// Fifty debug-build processes starting together on two cores take a few seconds each.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// The default active-view capacity: a node tries to keep this many neighbours.
pub const ACTIVE_VIEW_CAPACITY: usize = 5;

/// The most neighbours a node may hold: one above the capacity, when a neighbour-short peer asks.
pub const ACTIVE_VIEW_MAX: usize = ACTIVE_VIEW_CAPACITY + 1;

/// The log level every process runs at (`SHOAL_LOG`), unless `SHOAL_TEST_LOG` names another
/// (`SHOAL_TEST_LOG=debug` to chase a failure).
const LOG_LEVEL: &str = "info";

/// Lines printed from the end of the log of the coordinator and of processes that died.
const LOG_TAIL_LINES: usize = 40;

/// Lines printed from the end of every other log.
const LOG_TAIL_LINES_QUIET: usize = 6;

/// Command-line calls run at once when polling many processes.
const PARALLEL_CALLS: usize = 16;

/// Loopback ports come from here: below Linux's default ephemeral range (32768 and up), so no
/// socket the kernel numbers (a client's, or a node's temporary admission endpoint) can take one
/// between the check in [`loopback_listen`] and the process's bind. Ports go in pairs (UDP
/// PORT and PORT+1), so candidates are even.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Candidates handed out by this test process so far; parallel tests never get the same one.
static PORTS_HANDED_OUT: AtomicU32 = AtomicU32::new(0);

/// The `shoal` binary cargo built for this test or benchmark.
pub fn shoal_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shoal"))
}

/// Writes `message` to the real stderr, past the test harness's capture, so figures show in
/// `cargo test` output.
pub fn report(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// A `--listen` address on 127.0.0.1 whose UDP PORT, UDP PORT+1 and TCP PORT are all free.
///
/// # Panics
///
/// If the whole range is taken.
pub fn loopback_listen() -> SocketAddr {
    let pairs = u32::from((PORT_RANGE.end - PORT_RANGE.start) / 2);
    // Test processes that run at the same time start at different places in the range.
    let start = std::process::id().wrapping_mul(7919) % pairs;
    for _ in 0..pairs {
        let k = PORTS_HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let pair = u16::try_from((start + k) % pairs).expect("pairs fit in u16");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT_RANGE.start + 2 * pair));
        if is_free(addr) {
            return addr;
        }
    }
    panic!("no free port pair left in {PORT_RANGE:?} on 127.0.0.1");
}

/// Whether UDP PORT, UDP PORT+1 and TCP PORT of `addr` can be bound now.
fn is_free(addr: SocketAddr) -> bool {
    let control = SocketAddr::new(addr.ip(), addr.port() + 1);
    UdpSocket::bind(addr).is_ok()
        && UdpSocket::bind(control).is_ok()
        && TcpListener::bind(addr).is_ok()
}

/// The operator key every command the harness runs signs with (`SHOAL_OPERATOR_KEY`), which
/// every trust document the harness writes names with every scope. Its seed is fixed, so test
/// processes that run at once write the same file.
pub fn operator_key() -> &'static Path {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = shoal_core::keys::SecretKey::from_seed(
            shoal_core::keys::Role::Operator,
            *b"the shoal test harness operator!",
        );
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("harness-operator.key");
        write_atomically(&path, &key.to_text(), 0o600);
        write_atomically(
            &path.with_extension("key.pub"),
            &key.role_public().to_text(),
            0o644,
        );
        path
    })
}

fn write_atomically(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", temp.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", temp.display()));
    std::fs::rename(&temp, path)
        .unwrap_or_else(|e| panic!("cannot rename {} into place: {e}", temp.display()));
}

/// The public half of [`operator_key`].
pub fn operator_pub() -> PathBuf {
    operator_key().with_extension("key.pub")
}

/// `shoal`, run inside `netns` when given (through `ip netns exec`, which execs it, so the
/// child's pid is shoal's own).
pub fn shoal_command(netns: Option<&str>) -> Command {
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(shoal_bin());
            cmd
        }
        None => Command::new(shoal_bin()),
    };
    let level = std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| LOG_LEVEL.to_owned());
    cmd.env("SHOAL_LOG", level)
        .env("SHOAL_OPERATOR_KEY", operator_key())
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    // SAFETY: the closure runs between fork and exec and makes one async-signal-safe system
    // call: if this process dies without cleaning up, the kernel kills the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The command as a shell user would type it, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion within `timeout` and returns its output, whatever its exit status.
///
/// # Errors
///
/// When it cannot start or is still running after `timeout` (it is killed then).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let what = describe(&cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {}
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} still ran after {} s", timeout.as_secs()));
            }
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Reads a pipe to its end on a thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error leaves what was read so far, which is all a message needs.
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Like [`run_with_timeout`], and an error unless the command succeeds.
///
/// # Errors
///
/// As [`run_with_timeout`], and when the command fails (the error quotes its stderr).
pub fn run_ok(cmd: Command) -> Result<Output, String> {
    let what = describe(&cmd);
    let out = run_with_timeout(cmd, CLI_TIMEOUT)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Stdout parsed as one JSON document of type `T`.
///
/// # Errors
///
/// When it is not one.
pub fn parse<T: DeserializeOwned>(out: &Output) -> Result<T, String> {
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "unexpected JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `shoal members --node ADDR --json`: a member's views and counters.
#[derive(Clone, Debug, Deserialize)]
pub struct Members {
    /// Its peer id.
    pub peer_id: String,
    /// Its `--listen` address.
    pub addr: SocketAddr,
    /// Its neighbours.
    pub active: Vec<Neighbour>,
    /// Its candidates.
    pub passive: Vec<Entry>,
    /// Members in its rack or fault domain.
    pub locality: Vec<Entry>,
    /// Peers refused for a missing or invalid certificate, and refused admission requests.
    pub refused_peers: u64,
    /// Envelopes or manifests refused for a bad or unknown signature.
    pub refused_envelopes: u64,
    /// The latest broadcast sequence number delivered (sent, on the coordinator).
    pub latest_seq: u64,
    /// The neighbour it reports health to.
    pub parent: Option<String>,
    /// Control bytes sent, if this build reports it.
    pub bytes_sent: Option<u64>,
    /// Control bytes received, if this build reports it.
    pub bytes_received: Option<u64>,
    /// Control frames sent, if this build reports it.
    pub frames_sent: Option<u64>,
    /// Control frames received, if this build reports it.
    pub frames_received: Option<u64>,
}

/// One active-view entry.
#[derive(Clone, Debug, Deserialize)]
pub struct Neighbour {
    /// Its peer id.
    pub peer_id: String,
    /// Its `--listen` address.
    pub addr: SocketAddr,
    /// Round-trip time of its last answered ping.
    pub rtt_ms: Option<f64>,
    /// It missed a ping and is being probed.
    pub suspect: bool,
}

/// One passive-view or locality entry.
#[derive(Clone, Debug, Deserialize)]
pub struct Entry {
    /// Its peer id.
    pub peer_id: String,
    /// Its `--listen` address.
    pub addr: SocketAddr,
}

/// `shoal status --coordinator ADDR --json`: the fleet as the coordinator sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct Fleet {
    /// Nodes counted; the coordinator is not.
    pub nodes: u64,
    /// Nodes per health state.
    pub states: BTreeMap<String, u64>,
    /// Per release.
    pub releases: Vec<FleetRelease>,
    /// The latest broadcast sequence number.
    pub latest_seq: u64,
}

/// How many nodes hold one release.
#[derive(Clone, Debug, Deserialize)]
pub struct FleetRelease {
    /// Its root, in hex.
    pub root: String,
    /// Nodes holding it complete and verified.
    pub complete: u64,
    /// Nodes still fetching it.
    pub fetching: u64,
}

impl Fleet {
    /// Nodes that hold `root` complete (0 if the fleet does not list it).
    pub fn complete(&self, root: &str) -> u64 {
        self.releases
            .iter()
            .find(|r| r.root == root)
            .map_or(0, |r| r.complete)
    }
}

/// `shoal status --node ADDR --json`, the parts these tests read.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeStatus {
    /// Its peer id.
    pub peer_id: String,
    /// Releases it holds or fetches.
    pub releases: Vec<NodeRelease>,
    /// Its data-plane connections.
    pub connections: Vec<Entry>,
}

/// One release in a node's status.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeRelease {
    /// Its root, in hex.
    pub root: String,
    /// Every piece verified and the payload equal to the root.
    pub complete: bool,
    /// Pieces verified, for messages.
    #[serde(default)]
    pub have: u64,
    /// Pieces in the release, for messages.
    #[serde(default)]
    pub total: u64,
    /// Swarm peers, for messages.
    #[serde(default)]
    pub peers: Vec<serde_json::Value>,
}

impl NodeStatus {
    /// Whether it holds `root` complete.
    pub fn is_complete(&self, root: &str) -> bool {
        self.releases.iter().any(|r| r.root == root && r.complete)
    }

    /// How far it got with `root`, for messages: `have/total pieces, N peers`, or `unknown`.
    pub fn progress(&self, root: &str) -> String {
        self.releases
            .iter()
            .find(|r| r.root == root)
            .map_or("release unknown".to_owned(), |r| {
                format!("{}/{} pieces, {} peers", r.have, r.total, r.peers.len())
            })
    }

    /// Whether it knows `root` at all (complete or fetching).
    pub fn knows(&self, root: &str) -> bool {
        self.releases.iter().any(|r| r.root == root)
    }
}

/// Where a process's API answers: its `--listen` address, in its namespace.
#[derive(Clone, Debug)]
pub struct Api {
    /// The process's name in the test, for messages.
    pub name: String,
    /// Its namespace, if any.
    pub netns: Option<String>,
    /// Its `--listen` address.
    pub listen: SocketAddr,
}

impl Api {
    /// `shoal ARGS` run where this process runs (its namespace).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = shoal_command(self.netns.as_deref());
        cmd.args(args);
        cmd
    }

    /// `shoal members --node ADDR --json`.
    ///
    /// # Errors
    ///
    /// When the call fails or prints something else.
    pub fn members(&self) -> Result<Members, String> {
        let addr = self.listen.to_string();
        let out = run_ok(self.command(&["members", "--node", &addr, "--json"]))?;
        parse(&out).map_err(|e| format!("{}: {e}", self.name))
    }

    /// `shoal status --node ADDR --json`.
    ///
    /// # Errors
    ///
    /// When the call fails or prints something else.
    pub fn node_status(&self) -> Result<NodeStatus, String> {
        let addr = self.listen.to_string();
        let out = run_ok(self.command(&["status", "--node", &addr, "--json"]))?;
        parse(&out).map_err(|e| format!("{}: {e}", self.name))
    }

    /// `shoal status --coordinator ADDR --json`.
    ///
    /// # Errors
    ///
    /// When the call fails or prints something else.
    pub fn fleet(&self) -> Result<Fleet, String> {
        let addr = self.listen.to_string();
        let out = run_ok(self.command(&["status", "--coordinator", &addr, "--json"]))?;
        parse(&out).map_err(|e| format!("{}: {e}", self.name))
    }
}

/// Runs `f` on every item, [`PARALLEL_CALLS`] at a time; results in the items' order.
pub fn parallel<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    let mut results = Vec::with_capacity(items.len());
    for chunk in items.chunks(PARALLEL_CALLS) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|item| s.spawn(|| f(item))).collect();
            results.extend(
                handles
                    .into_iter()
                    .map(|h| h.join().expect("poll thread panicked")),
            );
        });
    }
    results
}

/// A published release: payload file, signed manifest and root.
#[derive(Clone, Debug)]
pub struct Release {
    /// The manifest, absolute.
    pub manifest: PathBuf,
    /// The payload, absolute (the coordinator reads it to seed).
    pub payload: PathBuf,
    /// Its root: what `b3sum` prints for the payload.
    pub root: String,
}

/// A work directory: root, publisher and coordinator keys (`root.key`, `publisher.key`,
/// `coordinator.key`, with `.pub` files), a trust document naming them (`trust.json`), and the
/// processes' data directories and logs. Removed when dropped.
pub struct Work {
    dir: tempfile::TempDir,
    /// The test's name, for log directories.
    pub test: String,
}

impl Work {
    /// Makes the keys and the trust document with `shoal keys generate` and `shoal trust init`.
    pub fn new(test: &str) -> Work {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-mesh-{test}-"))
            .tempdir()
            .expect("create a work directory");
        std::fs::create_dir(dir.path().join("logs")).expect("create the log directory");
        let work = Work {
            dir,
            test: test.to_owned(),
        };
        for role in ["root", "publisher", "coordinator"] {
            work.offline(&[
                "keys",
                "generate",
                "--role",
                role,
                "--out",
                &format!("{role}.key"),
            ]);
        }
        work.trust("coordinator.key.pub", "trust.json");
        work
    }

    /// Generates coordinator key `key` and trust document `trust`, signed by the same root and
    /// naming the same publisher but only `key` as coordinator: a coordinator the main trust
    /// document does not know.
    pub fn other_coordinator(&self, key: &str, trust: &str) {
        self.offline(&["keys", "generate", "--role", "coordinator", "--out", key]);
        self.trust(&format!("{key}.pub"), trust);
    }

    fn trust(&self, coordinator_pub: &str, out: &str) {
        self.offline(&[
            "trust",
            "init",
            "--root",
            "root.key",
            "--publisher",
            "publisher.key.pub",
            "--coordinator",
            coordinator_pub,
            "--operator",
            &format!("{}=admin,release,read", operator_pub().display()),
            "--out",
            out,
        ]);
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file in it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.file("logs").join(format!("{name}.log"))
    }

    /// Runs `shoal ARGS` in the work directory, outside any namespace; panics unless it succeeds.
    pub fn offline(&self, args: &[&str]) -> Output {
        let mut cmd = shoal_command(None);
        cmd.current_dir(self.path()).args(args);
        run_ok(cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Writes a payload of `size_bytes` pseudo-random bytes from `seed` and publishes it as
    /// service `name` version 1.0.0 with `shoal release create`.
    pub fn release(&self, name: &str, size_bytes: usize, seed: u64) -> Release {
        let payload = self.file(&format!("{name}.bin"));
        write_random(&payload, size_bytes, seed);
        let manifest = self.file(&format!("{name}.manifest"));
        let out = self.offline(&[
            "release",
            "create",
            payload.to_str().expect("UTF-8 path"),
            "--service",
            name,
            "--version",
            "1.0.0",
            "--key",
            "publisher.key",
            "--out",
            manifest.to_str().expect("UTF-8 path"),
            "--json",
        ]);
        let created: serde_json::Value = parse(&out).unwrap_or_else(|e| panic!("{e}"));
        let root = created["root"]
            .as_str()
            .unwrap_or_else(|| panic!("release create printed no root: {created}"))
            .to_owned();
        Release {
            manifest,
            payload,
            root,
        }
    }
}

/// Writes `len` pseudo-random, incompressible bytes from `seed` to `path`.
pub fn write_random(path: &Path, len: usize, seed: u64) {
    std::fs::write(path, common::bytes(len, seed)).expect("write the payload");
}

/// Fails the test unless `tool` is on the PATH, saying how to get it: the tools the tests run
/// (shells, groff, promtool, prometheus, systemd-analyze, kubectl) come from `scripts/setup`.
pub fn needs(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is missing: run scripts/setup, which installs it"
    );
}

/// Labels for node `i`, spread over two regions, four fault domains and ten racks.
pub fn spread_labels(i: usize) -> String {
    format!("region=r{},fd={},rack={}", 1 + i % 2, i % 4, i % 10)
}

/// One long-running `shoal` process. Killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    /// Its name in the test: `coordinator`, `node07`...
    pub name: String,
    /// Where its API answers.
    pub api: Api,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    /// Its peer id, once it answered on its API.
    pub peer_id: Option<String>,
    /// The test killed it on purpose.
    pub killed: bool,
    child: Option<Child>,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Starts `shoal ARGS` as `name` in `netns`, logging to the work directory.
    pub fn spawn(
        work: &Work,
        name: &str,
        netns: Option<&str>,
        listen: SocketAddr,
        args: &[&str],
    ) -> Proc {
        let log = work.log(name);
        let file = File::create(&log).expect("create a log file");
        let mut cmd = shoal_command(netns);
        cmd.current_dir(work.path())
            .args(args)
            // Its own process group: a Ctrl-C meant for the test does not reach it first; the
            // death signal set by `shoal_command` takes it down with the test.
            .process_group(0)
            .stdout(file.try_clone().expect("clone a log file handle"))
            .stderr(file);
        let what = describe(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            name: name.to_owned(),
            api: Api {
                name: name.to_owned(),
                netns: netns.map(str::to_owned),
                listen,
            },
            data_dir: work.file(name),
            log,
            peer_id: None,
            killed: false,
            child: Some(child),
            exit: None,
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its `--listen` address.
    pub fn listen(&self) -> SocketAddr {
        self.api.listen
    }

    /// Its peer id.
    ///
    /// # Panics
    ///
    /// If it has not answered on its API yet.
    pub fn peer_id(&self) -> &str {
        self.peer_id
            .as_deref()
            .unwrap_or_else(|| panic!("{} has not answered yet", self.name))
    }

    /// How it exited, if it exited on its own (reaps it then).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
            self.child = None;
        }
        self.exit
    }

    /// Kills it with SIGKILL and reaps it; the test meant it.
    pub fn kill(&mut self) {
        self.killed = true;
        self.stop();
    }

    /// Kills and reaps it if it still runs. [`exit_status`](Self::exit_status) keeps saying only
    /// whether it exited on its own.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(status);
                return;
            }
            // If it exits between the check and the kill, the wait still reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A coordinator and its nodes. Dropping it kills them all; during a panic it also keeps and
/// prints their logs.
pub struct Mesh<'w> {
    work: &'w Work,
    /// The coordinator: a mesh member and the broadcast source.
    pub coordinator: Proc,
    /// The nodes, in the order they were added.
    pub nodes: Vec<Proc>,
    /// Processes expected to fail or be refused: not required to keep running.
    pub outsiders: Vec<Proc>,
    /// The onboarding token every node redeems.
    pub token: String,
    /// More arguments every node started from now on gets (e.g. `--services FILE`).
    pub node_args: Vec<String>,
}

impl<'w> Mesh<'w> {
    /// Starts a coordinator with the work directory's `coordinator.key` and `trust.json`, waits
    /// until it answers, and creates one token with `shoal token create`.
    pub fn start(work: &'w Work, listen: SocketAddr, netns: Option<&str>) -> Mesh<'w> {
        Mesh::start_as(
            work,
            "coordinator",
            listen,
            netns,
            "coordinator.key",
            "trust.json",
        )
    }

    /// Like [`start`](Self::start), with another name, coordinator key and trust document.
    pub fn start_as(
        work: &'w Work,
        name: &str,
        listen: SocketAddr,
        netns: Option<&str>,
        key: &str,
        trust: &str,
    ) -> Mesh<'w> {
        let addr = listen.to_string();
        let args = [
            "coordinator",
            "--data-dir",
            name,
            "--listen",
            &addr,
            "--key",
            key,
            "--trust",
            trust,
        ];
        Mesh::start_with(work, name, listen, netns, &args)
    }

    /// Starts `shoal ARGS` (a coordinator that will answer on `listen`) as `name`, waits until
    /// it answers, and creates one token with `shoal token create`.
    pub fn start_with(
        work: &'w Work,
        name: &str,
        listen: SocketAddr,
        netns: Option<&str>,
        args: &[&str],
    ) -> Mesh<'w> {
        let coordinator = Proc::spawn(work, name, netns, listen, args);
        let mut mesh = Mesh {
            work,
            coordinator,
            nodes: Vec::new(),
            outsiders: Vec::new(),
            token: String::new(),
            node_args: Vec::new(),
        };
        mesh.wait_ready();
        mesh.token = mesh.create_token();
        mesh
    }

    /// Starts a coordinator and `nodes` nodes on loopback, labelled by [`spread_labels`]. The
    /// seeds are the coordinator and the first two nodes, which join through the coordinator
    /// only; every other node passes all three `--join`. No node gets a `--peer` list. Returns
    /// once every process answers on its API.
    pub fn start_loopback(work: &'w Work, nodes: usize) -> Mesh<'w> {
        Mesh::start_loopback_with(work, nodes, &[])
    }

    /// Like [`start_loopback`](Self::start_loopback), every node also getting `node_args`.
    pub fn start_loopback_with(work: &'w Work, nodes: usize, node_args: &[&str]) -> Mesh<'w> {
        assert!(nodes >= 3, "three seeds need at least three nodes");
        let mut mesh = Mesh::start(work, loopback_listen(), None);
        mesh.node_args = node_args.iter().map(|a| (*a).to_owned()).collect();
        let coordinator = mesh.coordinator.listen();
        for i in 0..2 {
            mesh.add_node(loopback_listen(), None, &[coordinator], &spread_labels(i));
        }
        mesh.wait_ready();
        let seeds: Vec<SocketAddr> = std::iter::once(coordinator)
            .chain(mesh.nodes.iter().map(Proc::listen))
            .collect();
        for i in 2..nodes {
            mesh.add_node(loopback_listen(), None, &seeds, &spread_labels(i));
        }
        mesh.wait_ready();
        mesh
    }

    /// Waits until every live node holds at least [`ACTIVE_VIEW_CAPACITY`] neighbours, every
    /// view passes [`check_views`](Self::check_views), and the coordinator counts every live
    /// node.
    ///
    /// # Panics
    ///
    /// If that does not happen `within`.
    pub fn wait_for_full_views(&mut self, within: Duration) {
        self.wait_for_views(ACTIVE_VIEW_CAPACITY, within);
    }

    /// Like [`wait_for_full_views`](Self::wait_for_full_views) with at least `min_active`
    /// neighbours per node, for meshes too small to fill a view.
    ///
    /// # Panics
    ///
    /// If that does not happen `within`.
    pub fn wait_for_views(&mut self, min_active: usize, within: Duration) {
        let nodes = self.live_nodes().len() as u64;
        self.wait(
            &format!(
                "{nodes} nodes hold {min_active} or more neighbours and the coordinator counts them"
            ),
            within,
            |mesh| {
                let views = mesh.views()?;
                mesh.check_views(&views, min_active)?;
                let fleet = mesh.fleet()?;
                if fleet.nodes == nodes {
                    Ok(())
                } else {
                    Err(format!("the coordinator counts {} nodes", fleet.nodes))
                }
            },
        );
    }

    /// `shoal token create --coordinator ADDR`: the token alone on stdout.
    pub fn create_token(&mut self) -> String {
        let addr = self.coordinator.listen().to_string();
        let out =
            run_ok(
                self.coordinator
                    .api
                    .command(&["token", "create", "--coordinator", &addr]),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let token = String::from_utf8(out.stdout).expect("a token is text");
        let token = token.trim();
        assert!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "token create should print the token alone on stdout, printed {token:?}"
        );
        token.to_owned()
    }

    /// Starts `shoal node` as `nodeNN` with the mesh's token, joining through `joins`, with
    /// `labels`. Does not wait; see [`wait_ready`](Self::wait_ready). Returns its index.
    pub fn add_node(
        &mut self,
        listen: SocketAddr,
        netns: Option<&str>,
        joins: &[SocketAddr],
        labels: &str,
    ) -> usize {
        let index = self.nodes.len();
        let name = format!("node{index:02}");
        let token = self.token.clone();
        let proc = self.spawn_node(&name, listen, netns, joins, labels, &token);
        self.nodes.push(proc);
        index
    }

    /// Starts `shoal ARGS` (a node that will answer on `listen`) as `name`. Does not wait; see
    /// [`wait_ready`](Self::wait_ready). Returns its index.
    pub fn add_node_with(&mut self, name: &str, listen: SocketAddr, args: &[&str]) -> usize {
        let proc = Proc::spawn(self.work, name, None, listen, args);
        self.nodes.push(proc);
        self.nodes.len() - 1
    }

    /// Starts `shoal node` as `name` with `token`, as an outsider: it may exit or be refused
    /// without failing the mesh's waits. Returns its index in [`outsiders`](Self::outsiders).
    pub fn add_outsider(
        &mut self,
        name: &str,
        listen: SocketAddr,
        joins: &[SocketAddr],
        token: &str,
    ) -> usize {
        let proc = self.spawn_node(name, listen, None, joins, "region=r1,fd=1,rack=1", token);
        self.outsiders.push(proc);
        self.outsiders.len() - 1
    }

    fn spawn_node(
        &self,
        name: &str,
        listen: SocketAddr,
        netns: Option<&str>,
        joins: &[SocketAddr],
        labels: &str,
        token: &str,
    ) -> Proc {
        let addr = listen.to_string();
        let joins: Vec<String> = joins.iter().map(SocketAddr::to_string).collect();
        let mut args = vec!["node", "--data-dir", name, "--listen", &addr];
        for join in &joins {
            args.extend_from_slice(&["--join", join]);
        }
        args.extend_from_slice(&["--token", token, "--labels", labels]);
        args.extend(self.node_args.iter().map(String::as_str));
        Proc::spawn(self.work, name, netns, listen, &args)
    }

    /// Publishes `file` as `service@version` with release counter `counter` through
    /// `shoal publish` at this mesh's coordinator (publisher key `publisher.key`), then waits
    /// `within` until every live node holds it. Returns its root.
    pub fn publish(
        &mut self,
        file: &Path,
        service: &str,
        version: &str,
        counter: u64,
        within: Duration,
    ) -> String {
        let coordinator = self.coordinator.listen().to_string();
        let out = self.work.offline(&[
            "publish",
            file.to_str().expect("UTF-8 path"),
            "--service",
            service,
            "--version",
            version,
            "--key",
            "publisher.key",
            "--coordinator",
            &coordinator,
            "--release-counter",
            &counter.to_string(),
            "--json",
        ]);
        let published: serde_json::Value = parse(&out).unwrap_or_else(|e| panic!("{e}"));
        let root = published["root"]
            .as_str()
            .unwrap_or_else(|| panic!("shoal publish printed no root: {published}"))
            .to_owned();
        let nodes = self.live_nodes().len() as u64;
        self.wait(
            &format!("{service} {version} is on every node"),
            within,
            |m| {
                let complete = m.coordinator.api.fleet()?.complete(&root);
                (complete == nodes)
                    .then_some(())
                    .ok_or(format!("{complete} of {nodes}"))
            },
        );
        root
    }

    /// `shoal rollout start --plan PLAN` of `service@version` at this mesh's coordinator, run
    /// in the work directory; returns the rollout id.
    pub fn start_rollout(&self, plan: &str, service: &str, version: &str) -> u64 {
        let coordinator = self.coordinator.listen().to_string();
        let out = self.work.offline(&[
            "rollout",
            "start",
            "--coordinator",
            &coordinator,
            "--plan",
            plan,
            "--service",
            service,
            "--version",
            version,
            "--json",
        ]);
        let status: serde_json::Value = parse(&out).unwrap_or_else(|e| panic!("{e}"));
        status["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("shoal rollout start printed no id: {status}"))
    }

    /// `shoal rollout status ID --json` at this mesh's coordinator.
    ///
    /// # Errors
    ///
    /// When the call fails or prints something else.
    pub fn rollout_status(&self, id: u64) -> Result<serde_json::Value, String> {
        let coordinator = self.coordinator.listen().to_string();
        let mut cmd = shoal_command(None);
        cmd.current_dir(self.work.path())
            .args(["rollout", "status", "--coordinator", &coordinator])
            .args([&id.to_string(), "--json"]);
        parse(&run_ok(cmd)?)
    }

    /// Starts the (killed) coordinator again with the same data directory and address, and
    /// waits until it answers.
    pub fn restart_coordinator(&mut self) {
        let listen = self.coordinator.listen();
        let addr = listen.to_string();
        let name = self.coordinator.name.clone();
        self.coordinator = Proc::spawn(
            self.work,
            &name,
            None,
            listen,
            &[
                "coordinator",
                "--data-dir",
                &name,
                "--listen",
                &addr,
                "--key",
                "coordinator.key",
                "--trust",
                "trust.json",
            ],
        );
        self.wait_ready();
    }

    /// Starts the (killed) node `index` again: same data directory, address and labels, no
    /// token (it is admitted already), and waits until it answers.
    pub fn restart_node(&mut self, index: usize, joins: &[SocketAddr], labels: &str) {
        let old = &self.nodes[index];
        let (name, listen) = (old.name.clone(), old.listen());
        let addr = listen.to_string();
        let joins: Vec<String> = joins.iter().map(SocketAddr::to_string).collect();
        let mut args = vec!["node", "--data-dir", &name, "--listen", &addr];
        for join in &joins {
            args.extend_from_slice(&["--join", join]);
        }
        args.extend_from_slice(&["--labels", labels]);
        args.extend(self.node_args.iter().map(String::as_str));
        self.nodes[index] = Proc::spawn(self.work, &name, None, listen, &args);
        self.wait_ready();
    }

    /// The coordinator and every node not killed, coordinator first.
    pub fn live(&self) -> Vec<&Proc> {
        std::iter::once(&self.coordinator)
            .chain(self.nodes.iter().filter(|n| !n.killed))
            .collect()
    }

    /// The nodes not killed.
    pub fn live_nodes(&self) -> Vec<&Proc> {
        self.nodes.iter().filter(|n| !n.killed).collect()
    }

    /// Peer id to `--listen` address of every live member.
    pub fn live_peers(&self) -> BTreeMap<String, SocketAddr> {
        self.live()
            .iter()
            .map(|p| (p.peer_id().to_owned(), p.listen()))
            .collect()
    }

    /// Waits until every live member answers `shoal members`, and learns its peer id.
    ///
    /// # Panics
    ///
    /// If one does not within [`READY_WITHIN`], answers with another address than its
    /// `--listen`, or exits.
    pub fn wait_ready(&mut self) {
        let pending: Vec<bool> = self.live().iter().map(|p| p.peer_id.is_none()).collect();
        let count = pending.iter().filter(|p| **p).count();
        let answers = self.wait(
            &format!("{count} processes answer on their API"),
            READY_WITHIN,
            |mesh| {
                let apis: Vec<Api> = mesh
                    .live()
                    .iter()
                    .zip(&pending)
                    .filter(|(_, p)| **p)
                    .map(|(p, _)| p.api.clone())
                    .collect();
                let answers = parallel(&apis, Api::members);
                let missing: Vec<&str> = apis
                    .iter()
                    .zip(&answers)
                    .filter(|(_, a)| a.is_err())
                    .map(|(api, _)| api.name.as_str())
                    .collect();
                if missing.is_empty() {
                    Ok(answers.into_iter().map(Result::unwrap).collect::<Vec<_>>())
                } else {
                    Err(format!("not answering yet: {}", missing.join(" ")))
                }
            },
        );
        let mut answers = answers.into_iter();
        let coordinator = std::iter::once(&mut self.coordinator);
        let live = coordinator.chain(self.nodes.iter_mut().filter(|n| !n.killed));
        for (proc, _) in live.zip(pending).filter(|(_, p)| *p) {
            let members = answers.next().expect("one answer per pending process");
            assert_eq!(
                members.addr,
                proc.listen(),
                "{} reports another address than its --listen",
                proc.name
            );
            proc.peer_id = Some(members.peer_id);
        }
    }

    /// Polls `check` every [`POLL_INTERVAL`] until it returns `Ok`, and reports how long that
    /// took. Between polls, every live member must still run (outsiders need not).
    ///
    /// # Panics
    ///
    /// With `check`'s last error if it does not succeed `within`; at once if a member exits.
    pub fn wait<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&mut Mesh<'w>) -> Result<T, String>,
    ) -> T {
        let started = Instant::now();
        let deadline = started + within;
        loop {
            self.check_alive();
            match check(self) {
                Ok(value) => {
                    report(&format!(
                        "[{}] {what}: after {:.1} s (bound {} s)",
                        self.work.test,
                        started.elapsed().as_secs_f64(),
                        within.as_secs()
                    ));
                    return value;
                }
                Err(why) if Instant::now() >= deadline => {
                    panic!("{what}: not within {} s: {why}", within.as_secs())
                }
                Err(_) => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }

    /// Keeps checking that every live member runs for `hold`; for waits that are the scenario
    /// itself (a partition held for 30 s), not a guess at speed.
    pub fn hold(&mut self, hold: Duration) {
        let until = Instant::now() + hold;
        while Instant::now() < until {
            self.check_alive();
            std::thread::sleep(POLL_INTERVAL.min(until.saturating_duration_since(Instant::now())));
        }
    }

    /// Panics, quoting its log, if a live member exited.
    pub fn check_alive(&mut self) {
        let coordinator = std::iter::once(&mut self.coordinator);
        for proc in coordinator.chain(self.nodes.iter_mut().filter(|n| !n.killed)) {
            if let Some(status) = proc.exit_status() {
                panic!(
                    "{} exited unexpectedly ({status}); its log ends:\n{}",
                    proc.name,
                    proc.log_tail(LOG_TAIL_LINES)
                );
            }
        }
    }

    /// Every live member's `members --json`, in [`live`](Self::live) order.
    ///
    /// # Errors
    ///
    /// The first member that did not answer.
    pub fn views(&self) -> Result<Vec<Members>, String> {
        let apis: Vec<Api> = self.live().iter().map(|p| p.api.clone()).collect();
        parallel(&apis, Api::members).into_iter().collect()
    }

    /// Every live node's `status --node --json`, in [`live_nodes`](Self::live_nodes) order.
    ///
    /// # Errors
    ///
    /// The first node that did not answer.
    pub fn node_statuses(&self) -> Result<Vec<NodeStatus>, String> {
        let apis: Vec<Api> = self.live_nodes().iter().map(|p| p.api.clone()).collect();
        parallel(&apis, Api::node_status).into_iter().collect()
    }

    /// The coordinator's `status --coordinator --json`.
    ///
    /// # Errors
    ///
    /// When it does not answer.
    pub fn fleet(&self) -> Result<Fleet, String> {
        self.coordinator.api.fleet()
    }

    /// Checks `views` (from [`views`](Self::views)) against what a settled mesh must show: every
    /// live node has at least `min_active` neighbours; no member more than [`ACTIVE_VIEW_MAX`],
    /// itself, or one neighbour twice; and every neighbour is a live member of this mesh, listed
    /// at its own `--listen` address.
    ///
    /// # Errors
    ///
    /// The members that fall short, and why.
    pub fn check_views(&self, views: &[Members], min_active: usize) -> Result<(), String> {
        let peers = self.live_peers();
        let mut problems = Vec::new();
        for (proc, view) in self.live().iter().zip(views) {
            let ids: Vec<&str> = view.active.iter().map(|n| n.peer_id.as_str()).collect();
            let distinct: BTreeSet<&str> = ids.iter().copied().collect();
            let is_node = proc.name != self.coordinator.name;
            if is_node && ids.len() < min_active {
                problems.push(format!("{} has {} neighbours", proc.name, ids.len()));
            }
            if ids.len() > ACTIVE_VIEW_MAX {
                problems.push(format!(
                    "{} has {} neighbours, above the most",
                    proc.name,
                    ids.len()
                ));
            }
            if distinct.len() != ids.len() || distinct.contains(proc.peer_id()) {
                problems.push(format!(
                    "{} lists itself or a neighbour twice: {ids:?}",
                    proc.name
                ));
            }
            for n in &view.active {
                match peers.get(&n.peer_id) {
                    Some(addr) if *addr == n.addr => {}
                    Some(addr) => problems.push(format!(
                        "{} lists {} at {}, but it listens on {addr}",
                        proc.name, n.peer_id, n.addr
                    )),
                    None => problems.push(format!(
                        "{} lists {} at {}, not a live member of this test",
                        proc.name, n.peer_id, n.addr
                    )),
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} problems: {}",
                problems.len(),
                problems.join("; ")
            ))
        }
    }

    /// `shoal announce MANIFEST --file FILE --coordinator ADDR`; returns its stdout.
    ///
    /// # Panics
    ///
    /// Unless it succeeds.
    pub fn announce(&self, release: &Release) -> String {
        String::from_utf8_lossy(&self.announce_with(release, &[]).stdout).into_owned()
    }

    /// `shoal announce MANIFEST --file FILE --coordinator ADDR EXTRA...`, run where the
    /// coordinator runs; returns its output.
    ///
    /// # Panics
    ///
    /// Unless it succeeds.
    pub fn announce_with(&self, release: &Release, extra: &[&str]) -> Output {
        let addr = self.coordinator.listen().to_string();
        let mut args = vec![
            "announce",
            release.manifest.to_str().expect("UTF-8 path"),
            "--file",
            release.payload.to_str().expect("UTF-8 path"),
            "--coordinator",
            &addr,
        ];
        args.extend_from_slice(extra);
        run_ok(self.coordinator.api.command(&args)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Copies every log to `target/tmp/mesh-logs/TEST-PID/` and prints their tails.
    fn keep_logs(&mut self) {
        let dest = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("mesh-logs")
            .join(format!("{}-{}", self.work.test, std::process::id()));
        let _ = std::fs::create_dir_all(&dest);
        let coordinator = std::iter::once(&mut self.coordinator);
        let all = coordinator
            .chain(self.nodes.iter_mut())
            .chain(self.outsiders.iter_mut());
        let mut text = String::new();
        for proc in all {
            let _ = std::fs::copy(&proc.log, dest.join(format!("{}.log", proc.name)));
            let died = !proc.killed && proc.exit.is_some();
            let lines = if proc.name.contains("coordinator") || died {
                LOG_TAIL_LINES
            } else {
                LOG_TAIL_LINES_QUIET
            };
            let how = match (&proc.exit, proc.killed) {
                (_, true) => "killed by the test".to_owned(),
                (Some(status), false) => format!("EXITED {status}"),
                (None, false) => "ran until the end".to_owned(),
            };
            text.push_str(&format!(
                "--- {} ({}, {how}), last {lines} lines:\n{}\n",
                proc.name,
                proc.listen(),
                proc.log_tail(lines)
            ));
        }
        report(&format!(
            "{text}--- all logs of {} kept in {}",
            self.work.test,
            dest.display()
        ));
    }
}

impl Drop for Mesh<'_> {
    fn drop(&mut self) {
        for proc in self.nodes.iter_mut().chain(self.outsiders.iter_mut()) {
            proc.stop();
        }
        self.coordinator.stop();
        if std::thread::panicking() {
            self.keep_logs();
        }
    }
}
