//! The QUIC endpoint: TLS with libp2p peer-id certificates, and transport tuning for bulk data.

use crate::identity::Identity;
use anyhow::{Context, Result, anyhow};
use libp2p_identity::PeerId;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, TransportConfig, VarInt};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The QUIC congestion controller.
///
/// CUBIC is the default: in the swarm benchmark (16 hosts on `tc tbf`-capped links) it finished
/// as fast as BBR or slightly faster, lost less, and moved 10% more over loopback (figures in
/// `benches/README.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Congestion {
    /// quinn's CUBIC.
    #[default]
    Cubic,
    /// quinn's BBR (v1).
    Bbr,
    /// quinn's NewReno.
    NewReno,
}

impl FromStr for Congestion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cubic" => Ok(Self::Cubic),
            "bbr" => Ok(Self::Bbr),
            "newreno" => Ok(Self::NewReno),
            other => Err(format!(
                "unknown congestion controller {other:?}: use bbr, cubic or newreno"
            )),
        }
    }
}

/// Per-connection receive window: enough for a 10 Gbit/s path with a 10 ms round trip.
pub const RECEIVE_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Per-stream receive window: one whole default-sized piece in flight without a stall.
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// Piece streams a peer may have open towards us at once.
pub const MAX_PIECE_STREAMS: u32 = 64;
/// Connection attempts quinn holds for the accept loop at once.
pub const MAX_QUEUED_ATTEMPTS: usize = 256;
/// A connection with no traffic (keep-alives included) for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Path MTU discovery up to the largest UDP payload: on loopback and jumbo-frame networks large
/// packets cut the per-packet cost that bounds QUIC's throughput; elsewhere discovery stops at the
/// path's real MTU.
fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut config = quinn::MtuDiscoveryConfig::default();
    config.upper_bound(MAX_UDP_PAYLOAD_BYTES);
    config
}

/// The largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD_BYTES: u16 = 65_527;

fn transport(congestion: Congestion) -> Result<Arc<TransportConfig>> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(4))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_PIECE_STREAMS))
        .receive_window(VarInt::from_u32(RECEIVE_WINDOW_BYTES))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
        .send_window(u64::from(RECEIVE_WINDOW_BYTES))
        .keep_alive_interval(Some(IDLE_TIMEOUT / 4))
        .mtu_discovery_config(Some(mtu_discovery()))
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().map_err(|e| anyhow!("{e}"))?));
    match congestion {
        Congestion::Cubic => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
        }
        Congestion::Bbr => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
        }
        Congestion::NewReno => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()))
        }
    };
    Ok(Arc::new(t))
}

/// Binds one QUIC endpoint on `listen` that both accepts and dials. Both sides present a libp2p
/// TLS certificate for their node key, and both check the other's ([`crate::tls`]), so every connection knows the
/// remote [`PeerId`] (see [`remote_peer_id`]).
///
/// # Errors
///
/// If the address cannot be bound (in use, not local) or TLS cannot be set up.
pub fn bind(identity: &Identity, listen: SocketAddr, congestion: Congestion) -> Result<Endpoint> {
    let transport = transport(congestion)?;
    let server_tls = crate::tls::server_config(identity.keypair())
        .context("cannot build the TLS server configuration")?;
    let server_crypto = QuicServerConfig::try_from(Arc::new(server_tls))
        .map_err(|e| anyhow!("TLS server configuration unusable for QUIC: {e}"))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());
    // Attempts quinn queues before the node's gate decides on them; beyond, quinn refuses.
    server.max_incoming(MAX_QUEUED_ATTEMPTS);
    // Peers dial addresses, not identities: any valid libp2p certificate is accepted here and
    // the peer id it proves is checked by the caller.
    let client_tls = crate::tls::client_config(identity.keypair())
        .context("cannot build the TLS client configuration")?;
    let client_crypto = QuicClientConfig::try_from(Arc::new(client_tls))
        .map_err(|e| anyhow!("TLS client configuration unusable for QUIC: {e}"))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    let mut endpoint = Endpoint::server(server, listen).with_context(|| {
        format!("cannot listen on {listen} (UDP): is another process using it?")
    })?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// The peer id proven by the certificate the remote side of `conn` presented.
///
/// # Errors
///
/// If there is no certificate or it is not a valid libp2p certificate (the TLS handshake would
/// normally have refused it already).
pub fn remote_peer_id(conn: &quinn::Connection) -> Result<PeerId> {
    let identity = conn
        .peer_identity()
        .ok_or_else(|| anyhow!("peer presented no certificate"))?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| anyhow!("peer identity is not a certificate chain"))?;
    let cert = certs
        .first()
        .ok_or_else(|| anyhow!("empty certificate chain"))?;
    let parsed =
        libp2p_tls::certificate::parse(cert).map_err(|e| anyhow!("bad certificate: {e}"))?;
    Ok(parsed.peer_id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::keys::{Role, SecretKey};

    fn identity(seed: u8) -> Identity {
        Identity::from_secret(&SecretKey::from_seed(Role::Node, [seed; 32])).unwrap()
    }

    #[tokio::test]
    async fn both_sides_learn_the_proven_peer_id() {
        let (a, b) = (identity(1), identity(2));
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = bind(&a, any, Congestion::default()).unwrap();
        let client = bind(&b, any, Congestion::default()).unwrap();
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move { server.accept().await.unwrap().await.unwrap() });
        let dialled = client.connect(addr, "shoal").unwrap().await.unwrap();
        let accepted = accept.await.unwrap();
        assert_eq!(remote_peer_id(&dialled).unwrap(), a.peer_id());
        assert_eq!(remote_peer_id(&accepted).unwrap(), b.peer_id());
        // Data flows over the authenticated connection.
        let mut send = dialled.open_uni().await.unwrap();
        send.write_all(b"piece").await.unwrap();
        send.finish().unwrap();
        let mut recv = accepted.accept_uni().await.unwrap();
        assert_eq!(recv.read_to_end(16).await.unwrap(), b"piece");
    }
}
