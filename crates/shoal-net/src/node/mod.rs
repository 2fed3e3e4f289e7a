//! A running data-plane process: one QUIC endpoint, its connections, and one swarm task per
//! release.
//!
//! [`Node::start`] binds the endpoint and starts accepting; [`Node::add_release`] joins a
//! release's swarm (as origin or fetcher); [`Node::status`] reports. Peers come from the static
//! list given at start, from membership ([`Node::connect`]) and from peer exchange; which to dial,
//! when to redial, which of two connections stays and who hears of whom is decided by the core's
//! [`Peering`], which this node drives. One connection's life, from the handshake to its close,
//! is in `connection.rs`.

mod connection;

use crate::admitted::Admitted;
use crate::identity::Identity;
use crate::limits::Limits;
use crate::source::Source;
use crate::status::{ConnectionStatus, NodeStatus, Refusal, ReleaseStatus};
use crate::swarm_task::{EVENT_QUEUE, Event, Link, SwarmTask};
use crate::transport::{self, Congestion};
use anyhow::{Context, Result, anyhow, bail};
use libp2p_identity::PeerId;
use shoal_core::agent::peering::gate::{Gate, GateConfig};
use shoal_core::agent::peering::{self, Peering};
use shoal_core::content::{PieceLayout, RootHash};
use shoal_core::labels::Labels;
use shoal_core::manifest::VerifiedManifest;
use shoal_core::swarm::{self, PeerKey, Swarm};
use shoal_core::wire::piece::{PeerAddr, PieceMessage};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};

/// Control messages queued per connection before the connection counts as stuck.
pub const CONTROL_QUEUE: usize = 8192;
/// How long a dial or an accept may take, handshake included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer that must be admitted has, once connected, to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC error code for a protocol violation.
pub const CLOSE_PROTOCOL: u32 = 1;
/// QUIC error code for a duplicate connection (the other one between the same peers stays).
pub const CLOSE_DUPLICATE: u32 = 3;
/// QUIC error code for a clean shutdown.
pub const CLOSE_SHUTDOWN: u32 = 0;
/// QUIC error code for a peer refused admission; the reason is the close's text.
pub const CLOSE_REFUSED: u32 = 4;
/// Most refusals by other peers kept for the status, by their address.
pub const MAX_REFUSALS_KEPT: usize = 64;

/// How a node runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (UDP for QUIC).
    pub listen: SocketAddr,
    /// This machine's labels.
    pub labels: Labels,
    /// Peers to dial and keep dialling.
    pub peers: Vec<SocketAddr>,
    /// Upload cap in bytes per second.
    pub upload_limit_bytes_per_sec: Option<u64>,
    /// Download cap in bytes per second.
    pub download_limit_bytes_per_sec: Option<u64>,
    /// The congestion controller.
    pub congestion: Congestion,
    /// Connections this node opens on its own (peer exchange stops dialling beyond it).
    pub max_peers: usize,
    /// This node's encoded admission certificate, sent in its hello (empty outside a mesh).
    pub certificate: Vec<u8>,
    /// In a mesh: the check every peer's hello certificate must pass before anything else from
    /// it is acted on. `None` accepts every peer (standalone `seed`/`fetch`).
    pub admission: Option<AdmissionCheck>,
    /// The seed of every random choice the node's core makes (peer exchange, swarm scheduling).
    pub seed: u64,
    /// How often each peer hears of this node's other peers.
    pub exchange_interval: Duration,
    /// Which incoming connection attempts are taken on.
    pub gate: GateConfig,
}

/// Checks a peer's hello certificate: `Ok` to admit, `Err(reason)` to refuse.
#[derive(Clone)]
pub struct AdmissionCheck(pub Arc<CertificateCheck>);

/// The function inside an [`AdmissionCheck`]: peer, encoded certificate, verdict.
pub type CertificateCheck = dyn Fn(&PeerId, &[u8]) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for AdmissionCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmissionCheck")
    }
}

impl Config {
    /// Defaults for a node listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            labels: Labels::default(),
            peers: Vec::new(),
            upload_limit_bytes_per_sec: None,
            download_limit_bytes_per_sec: None,
            congestion: Congestion::default(),
            max_peers: 40,
            certificate: Vec::new(),
            admission: None,
            seed: rand::random(),
            exchange_interval: peering::Config::default().exchange_interval,
            gate: GateConfig::default(),
        }
    }
}

struct ReleaseEntry {
    tx: mpsc::Sender<Event>,
    source: Source,
    layout: PieceLayout,
    origin: bool,
    status: Arc<Mutex<ReleaseStatus>>,
    complete: watch::Receiver<bool>,
}

struct ConnEntry {
    id: u64,
    conn: quinn::Connection,
    out: mpsc::Sender<PieceMessage>,
    addr: SocketAddr,
}

struct Inner {
    identity: Identity,
    endpoint: quinn::Endpoint,
    config: Config,
    limits: Arc<Limits>,
    releases: Mutex<BTreeMap<RootHash, ReleaseEntry>>,
    conns: Mutex<HashMap<PeerId, ConnEntry>>,
    keys: Mutex<HashMap<PeerId, PeerKey>>,
    /// Always the innermost lock: nothing else is locked while it is held.
    peering: Mutex<Peering<SocketAddr, PeerId>>,
    /// Wakes the peering task when its next deadline may have moved.
    peering_wake: Notify,
    epoch: Instant,
    next_id: AtomicU64,
    refused_peers: AtomicU64,
    /// Piece streams dropped for delivering slower than the protocol's minimum rate.
    slow_piece_streams: AtomicU64,
    /// Peers that refused this node, by address, with their reason; cleared when a connection to
    /// the address is admitted.
    refused_by: Mutex<BTreeMap<SocketAddr, String>>,
    /// Decides on incoming connection attempts, before their handshake.
    gate: Mutex<Gate<SocketAddr>>,
    /// The certificate sent in hellos: the config's, until a renewal replaces it.
    certificate: Mutex<Vec<u8>>,
    /// The certificates open connections were admitted with, for [`Node::recheck`].
    admitted: Arc<Admitted<quinn::Connection>>,
    /// The runtime the node started on, which runs all its tasks, whichever runtime calls it
    /// (the control API has its own).
    runtime: tokio::runtime::Handle,
    shutdown: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running node. Cheap to clone; every clone drives the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Binds the endpoint and starts accepting and dialling.
    ///
    /// # Errors
    ///
    /// If the listen address cannot be bound.
    pub fn start(identity: Identity, config: Config) -> Result<Self> {
        let endpoint = transport::bind(&identity, config.listen, config.congestion)?;
        let limits = Arc::new(Limits::new(
            config.upload_limit_bytes_per_sec,
            config.download_limit_bytes_per_sec,
        ));
        let (shutdown, _) = watch::channel(false);
        let peering_config = peering::Config {
            max_peers: config.max_peers,
            exchange_interval: config.exchange_interval,
            ..peering::Config::default()
        };
        let mut peering = Peering::new(
            peering_config,
            identity.peer_id(),
            config.listen,
            config.labels.clone(),
            config.seed,
            Duration::ZERO,
        );
        for &peer in &config.peers {
            peering.add_static(peer);
        }
        let node = Self {
            inner: Arc::new(Inner {
                identity,
                endpoint,
                config: config.clone(),
                limits,
                releases: Mutex::new(BTreeMap::new()),
                conns: Mutex::new(HashMap::new()),
                keys: Mutex::new(HashMap::new()),
                peering: Mutex::new(peering),
                peering_wake: Notify::new(),
                epoch: Instant::now(),
                next_id: AtomicU64::new(1),
                refused_peers: AtomicU64::new(0),
                slow_piece_streams: AtomicU64::new(0),
                refused_by: Mutex::new(BTreeMap::new()),
                gate: Mutex::new(Gate::new(config.gate.clone())),
                certificate: Mutex::new(config.certificate.clone()),
                admitted: Arc::default(),
                runtime: tokio::runtime::Handle::current(),
                shutdown,
            }),
        };
        tokio::spawn(node.clone().accept_loop());
        tokio::spawn(node.clone().peering_loop());
        Ok(node)
    }

    /// The address the endpoint is bound to.
    ///
    /// # Errors
    ///
    /// If the socket is gone.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// Sends `certificate` (a renewed one, encoded) in the hellos of connections opened from
    /// now.
    pub fn set_certificate(&self, certificate: Vec<u8>) {
        *lock(&self.inner.certificate) = certificate;
    }

    /// Applies `check` to the certificate of every open connection's peer and closes each
    /// connection it refuses, as if its hello had been refused on arrival (counted as a refused
    /// peer; the peer hears the reason). For a change of rules, such as a revoked onboarding
    /// token, to reach connections that are already up. Returns the peers refused, with the
    /// reason.
    pub fn recheck(
        &self,
        check: impl Fn(&PeerId, &[u8]) -> Result<(), String>,
    ) -> Vec<(PeerId, String)> {
        let refused = self.inner.admitted.refused(check);
        for r in &refused {
            self.inner.refused_peers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %r.peer, "closing a data-plane connection: {}", r.reason);
            r.link.close(CLOSE_REFUSED.into(), r.reason.as_bytes());
        }
        refused.into_iter().map(|r| (r.peer, r.reason)).collect()
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.identity.peer_id()
    }

    /// Joins the swarm of a verified manifest's release, serving and (unless complete) fetching
    /// through `source`. Returns a receiver that turns `true` when every piece is verified here.
    pub fn add_release(
        &self,
        manifest: &VerifiedManifest,
        source: Source,
        origin: bool,
    ) -> watch::Receiver<bool> {
        self.add(manifest.manifest(), *manifest.layout(), source, origin)
    }

    /// Joins the swarm of a release in the store (its manifest was verified when it was added).
    pub fn add_stored_release(&self, release: &Arc<shoal_store::Release>) -> watch::Receiver<bool> {
        self.add(
            release.manifest(),
            *release.layout(),
            Source::Store(release.clone()),
            false,
        )
    }

    fn add(
        &self,
        manifest: &shoal_core::manifest::Manifest,
        layout: PieceLayout,
        source: Source,
        origin: bool,
    ) -> watch::Receiver<bool> {
        let root = manifest.root;
        if let Some(entry) = lock(&self.inner.releases).get(&root) {
            return entry.complete.clone();
        }
        let config = if origin {
            swarm::Config::origin()
        } else {
            swarm::Config::default()
        };
        let seed =
            self.inner.config.seed ^ u64::from_le_bytes(root.0[..8].try_into().expect("8 bytes"));
        let swarm = Swarm::new(config, layout, source.have(), seed);
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let status = Arc::new(Mutex::new(ReleaseStatus::default()));
        let (complete_tx, complete_rx) = watch::channel(false);
        let task = SwarmTask::new(
            manifest,
            swarm,
            source.clone(),
            origin,
            rx,
            tx.clone(),
            self.inner.limits.clone(),
            status.clone(),
            complete_tx,
        );
        self.inner
            .runtime
            .spawn(task.run(self.inner.shutdown.subscribe()));
        let have = PieceMessage::Have {
            root,
            pieces: source.have(),
            origin,
        };
        lock(&self.inner.releases).insert(
            root,
            ReleaseEntry {
                tx: tx.clone(),
                source,
                layout,
                origin,
                status,
                complete: complete_rx.clone(),
            },
        );
        // Every `Have` kept before the insert is claimed here; every later one finds the release.
        let early = lock(&self.inner.peering).claim(root);
        let conns = lock(&self.inner.conns);
        for conn in conns.values() {
            let _ = conn.out.try_send(have.clone());
        }
        for (peer, conn_id, (pieces, origin)) in early {
            let Some(conn) = conns.get(&peer).filter(|c| c.id == conn_id) else {
                continue;
            };
            let link = Link {
                peer_id: peer,
                addr: conn.addr,
                conn: conn.conn.clone(),
                out: conn.out.clone(),
                conn_id,
            };
            let joined = Event::Joined {
                key: self.key(peer),
                link,
                have: pieces,
                origin,
            };
            if tx.try_send(joined).is_err() {
                tracing::warn!(%peer, %root, "swarm queue full: an earlier have is lost");
            }
        }
        complete_rx
    }

    /// The status of `root`'s swarm here.
    pub fn release_status(&self, root: &RootHash) -> Option<ReleaseStatus> {
        let releases = lock(&self.inner.releases);
        let entry = releases.get(root)?;
        let status = lock(&entry.status).clone();
        Some(status)
    }

    /// Connects to a swarm peer found through membership (a few attempts, in the background).
    pub fn connect(&self, addr: SocketAddr) {
        self.peering(|p, _| p.connect(addr));
    }

    /// The whole node's status.
    pub fn status(&self) -> NodeStatus {
        let conns: Vec<(PeerId, quinn::Connection, SocketAddr)> = lock(&self.inner.conns)
            .iter()
            .map(|(peer, c)| (*peer, c.conn.clone(), c.addr))
            .collect();
        let connections = conns
            .into_iter()
            .map(|(peer, conn, addr)| {
                let stats = conn.stats();
                let labels = lock(&self.inner.peering)
                    .labels(peer)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                ConnectionStatus {
                    peer_id: peer.to_string(),
                    addr,
                    labels,
                    rtt_micros: u64::try_from(conn.rtt().as_micros()).unwrap_or(u64::MAX),
                    udp_sent_bytes: stats.udp_tx.bytes,
                    udp_sent_datagrams: stats.udp_tx.datagrams,
                    udp_send_calls: stats.udp_tx.ios,
                    lost_bytes: stats.path.lost_bytes,
                    congestion_events: stats.path.congestion_events,
                }
            })
            .collect();
        let releases = lock(&self.inner.releases)
            .values()
            .map(|e| lock(&e.status).clone())
            .collect();
        NodeStatus {
            peer_id: self.peer_id().to_string(),
            refused_peers: self.inner.refused_peers.load(Ordering::Relaxed),
            slow_piece_streams: self.inner.slow_piece_streams.load(Ordering::Relaxed),
            refused_connections: {
                let stats = lock(&self.inner.gate).stats();
                stats.refused_full + stats.refused_handshakes + stats.refused_rate
            },
            refused_by: lock(&self.inner.refused_by)
                .iter()
                .map(|(&addr, reason)| Refusal {
                    addr,
                    reason: reason.clone(),
                })
                .collect(),
            listen: self.local_addr().ok(),
            labels: self.inner.config.labels.to_string(),
            connections,
            releases,
        }
    }

    /// Stops every task and closes every connection.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner
            .endpoint
            .close(CLOSE_SHUTDOWN.into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.endpoint.wait_idle()).await;
    }

    /// A receiver that turns `true` when the node shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    fn key(&self, peer: PeerId) -> PeerKey {
        let mut keys = lock(&self.inner.keys);
        let next = PeerKey(keys.len() as u64 + 1);
        *keys.entry(peer).or_insert(next)
    }

    fn now(&self) -> Duration {
        self.inner.epoch.elapsed()
    }

    /// Feeds an input to the [`Peering`], then carries out what it says.
    fn peering<R>(&self, input: impl FnOnce(&mut Peering<SocketAddr, PeerId>, Duration) -> R) -> R {
        let (result, outputs) = {
            let mut peering = lock(&self.inner.peering);
            let result = input(&mut peering, self.now());
            (
                result,
                std::iter::from_fn(|| peering.poll_output()).collect(),
            )
        };
        self.carry_out(outputs);
        self.inner.peering_wake.notify_one();
        result
    }

    fn carry_out(&self, outputs: Vec<peering::Output<SocketAddr, PeerId>>) {
        for output in outputs {
            match output {
                peering::Output::Dial(addr) => {
                    if !self.is_shutting_down() {
                        self.inner.runtime.spawn(self.clone().dial_peer(addr));
                    }
                }
                peering::Output::Close { peer, conn } => {
                    if let Some(c) = lock(&self.inner.conns).get(&peer).filter(|c| c.id == conn) {
                        c.conn
                            .close(CLOSE_DUPLICATE.into(), b"duplicate connection");
                    }
                }
                peering::Output::SendPeers { to, peers } => {
                    let roots: Vec<RootHash> = lock(&self.inner.releases).keys().copied().collect();
                    let peers: Vec<PeerAddr> = peers
                        .into_iter()
                        .map(|(addr, labels)| PeerAddr { addr, labels })
                        .collect();
                    if let Some(c) = lock(&self.inner.conns).get(&to) {
                        for root in roots {
                            let _ = c.out.try_send(PieceMessage::Peers {
                                root,
                                peers: peers.clone(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Wakes the [`Peering`] when its deadline passes (redials, peer exchange).
    async fn peering_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        // What the peering asked for before this task ran (the first dial of every static
        // peer) is carried out now, not at its first timeout.
        self.peering(|_, _| ());
        loop {
            let due = lock(&self.inner.peering).poll_timeout();
            let deadline = tokio::time::Instant::from_std(self.inner.epoch + due);
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                () = self.inner.peering_wake.notified() => continue,
                () = tokio::time::sleep_until(deadline) => {}
            }
            self.peering(|p, now| p.handle_timeout(now));
        }
    }

    // ---- connections -------------------------------------------------------------------

    async fn accept_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let incoming = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                incoming = self.inner.endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { return };
            // Decided before the handshake: a refusal costs one packet and no cryptography.
            let source = incoming.remote_address();
            let open = lock(&self.inner.conns).len();
            let verdict = lock(&self.inner.gate).incoming(source, open, self.now());
            if let Err(why) = verdict {
                tracing::debug!(%source, "connection attempt refused: {why}");
                incoming.refuse();
                continue;
            }
            let node = self.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(CONNECT_TIMEOUT, incoming).await;
                lock(&node.inner.gate).handshake_done();
                match handshake {
                    Ok(Ok(conn)) => node.run_connection(conn, None).await,
                    Ok(Err(e)) => tracing::debug!("incoming connection failed: {e}"),
                    Err(_) => tracing::debug!("incoming handshake timed out"),
                }
            });
        }
    }

    async fn dial(&self, addr: SocketAddr) -> Result<quinn::Connection> {
        let connecting = self
            .inner
            .endpoint
            .connect(addr, "shoal")
            .with_context(|| format!("cannot dial {addr}"))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| anyhow!("no answer from {addr} within {CONNECT_TIMEOUT:?}"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        Ok(conn)
    }

    /// Dials `addr` as the [`Peering`] asked, and serves the connection until it closes.
    async fn dial_peer(self, addr: SocketAddr) {
        match self.dial(addr).await {
            Ok(conn) => self.run_connection(conn, Some(addr)).await,
            Err(e) => {
                tracing::debug!("peer {addr}: {e:#}");
                self.peering(|p, now| p.dial_failed(addr, now));
            }
        }
    }
}
impl ReleaseEntry {
    fn source_have(&self) -> shoal_core::bitfield::Bitfield {
        self.source.have()
    }
}

/// Parses `IP:PORT`, naming the flag in the error.
///
/// # Errors
///
/// If `text` is not an address with a port.
pub fn parse_addr(text: &str, flag: &str) -> Result<SocketAddr> {
    match text.parse() {
        Ok(addr) => Ok(addr),
        Err(_) => bail!("{flag} {text:?} is not IP:PORT (example: 10.0.0.5:7070)"),
    }
}
