//! The mesh task: drives the process's agent [`Machine`] over the overlay, and hands what the
//! machine decides beyond the control plane to the [`Host`].
//!
//! `select! { biased; shutdown, commands, host inputs, overlay events, the machine's timer }`;
//! every arm is one call into the machine, then [`Task::drain`] carries out its outputs.

use super::host::{Host, Input, InputReceiver};
use super::known::KnownPeers;
use super::status::{MemberEntry, MemberStatus, MembersStatus};
use super::{
    Command, Config, Contact, Counters, Directive, FleetStatus, Hello, MeshRequest, MeshResponse,
    unix_now, write_sequence,
};
use crate::overlay::{Event, Overlay};
use crate::revocations::not_revoked;
use anyhow::{Result, bail};
use bytes::Bytes;
use libp2p_identity::PeerId;
use shoal_core::admission::{self, AdmissionResponse};
use shoal_core::agent::machine::{self, Machine};
use shoal_core::control::{Entry, Envelope, Message, Output};
use shoal_core::revocation::Revocations;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub(super) struct Task {
    pub(super) machine: Machine<Contact, Contact>,
    pub(super) host: Box<dyn Host>,
    pub(super) overlay: Overlay,
    pub(super) known: Arc<Mutex<KnownPeers>>,
    pub(super) counters: Arc<Counters>,
    pub(super) config: Config,
    pub(super) epoch: Instant,
}

impl Task {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inputs: InputReceiver,
        mut events: mpsc::Receiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.drain();
        loop {
            let deadline = self.epoch + self.machine.poll_timeout();
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                Some(command) = commands.recv() => self.handle_command(command),
                Some(input) = inputs.0.recv() => self.handle_input(input),
                Some(event) = events.recv() => self.handle_event(event),
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = self.now();
                    self.machine.handle_timeout(now);
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
            let node = self.machine.control();
            let active = node.active().iter().map(|n| &n.entry);
            active
                .chain(node.passive())
                .chain(node.locality())
                .find(|e| e.peer == probe)
                .map(|e| e.peer)
        })
    }

    fn handle_input(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Stored { root, complete } => self.machine.release_stored(root, complete, now),
            Input::Prepared { service, result } => {
                self.machine.handle_prepared(now, &service, result);
            }
            Input::Switched { service, result } => {
                self.machine.handle_switched(now, &service, result);
            }
            Input::Checked { service, result } => self.machine.handle_check(now, &service, result),
            Input::Crashed { service, reason } => {
                tracing::warn!(%service, "{reason}");
                self.machine.handle_crashed(&service, reason);
            }
            Input::Drain { drained, reply } => {
                self.machine.set_drained(drained);
                self.drain();
                let _ = reply.send(());
            }
        }
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
                    self.machine.handle_disconnected(now, from);
                    return;
                }
                self.machine.handle_message(now, from, message);
            }
            Event::Request { peer, body, reply } => {
                let answer = self.answer(peer, &body);
                let _ = reply.send(Bytes::from(
                    postcard::to_stdvec(&answer).unwrap_or_default(),
                ));
            }
            Event::Disconnected { peer } => {
                if let Some(contact) = self.contact(peer) {
                    self.machine.handle_disconnected(now, contact);
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
                        &self.config.revocations.current(),
                        &request,
                        &peer.to_bytes(),
                        unix_now(),
                        self.config.certificate_ttl_secs,
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
            Ok(MeshRequest::Renewal { certificate }) => {
                let response = match &self.config.source_key {
                    Some(key) => shoal_core::renewal::respond(
                        key,
                        &self.config.trust,
                        &self.config.revocations.current(),
                        &certificate,
                        &peer.to_bytes(),
                        unix_now(),
                        self.config.certificate_ttl_secs,
                    ),
                    None => AdmissionResponse::Refused {
                        reason: "this process is not a coordinator: renew at the coordinator"
                            .into(),
                    },
                };
                match &response {
                    AdmissionResponse::Refused { reason } => {
                        self.counters.refused_peers.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, "renewal refused: {reason}");
                    }
                    AdmissionResponse::Admitted { .. } => {
                        tracing::info!(%peer, "certificate renewed");
                    }
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
                let node = self.machine.control();
                let _ = reply.send(FleetStatus::from_summary(&node.subtree(), node.latest()));
            }
            Command::Subtree(reply) => {
                let _ = reply.send(self.machine.control().subtree());
            }
            Command::Rollout { directive, reply } => {
                let _ = reply.send(self.broadcast(&Directive::Rollout(directive.into()), true));
            }
            Command::Revoked { list, reply } => {
                self.config.revocations.replace(Arc::clone(&list));
                let now = self.now();
                self.machine.issue_revocations(now, Arc::clone(&list));
                let _ = reply.send(self.broadcast(&Directive::Revoked(list), true));
            }
            Command::Query { query, reply } => {
                let _ = reply.send(self.broadcast(&Directive::Query(query), false));
            }
            Command::Certificate(certificate) => {
                let hello = Hello {
                    addr: self.config.listen,
                    certificate: certificate.encode(),
                };
                match postcard::to_stdvec(&hello) {
                    Ok(bytes) => self.overlay.set_hello(Bytes::from(bytes)),
                    Err(e) => tracing::error!("cannot encode the hello: {e}"),
                }
                self.config.certificate = certificate;
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
                self.machine.control_mut().add_seed(contact);
            }
        }
    }

    fn broadcast(&mut self, directive: &Directive, keep: bool) -> Result<u64> {
        let Some(key) = &self.config.source_key else {
            bail!("only the coordinator broadcasts");
        };
        let seq = self.machine.control_mut().next_seq();
        let envelope = Envelope::sign(key, seq, keep, Bytes::from(directive.encode()));
        write_sequence(&self.config.data_dir, seq);
        let now = self.now();
        self.machine.control_mut().broadcast(now, envelope);
        Ok(seq)
    }

    /// Carries out everything the machine asks for, then lets the host show the agent's state
    /// if it may have changed.
    fn drain(&mut self) {
        while let Some(output) = self.machine.poll_output() {
            match output {
                machine::Output::Control(output) => self.carry(output),
                machine::Output::AddRelease { manifest, origin } => {
                    let root = manifest.root();
                    let ok = self.host.add_release(&manifest, origin);
                    let now = self.now();
                    self.machine.release_added(root, ok, now);
                }
                machine::Output::ManifestRefused(reason) => {
                    self.counters
                        .refused_envelopes
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("announced manifest refused: {reason}");
                }
                machine::Output::Connect(peers) => self.host.connect(&peers),
                machine::Output::Execute { service, command } => {
                    if let Some(agent) = self.machine.agent() {
                        self.host.execute(agent, service, command);
                    }
                }
                machine::Output::Persist => {
                    if let Some(agent) = self.machine.agent() {
                        self.host.persist(agent);
                    }
                }
                machine::Output::Refused(refusal) => {
                    tracing::warn!("rollout directive refused: {refusal}");
                }
                machine::Output::CutOff(list) => self.cut_off_revoked(&list),
                machine::Output::Revocations(list) => {
                    tracing::info!(
                        generation = list.generation,
                        "{} onboarding tokens revoked",
                        list.entries().len()
                    );
                    self.config.revocations.replace(list);
                    if let Err(e) = self.config.revocations.save(&self.config.data_dir) {
                        tracing::error!("cannot keep the revocation list: {e:#}");
                    }
                }
            }
        }
        if self.machine.take_agent_changed()
            && let Some(agent) = self.machine.agent()
        {
            self.host.changed(agent);
        }
    }

    /// Cuts off the control-plane peers whose certificate `list` revokes: the list reaches links
    /// that are already up, not only those opened after it.
    fn cut_off_revoked(&self, list: &Revocations) {
        let cut = self.overlay.recheck(|_, hello| {
            let hello = postcard::from_bytes::<Hello>(hello).map_err(|e| e.to_string())?;
            not_revoked(list, &hello.certificate)
        });
        for (peer, reason) in cut {
            self.counters.refused_peers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "cut off on the control plane: {reason}");
        }
    }

    /// Carries out one of the control node's outputs.
    fn carry(&mut self, output: Output<Contact>) {
        match output {
            Output::Send { to, message } => {
                let frame = match postcard::to_stdvec(&message) {
                    Ok(frame) => Bytes::from(frame),
                    Err(e) => {
                        tracing::error!("cannot encode a {} message: {e}", message.kind());
                        return;
                    }
                };
                if let Err(e) = self.overlay.send(to.peer_id, to.control_addr(), frame) {
                    self.counters.dropped_sends.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %to.peer_id, "{} not sent: {e}", message.kind());
                }
            }
            Output::Disconnect { peer } => self.overlay.disconnect(peer.peer_id),
            Output::Deliver { envelope } => {
                tracing::debug!(seq = envelope.seq, "broadcast delivered");
            }
            Output::HeartbeatDue => {
                let fleet = self.machine.control().subtree().nodes;
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

    fn members(&self) -> MembersStatus {
        let stats = self.overlay.stats();
        let node = self.machine.control();
        let core = node.stats();
        MembersStatus {
            peer_id: node.me().peer.peer_id.to_string(),
            addr: self.config.listen,
            labels: self.config.certificate.labels().clone(),
            active: node
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
            passive: entries(node.passive()),
            locality: entries(node.locality()),
            parent: node.parent().map(|p| p.peer_id.to_string()),
            latest_seq: node.latest(),
            slowness_factor: node.slowness_factor(),
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
            broadcast_lag: node.broadcast_lag(),
            health_reports_sent: core.health_reports_sent,
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
