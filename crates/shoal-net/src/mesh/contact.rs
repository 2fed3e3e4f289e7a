//! How the control plane names a peer: its proven peer id and the address it listens on.

use libp2p_identity::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

/// A peer and its `--listen` address (UDP PORT data plane, UDP PORT+1 control plane, TCP PORT
/// API). Compared and hashed by peer id only: the same machine at a new address is the same peer.
#[derive(Clone, Copy, Debug)]
pub struct Contact {
    /// The peer id its connections prove.
    pub peer_id: PeerId,
    /// Its `--listen` address.
    pub addr: SocketAddr,
}

impl Contact {
    /// The UDP address of its control plane (libp2p QUIC): the listen port plus one.
    pub fn control_addr(&self) -> SocketAddr {
        control_addr(self.addr)
    }
}

/// The control-plane address that belongs to a `--listen` address.
pub fn control_addr(listen: SocketAddr) -> SocketAddr {
    SocketAddr::new(listen.ip(), listen.port().wrapping_add(1))
}

impl PartialEq for Contact {
    fn eq(&self, other: &Self) -> bool {
        self.peer_id == other.peer_id
    }
}
impl Eq for Contact {}
impl PartialOrd for Contact {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Contact {
    fn cmp(&self, other: &Self) -> Ordering {
        self.peer_id.cmp(&other.peer_id)
    }
}
impl Hash for Contact {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.peer_id.hash(state);
    }
}

impl Serialize for Contact {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.peer_id.to_bytes(), self.addr).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Contact {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (bytes, addr) = <(Vec<u8>, SocketAddr)>::deserialize(d)?;
        let peer_id = PeerId::from_bytes(&bytes).map_err(serde::de::Error::custom)?;
        Ok(Contact { peer_id, addr })
    }
}
