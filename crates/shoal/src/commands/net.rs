//! `shoal seed`, `shoal node`, `shoal fetch` and `shoal status`: processes on the data plane.

use super::{json_failure, release::load_manifest, trust};
use crate::failure::{Code, Failure, Outcome, WithCode};
use crate::progress;
use clap::Args;
use serde_json::json;
use shoal_core::labels::Labels;
use shoal_core::units::{human_bytes, parse_rate};
use shoal_net::api;
use shoal_net::identity::Identity;
use shoal_net::node::{self, Node};
use shoal_net::source::Source;
use shoal_net::status::{NodeStatus, Refusal, ReleaseStatus};
use shoal_net::transport::Congestion;
use shoal_store::Store;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options every data-plane process shares.
#[derive(Args, Debug)]
pub struct NetArgs {
    /// The data directory: node key, and (for nodes and fetches) the piece store.
    #[arg(long, value_name = "DIR")]
    pub(super) data_dir: PathBuf,
    /// Where to listen: QUIC on UDP, the control API on TCP, both on this IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen)]
    pub(super) listen: SocketAddr,
    /// This machine's labels, e.g. region=eu1,fd=2,rack=7 (close peers are preferred).
    #[arg(long, value_name = "K=V,...", default_value = "")]
    pub(super) labels: Labels,
    /// Host-wide upload cap, e.g. 100mbit or 12MiB/s.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub(super) upload_limit: Option<u64>,
    /// QUIC congestion controller: bbr, cubic or newreno.
    #[arg(long, default_value = "cubic", value_name = "NAME")]
    pub(super) congestion: Congestion,
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    node::parse_addr(text, "address").map_err(|e| e.to_string())
}

/// A seed to join through: an address, or a host name and port resolved at start (in
/// Kubernetes, a coordinator's stable name behind a headless Service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    host: String,
    port: u16,
}

impl Seed {
    fn parse(text: &str) -> Result<Seed, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Seed {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let bad = || format!("{text:?} is not IP:PORT or HOST:PORT (example: 10.0.0.5:7070)");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !name_ok || port == 0 {
            return Err(bad());
        }
        Ok(Seed {
            host: host.to_owned(),
            port,
        })
    }

    /// Its addresses: itself, or what the host name resolves to now.
    ///
    /// # Errors
    ///
    /// A host name that does not resolve, named.
    pub(super) fn resolve(&self) -> Result<Vec<SocketAddr>, Failure> {
        use std::net::ToSocketAddrs as _;
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default();
        if addrs.is_empty() {
            return Err(Failure::new(
                Code::General,
                format!(
                    "--join {self}: the host name does not resolve; check the name, or give IP:PORT"
                ),
            ));
        }
        Ok(addrs)
    }
}

impl std::fmt::Display for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => write!(f, "{}", SocketAddr::new(ip, self.port)),
            Err(_) => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// `shoal seed`.
#[derive(Args, Debug)]
pub struct SeedArgs {
    /// The release's manifest.
    manifest: PathBuf,
    /// The payload file; it is hashed in full before anything is served.
    #[arg(long)]
    file: PathBuf,
    /// The trust document naming the allowed publishers.
    #[arg(long, value_name = "TRUST_FILE")]
    trust: PathBuf,
    #[command(flatten)]
    net: NetArgs,
}

/// `shoal node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub(super) net: NetArgs,
    /// A peer to connect to (and reconnect to), IP:PORT; repeat for more. Without --join only.
    #[arg(long = "peer", value_name = "IP:PORT", value_parser = parse_listen, conflicts_with = "join")]
    peers: Vec<SocketAddr>,
    /// Join the mesh through this seed (a member's --listen address, IP:PORT or HOST:PORT,
    /// a host name resolved when the node starts); repeat for more.
    #[arg(long, value_name = "HOST:PORT", value_parser = Seed::parse)]
    pub(super) join: Vec<Seed>,
    /// An onboarding token from `shoal token create`, redeemed at the coordinator for this
    /// node's admission certificate (kept in the data directory; not needed once admitted).
    #[arg(long, value_name = "TOKEN")]
    pub(super) token: Option<String>,
    /// Host-wide download cap, e.g. 100mbit or 12MiB/s.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub(super) download_limit: Option<u64>,
    /// The services this node runs and rolls out (TOML; see `shoal help node`). With --join.
    #[arg(long, value_name = "SERVICES.toml", requires = "join")]
    pub(super) services: Option<PathBuf>,
    /// A config file (TOML) whose keys are these flags, as in `configs/node.toml`; a flag given
    /// here wins over the file. `shoal config check FILE` checks one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `shoal fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The release's manifest.
    manifest: PathBuf,
    /// The trust document naming the allowed publishers.
    #[arg(long, value_name = "TRUST_FILE")]
    trust: PathBuf,
    #[command(flatten)]
    net: NetArgs,
    /// A peer to fetch from, IP:PORT; repeat for more. Others are found through them.
    #[arg(long = "peer", value_name = "IP:PORT", value_parser = parse_listen, required = true)]
    peers: Vec<SocketAddr>,
    /// Host-wide download cap, e.g. 100mbit or 12MiB/s.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    download_limit: Option<u64>,
    /// After the release is complete, keep serving it to others for this many seconds.
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed_secs: u64,
    /// Give up when no peer can be reached for this many seconds.
    #[arg(long, default_value_t = 30, value_name = "N")]
    connect_timeout_secs: u64,
    /// Give up when no piece arrives for this many seconds.
    #[arg(long, default_value_t = 120, value_name = "N")]
    stall_timeout_secs: u64,
    /// Print one JSON object on stdout when done.
    #[arg(long)]
    json: bool,
}

/// `shoal status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A node's or origin's releases and peers: the IP:PORT it was started with (`--listen`).
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen, required_unless_present = "coordinator")]
    node: Option<SocketAddr>,
    /// The fleet summary aggregated at the coordinator: its `--listen` IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen, conflicts_with = "node")]
    coordinator: Option<SocketAddr>,
    /// Signs the request, which the coordinator (but no node) requires.
    #[command(flatten)]
    operator: crate::http::OperatorKeyArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The async runtime of every long-running command: [`worker_threads`] workers, or as many as
/// `TOKIO_WORKER_THREADS` says. Hashing and disk writes run on the blocking pool beside them,
/// which grows with the work.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        builder.worker_threads(worker_threads(cores));
    }
    builder
        .enable_all()
        .build()
        .code(Code::General, || "cannot start the async runtime".into())
}

/// Async workers for a host with `cores` cores: one per four cores, from one to eight. The
/// workers move QUIC packets, which quinn handles one connection at a time, and wake each other
/// for every chunk: on two cores one worker fetched over loopback at 0.72-0.83 GB per CPU-second
/// against 0.49-0.71 with two, at the same or a higher rate (benches/README.md).
fn worker_threads(cores: usize) -> usize {
    (cores / 4).clamp(1, 8)
}

pub(super) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(super) fn general(e: anyhow::Error) -> Failure {
    Failure::new(Code::General, format!("{e:#}"))
}

/// Starts the node (its data plane) and binds its control API; the API is served once
/// `serve_api` is called with what else it should offer.
pub(super) async fn start_data_plane(
    net: &NetArgs,
    peers: Vec<SocketAddr>,
    download_limit: Option<u64>,
    admission: Option<(Vec<u8>, node::AdmissionCheck)>,
) -> Result<(Node, tokio::net::TcpListener), Failure> {
    let identity = identity(net)?;
    let mut config = node::Config::new(net.listen);
    config.labels = net.labels.clone();
    config.peers = peers;
    config.upload_limit_bytes_per_sec = net.upload_limit;
    config.download_limit_bytes_per_sec = download_limit;
    config.congestion = net.congestion;
    if let Some((certificate, check)) = admission {
        config.certificate = certificate;
        config.admission = Some(check);
    }
    let node = Node::start(identity, config).map_err(general)?;
    let addr = node.local_addr().map_err(general)?;
    let listener = api::bind(addr).await.map_err(general)?;
    Ok((node, listener))
}

/// Creates the data directory if needed and loads (or creates) the node key in it.
pub(super) fn identity(net: &NetArgs) -> Result<Identity, Failure> {
    std::fs::create_dir_all(&net.data_dir).code(Code::General, || {
        format!("cannot create data directory {}", net.data_dir.display())
    })?;
    Identity::load_or_create(&net.data_dir).map_err(general)
}

/// Starts the node and its control API.
async fn start(
    net: &NetArgs,
    peers: Vec<SocketAddr>,
    download_limit: Option<u64>,
) -> Result<Node, Failure> {
    let (node, listener) = start_data_plane(net, peers, download_limit, None).await?;
    api::spawn(
        listener,
        node.clone(),
        api::Extras::default(),
        node.shutdown_signal(),
    )
    .code(Code::General, || "cannot start the control API".into())?;
    Ok(node)
}

/// Waits for SIGINT or SIGTERM.
pub(super) async fn signalled() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

pub fn seed(args: SeedArgs) -> Outcome {
    init_logging();
    let trust = trust::load(&args.trust)?;
    let manifest = load_manifest(&args.manifest, &trust)?;
    let size = manifest.layout().size_bytes();
    let bar = progress::bytes(size, "verify");
    let source = Source::verified_file(&args.file, &manifest, &|n| bar.inc(n))
        .map_err(|e| Failure::new(Code::FileMismatch, format!("{e:#}")))?;
    bar.finish_and_clear();
    runtime()?.block_on(async {
        let node = start(&args.net, Vec::new(), None).await?;
        node.add_release(&manifest, source, true);
        eprintln!(
            "seeding {} ({}, root {}) on {} as {}",
            manifest.manifest().name(),
            human_bytes(size),
            manifest.root(),
            node.local_addr().map_err(general)?,
            node.peer_id()
        );
        signalled().await;
        node.shutdown().await;
        Ok(())
    })
}

/// `shoal node drain|undrain --node IP:PORT`: steer a running node. Parsed apart from the
/// daemon's own flags, which these commands do not take.
#[derive(clap::Parser, Debug)]
#[command(name = "shoal node")]
pub struct NodeControl {
    #[command(subcommand)]
    action: NodeAction,
}

#[derive(clap::Subcommand, Debug)]
enum NodeAction {
    /// Take a running node out of rollouts: it starts no activation until undrained.
    Drain(NodeAddr),
    /// Let a drained node take part in rollouts again.
    Undrain(NodeAddr),
}

#[derive(Args, Debug)]
struct NodeAddr {
    /// The node's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen)]
    node: SocketAddr,
}

/// Whether a command line is `shoal node drain|undrain ...`.
pub fn is_node_control(args: &[std::ffi::OsString]) -> bool {
    args.get(1).is_some_and(|a| a == "node")
        && args.get(2).is_some_and(|a| a == "drain" || a == "undrain")
}

pub fn node_control(control: NodeControl) -> Outcome {
    let (addr, path) = match control.action {
        NodeAction::Drain(a) => (a.node, shoal_daemon::routes::DRAIN_PATH),
        NodeAction::Undrain(a) => (a.node, shoal_daemon::routes::UNDRAIN_PATH),
    };
    let status: shoal_daemon::agent::AgentStatus = crate::http::post(
        addr,
        path,
        &serde_json::json!({}),
        std::time::Duration::from_secs(10),
    )?;
    println!(
        "node {addr} {}",
        if status.drained {
            "drained"
        } else {
            "undrained"
        }
    );
    Ok(())
}

pub fn node(args: NodeArgs) -> Outcome {
    if !args.join.is_empty() || args.token.is_some() {
        return super::mesh::node(args);
    }
    init_logging();
    let store = Store::open(&args.net.data_dir, shoal_store::Config::default())
        .code(Code::General, || "cannot open the store".into())?;
    runtime()?.block_on(async {
        let node = start(&args.net, args.peers.clone(), args.download_limit).await?;
        for release in store.releases() {
            node.add_stored_release(release);
        }
        eprintln!(
            "node {} listening on {} with {} releases",
            node.peer_id(),
            node.local_addr().map_err(general)?,
            store.releases().count()
        );
        signalled().await;
        node.shutdown().await;
        Ok(())
    })
}

pub fn fetch(args: FetchArgs) -> Outcome {
    let json = args.json;
    fetch_inner(args).map_err(|f| json_failure(json, f))
}

fn fetch_inner(args: FetchArgs) -> Outcome {
    init_logging();
    let trust = trust::load(&args.trust)?;
    let manifest = load_manifest(&args.manifest, &trust)?;
    let mut store = Store::open(&args.net.data_dir, shoal_store::Config::default())
        .code(Code::General, || "cannot open the store".into())?;
    let release = store.add(&manifest).code(Code::General, || {
        format!(
            "cannot make room for {} in the store",
            manifest.manifest().name()
        )
    })?;
    let size = manifest.layout().size_bytes();
    let root = manifest.root();
    runtime()?.block_on(async {
        let started = Instant::now();
        let node = start(&args.net, args.peers.clone(), args.download_limit).await?;
        let mut complete = node.add_release(&manifest, Source::Store(release.clone()), false);
        let bar = progress::bytes(size, "fetch");
        let piece = u64::from(manifest.layout().piece_size_bytes());
        let mut last_have = None;
        let mut last_progress = Instant::now();
        let mut ever_connected = false;
        let interrupted = loop {
            let status = node.release_status(&root).unwrap_or_default();
            bar.set_position((u64::from(status.have) * piece).min(size));
            if let Some(error) = &status.error {
                node.shutdown().await;
                return Err(Failure::new(Code::General, format!("fetch of {} failed: {error}", status.name)));
            }
            if *complete.borrow() {
                break false;
            }
            if last_have != Some(status.have) {
                last_have = Some(status.have);
                last_progress = Instant::now();
            }
            let node_status = node.status();
            let connected = !node_status.connections.is_empty();
            if !connected
                && let Some(why) = refused_by_all(&args.peers, &node_status.refused_by)
            {
                node.shutdown().await;
                return Err(Failure::new(Code::General, why));
            }
            ever_connected |= connected;
            if !ever_connected && started.elapsed() > Duration::from_secs(args.connect_timeout_secs) {
                node.shutdown().await;
                let peers: Vec<String> = args.peers.iter().map(ToString::to_string).collect();
                return Err(Failure::new(Code::General, format!(
                    "could not reach any peer within {} s (tried {}): check the addresses and that the peers run",
                    args.connect_timeout_secs, peers.join(", "))));
            }
            if last_progress.elapsed() > Duration::from_secs(args.stall_timeout_secs) {
                node.shutdown().await;
                return Err(Failure::new(Code::General, format!(
                    "no progress for {} s with {} of {} pieces and {} connected peers: no peer has the missing pieces",
                    args.stall_timeout_secs, status.have, status.total, node.status().connections.len())));
            }
            tokio::select! {
                _ = complete.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = signalled() => break true,
            }
        };
        bar.finish_and_clear();
        if interrupted {
            node.shutdown().await;
            return Err(Failure::new(Code::General, "interrupted before the release was complete; run the same command again to resume"));
        }
        let seconds = started.elapsed().as_secs_f64();
        let status = node.release_status(&root).unwrap_or_default();
        report(&status, seconds, size, args.json);
        if args.seed_secs > 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(args.seed_secs)) => {}
                () = signalled() => {}
            }
        }
        node.shutdown().await;
        Ok(())
    })
}

/// When every one of `peers` refused this fetch, what to tell the user: who refused and why,
/// and where a fetch without an admission certificate can get the release.
fn refused_by_all(peers: &[SocketAddr], refusals: &[Refusal]) -> Option<String> {
    // Peers by the reason they gave, so the same reason is said once.
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for peer in peers {
        let refusal = refusals.iter().find(|r| r.addr == *peer)?;
        by_reason
            .entry(&refusal.reason)
            .or_default()
            .push(peer.to_string());
    }
    let said: Vec<String> = by_reason
        .into_iter()
        .map(|(reason, peers)| format!("{} refused this fetch: {reason}", peers.join(", ")))
        .collect();
    Some(format!(
        "{}. `shoal fetch` holds no admission certificate, so mesh members do not serve it: fetch from a `shoal seed` or a `shoal node` started without --join, or join the mesh with `shoal node --join COORDINATOR --token TOKEN`",
        said.join("; ")
    ))
}

fn report(status: &ReleaseStatus, seconds: f64, size: u64, json: bool) {
    if json {
        let value = json!({
            "ok": true,
            "root": status.root,
            "name": status.name,
            "seconds": seconds,
            "bytes": size,
            "path": status.path,
            "pieces": status.total,
            "bytes_from_peers": status.bytes_down,
            "bytes_to_peers": status.bytes_up,
            "corrupt_pieces": status.corrupt_pieces,
            "endgame_requests": status.endgame_requests,
            "origin_spared": status.origin_spared,
            "sent_elsewhere": status.sent_elsewhere,
            "banned": status.banned,
        });
        println!("{value}");
    } else {
        println!(
            "fetched {} ({}) in {:.2} s, {}/s: verified payload at {}",
            status.name,
            human_bytes(size),
            seconds,
            human_bytes((size as f64 / seconds.max(1e-9)) as u64),
            status.path
        );
    }
    let _ = std::io::stdout().flush();
}

/// Reads a process's status over its control API.
pub fn fetch_status(addr: SocketAddr) -> Result<NodeStatus, Failure> {
    crate::http::get(addr, api::STATUS_PATH)
}

pub fn status(args: StatusArgs) -> Outcome {
    let addr = match (args.node, args.coordinator) {
        (Some(addr), _) => addr,
        (None, Some(addr)) => {
            let signer = args
                .operator
                .signer()
                .map_err(|f| json_failure(args.json, f))?;
            return super::mesh::fleet_status(addr, &signer, args.json);
        }
        (None, None) => unreachable!("clap requires --node or --coordinator"),
    };
    let status: NodeStatus = args
        .operator
        .signer()
        .and_then(|s| s.get(addr, api::STATUS_PATH))
        .map_err(|f| json_failure(args.json, f))?;
    // A mesh member also has a rollout agent; a plain `shoal node`, `seed` or `fetch` has none.
    let agent: Option<shoal_daemon::agent::AgentStatus> =
        crate::http::get(addr, shoal_daemon::routes::SERVICES_PATH).ok();
    if args.json {
        let mut value = serde_json::to_value(&status)
            .map_err(|e| Failure::new(Code::General, e.to_string()))?;
        let services = agent
            .as_ref()
            .map(|a| a.services.clone())
            .unwrap_or_default();
        value["services"] = json!(services);
        if let Some(a) = &agent {
            value["drained"] = json!(a.drained);
            value["refused_directives"] = json!(a.refused_directives);
        }
        return super::print_json(&value);
    }
    if let Some(a) = &agent {
        for s in &a.services {
            let version = if s.version.is_empty() {
                "-"
            } else {
                &s.version
            };
            let target = s
                .target
                .as_ref()
                .map_or_else(String::new, |t| format!(" (activating {t})"));
            println!("service {}: {version} {}{target}", s.name, s.state);
            if let Some(reason) = &s.reason {
                println!("  last activation failed: {reason}");
            }
        }
        if a.drained {
            println!("  drained: takes part in no rollout");
        }
    }
    println!("node {} on {}", status.peer_id, addr);
    if !status.labels.is_empty() {
        println!("  labels: {}", status.labels);
    }
    println!("  connections: {}", status.connections.len());
    for r in &status.releases {
        let percent = if r.total == 0 {
            100.0
        } else {
            f64::from(r.have) * 100.0 / f64::from(r.total)
        };
        println!(
            "release {} root {}{}\n  pieces {}/{} ({percent:.1}%), complete: {}, down {}, up {}, peers {}",
            r.name,
            r.root,
            if r.origin { " (origin)" } else { "" },
            r.have,
            r.total,
            if r.complete { "yes" } else { "no" },
            human_bytes(r.bytes_down),
            human_bytes(r.bytes_up),
            r.peers.len()
        );
        if r.corrupt_pieces > 0 || r.timeouts > 0 || r.false_haves > 0 {
            println!(
                "  corrupt pieces {}, timeouts {}, false haves {}",
                r.corrupt_pieces, r.timeouts, r.false_haves
            );
        }
        for b in &r.banned {
            println!("  BANNED {} at {}: {}", b.peer_id, b.addr, b.reason);
        }
        if let Some(e) = &r.error {
            println!("  ERROR {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod seed_tests {
    use super::Seed;

    #[test]
    fn a_seed_is_an_address_or_a_host_name_and_a_port() {
        assert_eq!(
            Seed::parse("10.0.0.5:7000").unwrap().to_string(),
            "10.0.0.5:7000"
        );
        assert_eq!(Seed::parse("[::1]:7000").unwrap().to_string(), "[::1]:7000");
        let named = Seed::parse("shoal-coordinator-0.shoal-coordinator:7000").unwrap();
        assert_eq!(
            named.to_string(),
            "shoal-coordinator-0.shoal-coordinator:7000"
        );
        for bad in [
            "",
            "host",
            "host:",
            ":7000",
            "host:0",
            "host:70000",
            "ho st:1",
            "a..b:1",
        ] {
            assert!(Seed::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Seed::parse("localhost:7000").unwrap().resolve().unwrap()[0].port(),
            7000
        );
        assert!(
            Seed::parse("no-such-host.invalid:7000")
                .unwrap()
                .resolve()
                .is_err()
        );
    }
}
