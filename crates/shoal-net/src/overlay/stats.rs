//! Counters every overlay task bumps, and the snapshot [`Overlay::stats`](super::Overlay::stats)
//! returns.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of an overlay's counters since it started. Byte counts are frame bodies, without
/// the 4-byte length prefixes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Control frames written to peers' streams (hellos not included).
    pub frames_sent: u64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Control frames received from peers and queued for the owner (hellos not included).
    pub frames_received: u64,
    /// Bytes of those frames.
    pub bytes_received: u64,
    /// Frames [`Overlay::send`](super::Overlay::send) refused because the peer's queue was full.
    pub frames_dropped: u64,
    /// Inbound control streams whose hello `check_hello` refused.
    pub hellos_refused: u64,
    /// Inbound streams that sent no hello (or no request) within the hello timeout.
    pub hello_timeouts: u64,
    /// Inbound frames longer than the frame limit.
    pub oversize_frames: u64,
    /// Inbound streams that ended in the middle of a frame.
    pub malformed_frames: u64,
    /// Inbound streams closed because the peer already had as many open as allowed.
    pub streams_refused: u64,
    /// Admission requests sent with [`Overlay::request`](super::Overlay::request) and answered.
    pub requests_sent: u64,
    /// Admission requests read from peers (each is then offered to the owner).
    pub requests_received: u64,
    /// Established connections right now.
    pub connections: u64,
    /// Dials that failed (refused, timed out, wrong peer, over a limit).
    pub dial_failures: u64,
}

/// The live counters behind [`Stats`]; relaxed atomics, since they are only read as a whole for
/// reporting.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) hellos_refused: AtomicU64,
    pub(crate) hello_timeouts: AtomicU64,
    pub(crate) oversize_frames: AtomicU64,
    pub(crate) malformed_frames: AtomicU64,
    pub(crate) streams_refused: AtomicU64,
    pub(crate) requests_sent: AtomicU64,
    pub(crate) requests_received: AtomicU64,
    /// A gauge, set by the swarm task.
    pub(crate) connections: AtomicU64,
    pub(crate) dial_failures: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts one frame of `len` bytes sent.
    pub(crate) fn frame_sent(&self, len: usize) {
        bump(&self.frames_sent);
        self.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Counts one frame of `len` bytes received.
    pub(crate) fn frame_received(&self, len: usize) {
        bump(&self.frames_received);
        self.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// The current values.
    pub(crate) fn snapshot(&self) -> Stats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            frames_sent: read(&self.frames_sent),
            bytes_sent: read(&self.bytes_sent),
            frames_received: read(&self.frames_received),
            bytes_received: read(&self.bytes_received),
            frames_dropped: read(&self.frames_dropped),
            hellos_refused: read(&self.hellos_refused),
            hello_timeouts: read(&self.hello_timeouts),
            oversize_frames: read(&self.oversize_frames),
            malformed_frames: read(&self.malformed_frames),
            streams_refused: read(&self.streams_refused),
            requests_sent: read(&self.requests_sent),
            requests_received: read(&self.requests_received),
            connections: read(&self.connections),
            dial_failures: read(&self.dial_failures),
        }
    }
}
