//! A misbehaving swarm peer for the end-to-end tests. It speaks Shoal's real data-plane protocol
//! over real QUIC sockets, claims to have every piece of one release, and then misbehaves in one
//! chosen way. It lives in the tests, never in the shipped binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use shoal_core::bitfield::Bitfield;
use shoal_core::content::{PieceLayout, RootHash};
use shoal_core::labels::Labels;
use shoal_core::manifest::SignedManifest;
use shoal_core::wire::piece::{
    MAX_CONTROL_FRAME_BYTES, MAX_HEADER_FRAME_BYTES, PieceHeader, PieceMessage, RejectReason,
};
use shoal_net::protocol::{FrameReader, write_frame};
use shoal_net::transport::Congestion;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the peer misbehaves after advertising every piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers every request with the right number of wrong bytes.
    Corrupt,
    /// Never answers a request.
    Silent,
    /// Sends half of each piece, then ends the stream.
    Short,
    /// Sends each piece with extra bytes after it.
    Long,
    /// Answers every request with "not have".
    LyingHave,
    /// Sends a control frame that announces 16 MiB, over the limit.
    OversizeFrame,
    /// Sends each piece at 100 bytes a second and never its last byte, holding the stream until
    /// the receiver drops it.
    Trickle,
}

/// A running bad peer; it stops when dropped.
pub struct BadPeer {
    pub addr: SocketAddr,
    pub peer_id: String,
    requests: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for BadPeer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl BadPeer {
    /// Starts a bad peer for the release of `manifest` on a free loopback port.
    pub fn start(manifest: &Path, how: Misbehaviour) -> Self {
        let signed = SignedManifest::decode(&std::fs::read(manifest).unwrap()).unwrap();
        let root = signed.manifest.root;
        let layout = signed.manifest.layout().unwrap();
        let (runtime, identity, endpoint) = super::quic_peer::start(Congestion::Bbr);
        let peer_id = identity.peer_id().to_string();
        let addr = endpoint.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        runtime.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        let _ = serve(conn, root, layout, how, &counter).await;
                    }
                });
            }
        });
        Self {
            addr,
            peer_id,
            requests,
            runtime: Some(runtime),
        }
    }

    /// The piece requests this peer has received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

async fn serve(
    conn: quinn::Connection,
    root: RootHash,
    layout: PieceLayout,
    how: Misbehaviour,
    requests: &AtomicU64,
) -> anyhow::Result<()> {
    let (mut send, recv) = conn.accept_bi().await?;
    write_frame(
        &mut send,
        &PieceMessage::Hello {
            labels: Labels::default(),
            certificate: Vec::new(),
        },
        MAX_CONTROL_FRAME_BYTES,
    )
    .await?;
    let have = PieceMessage::Have {
        root,
        pieces: Bitfield::full(layout.piece_count()),
        origin: false,
    };
    write_frame(&mut send, &have, MAX_CONTROL_FRAME_BYTES).await?;
    if how == Misbehaviour::OversizeFrame {
        // Length 16 MiB, version 1, then a little garbage.
        send.write_all(&[0x01, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff])
            .await?;
    }
    let mut reader = FrameReader::without_idle_timeout(recv, MAX_CONTROL_FRAME_BYTES);
    while let Some(msg) = reader.next::<PieceMessage>().await? {
        let PieceMessage::Request { piece, .. } = msg else {
            continue;
        };
        requests.fetch_add(1, Ordering::Relaxed);
        let len = layout.piece_len(piece) as usize;
        let body = match how {
            Misbehaviour::Silent | Misbehaviour::OversizeFrame => continue,
            Misbehaviour::LyingHave => {
                let reject = PieceMessage::Reject {
                    root,
                    piece,
                    reason: RejectReason::NotHave,
                };
                write_frame(&mut send, &reject, MAX_CONTROL_FRAME_BYTES).await?;
                continue;
            }
            Misbehaviour::Corrupt | Misbehaviour::Trickle => vec![0xab; len],
            Misbehaviour::Short => vec![0xab; len / 2],
            Misbehaviour::Long => vec![0xab; len + 100],
        };
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut stream = conn.open_uni().await?;
            let header = PieceHeader {
                root,
                piece,
                len: len as u32,
            };
            write_frame(&mut stream, &header, MAX_HEADER_FRAME_BYTES).await?;
            if how == Misbehaviour::Trickle {
                // Every byte but the last, so that even the smallest piece never completes.
                for chunk in body[..len.saturating_sub(1)].chunks(100) {
                    stream.write_all(chunk).await?;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                let _ = stream.stopped().await;
                return Ok(());
            }
            stream.write_all(&body).await?;
            stream.finish()?;
            let _ = stream.stopped().await;
            anyhow::Ok(())
        });
    }
    Ok(())
}
