//! The control-plane driver: one task that runs the sans-IO [`control::Node`] over the libp2p
//! [`overlay`](crate::overlay).
//!
//! Every frame from a peer is a postcard-encoded [`Message`]; its sender is known from the
//! connection and its hello (whose admission certificate the overlay has already checked with
//! [`hello_check`]). Envelopes inside a message are verified against the trust document before
//! the core sees them; a peer that sends a forged one is counted and disconnected. The task's
//! loop is `select! { biased; shutdown, commands, overlay events, the core's timer }`, and every
//! arm calls straight into the core, then carries out its outputs.
//!
//! A `--listen IP:PORT` address names a whole process: UDP PORT for the data plane, UDP PORT+1
//! for this control plane, TCP PORT for the HTTP API. Seeds are given by that address; their
//! peer ids are learned with an `Identify` request on the admission protocol.
//!
//! On the coordinator (the broadcast source) the task also answers admission requests, signs
//! heartbeats and release announcements, and remembers its last sequence number in the data
//! directory so a restart continues the sequence.

mod contact;
mod directive;
mod known;
mod status;

pub use contact::{Contact, control_addr};
pub use directive::{Directive, Hello};
use known::{KnownPeers, MAX_KNOWN_PEERS};
pub use status::{
    FleetRelease, FleetStates, FleetStatus, MemberEntry, MemberStatus, MembersStatus,
};

use crate::identity::Identity;
use crate::overlay::{self, Event, Overlay};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use shoal_core::admission::{self, AdmissionRequest, AdmissionResponse, Certificate};
pub use shoal_core::agent::machine::{SWARM_CANDIDATES, SWARM_OUTSIDE};
use shoal_core::content::RootHash;
use shoal_core::control::{self, Entry, Envelope, Message, Output, Place, Summary};
use shoal_core::keys::SecretKey;
use shoal_core::labels::Labels;
use shoal_core::manifest::{SignedManifest, VerifiedManifest};
use shoal_core::trust::Trust;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// Commands waiting for the mesh task.
const COMMAND_QUEUE: usize = 64;
/// Verified announcements waiting for the daemon to prefetch them.
const ANNOUNCEMENT_QUEUE: usize = 64;
/// How often the node's own health summary is refreshed from the data plane and the rollout
/// agent (local reads only; what reaches the parent still goes at the health interval).
const OWN_SUMMARY_INTERVAL: Duration = Duration::from_millis(250);
/// How long a seed's identity request may take.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// File in the coordinator's data directory holding the last broadcast sequence number.
const SEQUENCE_FILE: &str = "broadcast.seq";

/// How a mesh member runs.
pub struct Config {
    /// The process's `--listen` address; the control plane binds UDP port + 1.
    pub listen: SocketAddr,
    /// Seeds to join through (their `--listen` addresses).
    pub seeds: Vec<SocketAddr>,
    /// This node's admission certificate (its labels are the ones peers see).
    pub certificate: Certificate,
    /// The trust document: coordinator keys for envelopes and certificates, publishers for
    /// manifests.
    pub trust: Arc<Trust>,
    /// Protocol tunables.
    pub control: control::Config,
    /// On the coordinator: its signing key (the broadcast source and certificate issuer).
    pub source_key: Option<SecretKey>,
    /// Where the coordinator keeps its sequence number.
    pub data_dir: PathBuf,
}

/// What a broadcast delivered for the daemon, verified.
#[derive(Debug)]
pub enum Delivered {
    /// A release to prefetch.
    Release(Box<Announcement>),
    /// A rollout directive, for the node's rollout agent.
    Rollout(Box<shoal_core::rollout::Directive>),
}

/// A release announcement that arrived, verified, for the daemon to prefetch.
#[derive(Debug)]
pub struct Announcement {
    /// The verified manifest.
    pub manifest: VerifiedManifest,
    /// The origin serving it.
    pub origin: Contact,
}

/// A request on the admission protocol.
#[derive(Debug, Serialize, Deserialize)]
pub enum MeshRequest {
    /// "Who are you?": how a node learns a seed's peer id from its address.
    Identify,
    /// Redeem an onboarding token for a certificate (coordinator only).
    Admission(AdmissionRequest),
}

/// The answer to a [`MeshRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum MeshResponse {
    /// The answerer's `--listen` address.
    Identity {
        /// Its address.
        addr: SocketAddr,
    },
    /// The admission result.
    Admission(AdmissionResponse),
}

enum Command {
    Members(oneshot::Sender<MembersStatus>),
    Fleet(oneshot::Sender<FleetStatus>),
    Candidates(oneshot::Sender<Vec<SocketAddr>>),
    Subtree(oneshot::Sender<Summary>),
    Rollout {
        directive: Box<shoal_core::rollout::Directive>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Announce {
        manifest: Vec<u8>,
        origin: Contact,
        reply: oneshot::Sender<Result<u64>>,
    },
    SeedFound(Contact),
}

#[derive(Default)]
struct Counters {
    refused_peers: AtomicU64,
    refused_envelopes: AtomicU64,
    malformed_frames: AtomicU64,
    dropped_sends: AtomicU64,
    unnamed_frames: AtomicU64,
}

/// A handle on the running mesh task. Cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    commands: mpsc::Sender<Command>,
    overlay: Overlay,
    me: Contact,
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The overlay's hello check: the hello must carry a certificate from a coordinator key in
/// `trust`, for the connection's peer id, valid now. Passing peers are remembered in `known`.
fn hello_check(
    trust: Arc<Trust>,
    known: Arc<Mutex<KnownPeers>>,
    counters: Arc<Counters>,
) -> overlay::HelloCheck {
    Arc::new(move |peer: &PeerId, bytes: &[u8]| {
        let checked = postcard::from_bytes::<Hello>(bytes)
            .map_err(|e| format!("malformed hello: {e}"))
            .and_then(|hello| {
                let certificate =
                    Certificate::decode(&hello.certificate).map_err(|e| e.to_string())?;
                certificate
                    .verify(&trust, &peer.to_bytes(), unix_now())
                    .map_err(|e| e.to_string())?;
                Ok(hello.addr)
            });
        match checked {
            Ok(addr) => {
                known
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remember(*peer, addr);
                true
            }
            Err(reason) => {
                counters.refused_peers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "refused on the control plane: {reason}");
                false
            }
        }
    })
}

/// Starts the mesh task on the current runtime. Returns its handle and the receiver of verified
/// release announcements.
///
/// `own_summary` is called once a second for this node's health (the data plane's releases).
///
/// # Errors
///
/// If the control-plane port (listen port + 1) cannot be bound.
pub async fn start(
    identity: &Identity,
    config: Config,
    own_summary: Box<dyn Fn() -> Summary + Send>,
    shutdown: watch::Receiver<bool>,
) -> Result<(Mesh, mpsc::Receiver<Delivered>)> {
    if config.listen.ip().is_unspecified() {
        bail!(
            "--listen {} is not an address peers can reach: give this machine's own IP",
            config.listen
        );
    }
    let known = Arc::new(Mutex::new(KnownPeers::new(MAX_KNOWN_PEERS)));
    let counters = Arc::new(Counters::default());
    let hello = Hello {
        addr: config.listen,
        certificate: config.certificate.encode(),
    };
    let hello = Bytes::from(postcard::to_stdvec(&hello).context("cannot encode the hello")?);
    let check = hello_check(config.trust.clone(), known.clone(), counters.clone());
    let overlay_config = overlay::Config::new(control_addr(config.listen));
    let (overlay, events) = overlay::start(identity, overlay_config, hello, check)
        .await
        .with_context(|| {
            format!(
                "cannot start the control plane on UDP {}",
                control_addr(config.listen)
            )
        })?;
    let me = Contact {
        peer_id: identity.peer_id(),
        addr: config.listen,
    };
    let epoch = Instant::now();
    let entry = Entry {
        peer: me,
        place: Place::from_labels(config.certificate.labels()),
    };
    let seed = rand::random::<u64>();
    let mut node = control::Node::new(
        entry,
        Vec::new(),
        config.control.clone(),
        seed,
        Duration::ZERO,
    );
    if config.source_key.is_some() {
        node.resume_after(read_sequence(&config.data_dir));
    }
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (announcements, announcement_rx) = mpsc::channel(ANNOUNCEMENT_QUEUE);
    for seed in config.seeds.iter().copied() {
        tokio::spawn(find_seed(
            overlay.clone(),
            seed,
            commands.clone(),
            shutdown.clone(),
        ));
    }
    let task = Task {
        node,
        overlay: overlay.clone(),
        known,
        counters,
        config,
        epoch,
        own_summary,
        next_own_summary: Instant::now(),
        announcements,
    };
    tokio::spawn(task.run(command_rx, events, shutdown));
    Ok((
        Mesh {
            commands,
            overlay,
            me,
        },
        announcement_rx,
    ))
}

/// Learns a seed's peer id by asking it, retrying with back-off until it answers.
async fn find_seed(
    overlay: Overlay,
    seed: SocketAddr,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let body = Bytes::from(postcard::to_stdvec(&MeshRequest::Identify).unwrap_or_default());
    let mut wait = Duration::from_millis(250);
    loop {
        match overlay
            .request(None, control_addr(seed), body.clone(), IDENTIFY_TIMEOUT)
            .await
        {
            Ok((peer_id, answer)) => match postcard::from_bytes::<MeshResponse>(&answer) {
                Ok(MeshResponse::Identity { addr }) => {
                    let _ = commands
                        .send(Command::SeedFound(Contact { peer_id, addr }))
                        .await;
                    return;
                }
                _ => tracing::warn!(%seed, "seed gave a malformed identity answer"),
            },
            Err(e) => tracing::debug!(%seed, "seed not reachable yet: {e}"),
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

impl Mesh {
    /// This member.
    pub fn me(&self) -> Contact {
        self.me
    }

    /// The views, neighbour health and counters, for `shoal members`.
    ///
    /// # Errors
    ///
    /// If the mesh task has stopped.
    pub async fn members(&self) -> Result<MembersStatus> {
        self.ask(Command::Members).await
    }

    /// The aggregated fleet summary (meaningful on the coordinator).
    ///
    /// # Errors
    ///
    /// If the mesh task has stopped.
    pub async fn fleet(&self) -> Result<FleetStatus> {
        self.ask(Command::Fleet).await
    }

    /// Data-plane addresses of up to [`SWARM_CANDIDATES`] members to swarm with, from the
    /// views and the locality cache: the closest, and [`SWARM_OUTSIDE`] of them from anywhere.
    ///
    /// # Errors
    ///
    /// If the mesh task has stopped.
    pub async fn swarm_candidates(&self) -> Result<Vec<SocketAddr>> {
        self.ask(Command::Candidates).await
    }

    /// Coordinator only: signs and broadcasts an announcement of `manifest` (its encoded,
    /// signed bytes) served by this process. Returns the broadcast's sequence number.
    ///
    /// # Errors
    ///
    /// If this process is not the coordinator or the mesh task has stopped.
    pub async fn announce(&self, manifest: Vec<u8>) -> Result<u64> {
        let origin = self.me;
        self.ask(|reply| Command::Announce {
            manifest,
            origin,
            reply,
        })
        .await?
    }

    /// The health summary of this member's subtree (on the coordinator: the whole fleet).
    ///
    /// # Errors
    ///
    /// If the mesh task has stopped.
    pub async fn subtree(&self) -> Result<Summary> {
        self.ask(Command::Subtree).await
    }

    /// Coordinator only: signs and broadcasts a rollout directive (kept for late joiners).
    /// Returns the broadcast's sequence number.
    ///
    /// # Errors
    ///
    /// If this process is not the coordinator or the mesh task has stopped.
    pub async fn broadcast_rollout(
        &self,
        directive: shoal_core::rollout::Directive,
    ) -> Result<u64> {
        self.ask(|reply| Command::Rollout {
            directive: Box::new(directive),
            reply,
        })
        .await?
    }

    /// The overlay's transport counters.
    pub fn overlay_stats(&self) -> overlay::Stats {
        self.overlay.stats()
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| anyhow::anyhow!("the control plane has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the control plane has stopped"))
    }
}

/// Redeems `token` at the coordinator it names for a certificate of this node with `labels`,
/// using a short-lived overlay on an ephemeral port. Returns the certificate and the trust
/// document, both checked against the token's pinned root.
///
/// # Errors
///
/// If the coordinator cannot be reached or refuses, or its answer does not check out.
pub async fn redeem_token(
    identity: &Identity,
    token: &admission::Token,
    labels: &Labels,
) -> Result<(Certificate, Trust)> {
    let claims = token.claims();
    let coordinator = PeerId::from_bytes(&claims.coordinator_peer_id)
        .context("the token names a malformed coordinator peer id")?;
    let ip = if claims.coordinator_addr.is_ipv4() {
        "0.0.0.0"
    } else {
        "::"
    };
    let any: SocketAddr = SocketAddr::new(ip.parse().context("unspecified address")?, 0);
    let refuse_all: overlay::HelloCheck = Arc::new(|_: &PeerId, _: &[u8]| false);
    let (overlay, _events) = overlay::start(
        identity,
        overlay::Config::new(any),
        Bytes::new(),
        refuse_all,
    )
    .await
    .context("cannot start a temporary control-plane endpoint for admission")?;
    let request = MeshRequest::Admission(AdmissionRequest {
        token: token.encode(),
        labels: labels.clone(),
    });
    let body = Bytes::from(postcard::to_stdvec(&request).context("cannot encode the request")?);
    // A coordinator busy with many joins, or restarting, may drop an exchange: try a few times.
    let mut answer = Err(anyhow::anyhow!("no attempt made"));
    for attempt in 0..4u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        answer = overlay
            .request(
                Some(coordinator),
                control_addr(claims.coordinator_addr),
                body.clone(),
                Duration::from_secs(15),
            )
            .await
            .map_err(anyhow::Error::from);
        match &answer {
            Ok(_) => break,
            Err(e) => tracing::warn!("admission attempt {} failed: {e:#}", attempt + 1),
        }
    }
    overlay.shutdown().await;
    let (_, answer) = answer.with_context(|| {
        format!(
            "cannot reach the coordinator at {} named in the token",
            claims.coordinator_addr
        )
    })?;
    let response = match postcard::from_bytes::<MeshResponse>(&answer) {
        Ok(MeshResponse::Admission(response)) => response,
        _ => bail!("the coordinator gave a malformed admission answer"),
    };
    let (certificate, trust) =
        admission::accept_admission(response, token, &identity.peer_id().to_bytes(), unix_now())
            .context("admission refused")?;
    Ok((certificate, trust))
}

fn read_sequence(data_dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(data_dir.join(SEQUENCE_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_sequence(data_dir: &std::path::Path, seq: u64) {
    let path = data_dir.join(SEQUENCE_FILE);
    let result = shoal_store::fsutil::write_atomic(&path, format!("{seq}\n").as_bytes(), 0o644);
    if let Err(e) = result {
        tracing::error!(
            "cannot record broadcast sequence {seq} in {}: {e}",
            path.display()
        );
    }
}

struct Task {
    node: control::Node<Contact>,
    overlay: Overlay,
    known: Arc<Mutex<KnownPeers>>,
    counters: Arc<Counters>,
    config: Config,
    epoch: Instant,
    own_summary: Box<dyn Fn() -> Summary + Send>,
    next_own_summary: Instant,
    announcements: mpsc::Sender<Delivered>,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let deadline = self.epoch + self.node.poll_timeout();
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                Some(command) = commands.recv() => self.handle_command(command),
                Some(event) = events.recv() => self.handle_event(event),
                () = tokio::time::sleep_until(deadline.into()) => {
                    if Instant::now() >= self.next_own_summary {
                        self.next_own_summary = Instant::now() + OWN_SUMMARY_INTERVAL;
                        self.node.set_own_summary((self.own_summary)());
                    }
                    let now = self.now();
                    self.node.handle_timeout(now);
                }
            }
            self.drain();
        }
        self.overlay.shutdown().await;
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The contact of `peer`: from its hello, else from the core's own views; `None` if its
    /// address is known to neither (then it is not named to the core at all).
    fn contact(&self, peer: PeerId) -> Option<Contact> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer);
        known.or_else(|| {
            let probe = Contact {
                peer_id: peer,
                addr: self.config.listen,
            };
            let active = self.node.active().iter().map(|n| &n.entry);
            active
                .chain(self.node.passive())
                .chain(self.node.locality())
                .find(|e| e.peer == probe)
                .map(|e| e.peer)
        })
    }

    fn handle_event(&mut self, event: Event) {
        let now = self.now();
        match event {
            Event::Frame { peer, frame } => {
                let Some(from) = self.contact(peer) else {
                    self.counters.unnamed_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "frame from a peer whose address is not known: dropped");
                    return;
                };
                let Ok(message) = postcard::from_bytes::<Message<Contact>>(&frame) else {
                    self.counters
                        .malformed_frames
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "malformed control frame: disconnecting");
                    self.overlay.disconnect(peer);
                    return;
                };
                let forged = message
                    .envelopes()
                    .iter()
                    .any(|e| !e.verify(&self.config.trust));
                if forged {
                    self.counters
                        .refused_envelopes
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "envelope not signed by a coordinator key: disconnecting");
                    self.overlay.disconnect(peer);
                    self.node.handle_disconnected(now, from);
                    return;
                }
                self.node.handle_message(now, from, message);
            }
            Event::Request { peer, body, reply } => {
                let answer = self.answer(peer, &body);
                let _ = reply.send(Bytes::from(
                    postcard::to_stdvec(&answer).unwrap_or_default(),
                ));
            }
            Event::Disconnected { peer } => {
                if let Some(contact) = self.contact(peer) {
                    self.node.handle_disconnected(now, contact);
                }
            }
        }
    }

    fn answer(&self, peer: PeerId, body: &[u8]) -> MeshResponse {
        match postcard::from_bytes::<MeshRequest>(body) {
            Ok(MeshRequest::Identify) => MeshResponse::Identity {
                addr: self.config.listen,
            },
            Ok(MeshRequest::Admission(request)) => {
                let response = match &self.config.source_key {
                    Some(key) => admission::respond(
                        key,
                        &self.config.trust,
                        &request,
                        &peer.to_bytes(),
                        unix_now(),
                        admission::DEFAULT_CERTIFICATE_TTL_SECS,
                    ),
                    None => AdmissionResponse::Refused {
                        reason:
                            "this process is not a coordinator: redeem tokens at the coordinator"
                                .into(),
                    },
                };
                if let AdmissionResponse::Refused { reason } = &response {
                    self.counters.refused_peers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "admission refused: {reason}");
                }
                MeshResponse::Admission(response)
            }
            Err(_) => MeshResponse::Admission(AdmissionResponse::Refused {
                reason: "malformed request".into(),
            }),
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Members(reply) => {
                let _ = reply.send(self.members());
            }
            Command::Fleet(reply) => {
                let _ = reply.send(FleetStatus::from_summary(
                    &self.node.subtree(),
                    self.node.latest(),
                ));
            }
            Command::Candidates(reply) => {
                let _ = reply.send(self.candidates());
            }
            Command::Subtree(reply) => {
                let _ = reply.send(self.node.subtree());
            }
            Command::Rollout { directive, reply } => {
                let _ = reply.send(self.broadcast(&Directive::Rollout(directive), true));
            }
            Command::Announce {
                manifest,
                origin,
                reply,
            } => {
                let directive = Directive::Announce { manifest, origin };
                let _ = reply.send(self.broadcast(&directive, true));
            }
            Command::SeedFound(contact) => {
                tracing::info!(peer = %contact.peer_id, addr = %contact.addr, "seed found");
                self.known
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remember(contact.peer_id, contact.addr);
                self.node.add_seed(contact);
            }
        }
    }

    fn broadcast(&mut self, directive: &Directive, keep: bool) -> Result<u64> {
        let Some(key) = &self.config.source_key else {
            bail!("only the coordinator broadcasts");
        };
        let seq = self.node.next_seq();
        let envelope = Envelope::sign(key, seq, keep, Bytes::from(directive.encode()));
        write_sequence(&self.config.data_dir, seq);
        let now = self.now();
        self.node.broadcast(now, envelope);
        Ok(seq)
    }

    fn drain(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Send { to, message } => {
                    let frame = match postcard::to_stdvec(&message) {
                        Ok(frame) => Bytes::from(frame),
                        Err(e) => {
                            tracing::error!("cannot encode a {} message: {e}", message.kind());
                            continue;
                        }
                    };
                    if let Err(e) = self.overlay.send(to.peer_id, to.control_addr(), frame) {
                        self.counters.dropped_sends.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %to.peer_id, "{} not sent: {e}", message.kind());
                    }
                }
                Output::Disconnect { peer } => self.overlay.disconnect(peer.peer_id),
                Output::Deliver { envelope } => self.deliver(&envelope),
                Output::HeartbeatDue => {
                    let fleet = self.node.subtree().nodes;
                    if let Err(e) = self.broadcast(&Directive::Heartbeat { fleet }, false) {
                        tracing::error!("heartbeat: {e:#}");
                    }
                }
                Output::NeighbourUp { entry } => {
                    tracing::debug!(peer = %entry.peer.peer_id, "neighbour up");
                }
                Output::NeighbourDown { peer } => {
                    tracing::debug!(peer = %peer.peer_id, "neighbour down");
                }
            }
        }
    }

    fn deliver(&mut self, envelope: &Envelope) {
        let Some(directive) = Directive::decode(&envelope.body) else {
            tracing::warn!(
                seq = envelope.seq,
                "broadcast with an unknown directive: ignored"
            );
            return;
        };
        match directive {
            Directive::Heartbeat { fleet } => self.node.set_fleet_size(fleet),
            Directive::Rollout(rollout) => {
                tracing::info!(
                    rollout = rollout.spec.rollout,
                    seq = envelope.seq,
                    "rollout directive {}",
                    rollout.seq
                );
                if self
                    .announcements
                    .try_send(Delivered::Rollout(rollout))
                    .is_err()
                {
                    tracing::error!("delivery queue full: rollout directive dropped");
                }
            }
            Directive::Announce { manifest, origin } => {
                let verified =
                    SignedManifest::decode(&manifest).and_then(|m| m.verify(&self.config.trust));
                match verified {
                    Ok(manifest) => {
                        tracing::info!(root = %manifest.root(), seq = envelope.seq, "release announced");
                        let announcement = Announcement { manifest, origin };
                        if self
                            .announcements
                            .try_send(Delivered::Release(Box::new(announcement)))
                            .is_err()
                        {
                            tracing::error!("announcement queue full: release dropped");
                        }
                    }
                    Err(e) => {
                        self.counters
                            .refused_envelopes
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(seq = envelope.seq, "announced manifest refused: {e}");
                    }
                }
            }
        }
    }

    fn candidates(&mut self) -> Vec<SocketAddr> {
        self.node
            .swarm_candidates(SWARM_CANDIDATES, SWARM_OUTSIDE)
            .into_iter()
            .map(|e| e.peer.addr)
            .collect()
    }

    fn members(&self) -> MembersStatus {
        let stats = self.overlay.stats();
        let core = self.node.stats();
        MembersStatus {
            peer_id: self.node.me().peer.peer_id.to_string(),
            addr: self.config.listen,
            labels: self.config.certificate.labels().clone(),
            active: self
                .node
                .active()
                .iter()
                .map(|n| MemberStatus {
                    peer_id: n.entry.peer.peer_id.to_string(),
                    addr: n.entry.peer.addr,
                    rtt_ms: n.rtt.map(|d| d.as_secs_f64() * 1e3),
                    suspect: n.is_suspect(),
                    eager: n.eager,
                    reported_nodes: n.reported_nodes(),
                })
                .collect(),
            passive: entries(self.node.passive()),
            locality: entries(self.node.locality()),
            parent: self.node.parent().map(|p| p.peer_id.to_string()),
            latest_seq: self.node.latest(),
            slowness_factor: self.node.slowness_factor(),
            refused_peers: self.counters.refused_peers.load(Ordering::Relaxed),
            refused_envelopes: self.counters.refused_envelopes.load(Ordering::Relaxed),
            malformed_frames: self.counters.malformed_frames.load(Ordering::Relaxed)
                + stats.malformed_frames
                + stats.oversize_frames,
            dropped_sends: self.counters.dropped_sends.load(Ordering::Relaxed),
            unnamed_frames: self.counters.unnamed_frames.load(Ordering::Relaxed),
            declared_dead: core.declared_dead,
            joins_sent: core.joins_sent,
            delivered: core.delivered,
            duplicates: core.duplicates,
            frames_sent: stats.frames_sent,
            bytes_sent: stats.bytes_sent,
            frames_received: stats.frames_received,
            bytes_received: stats.bytes_received,
            connections: stats.connections,
        }
    }
}

fn entries(entries: &[Entry<Contact>]) -> Vec<MemberEntry> {
    entries
        .iter()
        .map(|e| MemberEntry {
            peer_id: e.peer.peer_id.to_string(),
            addr: e.peer.addr,
        })
        .collect()
}

/// A node's own summary: healthy, holding `releases` (root, complete).
pub fn own_summary(releases: Vec<(RootHash, bool)>) -> Summary {
    Summary::node(control::Status::Healthy, releases)
}
