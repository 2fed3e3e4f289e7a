//! What an overlay may hold and how long it waits: every queue, limit and timeout in one place.

use anyhow::{Result, bail, ensure};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The largest control message the core sends (1 MiB) plus room for its envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = (1 << 20) + (4 << 10);

/// Configuration of an [`Overlay`](super::Overlay).
///
/// [`Config::default`] listens on `0.0.0.0` with a port the OS picks; everything else is sized
/// for a node with a few dozen overlay neighbours.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP address of the libp2p QUIC listener (`/ip4/IP/udp/PORT/quic-v1`); port 0 lets the
    /// OS pick one, [`Overlay::local_addr`](super::Overlay::local_addr) tells which.
    pub listen: SocketAddr,
    /// Established connections in total, both directions; more are refused.
    pub max_connections: u32,
    /// Inbound connections still in their handshake; more are refused.
    pub max_pending_incoming: u32,
    /// Established connections to one peer (two peers dialling each other at once make two).
    pub max_connections_per_peer: u32,
    /// Frames queued for one peer before [`Overlay::send`](super::Overlay::send) reports
    /// [`SendError::QueueFull`](super::SendError::QueueFull).
    pub peer_queue_frames: usize,
    /// Events queued for the owner; when it is full, readers stop reading (backpressure on the
    /// peers' streams) and link-down reports wait.
    pub event_queue: usize,
    /// Largest frame sent or accepted, in bytes. A peer announcing more is cut off before
    /// anything of the frame is buffered.
    pub max_frame_bytes: usize,
    /// Period of QUIC keep-alive packets on every connection; below `idle_timeout`.
    pub keep_alive_interval: Duration,
    /// QUIC idle timeout: a connection that hears nothing for this long is dead.
    pub idle_timeout: Duration,
    /// How long libp2p keeps a connection that carries no stream (for instance one opened for
    /// a single admission request) before closing it. Checked once per this period, so such a
    /// connection closes between one and two periods after its last stream ended.
    pub idle_connection_timeout: Duration,
    /// How long an inbound control stream may take to deliver its hello frame, and an inbound
    /// admission stream its request.
    pub hello_timeout: Duration,
    /// How long dialling a peer and opening a stream to it may take (also the QUIC handshake
    /// timeout).
    pub connect_timeout: Duration,
    /// How long [`Overlay::disconnect`](super::Overlay::disconnect) waits for the frames queued
    /// for a peer to be read before it closes the connection anyway.
    pub flush_timeout: Duration,
    /// How long an inbound admission request waits for the owner's reply.
    pub reply_timeout: Duration,
    /// Inbound control streams one peer may have open at once; extra streams are closed.
    pub max_control_streams_per_peer: usize,
    /// Inbound admission streams one peer may have open at once; extra streams are closed.
    pub max_admission_streams_per_peer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            max_connections: 512,
            max_pending_incoming: 64,
            max_connections_per_peer: 2,
            peer_queue_frames: 256,
            event_queue: 4096,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            keep_alive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            idle_connection_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(10),
            max_control_streams_per_peer: 4,
            max_admission_streams_per_peer: 2,
        }
    }
}

impl Config {
    /// The default configuration, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            ..Self::default()
        }
    }

    /// QUIC's idle timeout in milliseconds, as libp2p-quic takes it.
    pub(crate) fn idle_timeout_ms(&self) -> Result<u32> {
        u32::try_from(self.idle_timeout.as_millis())
            .map_err(|_| anyhow::anyhow!("idle_timeout {:?} is too long", self.idle_timeout))
    }

    /// Bytes a peer may have in flight on one stream: two full frames, so a frame at the limit
    /// never waits for a window update in the middle.
    pub(crate) fn stream_window_bytes(&self) -> u32 {
        u32::try_from(self.max_frame_bytes.saturating_mul(2)).unwrap_or(u32::MAX)
    }

    /// Bytes a peer may have in flight on one connection: enough for the control stream and an
    /// admission exchange at full size. This bounds what a stalled owner makes us buffer per
    /// connection.
    pub(crate) fn connection_window_bytes(&self) -> u32 {
        self.stream_window_bytes().saturating_mul(2)
    }

    /// Streams a peer may have open at once on one connection: ours per peer, with room for a
    /// stream being replaced.
    pub(crate) fn max_streams_per_connection(&self) -> u32 {
        let streams = self.max_control_streams_per_peer + self.max_admission_streams_per_peer;
        u32::try_from(streams.saturating_mul(2)).unwrap_or(u32::MAX)
    }

    /// Checks the limits against each other.
    ///
    /// # Errors
    ///
    /// Names the first setting that is zero where it must not be, or out of range.
    pub fn validate(&self) -> Result<()> {
        let counts = [
            ("max_connections", self.max_connections as usize),
            ("max_pending_incoming", self.max_pending_incoming as usize),
            (
                "max_connections_per_peer",
                self.max_connections_per_peer as usize,
            ),
            ("peer_queue_frames", self.peer_queue_frames),
            ("event_queue", self.event_queue),
            ("max_frame_bytes", self.max_frame_bytes),
            (
                "max_control_streams_per_peer",
                self.max_control_streams_per_peer,
            ),
            (
                "max_admission_streams_per_peer",
                self.max_admission_streams_per_peer,
            ),
        ];
        for (name, value) in counts {
            ensure!(
                value > 0,
                "overlay setting {name} is 0; it must be at least 1"
            );
        }
        ensure!(
            u32::try_from(self.max_frame_bytes).is_ok(),
            "max_frame_bytes {} does not fit the u32 length prefix",
            self.max_frame_bytes
        );
        let durations = [
            ("keep_alive_interval", self.keep_alive_interval),
            ("idle_timeout", self.idle_timeout),
            ("idle_connection_timeout", self.idle_connection_timeout),
            ("hello_timeout", self.hello_timeout),
            ("connect_timeout", self.connect_timeout),
            ("flush_timeout", self.flush_timeout),
            ("reply_timeout", self.reply_timeout),
        ];
        for (name, value) in durations {
            ensure!(!value.is_zero(), "overlay setting {name} is 0");
        }
        if self.keep_alive_interval >= self.idle_timeout {
            bail!(
                "keep_alive_interval {:?} must be shorter than idle_timeout {:?}, or idle \
                 connections die between keep-alives",
                self.keep_alive_interval,
                self.idle_timeout
            );
        }
        self.idle_timeout_ms()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().expect("default config");
    }

    #[test]
    fn keep_alive_must_be_shorter_than_idle() {
        let config = Config {
            keep_alive_interval: Duration::from_secs(20),
            ..Config::default()
        };
        let error = config
            .validate()
            .expect_err("keep-alive above idle timeout");
        assert!(error.to_string().contains("keep_alive_interval"), "{error}");
    }

    #[test]
    fn zero_queue_is_refused() {
        let config = Config {
            peer_queue_frames: 0,
            ..Config::default()
        };
        let error = config.validate().expect_err("zero queue");
        assert!(error.to_string().contains("peer_queue_frames"), "{error}");
    }
}
