//! Our side of the control streams: one writer task per peer, fed by a bounded queue.
//!
//! [`Writers::send`] queues a frame without waiting; the first frame for a peer spawns its
//! writer, which asks the swarm task for a connection, opens one control stream, writes our
//! hello and then every queued frame in order. If the stream fails the writer forgets itself
//! and reports the link down, so the next frame for that peer starts a fresh writer (and dial).
//! Removing a writer's queue ([`Writers::remove`]) lets it write what is queued, finish the
//! stream and wait for the peer to finish its side, which the peer's reader does only after it
//! has read everything.

use super::behaviour::CONTROL_PROTOCOL;
use super::error::SendError;
use super::frame::write_frame;
use super::stats::{Counters, bump};
use super::swarm_task::Command;
use bytes::Bytes;
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::{Stream, StreamProtocol};
use libp2p_identity::PeerId;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::debug;

/// Why a stream to a peer could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The swarm task is gone.
    #[error("overlay is shut down")]
    Closed,
    /// The dial failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Connected, but the stream was refused or failed during negotiation.
    #[error("peer {peer} refused the stream: {reason}")]
    Open {
        /// The peer.
        peer: PeerId,
        /// What libp2p reported.
        reason: String,
    },
}

/// Connects to `peer` at `addr` (or whoever answers there) through the swarm task, then opens a
/// stream for `protocol`. Returns the peer's id with the stream.
///
/// The swarm task dials before libp2p-stream is asked for the stream: asked first, it would
/// dial by itself, without an address, and fail.
///
/// # Errors
///
/// See [`OpenError`]. Not bounded in time: callers wrap it in a timeout.
pub(crate) async fn open_stream(
    commands: &mpsc::Sender<Command>,
    control: &mut libp2p_stream::Control,
    peer: Option<PeerId>,
    addr: SocketAddr,
    protocol: StreamProtocol,
) -> Result<(PeerId, Stream), OpenError> {
    let (reply, connected) = oneshot::channel();
    commands
        .send(Command::Connect { peer, addr, reply })
        .await
        .map_err(|_| OpenError::Closed)?;
    let peer = connected
        .await
        .map_err(|_| OpenError::Closed)?
        .map_err(OpenError::Connect)?;
    let stream = control
        .open_stream(peer, protocol)
        .await
        .map_err(|error| OpenError::Open {
            peer,
            reason: error.to_string(),
        })?;
    Ok((peer, stream))
}

/// What every writer shares.
pub(crate) struct WriterContext {
    /// Our hello, the first frame on every control stream; replaced when the certificate in it
    /// is renewed.
    pub(crate) hello: std::sync::Mutex<Bytes>,
    /// Opens streams.
    pub(crate) control: libp2p_stream::Control,
    /// The swarm task.
    pub(crate) commands: mpsc::Sender<Command>,
    /// Counters.
    pub(crate) stats: Arc<Counters>,
    /// Frames queued per peer.
    pub(crate) queue_frames: usize,
    /// Bound on connecting and opening the stream.
    pub(crate) connect_timeout: Duration,
    /// Where writers run.
    pub(crate) runtime: Handle,
}

/// The live writers, one per peer.
pub(crate) struct Writers {
    context: WriterContext,
    state: Mutex<WriterTable>,
}

#[derive(Default)]
struct WriterTable {
    by_peer: HashMap<PeerId, WriterHandle>,
    /// Tells a writer that exits on error whether its entry is still its own.
    next_id: u64,
}

struct WriterHandle {
    id: u64,
    frames: mpsc::Sender<Bytes>,
    task: JoinHandle<()>,
}

impl Writers {
    /// Replaces the hello that streams opened from now start with.
    pub(crate) fn set_hello(&self, hello: Bytes) {
        *self.context.hello.lock().unwrap_or_else(|e| e.into_inner()) = hello;
    }

    /// No writers yet.
    pub(crate) fn new(context: WriterContext) -> Arc<Self> {
        Arc::new(Self {
            context,
            state: Mutex::new(WriterTable::default()),
        })
    }

    fn table(&self) -> MutexGuard<'_, WriterTable> {
        // The table stays consistent at every step, so a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame` for `peer`, starting a writer that dials `addr` if there is none.
    /// Never waits.
    ///
    /// # Errors
    ///
    /// [`SendError::QueueFull`] if the peer's queue is full.
    pub(crate) fn send(
        self: &Arc<Self>,
        peer: PeerId,
        addr: SocketAddr,
        frame: Bytes,
    ) -> Result<(), SendError> {
        let mut table = self.table();
        let frame = match table.by_peer.entry(peer) {
            Entry::Occupied(writer) => match writer.get().frames.try_send(frame) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => {
                    bump(&self.context.stats.frames_dropped);
                    return Err(SendError::QueueFull { peer });
                }
                // The writer failed and is on its way out: replace it.
                Err(TrySendError::Closed(frame)) => {
                    writer.remove();
                    frame
                }
            },
            Entry::Vacant(_) => frame,
        };
        let (frames, queue) = mpsc::channel(self.context.queue_frames);
        let queued = frames.try_send(frame);
        debug_assert!(queued.is_ok(), "a new queue has room for one frame");
        table.next_id += 1;
        let id = table.next_id;
        let writer = Writer {
            peer,
            id,
            addr,
            hello: self
                .context
                .hello
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            control: self.context.control.clone(),
            commands: self.context.commands.clone(),
            stats: Arc::clone(&self.context.stats),
            connect_timeout: self.context.connect_timeout,
            writers: Arc::downgrade(self),
        };
        let task = self.context.runtime.spawn(writer.run(queue));
        table
            .by_peer
            .insert(peer, WriterHandle { id, frames, task });
        Ok(())
    }

    /// Removes `peer`'s writer, which then writes what is queued and finishes its stream;
    /// returns its task to wait on.
    pub(crate) fn remove(&self, peer: PeerId) -> Option<JoinHandle<()>> {
        self.table().by_peer.remove(&peer).map(|writer| writer.task)
    }

    /// Removes every writer.
    pub(crate) fn clear(&self) {
        self.table().by_peer.clear();
    }

    /// Stops `peer`'s writer at once, dropping what is queued: its link is gone.
    pub(crate) fn retire(&self, peer: PeerId) {
        if let Some(writer) = self.table().by_peer.remove(&peer) {
            writer.task.abort();
        }
    }

    /// Removes `peer`'s writer if it is still writer `id`; false if it was replaced or removed.
    fn forget(&self, peer: PeerId, id: u64) -> bool {
        let mut table = self.table();
        let is_current = table
            .by_peer
            .get(&peer)
            .is_some_and(|writer| writer.id == id);
        if is_current {
            table.by_peer.remove(&peer);
        }
        is_current
    }
}

/// One peer's writer task.
struct Writer {
    peer: PeerId,
    id: u64,
    addr: SocketAddr,
    hello: Bytes,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    stats: Arc<Counters>,
    connect_timeout: Duration,
    writers: Weak<Writers>,
}

/// Why a writer stopped before its queue was closed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("no stream within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("stream failed: {0}")]
    Io(#[from] io::Error),
    #[error("peer finished the stream: it no longer reads")]
    PeerFinished,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Bytes>) {
        let peer = self.peer;
        match self.deliver(&mut queue).await {
            Ok(()) => debug!(%peer, "control stream finished"),
            Err(error) => {
                debug!(%peer, %error, "control stream to peer failed");
                // Forget first, so a send after the owner hears of it starts a new writer. A
                // writer already removed (disconnect, retired with its connection) says nothing:
                // whoever removed it accounts for the link.
                let is_current = self
                    .writers
                    .upgrade()
                    .is_some_and(|writers| writers.forget(peer, self.id));
                if is_current {
                    let _ = self.commands.send(Command::LinkDown { peer }).await;
                }
            }
        }
    }

    async fn deliver(&mut self, queue: &mut mpsc::Receiver<Bytes>) -> Result<(), WriteError> {
        let opening = open_stream(
            &self.commands,
            &mut self.control,
            Some(self.peer),
            self.addr,
            CONTROL_PROTOCOL,
        );
        let (_, stream) = tokio::time::timeout(self.connect_timeout, opening)
            .await
            .map_err(|_| WriteError::Timeout(self.connect_timeout))??;
        // Peers never write on our control stream; reading it only tells us when the peer
        // stops reading (it refused our hello, or its reader ended) or the connection died.
        let (mut incoming, mut outgoing) = stream.split();
        let mut discard = [0u8; 64];
        write_frame(&mut outgoing, &self.hello).await?;
        loop {
            tokio::select! {
                frame = queue.recv() => {
                    let Some(frame) = frame else { break };
                    write_frame(&mut outgoing, &frame).await?;
                    self.stats.frame_sent(frame.len());
                    if queue.is_empty() {
                        outgoing.flush().await?;
                    }
                }
                read = incoming.read(&mut discard) => {
                    if read? == 0 {
                        return Err(WriteError::PeerFinished);
                    }
                }
            }
        }
        // Our queue was removed: finish our side, then wait until the peer finishes its own,
        // which it does once it has read everything (the caller bounds this wait).
        outgoing.close().await?;
        while incoming.read(&mut discard).await? > 0 {}
        Ok(())
    }
}
