//! The process's driver: one task that runs the sans-IO agent [`Machine`] (the control node,
//! the fetch policy and the rollout agent) over the libp2p [`overlay`](crate::overlay), and
//! hands what the machine decides beyond the control plane to a [`Host`].
//!
//! Every frame from a peer is a postcard-encoded [`Message`](shoal_core::control::Message);
//! its sender is known from the connection and its hello (whose admission certificate the
//! overlay has already checked with [`hello_check`]). Envelopes inside a message are verified
//! against the trust document before the machine sees them; a peer that sends a forged one is
//! counted and disconnected. Announced manifests and rollout directives are checked by the
//! machine itself.
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
mod host;
mod known;
pub mod renewal;
mod status;
mod task;

pub use contact::{Contact, control_addr};
pub use directive::{Directive, Hello};
pub use host::{Host, Input, InputReceiver, Inputs, Local, NoHost, inputs};
use known::{KnownPeers, MAX_KNOWN_PEERS};
pub use status::{
    FleetRelease, FleetStates, FleetStatus, MemberEntry, MemberStatus, MembersStatus,
};
use task::Task;

use crate::identity::Identity;
use crate::overlay::{self, Overlay};
use crate::revocations::SharedRevocations;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use shoal_core::admission::{self, AdmissionRequest, AdmissionResponse, Certificate};
use shoal_core::agent::machine::Machine;
pub use shoal_core::agent::machine::{SWARM_CANDIDATES, SWARM_OUTSIDE};
use shoal_core::control::{self, Entry, Place, Summary};
use shoal_core::keys::SecretKey;
use shoal_core::labels::Labels;
use shoal_core::trust::Trust;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// Commands waiting for the mesh task.
const COMMAND_QUEUE: usize = 64;
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
    /// Where the coordinator keeps its sequence number, and a member its revocation list.
    pub data_dir: PathBuf,
    /// The revocation list: peers whose certificate came from a listed token are refused.
    pub revocations: SharedRevocations,
    /// On the coordinator: how long the certificates it issues and renews are valid.
    pub certificate_ttl_secs: u64,
}

/// A request on the admission protocol.
#[derive(Debug, Serialize, Deserialize)]
pub enum MeshRequest {
    /// "Who are you?": how a node learns a seed's peer id from its address.
    Identify,
    /// Redeem an onboarding token for a certificate (coordinator only).
    Admission(AdmissionRequest),
    /// Renew a certificate before it expires (coordinator only); answered like an admission.
    Renewal {
        /// The encoded certificate.
        certificate: Vec<u8>,
    },
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
    Subtree(oneshot::Sender<Summary>),
    Rollout {
        directive: Box<shoal_core::rollout::Directive>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Revoked {
        list: Arc<shoal_core::revocation::Revocations>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Certificate(Certificate),
    Query {
        query: Arc<shoal_core::query::Query>,
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
/// `trust`, for the connection's peer id, valid now, from a token not in `revocations`. Passing
/// peers are remembered in `known`.
fn hello_check(
    trust: Arc<Trust>,
    revocations: SharedRevocations,
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
                    .and_then(|()| certificate.check_revocations(&revocations.current()))
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

/// Starts the mesh task on the current runtime, with `local`'s rollout agent in its machine
/// and `local`'s host carrying out what the machine decides. Returns its handle.
///
/// # Errors
///
/// If the control-plane port (listen port + 1) cannot be bound.
pub async fn start(
    identity: &Identity,
    config: Config,
    local: Local,
    shutdown: watch::Receiver<bool>,
) -> Result<Mesh> {
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
    let check = hello_check(
        config.trust.clone(),
        config.revocations.clone(),
        known.clone(),
        counters.clone(),
    );
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
    let unix_at_epoch = unix_now();
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
    let mut machine = Machine::new(node, local.agent, Some(config.trust.clone()), unix_at_epoch);
    machine.restore_revocations(config.revocations.current());
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    for seed in config.seeds.iter().copied() {
        tokio::spawn(find_seed(
            overlay.clone(),
            seed,
            commands.clone(),
            shutdown.clone(),
        ));
    }
    let task = Task {
        machine,
        host: local.host,
        overlay: overlay.clone(),
        known,
        counters,
        config,
        epoch,
    };
    tokio::spawn(task.run(command_rx, local.inputs, events, shutdown));
    Ok(Mesh {
        commands,
        overlay,
        me,
    })
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

    /// Coordinator only: adopts `list` as the revocation list and broadcasts it (kept for late
    /// joiners). Returns the broadcast's sequence number.
    ///
    /// # Errors
    ///
    /// If this process is not the coordinator or the mesh task has stopped.
    pub async fn broadcast_revocations(
        &self,
        list: shoal_core::revocation::Revocations,
    ) -> Result<u64> {
        self.ask(|reply| Command::Revoked {
            list: Arc::new(list),
            reply,
        })
        .await?
    }

    /// Coordinator only: broadcasts a fleet query (not kept: it is over in seconds). Its
    /// answers come up in the health summaries ([`subtree`](Self::subtree)). Returns the
    /// broadcast's sequence number.
    ///
    /// # Errors
    ///
    /// If this process is not the coordinator or the mesh task has stopped.
    pub async fn broadcast_query(&self, query: shoal_core::query::Query) -> Result<u64> {
        self.ask(|reply| Command::Query {
            query: Arc::new(query),
            reply,
        })
        .await?
    }

    /// Presents `certificate` (a renewed one) in the hellos of control streams opened from now.
    ///
    /// # Errors
    ///
    /// If the mesh task has stopped.
    pub async fn set_certificate(&self, certificate: Certificate) -> Result<()> {
        self.commands
            .send(Command::Certificate(certificate))
            .await
            .map_err(|_| anyhow::anyhow!("the control plane has stopped"))
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
    let request = MeshRequest::Admission(AdmissionRequest {
        token: token.encode(),
        labels: labels.clone(),
    });
    let answer = ask_coordinator(identity, coordinator, claims.coordinator_addr, &request)
        .await
        .with_context(|| {
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

/// Sends `request` to the coordinator (`peer` at `addr`) on the admission protocol from a
/// short-lived overlay on an ephemeral port with this node's identity, which proves its peer id,
/// and returns the answer's bytes. A coordinator busy with many joins, or restarting, may drop an
/// exchange: it is tried four times.
///
/// # Errors
///
/// If no attempt gets an answer.
pub(crate) async fn ask_coordinator(
    identity: &Identity,
    peer: PeerId,
    addr: SocketAddr,
    request: &MeshRequest,
) -> Result<Vec<u8>> {
    let ip = if addr.is_ipv4() { "0.0.0.0" } else { "::" };
    let any: SocketAddr = SocketAddr::new(ip.parse().context("unspecified address")?, 0);
    let refuse_all: overlay::HelloCheck = Arc::new(|_: &PeerId, _: &[u8]| false);
    let (overlay, _events) = overlay::start(
        identity,
        overlay::Config::new(any),
        Bytes::new(),
        refuse_all,
    )
    .await
    .context("cannot start a temporary control-plane endpoint")?;
    let body = Bytes::from(postcard::to_stdvec(request).context("cannot encode the request")?);
    let mut answer = Err(anyhow::anyhow!("no attempt made"));
    for attempt in 0..4u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        answer = overlay
            .request(
                Some(peer),
                control_addr(addr),
                body.clone(),
                Duration::from_secs(15),
            )
            .await
            .map_err(anyhow::Error::from);
        match &answer {
            Ok(_) => break,
            Err(e) => tracing::warn!(
                "exchange with the coordinator, attempt {} failed: {e:#}",
                attempt + 1
            ),
        }
    }
    overlay.shutdown().await;
    answer.map(|(_, bytes)| bytes.to_vec())
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
