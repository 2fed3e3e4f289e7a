//! One data-plane connection, from the handshake to its close: the duplicate check, the hello
//! and its admission check, the control stream's messages handed to the releases' swarm tasks,
//! and the piece streams the peer opens.

use super::{
    CLOSE_DUPLICATE, CLOSE_PROTOCOL, CLOSE_REFUSED, CONNECT_TIMEOUT, CONTROL_QUEUE, ConnEntry,
    HELLO_TIMEOUT, MAX_REFUSALS_KEPT, Node, lock,
};
use crate::protocol::{BodyError, FrameReader, write_frame};
use crate::source::Source;
use crate::swarm_task::{Event, Link, PieceOutcome};
use crate::transport;
use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use shoal_core::agent::peering::{self, Verdict};
use shoal_core::content::RootHash;
use shoal_core::swarm::PeerKey;
use shoal_core::wire::piece::{
    MAX_CONTROL_FRAME_BYTES, MAX_HEADER_FRAME_BYTES, PieceHeader, PieceMessage, RejectReason,
};
use shoal_store::StoreError;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

impl Node {
    /// Serves one connection until it closes; `dialed` is the address this node dialled, if it
    /// did.
    pub(super) async fn run_connection(&self, conn: quinn::Connection, dialed: Option<SocketAddr>) {
        let addr = conn.remote_address();
        let mut linked = false;
        if let Err(e) = self
            .serve_connection(conn.clone(), dialed.is_some(), &mut linked)
            .await
        {
            tracing::debug!(%addr, "connection ended: {e:#}");
            if conn.close_reason().is_none() {
                conn.close(CLOSE_PROTOCOL.into(), format!("{e:#}").as_bytes());
            }
        }
        self.note_refusal(&conn, addr);
        if let (Some(dialed), false) = (dialed, linked) {
            self.peering(|p, now| p.dial_failed(dialed, now));
        }
    }

    /// Remembers why the peer at `addr` closed `conn` if it closed it to refuse this node, and
    /// forgets an earlier refusal by `addr` if it closed it for any other reason.
    fn note_refusal(&self, conn: &quinn::Connection, addr: SocketAddr) {
        let close = match conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code == quinn::VarInt::from_u32(CLOSE_REFUSED) =>
            {
                close
            }
            _ => {
                lock(&self.inner.refused_by).remove(&addr);
                return;
            }
        };
        let reason = String::from_utf8_lossy(&close.reason).into_owned();
        tracing::warn!(%addr, "refused by the peer: {reason}");
        let mut refused = lock(&self.inner.refused_by);
        if refused.len() < MAX_REFUSALS_KEPT || refused.contains_key(&addr) {
            refused.insert(addr, reason);
        }
    }

    async fn serve_connection(
        &self,
        conn: quinn::Connection,
        dialed_by_me: bool,
        linked: &mut bool,
    ) -> Result<()> {
        let me = self.peer_id();
        let peer = transport::remote_peer_id(&conn)?;
        if peer == me {
            conn.close(CLOSE_DUPLICATE.into(), b"connected to self");
            return Ok(());
        }
        let addr = conn.remote_address();
        let key = self.key(peer);
        // Control stream: the dialling side opens it.
        let (mut send, recv) = if dialed_by_me {
            conn.open_bi().await?
        } else {
            tokio::time::timeout(CONNECT_TIMEOUT, conn.accept_bi())
                .await
                .map_err(|_| anyhow!("peer {addr} opened no control stream"))??
        };
        let (out, mut out_rx) = mpsc::channel::<PieceMessage>(CONTROL_QUEUE);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (verdict, outputs) = {
            let mut conns = lock(&self.inner.conns);
            let mut peering = lock(&self.inner.peering);
            if let Some(old) = conns.get(&peer).filter(|c| c.conn.close_reason().is_some()) {
                peering.disconnected(peer, old.id, self.now());
                conns.remove(&peer);
            }
            let verdict = peering.connected(peer, id, addr, dialed_by_me);
            *linked = true;
            let mut outputs: Vec<_> = std::iter::from_fn(|| peering.poll_output()).collect();
            if verdict == Verdict::Keep {
                let entry = ConnEntry {
                    id,
                    conn: conn.clone(),
                    out: out.clone(),
                    addr,
                };
                // The replaced connection is closed here: it is no longer in the table the
                // `Close` output would find it in.
                if let Some(old) = conns.insert(peer, entry) {
                    old.conn
                        .close(CLOSE_DUPLICATE.into(), b"duplicate connection");
                    outputs.retain(|o| *o != peering::Output::Close { peer, conn: old.id });
                }
            }
            (verdict, outputs)
        };
        self.carry_out(outputs);
        if verdict == Verdict::Duplicate {
            conn.close(CLOSE_DUPLICATE.into(), b"duplicate connection");
            return Ok(());
        }
        // Hello, then Have for every release here.
        let _ = out.try_send(PieceMessage::Hello {
            labels: self.inner.config.labels.clone(),
            certificate: lock(&self.inner.certificate).clone(),
        });
        let haves: Vec<PieceMessage> = lock(&self.inner.releases)
            .iter()
            .map(|(root, e)| PieceMessage::Have {
                root: *root,
                pieces: e.source_have(),
                origin: e.origin,
            })
            .collect();
        for have in haves {
            let _ = out.try_send(have);
        }
        let writer = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if write_frame(&mut send, &msg, MAX_CONTROL_FRAME_BYTES)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let uni = tokio::spawn(self.clone().accept_pieces(conn.clone(), key));
        let link = Link {
            peer_id: peer,
            addr,
            conn: conn.clone(),
            out: out.clone(),
            conn_id: id,
        };
        let result = self.read_control(recv, key, &link).await;
        writer.abort();
        uni.abort();
        {
            let mut conns = lock(&self.inner.conns);
            if conns.get(&peer).is_some_and(|c| c.id == id) {
                conns.remove(&peer);
            }
        }
        self.peering(|p, now| p.disconnected(peer, id, now));
        let txs: Vec<_> = lock(&self.inner.releases)
            .values()
            .map(|e| e.tx.clone())
            .collect();
        for tx in txs {
            let _ = tx.send(Event::Left { key, conn_id: id }).await;
        }
        result
    }

    async fn read_control(&self, recv: quinn::RecvStream, key: PeerKey, link: &Link) -> Result<()> {
        let mut reader = FrameReader::without_idle_timeout(recv, MAX_CONTROL_FRAME_BYTES);
        let mut closed = std::pin::pin!(link.conn.closed());
        let mut admitted = self.inner.config.admission.is_none();
        // The certificate this connection was admitted with, while it lasts.
        let mut _registration = None;
        // A peer that must be admitted has until then to say its hello.
        let hello_deadline = tokio::time::sleep(HELLO_TIMEOUT);
        let mut hello_deadline = std::pin::pin!(hello_deadline);
        loop {
            let msg = tokio::select! {
                _ = &mut closed => return Ok(()),
                () = &mut hello_deadline, if !admitted => {
                    self.inner.refused_peers.fetch_add(1, Ordering::Relaxed);
                    let reason = format!("no hello within {HELLO_TIMEOUT:?}");
                    link.conn.close(CLOSE_REFUSED.into(), reason.as_bytes());
                    bail!("peer {} refused: {reason}", link.peer_id);
                }
                msg = reader.next::<PieceMessage>() => msg?,
            };
            let Some(msg) = msg else { return Ok(()) };
            if !admitted && !matches!(msg, PieceMessage::Hello { .. }) {
                self.inner.refused_peers.fetch_add(1, Ordering::Relaxed);
                bail!("peer {} sent {msg:?} before a hello", link.peer_id);
            }
            let (root, event) = match msg {
                PieceMessage::Hello {
                    labels,
                    certificate,
                } => {
                    if let Some(check) = &self.inner.config.admission {
                        // Registered before the check, so a recheck after a change of rules
                        // cannot miss it.
                        _registration = Some(self.inner.admitted.register(
                            link.peer_id,
                            Bytes::from(certificate.clone()),
                            link.conn.clone(),
                        ));
                        if let Err(reason) = (check.0)(&link.peer_id, &certificate) {
                            self.inner.refused_peers.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(peer = %link.peer_id, addr = %link.addr, "refused on the data plane: {reason}");
                            // The refused side hears why, and that it was refused, not dropped.
                            link.conn.close(CLOSE_REFUSED.into(), reason.as_bytes());
                            bail!("peer {} refused: {reason}", link.peer_id);
                        }
                        admitted = true;
                    }
                    self.peering(|p, _| p.hello(link.peer_id, link.conn_id, labels));
                    continue;
                }
                PieceMessage::Peers { peers, .. } => {
                    let peers = peers.into_iter().map(|p| (p.addr, p.labels)).collect();
                    self.peering(|p, _| p.learned(link.peer_id, peers));
                    continue;
                }
                PieceMessage::Have {
                    root,
                    pieces,
                    origin,
                } => (
                    root,
                    Event::Joined {
                        key,
                        link: link.clone(),
                        have: pieces,
                        origin,
                    },
                ),
                PieceMessage::HaveDelta { root, pieces } => (root, Event::Delta { key, pieces }),
                PieceMessage::Request { root, piece } => (root, Event::Request { key, piece }),
                PieceMessage::Cancel { root, piece } => (root, Event::Cancel { key, piece }),
                PieceMessage::Reject {
                    root,
                    piece,
                    reason,
                } => (root, Event::Rejected { key, piece, reason }),
            };
            let tx = {
                let releases = lock(&self.inner.releases);
                let tx = releases.get(&root).map(|e| e.tx.clone());
                if tx.is_none() {
                    // Kept while the release lock is held, so an `add` of this release cannot
                    // slip in between and miss it.
                    self.keep_unclaimed(link, root, &event);
                }
                tx
            };
            match tx {
                Some(tx) => tx
                    .send(event)
                    .await
                    .map_err(|_| anyhow!("node is shutting down"))?,
                None => {
                    if let Event::Request { piece, .. } = event {
                        let _ = link.out.try_send(PieceMessage::Reject {
                            root,
                            piece,
                            reason: RejectReason::UnknownRelease,
                        });
                    }
                }
            }
        }
    }

    /// Accepts piece streams on `conn`, each in its own task.
    async fn accept_pieces(self, conn: quinn::Connection, key: PeerKey) {
        while let Ok(recv) = conn.accept_uni().await {
            let node = self.clone();
            tokio::spawn(async move { node.receive_piece(recv, key).await });
        }
    }

    async fn receive_piece(&self, recv: quinn::RecvStream, key: PeerKey) {
        let mut reader = FrameReader::new(recv, MAX_HEADER_FRAME_BYTES);
        let header = match reader.next::<PieceHeader>().await {
            Ok(Some(header)) => header,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("piece stream without a valid header: {e:#}");
                return;
            }
        };
        tracing::trace!(piece = %header.piece, "piece stream accepted");
        let entry = {
            let releases = lock(&self.inner.releases);
            releases
                .get(&header.root)
                .map(|e| (e.tx.clone(), e.source.clone(), e.layout))
        };
        let Some((tx, source, layout)) = entry else {
            return;
        };
        let Source::Store(release) = source else {
            return; // an origin serving from a file takes no pieces
        };
        let piece = header.piece;
        let outcome = if !layout.contains(piece) || header.len != layout.piece_len(piece) {
            PieceOutcome::Corrupt(format!("piece {piece} announced with {} bytes", header.len))
        } else {
            let limits = self.inner.limits.clone();
            match reader
                .read_body(header.len as usize, |n| {
                    let limits = limits.clone();
                    async move { limits.download(n).await }
                })
                .await
            {
                Err(BodyError::Long { len }) => {
                    PieceOutcome::Corrupt(format!("more than {len} bytes for piece {piece}"))
                }
                Err(e @ BodyError::TooSlow { .. }) => {
                    self.inner
                        .slow_piece_streams
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%piece, "piece stream dropped: {e}");
                    PieceOutcome::Broken(e.to_string())
                }
                Err(e) => PieceOutcome::Broken(e.to_string()),
                Ok(data) => {
                    let written =
                        tokio::task::spawn_blocking(move || release.write_piece(piece, &data))
                            .await;
                    match written {
                        Ok(Ok(w)) => PieceOutcome::Stored(w),
                        Ok(Err(StoreError::BadPiece { source, .. })) => {
                            PieceOutcome::Corrupt(source.to_string())
                        }
                        Ok(Err(StoreError::RootMismatch { bad_pieces, .. })) => {
                            PieceOutcome::RootMismatch(bad_pieces)
                        }
                        Ok(Err(e)) => PieceOutcome::StoreFailed(e.to_string()),
                        Err(e) => PieceOutcome::StoreFailed(e.to_string()),
                    }
                }
            }
        };
        tracing::trace!(%piece, "piece stream done: {outcome:?}");
        let _ = tx
            .send(Event::Piece {
                key,
                piece,
                outcome,
            })
            .await;
    }

    /// Remembers a `Have` or `HaveDelta` for a release this node does not hold (yet).
    fn keep_unclaimed(&self, link: &Link, root: RootHash, event: &Event) {
        let mut peering = lock(&self.inner.peering);
        match event {
            Event::Joined { have, origin, .. } => {
                peering.keep_have(link.peer_id, link.conn_id, root, have.clone(), *origin);
            }
            Event::Delta { pieces, .. } => {
                peering.keep_delta(link.peer_id, link.conn_id, root, pieces);
            }
            _ => {}
        }
    }
}
