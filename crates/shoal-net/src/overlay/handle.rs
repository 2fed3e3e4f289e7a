//! [`Overlay`], the owner's handle: queue frames, drop links, ask for admission, read counters.

use super::error::{RequestError, SendError};
use super::outbound::Writers;
use super::request::exchange;
use super::stats::{Counters, Stats, bump};
use super::swarm_task::Command;
use crate::admitted::Admitted;
use bytes::Bytes;
use libp2p_identity::PeerId;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

/// A running overlay: the handle to the task that owns the libp2p swarm, made by
/// [`start`](super::start).
///
/// Cheap to clone; every clone drives the same overlay. Its methods never block on the network:
/// [`send`](Self::send) and [`disconnect`](Self::disconnect) queue work and return at once (and
/// may be called from any thread), [`request`](Self::request) is bounded by its timeout. The
/// overlay stops at [`shutdown`](Self::shutdown), or when the last clone is dropped.
#[derive(Clone)]
pub struct Overlay {
    inner: Arc<Inner>,
}

/// What [`Overlay`] clones share; the parts [`start`](super::start) assembles.
pub(crate) struct Inner {
    pub(crate) peer_id: PeerId,
    pub(crate) local_addr: SocketAddr,
    pub(crate) max_frame_bytes: usize,
    pub(crate) flush_timeout: Duration,
    pub(crate) control: libp2p_stream::Control,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) writers: Arc<Writers>,
    pub(crate) stats: Arc<Counters>,
    /// The hellos of peers' control streams open now.
    pub(crate) admitted: Arc<Admitted<()>>,
    pub(crate) runtime: Handle,
    /// Set to stop the swarm task; dropping it (with the last clone) stops it too.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Closes when the swarm task has ended.
    pub(crate) stopped: watch::Receiver<()>,
}

impl fmt::Debug for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overlay")
            .field("peer_id", &self.inner.peer_id)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl Overlay {
    pub(crate) fn new(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The UDP address the overlay listens on: the configured IP with the port actually bound
    /// (useful when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Our peer id, proven to peers by the QUIC handshake.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// Queues `frame` for `peer` and returns at once.
    ///
    /// The first frame for a peer starts its writer: it dials `addr` unless already connected,
    /// opens one long-lived stream on [`CONTROL_PROTOCOL`](super::CONTROL_PROTOCOL), writes our
    /// hello and then the queued frames in order. While that writer lives, `addr` is not looked
    /// at again. If the stream breaks, the owner gets [`Event::Disconnected`](super::Event) and
    /// frames still queued are lost; the next `send` starts over.
    ///
    /// # Errors
    ///
    /// [`SendError::QueueFull`] if [`Config::peer_queue_frames`](super::Config) frames wait
    /// for this peer already (the frame is dropped and counted), [`SendError::TooLarge`] for a
    /// frame over the frame limit, [`SendError::Closed`] after shutdown.
    pub fn send(&self, peer: PeerId, addr: SocketAddr, frame: Bytes) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if frame.len() > self.inner.max_frame_bytes {
            return Err(SendError::TooLarge {
                len: frame.len(),
                max_bytes: self.inner.max_frame_bytes,
            });
        }
        self.inner.writers.send(peer, addr, frame)
    }

    /// Ends our link to `peer` and returns at once.
    ///
    /// In the background: the frames already queued for `peer` are written and read by the
    /// peer (for at most [`Config::flush_timeout`](super::Config::flush_timeout)), our stream is
    /// finished, and every connection to `peer` closed. A [`send`](Self::send) after this call
    /// starts a new link, which the pending close may still cut.
    pub fn disconnect(&self, peer: PeerId) {
        if self.is_closed() {
            return;
        }
        let writer = self.inner.writers.remove(peer);
        let commands = self.inner.commands.clone();
        let flush_timeout = self.inner.flush_timeout;
        self.inner.runtime.spawn(async move {
            if let Some(mut writer) = writer
                && tokio::time::timeout(flush_timeout, &mut writer)
                    .await
                    .is_err()
            {
                writer.abort();
            }
            let reason = "disconnect requested";
            let _ = commands.send(Command::Disconnect { peer, reason }).await;
        });
    }

    /// One exchange on [`ADMISSION_PROTOCOL`](super::ADMISSION_PROTOCOL): dials `addr` (if not
    /// connected), sends `body`, returns the peer's id and its answer.
    ///
    /// With `Some(peer)` the connection must prove that peer id; with `None`, whoever answers at
    /// `addr` is accepted and named in the result. The peer needs no hello for this protocol.
    /// The connection is not kept: without streams it closes after
    /// [`Config::idle_connection_timeout`](super::Config::idle_connection_timeout).
    ///
    /// # Errors
    ///
    /// See [`RequestError`]; [`RequestError::Timeout`] if the whole exchange, dial included,
    /// takes longer than `timeout`.
    pub async fn request(
        &self,
        peer: Option<PeerId>,
        addr: SocketAddr,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(PeerId, Bytes), RequestError> {
        if self.is_closed() {
            return Err(RequestError::Closed);
        }
        let max_bytes = self.inner.max_frame_bytes;
        if body.len() > max_bytes {
            return Err(RequestError::TooLarge {
                len: body.len(),
                max_bytes,
            });
        }
        let mut control = self.inner.control.clone();
        let exchange = exchange(
            &self.inner.commands,
            &mut control,
            peer,
            addr,
            &body,
            max_bytes,
        );
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| RequestError::Timeout { addr, timeout })??;
        bump(&self.inner.stats.requests_sent);
        Ok(answer)
    }

    /// Replaces the hello that control streams opened from now start with (a renewed
    /// certificate). A hello over the frame limit is refused and the old one kept.
    pub fn set_hello(&self, hello: Bytes) {
        if hello.len() > self.inner.max_frame_bytes {
            tracing::error!(
                "a hello of {} bytes exceeds the frame limit of {}: keeping the old one",
                hello.len(),
                self.inner.max_frame_bytes
            );
            return;
        }
        self.inner.writers.set_hello(hello);
    }

    /// Applies `check` to the hello of every control stream peers hold open to us and cuts off
    /// each peer it refuses, as if its hello had been refused on arrival (counted in
    /// `hellos_refused`). For a change of rules, such as a revoked onboarding token, to reach
    /// links that are already up. Returns the peers cut off, with the reason.
    pub fn recheck(
        &self,
        check: impl Fn(&PeerId, &[u8]) -> Result<(), String>,
    ) -> Vec<(PeerId, String)> {
        let mut cut: Vec<(PeerId, String)> = Vec::new();
        for refused in self.inner.admitted.refused(check) {
            if cut.iter().any(|(peer, _)| *peer == refused.peer) {
                continue;
            }
            bump(&self.inner.stats.hellos_refused);
            self.disconnect(refused.peer);
            cut.push((refused.peer, refused.reason));
        }
        cut
    }

    /// Control streams from peers registered for [`recheck`](Self::recheck) now.
    #[cfg(test)]
    pub(crate) fn open_hellos(&self) -> usize {
        self.inner.admitted.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.inner.stats.snapshot()
    }

    /// Stops the overlay: drops every queue, closes every connection (waiting at most
    /// [`Config::flush_timeout`](super::Config::flush_timeout) for them to close), and returns
    /// when the swarm task has ended. Idempotent; later calls on any clone return at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the overlay stops whether or not the caller waits for it.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.writers.clear();
        let mut stopped = self.inner.stopped.clone();
        // Only ever ends with an error, when the swarm task drops the sender.
        while stopped.changed().await.is_ok() {}
    }

    fn is_closed(&self) -> bool {
        *self.inner.shutdown.borrow() || self.inner.commands.is_closed()
    }
}
