//! Plumtree: eager push along a tree, lazy `IHave`s, grafts and prunes, plus anti-entropy on
//! sequence numbers and the kept envelopes newcomers sync.

use super::Peer;
use super::message::{Envelope, MAX_SYNC_ENVELOPES, Message};
use super::node::{MAX_ANNOUNCERS, MAX_KEPT, MAX_MISSING, Missing, Node, Output};
use std::sync::Arc;

/// How far back a node pulls when a neighbour is ahead: only the most recent messages matter;
/// older kept ones come with a sync.
const PULL_WINDOW: u64 = 16;

/// Delivered sequence numbers are remembered exactly within this window below the latest.
const DELIVERED_WINDOW: u64 = 64;

impl<P: Peer> Node<P> {
    pub(super) fn on_gossip(&mut self, from: P, envelope: Arc<Envelope>) {
        if self.is_delivered(envelope.seq, envelope.keep) {
            self.stats.duplicates += 1;
            // A second copy by eager push means a redundant tree edge: cut it.
            if let Some(n) = self.neighbour_mut(&from)
                && n.eager
            {
                n.eager = false;
                self.send(from, Message::Prune);
            }
            return;
        }
        let newest = envelope.seq > self.latest;
        let previous_latest = self.latest;
        self.record(&envelope);
        self.stats.delivered += 1;
        self.last_delivery = Some(self.now);
        self.missing.retain(|m| m.seq != envelope.seq);
        let neighbour = if let Some(n) = self.neighbour_mut(&from) {
            n.eager = true;
            n.latest = n.latest.max(envelope.seq);
            true
        } else {
            false
        };
        if newest {
            // From anyone but a neighbour, this node has no parent in the new round: keeping
            // the old one could close a loop with a neighbour it now pushes the round to.
            self.parent = None;
            if neighbour {
                self.start_round(from, previous_latest);
            }
        }
        self.outputs.push_back(Output::Deliver {
            envelope: envelope.clone(),
        });
        self.push(Some(from), &envelope);
        // Anything skipped between the old latest and this one is probably on its way by
        // another path; if not, it is grafted from this sender.
        if newest {
            let first = previous_latest.max(envelope.seq.saturating_sub(PULL_WINDOW)) + 1;
            for seq in first..envelope.seq {
                self.expect(seq, from);
            }
        }
    }

    pub(super) fn on_ihave(&mut self, from: P, seq: u64) {
        if let Some(n) = self.neighbour_mut(&from) {
            n.latest = n.latest.max(seq);
        }
        if !self.is_delivered(seq, false) {
            self.expect(seq, from);
        }
    }

    pub(super) fn on_graft(&mut self, from: P, seq: u64) {
        if let Some(n) = self.neighbour_mut(&from) {
            n.eager = true;
        }
        let found = self
            .cache
            .iter()
            .chain(self.kept.iter())
            .find(|e| e.seq == seq)
            .cloned();
        if let Some(envelope) = found {
            self.send(from, Message::Gossip { envelope });
        }
    }

    pub(super) fn on_prune(&mut self, from: P) {
        if let Some(n) = self.neighbour_mut(&from) {
            n.eager = false;
        }
    }

    pub(super) fn on_sync(&mut self, from: P) {
        let envelopes: Vec<Arc<Envelope>> = self
            .kept
            .iter()
            .rev()
            .take(MAX_SYNC_ENVELOPES)
            .cloned()
            .collect();
        if !envelopes.is_empty() {
            self.send(from, Message::SyncReply { envelopes });
        }
    }

    /// A neighbour is at `latest`: expect (and later graft) what this node has not delivered.
    pub(super) fn pull_from(&mut self, from: P, latest: u64) {
        if latest <= self.latest || !self.is_neighbour(&from) {
            return;
        }
        let first = (self.latest + 1).max(latest.saturating_sub(PULL_WINDOW - 1));
        for seq in first..=latest {
            self.expect(seq, from);
        }
    }

    /// Notes that `seq` exists at `announcer`; grafted from it if it has not arrived by the
    /// graft timeout.
    fn expect(&mut self, seq: u64, announcer: P) {
        if self.is_delivered(seq, false) {
            return;
        }
        if let Some(m) = self.missing.iter_mut().find(|m| m.seq == seq) {
            if !m.announcers.contains(&announcer) && m.announcers.len() < MAX_ANNOUNCERS {
                m.announcers.push(announcer);
            }
            return;
        }
        if self.missing.len() >= MAX_MISSING {
            // Keep the newest: drop the oldest missing sequence number.
            if let Some(oldest) = self.missing.iter().map(|m| m.seq).min()
                && oldest < seq
            {
                self.missing.retain(|m| m.seq != oldest);
            } else {
                return;
            }
        }
        self.missing.push(Missing {
            seq,
            announcers: vec![announcer],
            deadline: self.now + self.config.graft_timeout,
        });
    }

    /// Sends `envelope` on: in full to eager neighbours, as `IHave` to lazy ones.
    pub(super) fn push(&mut self, from: Option<P>, envelope: &Arc<Envelope>) {
        let targets: Vec<(P, bool)> = self
            .active
            .iter()
            .filter(|n| Some(n.entry.peer) != from)
            .map(|n| (n.entry.peer, n.eager))
            .collect();
        for (peer, eager) in targets {
            let message = if eager {
                Message::Gossip {
                    envelope: envelope.clone(),
                }
            } else {
                Message::IHave { seq: envelope.seq }
            };
            self.send(peer, message);
        }
    }

    /// Marks `envelope` delivered and keeps it for grafts and syncs.
    pub(super) fn record(&mut self, envelope: &Arc<Envelope>) {
        let seq = envelope.seq;
        if seq > self.latest {
            let shift = seq - self.latest;
            self.delivered_mask = if shift >= DELIVERED_WINDOW {
                0
            } else {
                self.delivered_mask << shift
            };
            self.delivered_mask |= 1;
            self.latest = seq;
        } else if self.latest - seq < DELIVERED_WINDOW {
            self.delivered_mask |= 1 << (self.latest - seq);
        }
        if self.config.message_cache > 0 {
            if self.cache.len() >= self.config.message_cache {
                self.cache.pop_front();
            }
            self.cache.push_back(envelope.clone());
        }
        if envelope.keep && !self.kept.iter().any(|e| e.seq == seq) {
            if self.kept.len() >= MAX_KEPT {
                self.kept.remove(0);
            }
            let at = self.kept.partition_point(|e| e.seq < seq);
            self.kept.insert(at, envelope.clone());
        }
    }

    /// Whether `seq` has been delivered. Below the exact window, only kept envelopes are still
    /// told apart (a newcomer syncs old ones); anything else that old counts as delivered.
    pub(super) fn is_delivered(&self, seq: u64, keep: bool) -> bool {
        if seq == 0 {
            return true;
        }
        if seq > self.latest {
            return false;
        }
        let age = self.latest - seq;
        if age < DELIVERED_WINDOW {
            return self.delivered_mask & (1 << age) != 0;
        }
        !keep || self.kept.iter().any(|e| e.seq == seq)
    }

    pub(super) fn broadcast_timers(&mut self) {
        let now = self.now;
        if let Some(at) = self.next_heartbeat
            && now >= at
        {
            self.next_heartbeat = self.config.heartbeat_interval.map(|i| now + i);
            self.outputs.push_back(Output::HeartbeatDue);
        }
        let mut grafts = Vec::new();
        self.missing.retain_mut(|m| {
            if now < m.deadline {
                return true;
            }
            if m.announcers.is_empty() {
                return false;
            }
            let announcer = m.announcers.remove(0);
            grafts.push((announcer, m.seq));
            m.deadline = now + self.config.graft_timeout;
            true
        });
        for (announcer, seq) in grafts {
            if let Some(n) = self.neighbour_mut(&announcer) {
                n.eager = true;
                self.stats.grafts_sent += 1;
                self.send(announcer, Message::Graft { seq });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::node_with_neighbours;
    use super::super::{Config, Node, Output};
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn node() -> Node<u32> {
        node_with_neighbours(&[1, 2], 3)
    }

    fn deliveries(node: &mut Node<u32>) -> usize {
        std::iter::from_fn(|| node.poll_output())
            .filter(|o| matches!(o, Output::Deliver { .. }))
            .count()
    }

    #[test]
    fn a_replayed_envelope_is_delivered_once_and_its_second_eager_sender_is_pruned() {
        let mut node = node();
        let envelope = Arc::new(Envelope::unsigned(1, true, Bytes::from_static(b"x")));
        node.handle_message(
            Duration::ZERO,
            1,
            Message::Gossip {
                envelope: envelope.clone(),
            },
        );
        assert_eq!(deliveries(&mut node), 1);
        node.handle_message(
            Duration::ZERO,
            2,
            Message::Gossip {
                envelope: envelope.clone(),
            },
        );
        let out: Vec<_> = std::iter::from_fn(|| node.poll_output()).collect();
        assert!(!out.iter().any(|o| matches!(o, Output::Deliver { .. })));
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Send {
                to: 2,
                message: Message::Prune
            }
        )));
        // Long after, outside the exact window, a kept envelope still is not delivered again.
        for seq in 2..200 {
            let e = Arc::new(Envelope::unsigned(seq, false, Bytes::new()));
            node.handle_message(Duration::ZERO, 1, Message::Gossip { envelope: e });
        }
        while node.poll_output().is_some() {}
        node.handle_message(
            Duration::ZERO,
            1,
            Message::SyncReply {
                envelopes: vec![envelope],
            },
        );
        assert_eq!(deliveries(&mut node), 0);
        assert_eq!(node.stats().delivered, 199);
    }

    #[test]
    fn a_missing_announced_envelope_is_grafted_after_the_timeout() {
        let mut node = node();
        node.handle_message(Duration::ZERO, 2, Message::IHave { seq: 1 });
        node.handle_timeout(Duration::from_millis(100));
        let early: Vec<_> = std::iter::from_fn(|| node.poll_output()).collect();
        assert!(!early.iter().any(|o| matches!(
            o,
            Output::Send {
                message: Message::Graft { .. },
                ..
            }
        )));
        node.handle_timeout(Config::default().graft_timeout);
        let out: Vec<_> = std::iter::from_fn(|| node.poll_output()).collect();
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Send {
                to: 2,
                message: Message::Graft { seq: 1 }
            }
        )));
    }
}
