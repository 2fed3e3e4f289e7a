//! The libp2p side of the overlay: the network behaviour, the swarm built around it, and the
//! addresses it dials.
//!
//! The behaviour is two stock parts: connection limits, which refuse connections beyond the
//! configured counts, and `libp2p-stream`, which hands out raw streams per protocol; and
//! [`super::idle`], which makes libp2p's idle timeout work for connections whose streams have
//! ended. Everything Shoal-specific happens on the streams, in the tasks of [`super::inbound`]
//! and [`super::outbound`].

use super::config::Config;
use anyhow::{Context as _, Result, bail};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, StreamProtocol, Swarm, SwarmBuilder};
use libp2p_connection_limits::ConnectionLimits;
use libp2p_identity::Keypair;
use std::net::{IpAddr, SocketAddr};

/// The protocol of long-lived control streams: a hello frame, then frames for the core.
pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/control/1");

/// The protocol of admission exchanges: one request frame, one answer frame.
pub const ADMISSION_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/admission/1");

/// Inbound streams libp2p may be negotiating on one connection at once (libp2p's default is 128).
const MAX_NEGOTIATING_INBOUND_STREAMS: usize = 16;

/// The overlay's network behaviour.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Refuses connections over the limits; first, so nothing else sees a refused connection.
    pub(crate) limits: libp2p_connection_limits::Behaviour,
    /// Raw streams for Shoal's protocols.
    pub(crate) streams: libp2p_stream::Behaviour,
    /// Wakes connections so that those without streams close.
    pub(crate) idle: super::idle::Behaviour,
}

/// A swarm with QUIC as its only transport, authenticated as `keypair`.
///
/// # Errors
///
/// If the configuration does not fit libp2p-quic.
pub(crate) fn build_swarm(keypair: &Keypair, config: &Config) -> Result<Swarm<Behaviour>> {
    let idle_timeout_ms = config.idle_timeout_ms()?;
    let limits = ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_pending_incoming(Some(config.max_pending_incoming))
        .with_max_established_per_peer(Some(config.max_connections_per_peer));
    let Ok(builder) = SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_quic_config(|mut quic| {
            quic.keep_alive_interval = config.keep_alive_interval;
            quic.max_idle_timeout = idle_timeout_ms;
            quic.handshake_timeout = config.connect_timeout;
            quic.max_concurrent_stream_limit = config.max_streams_per_connection();
            quic.max_stream_data = config.stream_window_bytes();
            quic.max_connection_data = config.connection_window_bytes();
            quic
        })
        .with_behaviour(|_| Behaviour {
            limits: libp2p_connection_limits::Behaviour::new(limits),
            streams: libp2p_stream::Behaviour::new(),
            idle: super::idle::Behaviour::default(),
        });
    Ok(builder
        .with_swarm_config(|swarm| {
            swarm
                .with_idle_connection_timeout(config.idle_connection_timeout)
                .with_max_negotiating_inbound_streams(MAX_NEGOTIATING_INBOUND_STREAMS)
        })
        .build())
}

/// The libp2p QUIC address of a UDP socket address: `/ip4/A/udp/P/quic-v1` (or `/ip6/...`).
pub fn quic_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

/// The UDP socket address of a libp2p QUIC address (any `/p2p/...` suffix ignored).
///
/// # Errors
///
/// If the address is not `/ip4|ip6/../udp/../quic-v1`.
pub fn socket_addr(addr: &Multiaddr) -> Result<SocketAddr> {
    let mut parts = addr.iter();
    let ip = match parts.next() {
        Some(Protocol::Ip4(ip)) => IpAddr::V4(ip),
        Some(Protocol::Ip6(ip)) => IpAddr::V6(ip),
        _ => bail!("{addr} does not start with /ip4 or /ip6"),
    };
    let port = match parts.next() {
        Some(Protocol::Udp(port)) => port,
        _ => bail!("{addr} has no /udp port after its IP"),
    };
    match parts.next() {
        Some(Protocol::QuicV1) => Ok(SocketAddr::new(ip, port)),
        _ => None.with_context(|| format!("{addr} is not a /quic-v1 address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_convert_both_ways() {
        for text in ["127.0.0.1:4001", "[::1]:9"] {
            let addr: SocketAddr = text.parse().expect("literal");
            let multiaddr = quic_multiaddr(addr);
            assert_eq!(socket_addr(&multiaddr).expect("quic address"), addr);
        }
        assert_eq!(
            quic_multiaddr("10.1.2.3:7000".parse().expect("literal")).to_string(),
            "/ip4/10.1.2.3/udp/7000/quic-v1"
        );
    }

    #[test]
    fn tcp_address_is_refused() {
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/80".parse().expect("literal");
        assert!(socket_addr(&tcp).is_err());
    }
}
