//! The addresses of control-plane peers whose hello passed, used to name the senders of frames.
//!
//! The overlay delivers frames by peer id; the core needs a [`Contact`] (peer id and `--listen`
//! address) for each sender. The address comes from the peer's own hello, checked with its
//! certificate, and from nowhere else: a sender whose address is not known is not named at all
//! (its frame is dropped), because an invented address would spread through shuffles into other
//! nodes' views. The table is bounded; when it is full the entry used least recently makes room,
//! so the peers a node talks to keep their names while one-off joiners at a busy seed are
//! forgotten first.

use super::contact::Contact;
use libp2p::PeerId;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Peers remembered by default; a node talks to far fewer (its views hold under 50).
pub const MAX_KNOWN_PEERS: usize = 16 * 1024;

/// Known peers and their addresses, least recently used evicted first.
#[derive(Debug)]
pub struct KnownPeers {
    entries: HashMap<PeerId, (SocketAddr, u64)>,
    capacity: usize,
    clock: u64,
}

impl KnownPeers {
    /// An empty table holding at most `capacity` peers (at least one).
    pub fn new(capacity: usize) -> Self {
        KnownPeers {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Records `peer` at `addr` (its hello passed), evicting the least recently used entry if
    /// the table is full.
    pub fn remember(&mut self, peer: PeerId, addr: SocketAddr) {
        self.clock += 1;
        if !self.entries.contains_key(&peer) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(peer, (addr, self.clock));
    }

    /// The contact of `peer`, if its address is known; marks it used.
    pub fn get(&mut self, peer: &PeerId) -> Option<Contact> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(peer).map(|(addr, used)| {
            *used = clock;
            Contact {
                peer_id: *peer,
                addr: *addr,
            }
        })
    }

    /// Peers remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn an_unknown_peer_has_no_contact_rather_than_an_invented_one() {
        let mut known = KnownPeers::new(4);
        assert_eq!(known.get(&PeerId::random()), None);
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_used_peer_only() {
        let mut known = KnownPeers::new(3);
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().take(3).enumerate() {
            known.remember(*p, addr(1000 + i as u16));
        }
        // Peer 0 is in use; peer 1 is now the least recently used.
        assert_eq!(known.get(&peers[0]).map(|c| c.addr), Some(addr(1000)));
        known.remember(peers[3], addr(1003));
        assert_eq!(known.len(), 3);
        assert_eq!(known.get(&peers[1]), None);
        for (i, p) in [0, 2, 3].iter().map(|&i| (i, peers[i])) {
            assert_eq!(known.get(&p).map(|c| c.addr), Some(addr(1000 + i as u16)));
        }
    }

    #[test]
    fn a_new_hello_updates_the_address() {
        let mut known = KnownPeers::new(2);
        let p = PeerId::random();
        known.remember(p, addr(1));
        known.remember(p, addr(2));
        assert_eq!(known.len(), 1);
        assert_eq!(known.get(&p).map(|c| c.addr), Some(addr(2)));
    }
}
