//! Peers' streams to us: an accept loop per protocol and a reader task per stream.
//!
//! A control stream must open with a hello frame within the hello timeout, and the hello must
//! pass `check_hello`; after that every frame goes to the owner's event queue, waiting for room
//! (which stalls only this stream). An admission stream carries one request and gets one answer.
//! A peer that breaks these rules (no hello in time, refused hello, oversize or truncated frame)
//! is counted and cut off: its stream dropped and every connection to it closed.
//!
//! libp2p-stream hands over every inbound stream, and drops streams while the accept loop is
//! busy, so the loops only count and spawn. Each peer may hold a bounded number of streams per
//! protocol; extra ones are closed at once.

use super::HelloCheck;
use super::event::Event;
use super::frame::{FrameError, read_frame, write_frame};
use super::stats::{Counters, bump};
use super::swarm_task::Command;
use crate::admitted::Admitted;
use futures::{AsyncWriteExt as _, StreamExt as _};
use libp2p::Stream;
use libp2p_identity::PeerId;
use libp2p_stream::IncomingStreams;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// What the readers share.
pub(crate) struct Inbound {
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) stats: Arc<Counters>,
    pub(crate) check_hello: HelloCheck,
    /// The hellos of the control streams open now, for [`Overlay::recheck`](super::Overlay::recheck).
    pub(crate) admitted: Arc<Admitted<()>>,
    pub(crate) max_frame_bytes: usize,
    pub(crate) hello_timeout: Duration,
    pub(crate) reply_timeout: Duration,
    pub(crate) control_slots: Slots,
    pub(crate) admission_slots: Slots,
}

/// A rule a peer broke; each cuts the peer off.
#[derive(Debug, Clone, Copy)]
enum Violation {
    HelloTimeout,
    HelloRefused,
    Oversize,
    Truncated,
}

impl Violation {
    fn describe(self) -> &'static str {
        match self {
            Self::HelloTimeout => "no hello or request within the hello timeout",
            Self::HelloRefused => "hello refused",
            Self::Oversize => "oversize frame",
            Self::Truncated => "stream ended inside a frame",
        }
    }

    fn counter(self, stats: &Counters) -> &AtomicU64 {
        match self {
            Self::HelloTimeout => &stats.hello_timeouts,
            Self::HelloRefused => &stats.hellos_refused,
            Self::Oversize => &stats.oversize_frames,
            Self::Truncated => &stats.malformed_frames,
        }
    }
}

/// How a reader ended, if not cleanly.
#[derive(Debug)]
enum Ended {
    /// The peer broke a rule.
    Violation(Violation),
    /// The stream failed underneath; no one's fault we can tell.
    Failed(io::Error),
}

impl From<FrameError> for Ended {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::Oversize { .. } => Self::Violation(Violation::Oversize),
            FrameError::Truncated { .. } => Self::Violation(Violation::Truncated),
            FrameError::Io(error) => Self::Failed(error),
        }
    }
}

impl From<io::Error> for Ended {
    fn from(error: io::Error) -> Self {
        Self::Failed(error)
    }
}

impl Inbound {
    /// Accepts control streams until the overlay stops.
    pub(crate) async fn accept_control(self: Arc<Self>, mut incoming: IncomingStreams) {
        while let Some((peer, stream)) = incoming.next().await {
            let Some(slot) = self.control_slots.acquire(peer) else {
                bump(&self.stats.streams_refused);
                debug!(%peer, "too many control streams from peer; closing the new one");
                continue;
            };
            tokio::spawn(Arc::clone(&self).serve_control(peer, stream, slot));
        }
    }

    /// Accepts admission streams until the overlay stops.
    pub(crate) async fn accept_admission(self: Arc<Self>, mut incoming: IncomingStreams) {
        while let Some((peer, stream)) = incoming.next().await {
            let Some(slot) = self.admission_slots.acquire(peer) else {
                bump(&self.stats.streams_refused);
                debug!(%peer, "too many admission streams from peer; closing the new one");
                continue;
            };
            tokio::spawn(Arc::clone(&self).serve_admission(peer, stream, slot));
        }
    }

    async fn serve_control(self: Arc<Self>, peer: PeerId, mut stream: Stream, _slot: Slot) {
        match self.read_control(peer, &mut stream).await {
            // The peer finished its side: finish ours, which tells its writer that we have
            // read everything.
            Ok(()) => {
                let _ = stream.close().await;
            }
            Err(Ended::Violation(violation)) => {
                drop(stream);
                self.cut_off(peer, violation).await;
            }
            Err(Ended::Failed(error)) => debug!(%peer, %error, "control stream from peer failed"),
        }
    }

    async fn read_control(&self, peer: PeerId, stream: &mut Stream) -> Result<(), Ended> {
        let hello =
            tokio::time::timeout(self.hello_timeout, read_frame(stream, self.max_frame_bytes))
                .await
                .map_err(|_| Ended::Violation(Violation::HelloTimeout))??;
        let Some(hello) = hello else {
            return Ok(());
        };
        // Registered before the check, so a recheck after a change of rules cannot miss it.
        let _admitted = self.admitted.register(peer, hello.clone(), ());
        if !(self.check_hello)(&peer, &hello) {
            return Err(Ended::Violation(Violation::HelloRefused));
        }
        while let Some(frame) = read_frame(stream, self.max_frame_bytes).await? {
            let len = frame.len();
            if self
                .events
                .send(Event::Frame { peer, frame })
                .await
                .is_err()
            {
                // The owner is gone; nobody reads these frames any more.
                return Ok(());
            }
            self.stats.frame_received(len);
        }
        Ok(())
    }

    async fn serve_admission(self: Arc<Self>, peer: PeerId, mut stream: Stream, _slot: Slot) {
        match self.answer(peer, &mut stream).await {
            Ok(()) => {
                let _ = stream.close().await;
            }
            Err(Ended::Violation(violation)) => {
                drop(stream);
                self.cut_off(peer, violation).await;
            }
            Err(Ended::Failed(error)) => {
                debug!(%peer, %error, "admission stream from peer failed");
            }
        }
    }

    async fn answer(&self, peer: PeerId, stream: &mut Stream) -> Result<(), Ended> {
        let body =
            tokio::time::timeout(self.hello_timeout, read_frame(stream, self.max_frame_bytes))
                .await
                .map_err(|_| Ended::Violation(Violation::HelloTimeout))??;
        let Some(body) = body else {
            return Ok(());
        };
        bump(&self.stats.requests_received);
        let (reply, answer) = oneshot::channel();
        let asking = async {
            self.events
                .send(Event::Request { peer, body, reply })
                .await
                .ok()?;
            answer.await.ok()
        };
        // No answer in time, or the owner dropped the request: close the stream unanswered.
        let Ok(Some(answer)) = tokio::time::timeout(self.reply_timeout, asking).await else {
            return Ok(());
        };
        if answer.len() > self.max_frame_bytes {
            warn!(
                %peer,
                len = answer.len(),
                max = self.max_frame_bytes,
                "admission answer exceeds the frame limit; not sent"
            );
            return Ok(());
        }
        write_frame(stream, &answer).await?;
        Ok(())
    }

    async fn cut_off(&self, peer: PeerId, violation: Violation) {
        bump(violation.counter(&self.stats));
        debug!(%peer, violation = violation.describe(), "cutting off peer");
        let _ = self
            .commands
            .send(Command::Disconnect {
                peer,
                reason: violation.describe(),
            })
            .await;
    }
}

/// Counts the streams each peer has open for one protocol, up to a limit.
pub(crate) struct Slots {
    max_per_peer: usize,
    open: Arc<Mutex<HashMap<PeerId, usize>>>,
}

/// One open stream of a peer; dropping it frees the slot.
pub(crate) struct Slot {
    peer: PeerId,
    open: Arc<Mutex<HashMap<PeerId, usize>>>,
}

impl Slots {
    /// At most `max_per_peer` streams per peer.
    pub(crate) fn new(max_per_peer: usize) -> Self {
        Self {
            max_per_peer,
            open: Arc::default(),
        }
    }

    /// A slot for one more stream of `peer`, if it has fewer than the limit open.
    pub(crate) fn acquire(&self, peer: PeerId) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(peer).or_insert(0);
        if *count >= self.max_per_peer {
            return None;
        }
        *count += 1;
        Some(Slot {
            peer,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn peer(seed: u8) -> PeerId {
        Keypair::ed25519_from_bytes([seed; 32])
            .expect("valid seed")
            .public()
            .to_peer_id()
    }

    #[test]
    fn slots_cap_each_peer_and_free_on_drop() {
        let slots = Slots::new(2);
        let (a, b) = (peer(1), peer(2));
        let first = slots.acquire(a).expect("first slot");
        let _second = slots.acquire(a).expect("second slot");
        assert!(slots.acquire(a).is_none(), "third stream of one peer");
        assert!(slots.acquire(b).is_some(), "another peer has its own slots");
        drop(first);
        assert!(slots.acquire(a).is_some(), "a freed slot is reusable");
    }
}
