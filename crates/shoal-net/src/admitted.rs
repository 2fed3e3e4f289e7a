//! The credentials that open links were admitted with, so that a later change of the rules (a
//! revoked onboarding token) reaches links that are already up, not only the ones opened after it.
//!
//! A link registers its peer's credential (the hello's bytes) before the credential is checked,
//! and the registration ends with the link. [`Admitted::refused`] applies a check to every
//! registered credential and names the links it refuses; the plane that owns them closes them.
//! Registering first closes the race with a rule change: a check that read the old rules ran
//! before the change, so its registration is there for the recheck that follows the change.

use bytes::Bytes;
use libp2p_identity::PeerId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Open links by registration number: the peer, its credential and a handle on the link `L`.
#[derive(Debug)]
pub struct Admitted<L> {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (PeerId, Bytes, L)>>,
}

impl<L> Default for Admitted<L> {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }
}

/// A link's place in [`Admitted`]; dropping it (when the link ends) removes the link.
#[derive(Debug)]
pub struct Registration<L> {
    id: u64,
    owner: Arc<Admitted<L>>,
}

impl<L> Drop for Registration<L> {
    fn drop(&mut self) {
        self.owner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// A link a recheck refused: its peer, the handle on it, and why.
#[derive(Debug)]
pub struct Refused<L> {
    /// The peer.
    pub peer: PeerId,
    /// The link.
    pub link: L,
    /// Why its credential no longer admits it.
    pub reason: String,
}

impl<L: Clone> Admitted<L> {
    /// Registers `link` to `peer`, admitted (or about to be checked) with `credential`.
    pub fn register(self: &Arc<Self>, peer: PeerId, credential: Bytes, link: L) -> Registration<L> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (peer, credential, link));
        Registration {
            id,
            owner: Arc::clone(self),
        }
    }

    /// The open links whose credential `check` refuses now, with its reason.
    pub fn refused(&self, check: impl Fn(&PeerId, &[u8]) -> Result<(), String>) -> Vec<Refused<L>> {
        let open: Vec<(PeerId, Bytes, L)> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        open.into_iter()
            .filter_map(|(peer, credential, link)| {
                check(&peer, &credential)
                    .err()
                    .map(|reason| Refused { peer, link, reason })
            })
            .collect()
    }

    /// Links registered now.
    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no link is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(seed: u8) -> PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([seed; 32])
            .expect("valid seed")
            .public()
            .to_peer_id()
    }

    #[test]
    fn a_recheck_names_the_links_it_refuses_and_ended_links_are_gone() {
        let admitted = Arc::new(Admitted::<u32>::default());
        let good = admitted.register(peer(1), Bytes::from_static(b"token-a"), 1);
        let bad = admitted.register(peer(2), Bytes::from_static(b"token-b"), 2);
        let also_bad = admitted.register(peer(3), Bytes::from_static(b"token-b"), 3);
        let check = |_: &PeerId, credential: &[u8]| {
            if credential == b"token-b" {
                Err("token b is revoked".to_string())
            } else {
                Ok(())
            }
        };
        let mut refused: Vec<(PeerId, u32)> = admitted
            .refused(check)
            .into_iter()
            .map(|r| {
                assert_eq!(r.reason, "token b is revoked");
                (r.peer, r.link)
            })
            .collect();
        refused.sort_by_key(|&(_, link)| link);
        assert_eq!(refused, vec![(peer(2), 2), (peer(3), 3)]);

        drop(bad);
        assert_eq!(admitted.len(), 2);
        let refused: Vec<u32> = admitted
            .refused(check)
            .into_iter()
            .map(|r| r.link)
            .collect();
        assert_eq!(refused, vec![3]);
        drop((good, also_bad));
        assert!(admitted.is_empty());
    }
}
