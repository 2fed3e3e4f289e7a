//! The task that drives one release's [`Swarm`]: events in, actions out.

use crate::limits::Limits;
use crate::protocol::write_frame;
use crate::source::Source;
use crate::status::{BannedPeer, PeerStatus, ReleaseStatus};
use bytes::Bytes;
use libp2p_identity::PeerId;
use shoal_core::bitfield::Bitfield;
use shoal_core::content::{PieceIndex, RootHash};
use shoal_core::manifest::Manifest;
use shoal_core::swarm::{Action, DropReason, PeerKey, Received, Swarm};
use shoal_core::wire::piece::{
    MAX_DELTA_PIECES, MAX_HEADER_FRAME_BYTES, PieceHeader, PieceMessage, RejectReason,
};
use shoal_store::PieceWritten;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// Events queued for one swarm task before connection readers wait.
pub const EVENT_QUEUE: usize = 4096;
/// Bytes written to a piece stream between checks of the upload cap.
pub const SEND_CHUNK_BYTES: usize = 64 * 1024;
/// The shortest interval between two copies of the swarm's state into the shared status.
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// QUIC error code for a connection closed because the peer is banned or unresponsive.
pub const CLOSE_DROPPED: u32 = 2;

/// How the driver reaches one peer.
#[derive(Clone, Debug)]
pub struct Link {
    /// The peer's id.
    pub peer_id: PeerId,
    /// Its address.
    pub addr: SocketAddr,
    /// The connection.
    pub conn: quinn::Connection,
    /// Its control stream's outgoing queue.
    pub out: mpsc::Sender<PieceMessage>,
    /// Which connection to the peer this is (a peer may reconnect, or two connections may race).
    pub conn_id: u64,
}

/// The result of receiving one piece stream.
#[derive(Debug)]
pub enum PieceOutcome {
    /// The piece verified and the store took it.
    Stored(PieceWritten),
    /// The piece failed verification; nothing was written.
    Corrupt(String),
    /// The stream broke (ended early, reset, stalled): ask again.
    Broken(String),
    /// The store could not write it (full disk, IO error).
    StoreFailed(String),
    /// The payload was complete but did not match the root; these pieces are missing again.
    RootMismatch(Vec<u32>),
}

/// An input to a swarm task.
#[derive(Debug)]
pub enum Event {
    /// A peer takes part in the release.
    Joined {
        /// The peer.
        key: PeerKey,
        /// How to reach it.
        link: Link,
        /// Its verified pieces.
        have: Bitfield,
        /// Whether it is the origin.
        origin: bool,
    },
    /// A peer verified more pieces.
    Delta {
        /// The peer.
        key: PeerKey,
        /// The pieces.
        pieces: Vec<PieceIndex>,
    },
    /// A peer asks for a piece.
    Request {
        /// The peer.
        key: PeerKey,
        /// The piece.
        piece: PieceIndex,
    },
    /// A peer withdraws a request.
    Cancel {
        /// The peer.
        key: PeerKey,
        /// The piece.
        piece: PieceIndex,
    },
    /// A peer declined our request.
    Rejected {
        /// The peer.
        key: PeerKey,
        /// The piece.
        piece: PieceIndex,
        /// Why.
        reason: RejectReason,
    },
    /// A piece stream from a peer ended.
    Piece {
        /// The peer.
        key: PeerKey,
        /// The piece.
        piece: PieceIndex,
        /// What became of it.
        outcome: PieceOutcome,
    },
    /// One of our piece sends ended.
    Sent {
        /// The peer.
        key: PeerKey,
        /// The piece.
        piece: PieceIndex,
        /// Whether the peer received all of it.
        ok: bool,
        /// Which send this was (the same piece may go to the same peer twice, after a cancel).
        send_id: u64,
    },
    /// A peer's connection closed.
    Left {
        /// The peer.
        key: PeerKey,
        /// The connection that closed; a later one to the same peer stays.
        conn_id: u64,
    },
}

/// Drives one release's swarm until shutdown.
pub struct SwarmTask {
    root: RootHash,
    swarm: Swarm,
    source: Source,
    links: BTreeMap<PeerKey, Link>,
    /// Sends in progress, by send id.
    sending: BTreeMap<u64, (PeerKey, AbortHandle)>,
    next_send_id: u64,
    rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
    limits: Arc<Limits>,
    status: Arc<Mutex<ReleaseStatus>>,
    complete: watch::Sender<bool>,
    epoch: Instant,
    last_status: Option<Instant>,
    /// When a status change held back by the rate limit is to be published.
    status_due: Option<Instant>,
}

impl SwarmTask {
    /// A task for `swarm`, serving from `source`, publishing its state into `status`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        manifest: &Manifest,
        swarm: Swarm,
        source: Source,
        origin: bool,
        rx: mpsc::Receiver<Event>,
        tx: mpsc::Sender<Event>,
        limits: Arc<Limits>,
        status: Arc<Mutex<ReleaseStatus>>,
        complete: watch::Sender<bool>,
    ) -> Self {
        {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            s.root = manifest.root.to_hex();
            s.name = manifest.name();
            s.origin = origin;
            s.total = manifest.layout().map(|l| l.piece_count()).unwrap_or(0);
            s.size_bytes = manifest.size_bytes;
            s.path = source.payload_path().display().to_string();
        }
        let done = swarm.is_complete();
        complete.send_replace(done);
        Self {
            root: manifest.root,
            swarm,
            source,
            links: BTreeMap::new(),
            sending: BTreeMap::new(),
            next_send_id: 0,
            rx,
            tx,
            limits,
            status,
            complete,
            epoch: Instant::now(),
            last_status: None,
            status_due: None,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Runs until `shutdown` turns true or every sender is gone.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.act();
            self.publish(false);
            let now = self.now();
            let mut wake = self
                .swarm
                .poll_timeout(now)
                .unwrap_or(now + Duration::from_secs(3600));
            // A change held back by the rate limit is published when the limit allows, even if
            // nothing else happens: the last piece sent must show.
            if let Some(due) = self.status_due {
                wake = wake.min(due.saturating_duration_since(self.epoch));
            }
            let sleep = tokio::time::sleep_until((self.epoch + wake).into());
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                event = self.rx.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                () = sleep => {
                    let now = self.now();
                    self.swarm.handle_timeout(now);
                }
            }
        }
        self.publish(true);
    }

    fn handle(&mut self, event: Event) {
        let now = self.now();
        match event {
            Event::Joined {
                key,
                link,
                have,
                origin,
            } => {
                if self
                    .links
                    .get(&key)
                    .is_some_and(|old| old.conn_id != link.conn_id)
                {
                    // A new connection replaces the old one: what was asked on it is lost.
                    self.forget_link(key);
                }
                if self.swarm.handle_peer_joined(key, origin).is_err() {
                    return; // banned from this swarm
                }
                if self.swarm.handle_have(key, have).is_err() {
                    self.drop_link(key, "have-bitfield of the wrong length");
                    return;
                }
                self.links.insert(key, link);
            }
            Event::Delta { key, pieces } => {
                if self.swarm.contains(key) && self.swarm.handle_have_delta(key, &pieces).is_err() {
                    self.drop_link(key, "have-delta names a piece past the end");
                }
            }
            Event::Request { key, piece } => self.swarm.handle_request(key, piece),
            // A queued request is dropped; a piece already on its way is finished, because the
            // bytes already sent would be wasted and the asker stores a verified piece whenever
            // it arrives.
            Event::Cancel { key, piece } => self.swarm.handle_cancel(key, piece),
            Event::Rejected { key, piece, reason } => {
                self.swarm.handle_rejected(key, piece, reason, now);
            }
            Event::Sent {
                key,
                piece,
                ok,
                send_id,
            } => {
                if self.sending.remove(&send_id).is_some() {
                    self.swarm.handle_sent(key, piece, ok);
                }
            }
            Event::Left { key, conn_id } => {
                if self.links.get(&key).is_some_and(|l| l.conn_id == conn_id) {
                    self.forget_link(key);
                }
            }
            Event::Piece {
                key,
                piece,
                outcome,
            } => self.handle_piece(key, piece, outcome, now),
        }
    }

    fn forget_link(&mut self, key: PeerKey) {
        tracing::trace!(?key, "forgetting link");
        self.links.remove(&key);
        self.swarm.handle_peer_left(key);
        // The swarm forgot the peer's sends with it; their tasks stop here.
        self.sending.retain(|_, (peer, handle)| {
            if *peer == key {
                handle.abort();
            }
            *peer != key
        });
    }

    fn handle_piece(
        &mut self,
        key: PeerKey,
        piece: PieceIndex,
        outcome: PieceOutcome,
        now: Duration,
    ) {
        match outcome {
            PieceOutcome::Stored(written) => {
                self.swarm.handle_piece(key, piece, Received::Verified, now);
                if written == PieceWritten::Completed {
                    self.mark_complete();
                }
            }
            PieceOutcome::Corrupt(why) => {
                tracing::warn!(root = %self.root.short(), %piece, "corrupt piece from peer: {why}");
                self.swarm.handle_piece(key, piece, Received::Corrupt, now);
            }
            PieceOutcome::Broken(why) => {
                tracing::debug!(%piece, "piece stream broken: {why}");
                self.swarm.handle_request_failed(key, piece, now);
            }
            PieceOutcome::StoreFailed(why) => {
                tracing::error!(root = %self.root.short(), "cannot store piece {piece}: {why}");
                self.swarm
                    .handle_rejected(key, piece, RejectReason::Busy, now);
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                status.error = Some(why);
            }
            PieceOutcome::RootMismatch(bad) => {
                let bad: Vec<PieceIndex> = bad.into_iter().map(PieceIndex).collect();
                tracing::error!(
                    "payload did not match its root on disk; fetching {} pieces again",
                    bad.len()
                );
                self.swarm.handle_lost(&bad);
            }
        }
    }

    fn mark_complete(&mut self) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.completed_after_secs.is_none() {
            status.completed_after_secs = Some(self.epoch.elapsed().as_secs_f64());
        }
        drop(status);
        self.publish(true);
        self.complete.send_replace(true);
    }

    fn drop_link(&mut self, key: PeerKey, why: &str) {
        if let Some(link) = self.links.remove(&key) {
            tracing::warn!(peer = %link.peer_id, "dropping peer: {why}");
            link.conn.close(CLOSE_DROPPED.into(), why.as_bytes());
        }
        self.swarm.handle_peer_left(key);
    }

    /// Carries out every action the swarm has now.
    fn act(&mut self) {
        let mut announced = Vec::new();
        let now = self.now();
        while let Some(action) = self.swarm.poll_action(now) {
            match action {
                Action::Request { peer, piece } => self.say(
                    peer,
                    PieceMessage::Request {
                        root: self.root,
                        piece,
                    },
                ),
                Action::Cancel { peer, piece } => self.say(
                    peer,
                    PieceMessage::Cancel {
                        root: self.root,
                        piece,
                    },
                ),
                Action::Reject {
                    peer,
                    piece,
                    reason,
                } => {
                    self.say(
                        peer,
                        PieceMessage::Reject {
                            root: self.root,
                            piece,
                            reason,
                        },
                    );
                }
                Action::Send { peer, piece } => self.send(peer, piece),
                Action::Announce { piece } => announced.push(piece),
                Action::Disconnect { peer, reason } => {
                    let Some(link) = self.links.remove(&peer) else {
                        continue;
                    };
                    let why = match reason {
                        DropReason::Corrupt { piece } => {
                            format!("sent piece {piece} that failed verification")
                        }
                        DropReason::Unresponsive => "requests timed out".to_owned(),
                    };
                    tracing::warn!(peer = %link.peer_id, addr = %link.addr, "dropping peer: {why}");
                    let why = if self.swarm.is_banned(peer) && reason == DropReason::Unresponsive {
                        format!("{why}, {} times", shoal_core::swarm::MAX_UNRESPONSIVE_DROPS)
                    } else {
                        why
                    };
                    if self.swarm.is_banned(peer) {
                        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                        status.banned.push(BannedPeer {
                            peer_id: link.peer_id.to_string(),
                            addr: link.addr,
                            reason: why.clone(),
                        });
                    }
                    link.conn.close(CLOSE_DROPPED.into(), why.as_bytes());
                }
            }
        }
        if !announced.is_empty() {
            for chunk in announced.chunks(MAX_DELTA_PIECES) {
                let keys: Vec<PeerKey> = self.links.keys().copied().collect();
                for key in keys {
                    self.say(
                        key,
                        PieceMessage::HaveDelta {
                            root: self.root,
                            pieces: chunk.to_vec(),
                        },
                    );
                }
            }
        }
    }

    /// Queues a control message; a peer whose queue is full is too slow to keep and is dropped.
    fn say(&mut self, key: PeerKey, msg: PieceMessage) {
        let Some(link) = self.links.get(&key) else {
            return;
        };
        match link.out.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.drop_link(key, "control queue full"),
            // The connection is closing; its `Left` event follows.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn send(&mut self, key: PeerKey, piece: PieceIndex) {
        let Some(link) = self.links.get(&key) else {
            self.swarm.handle_sent(key, piece, false);
            return;
        };
        tracing::trace!(?key, %piece, conn_id = link.conn_id, "send");
        let conn = link.conn.clone();
        let source = self.source.clone();
        let limits = self.limits.clone();
        let tx = self.tx.clone();
        let root = self.root;
        let send_id = self.next_send_id;
        self.next_send_id += 1;
        let handle = tokio::spawn(async move {
            let result = send_piece(&conn, &source, &limits, root, piece).await;
            if let Err(e) = &result {
                tracing::debug!(%piece, "send failed: {e:#}");
            }
            let _ = tx
                .send(Event::Sent {
                    key,
                    piece,
                    ok: result.is_ok(),
                    send_id,
                })
                .await;
        });
        self.sending.insert(send_id, (key, handle.abort_handle()));
    }

    /// Copies the swarm's state into the shared status, at most once per `STATUS_EVERY` unless
    /// `force`; a change held back is published by the run loop once the interval has passed.
    fn publish(&mut self, force: bool) {
        let now = Instant::now();
        if let Some(last) = self
            .last_status
            .filter(|&t| !force && now - t < STATUS_EVERY)
        {
            self.status_due = Some(last + STATUS_EVERY);
            return;
        }
        self.last_status = Some(now);
        self.status_due = None;
        let stats = self.swarm.stats();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.have = self.swarm.have().count();
        status.complete = self.swarm.is_complete();
        status.bytes_down = stats.bytes_down;
        status.bytes_up = stats.bytes_up;
        status.pieces_down = stats.pieces_down;
        status.pieces_up = stats.pieces_up;
        status.corrupt_pieces = stats.corrupt_pieces;
        status.timeouts = stats.timeouts;
        status.false_haves = stats.false_haves;
        status.pieces_resent = stats.pieces_resent;
        status.declined_sent_elsewhere = stats.declined_sent_elsewhere;
        status.sent_elsewhere = stats.sent_elsewhere;
        status.endgame_requests = stats.endgame_requests;
        status.origin_spared = stats.origin_spared;
        status.uploads_in_progress = self.swarm.uploads_in_progress();
        status.queued_requests = self.swarm.queued_requests();
        status.peers = self
            .swarm
            .peers()
            .filter_map(|p| {
                let link = self.links.get(&p.peer)?;
                Some(PeerStatus {
                    peer_id: link.peer_id.to_string(),
                    addr: link.addr,
                    origin: p.is_origin,
                    have: p.have,
                    in_flight: p.in_flight,
                    rate_bytes_per_sec: p.rate_bytes_per_sec,
                    bytes_down: p.bytes_down,
                    bytes_up: p.bytes_up,
                })
            })
            .collect();
    }
}

/// Sends one verified piece on a new stream and waits until the peer has all of it.
async fn send_piece(
    conn: &quinn::Connection,
    source: &Source,
    limits: &Limits,
    root: RootHash,
    piece: PieceIndex,
) -> anyhow::Result<()> {
    let reader = source.clone();
    let data = tokio::task::spawn_blocking(move || reader.read_piece(piece)).await??;
    let data = Bytes::from(data);
    let mut stream = conn.open_uni().await?;
    let len = u32::try_from(data.len())?;
    write_frame(
        &mut stream,
        &PieceHeader { root, piece, len },
        MAX_HEADER_FRAME_BYTES,
    )
    .await?;
    let mut at = 0;
    while at < data.len() {
        let end = (at + SEND_CHUNK_BYTES).min(data.len());
        limits.upload(end - at).await;
        stream.write_chunk(data.slice(at..end)).await?;
        at = end;
    }
    stream.finish()?;
    // Done when the peer has read it all (acknowledged), so upload slots measure the link.
    stream.stopped().await?;
    Ok(())
}
