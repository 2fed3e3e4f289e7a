//! The swarm's peer table stored as two parallel vectors, the sorted keys and the peers, behind
//! `litemap`'s map interface. A lookup's binary search reads only the keys (eight bytes each: a
//! few dozen fit in a few cache lines) instead of striding across whole peer entries. In a
//! simulated fleet every announcement looks its sender up in another node's table, so the
//! probes' cache misses were most of the cost of an announcement.

use super::PeerKey;
use super::peer::Peer;
use litemap::store::{Store, StoreIterable, StoreIterableMut, StoreMut};
use std::cmp::Ordering;
use std::iter::Zip;
use std::slice;

/// The keys and the peers, index for index.
#[derive(Debug, Default)]
pub(super) struct PeerStore {
    keys: Vec<PeerKey>,
    peers: Vec<Peer>,
}

impl Store<PeerKey, Peer> for PeerStore {
    fn lm_len(&self) -> usize {
        self.keys.len()
    }

    fn lm_get(&self, index: usize) -> Option<(&PeerKey, &Peer)> {
        Some((self.keys.get(index)?, self.peers.get(index)?))
    }

    fn lm_binary_search_by<F>(&self, cmp: F) -> Result<usize, usize>
    where
        F: FnMut(&PeerKey) -> Ordering,
    {
        self.keys.binary_search_by(cmp)
    }
}

impl StoreMut<PeerKey, Peer> for PeerStore {
    fn lm_with_capacity(capacity: usize) -> Self {
        Self {
            keys: Vec::with_capacity(capacity),
            peers: Vec::with_capacity(capacity),
        }
    }

    /// Grows by a quarter (at least four) when full, not by doubling: a node keeps a few dozen
    /// peers for the swarm's life, and a doubled table would leave up to half of it empty.
    fn lm_reserve(&mut self, additional: usize) {
        let len = self.keys.len();
        if self.keys.capacity() - len < additional {
            let more = additional.max(len / 4).max(4);
            self.keys.reserve_exact(more);
            self.peers.reserve_exact(more);
        }
    }

    fn lm_get_mut(&mut self, index: usize) -> Option<(&PeerKey, &mut Peer)> {
        Some((self.keys.get(index)?, self.peers.get_mut(index)?))
    }

    fn lm_push(&mut self, key: PeerKey, value: Peer) {
        self.keys.push(key);
        self.peers.push(value);
    }

    fn lm_insert(&mut self, index: usize, key: PeerKey, value: Peer) {
        self.keys.insert(index, key);
        self.peers.insert(index, value);
    }

    fn lm_remove(&mut self, index: usize) -> (PeerKey, Peer) {
        (self.keys.remove(index), self.peers.remove(index))
    }

    fn lm_clear(&mut self) {
        self.keys.clear();
        self.peers.clear();
    }
}

impl<'a> StoreIterable<'a, PeerKey, Peer> for PeerStore {
    type KeyValueIter = Zip<slice::Iter<'a, PeerKey>, slice::Iter<'a, Peer>>;

    fn lm_iter(&'a self) -> Self::KeyValueIter {
        self.keys.iter().zip(self.peers.iter())
    }
}

impl<'a> StoreIterableMut<'a, PeerKey, Peer> for PeerStore {
    type KeyValueIterMut = Zip<slice::Iter<'a, PeerKey>, slice::IterMut<'a, Peer>>;

    fn lm_iter_mut(&'a mut self) -> Self::KeyValueIterMut {
        self.keys.iter().zip(self.peers.iter_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use litemap::LiteMap;

    #[test]
    fn the_store_keeps_keys_and_peers_together() {
        let mut map: LiteMap<PeerKey, Peer, PeerStore> =
            LiteMap::from_sorted_store_unchecked(PeerStore::default());
        for k in [5u64, 1, 9, 3] {
            map.reserve(1);
            map.insert(PeerKey(k), Peer::new(8, k == 9));
        }
        let keys: Vec<u64> = map.keys().map(|k| k.0).collect();
        assert_eq!(keys, [1, 3, 5, 9]);
        assert!(map.get(&PeerKey(9)).is_some_and(|p| p.is_origin));
        assert!(map.get(&PeerKey(4)).is_none());
        map.remove(&PeerKey(3));
        let keys: Vec<u64> = map.keys().map(|k| k.0).collect();
        assert_eq!(keys, [1, 5, 9]);
        assert_eq!(map.find_index(&PeerKey(9)), Ok(2));
        for (_, p) in map.iter_mut() {
            p.sending += 1;
        }
        assert!(map.values().all(|p| p.sending == 1));
        assert!(map.get(&PeerKey(9)).is_some_and(|p| p.is_origin));
    }

    #[test]
    fn the_store_grows_by_a_quarter_not_by_doubling() {
        let mut store = PeerStore::default();
        for k in 0..40u64 {
            store.lm_reserve(1);
            store.lm_push(PeerKey(k), Peer::new(8, false));
        }
        // 4, 8, 12, 16, 20, 25, 31, 38, 47: doubling would have reached 64.
        assert_eq!(store.keys.capacity(), 47);
        assert_eq!(store.peers.capacity(), 47);
    }
}
