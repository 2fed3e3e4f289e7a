//! The swarm's tables of per-peer entries: our requests in flight, pieces peers declined, and
//! peers' requests waiting for an upload slot.
//!
//! Each table is one sorted list for the whole swarm, keyed by peer first, so a peer's entries
//! are one contiguous run and a peer with none costs nothing. The lists stay short: requests in
//! flight are bounded by the in-flight budget, queued requests by the per-peer queue limit, and
//! at any time only a few peers have entries at all. A map per peer would cost an allocation per
//! neighbour, which a node with dozens of neighbours in a simulated fleet of millions cannot
//! afford.

use super::PeerKey;
use crate::content::PieceIndex;
use litemap::LiteMap;
use std::ops::Range;

/// Values keyed by peer, then by `K`, in key order.
#[derive(Debug)]
pub(super) struct PerPeer<K, V>(LiteMap<(PeerKey, K), V>);

impl<K: Ord + Copy, V> PerPeer<K, V> {
    pub(super) fn new() -> Self {
        Self(LiteMap::new_vec())
    }

    /// Index range of `peer`'s entries.
    fn range(&self, peer: PeerKey) -> Range<usize> {
        let all = self.0.as_slice();
        let start = all.partition_point(|((p, _), _)| *p < peer);
        let end = start + all[start..].partition_point(|((p, _), _)| *p == peer);
        start..end
    }

    /// `peer`'s entries in key order.
    pub(super) fn of(&self, peer: PeerKey) -> impl Iterator<Item = (K, &V)> + '_ {
        self.0.as_slice()[self.range(peer)]
            .iter()
            .map(|((_, k), v)| (*k, v))
    }

    /// How many entries `peer` has.
    pub(super) fn count(&self, peer: PeerKey) -> usize {
        self.range(peer).len()
    }

    pub(super) fn get(&self, peer: PeerKey, key: K) -> Option<&V> {
        self.0.get(&(peer, key))
    }

    pub(super) fn contains(&self, peer: PeerKey, key: K) -> bool {
        self.0.contains_key(&(peer, key))
    }

    pub(super) fn insert(&mut self, peer: PeerKey, key: K, value: V) {
        self.0.insert((peer, key), value);
    }

    pub(super) fn remove(&mut self, peer: PeerKey, key: K) -> Option<V> {
        self.0.remove(&(peer, key))
    }

    /// Removes all of `peer`'s entries and returns their keys.
    pub(super) fn remove_peer(&mut self, peer: PeerKey) -> Vec<K> {
        let keys: Vec<K> = self.of(peer).map(|(k, _)| k).collect();
        self.0.retain(|(p, _), _| *p != peer);
        keys
    }

    /// Every entry, by peer then key.
    pub(super) fn iter(&self) -> impl Iterator<Item = (PeerKey, K, &V)> + '_ {
        self.0.iter().map(|((p, k), v)| (*p, *k, v))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.0.values()
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(PeerKey, K, &V) -> bool) {
        self.0.retain(|(p, k), v| keep(*p, *k, v));
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A peer's request to us waiting for an upload slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct Queued {
    pub(super) piece: PieceIndex,
    /// How many times a later request of the same peer was served before this one.
    pub(super) passed: u32,
}

/// Requests waiting for an upload slot: per peer in arrival order, peers in key order.
#[derive(Debug, Default)]
pub(super) struct UploadQueue(Vec<(PeerKey, Queued)>);

impl UploadQueue {
    fn range(&self, peer: PeerKey) -> Range<usize> {
        let start = self.0.partition_point(|(p, _)| *p < peer);
        let end = start + self.0[start..].partition_point(|(p, _)| *p == peer);
        start..end
    }

    /// `peer`'s waiting requests, oldest first.
    pub(super) fn of(&self, peer: PeerKey) -> impl Iterator<Item = Queued> + '_ {
        self.0[self.range(peer)].iter().map(|(_, q)| *q)
    }

    pub(super) fn count(&self, peer: PeerKey) -> usize {
        self.range(peer).len()
    }

    /// Whether no request waits, from any peer.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Queues `piece` for `peer` behind its other requests.
    pub(super) fn push(&mut self, peer: PeerKey, piece: PieceIndex) {
        let end = self.range(peer).end;
        self.0.insert(end, (peer, Queued { piece, passed: 0 }));
    }

    /// Takes `peer`'s `n`th waiting request (0 = oldest); the ones before it count one more
    /// time passed over.
    pub(super) fn take(&mut self, peer: PeerKey, n: usize) -> Option<PieceIndex> {
        let range = self.range(peer);
        if n >= range.len() {
            return None;
        }
        for (_, q) in &mut self.0[range.start..range.start + n] {
            q.passed += 1;
        }
        Some(self.0.remove(range.start + n).1.piece)
    }

    /// Drops `peer`'s waiting requests that `drop` picks.
    pub(super) fn remove_where(&mut self, peer: PeerKey, mut drop: impl FnMut(PieceIndex) -> bool) {
        let range = self.range(peer);
        let mut at = range.start;
        let mut end = range.end;
        while at < end {
            if drop(self.0[at].1.piece) {
                self.0.remove(at);
                end -= 1;
            } else {
                at += 1;
            }
        }
    }

    pub(super) fn remove_peer(&mut self, peer: PeerKey) {
        self.0.drain(self.range(peer));
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_peer_entries_are_contiguous_and_in_key_order() {
        let mut t: PerPeer<u32, u8> = PerPeer::new();
        t.insert(PeerKey(2), 5, 1);
        t.insert(PeerKey(1), 9, 2);
        t.insert(PeerKey(2), 3, 3);
        t.insert(PeerKey(3), 0, 4);
        assert_eq!(t.of(PeerKey(2)).collect::<Vec<_>>(), vec![(3, &3), (5, &1)]);
        assert_eq!(t.count(PeerKey(2)), 2);
        assert_eq!(t.count(PeerKey(7)), 0);
        assert_eq!(t.remove(PeerKey(2), 3), Some(3));
        assert_eq!(t.remove(PeerKey(2), 3), None);
        assert_eq!(t.remove_peer(PeerKey(1)), vec![9]);
        assert_eq!(t.len(), 2);
        let all: Vec<_> = t.iter().map(|(p, k, _)| (p.0, k)).collect();
        assert_eq!(all, vec![(2, 5), (3, 0)]);
    }

    #[test]
    fn upload_queue_keeps_each_peers_arrival_order() {
        let mut q = UploadQueue::default();
        q.push(PeerKey(2), PieceIndex(7));
        q.push(PeerKey(1), PieceIndex(1));
        q.push(PeerKey(2), PieceIndex(3));
        q.push(PeerKey(2), PieceIndex(5));
        let pieces = |q: &UploadQueue, p| q.of(PeerKey(p)).map(|e| e.piece.0).collect::<Vec<_>>();
        assert_eq!(pieces(&q, 2), vec![7, 3, 5]);
        // Taking the third passes over the first two.
        assert_eq!(q.take(PeerKey(2), 2), Some(PieceIndex(5)));
        assert_eq!(
            q.of(PeerKey(2)).map(|e| e.passed).collect::<Vec<_>>(),
            vec![1, 1]
        );
        assert_eq!(q.take(PeerKey(2), 2), None);
        q.remove_where(PeerKey(2), |p| p.0 == 7);
        assert_eq!(pieces(&q, 2), vec![3]);
        assert_eq!(pieces(&q, 1), vec![1]);
        q.remove_peer(PeerKey(2));
        assert_eq!(q.len(), 1);
        assert_eq!(q.count(PeerKey(1)), 1);
    }
}
