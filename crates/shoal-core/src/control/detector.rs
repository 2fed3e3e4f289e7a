//! Failure detection between neighbours: pings, indirect probes through other neighbours, and
//! timeouts that stretch when this node itself is slow.

use super::Peer;
use super::message::Message;
use super::node::{MAX_RELAYS, Neighbour, Node, Probe, Relay};
use rand::seq::SliceRandom;
use std::time::Duration;

impl<P: Peer> Node<P> {
    pub(super) fn on_ping(&mut self, from: P, nonce: u64, latest: u64) {
        let neighbour = self.is_neighbour(&from);
        self.send(
            from,
            Message::Pong {
                nonce,
                latest: self.latest,
                neighbour,
            },
        );
        self.heard_latest(from, latest);
    }

    pub(super) fn on_pong(&mut self, from: P, nonce: u64, latest: u64, neighbour: bool) {
        if !neighbour && self.remove_active(&from) {
            // It does not count us as its neighbour: drop the one-sided link and refill.
            self.outputs
                .push_back(super::node::Output::Disconnect { peer: from });
        }
        let now = self.now;
        if let Some(i) = self
            .relays
            .iter()
            .position(|r| r.target == from && r.our_nonce == nonce)
        {
            let relay = self.relays.swap_remove(i);
            self.send(
                relay.requester,
                Message::ProbeReply {
                    target: relay.target,
                    nonce: relay.their_nonce,
                },
            );
        }
        let mut on_time = false;
        if let Some(n) = self.neighbour_mut(&from) {
            match n.probe {
                Probe::Direct {
                    nonce: expected,
                    sent,
                    ..
                } if expected == nonce => {
                    n.rtt = Some(now.saturating_sub(sent));
                    n.probe = Probe::Idle;
                    on_time = true;
                }
                Probe::Indirect {
                    nonce: expected, ..
                } if expected == nonce => n.probe = Probe::Idle,
                _ => {}
            }
        }
        if on_time {
            self.slowness = self.slowness.saturating_sub(1);
        }
        self.heard_latest(from, latest);
    }

    pub(super) fn on_probe_request(&mut self, from: P, target: P, nonce: u64) {
        if target == self.me.peer || target == from || self.relays.len() >= MAX_RELAYS {
            return;
        }
        let our_nonce = self.next_nonce();
        let deadline = self.now + self.stretched(self.config.ping_timeout);
        self.relays.push(Relay {
            requester: from,
            target,
            their_nonce: nonce,
            our_nonce,
            deadline,
        });
        self.send(
            target,
            Message::Ping {
                nonce: our_nonce,
                latest: self.latest,
            },
        );
    }

    pub(super) fn on_probe_reply(&mut self, target: P, nonce: u64) {
        let now = self.now;
        if let Some(n) = self.neighbour_mut(&target)
            && matches!(n.probe, Probe::Indirect { nonce: expected, .. } if expected == nonce)
        {
            n.probe = Probe::Idle;
            n.last_heard = now;
        }
    }

    /// When `n`'s probe needs attention next: always on a tick, so one wake-up serves every
    /// neighbour.
    ///
    /// A quiet link is kept checked from one end, the one with the smaller key: it pings at the
    /// first tick after a `ping_interval` of silence, and its ping is all the other end needs
    /// to hear. The other end pings only after twice that silence, when the first may be gone.
    /// Checking from both ends would double the pings and tell neither end more.
    pub(super) fn next_probe_deadline(&self, n: &Neighbour<P>) -> Duration {
        match n.probe {
            Probe::Idle => {
                let quiet = if self.me.peer < n.entry.peer {
                    self.config.ping_interval
                } else {
                    self.config.ping_interval * 2
                };
                self.on_tick(n.last_heard + quiet)
            }
            Probe::Direct { deadline, .. } | Probe::Indirect { deadline, .. } => deadline,
        }
    }

    /// When a probe sent now has timed out: the first tick a stretched `ping_timeout` away.
    fn probe_deadline(&self) -> Duration {
        self.on_tick(self.now + self.stretched(self.config.ping_timeout))
    }

    pub(super) fn detector_timers(&mut self) {
        let now = self.now;
        self.relays.retain(|r| r.deadline > now);
        let mut dead = Vec::new();
        for i in 0..self.active.len() {
            let n = &self.active[i];
            let peer = n.entry.peer;
            let due = now >= self.next_probe_deadline(n);
            match n.probe {
                Probe::Idle if due => {
                    // Anything heard from a neighbour proves it alive, so only the silent are pinged.
                    let nonce = self.next_nonce();
                    let deadline = self.probe_deadline();
                    self.active[i].probe = Probe::Direct {
                        nonce,
                        sent: now,
                        deadline,
                    };
                    self.send(
                        peer,
                        Message::Ping {
                            nonce,
                            latest: self.latest,
                        },
                    );
                }
                Probe::Direct {
                    nonce, deadline, ..
                } if now >= deadline => {
                    let mut helpers: Vec<P> = self
                        .active
                        .iter()
                        .map(|h| h.entry.peer)
                        .filter(|h| *h != peer)
                        .collect();
                    helpers.shuffle(&mut self.rng);
                    helpers.truncate(self.config.indirect_probes);
                    for helper in helpers {
                        self.send(
                            helper,
                            Message::ProbeRequest {
                                target: peer,
                                nonce,
                            },
                        );
                    }
                    // A second direct ping, in case only the first was lost.
                    self.send(
                        peer,
                        Message::Ping {
                            nonce,
                            latest: self.latest,
                        },
                    );
                    let deadline = self.probe_deadline();
                    self.active[i].probe = Probe::Indirect { nonce, deadline };
                }
                Probe::Indirect { deadline, .. } if now >= deadline => dead.push(peer),
                _ => {}
            }
        }
        for peer in dead {
            self.stats.declared_dead += 1;
            self.fail(peer);
        }
    }

    /// Records a neighbour's latest sequence number and pulls what this node is missing.
    pub(super) fn heard_latest(&mut self, from: P, latest: u64) {
        if let Some(n) = self.neighbour_mut(&from) {
            n.latest = n.latest.max(latest);
        }
        self.pull_from(from, latest);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{node_with_neighbours, sends};
    use super::super::{Config, Node};
    use super::*;

    /// A node with neighbours 1, 2 and 3, all just heard from at time zero.
    fn node_with_three_neighbours() -> Node<u32> {
        node_with_neighbours(&[1, 2, 3], 7)
    }

    #[test]
    fn a_silent_neighbour_is_probed_indirectly_then_declared_dead() {
        let mut node = node_with_three_neighbours();
        let config = Config::default();
        let mut now = node.on_tick(config.ping_interval);
        node.handle_timeout(now);
        let pings = sends(&mut node);
        assert_eq!(
            pings
                .iter()
                .filter(|(_, m)| matches!(m, Message::Ping { .. }))
                .count(),
            3
        );
        // 2 and 3 answer; 1 stays silent.
        for (to, message) in pings {
            if let Message::Ping { nonce, .. } = message
                && to != 1
            {
                node.handle_message(
                    now,
                    to,
                    Message::Pong {
                        nonce,
                        latest: 0,
                        neighbour: true,
                    },
                );
            }
        }
        now = node.on_tick(now + config.ping_timeout);
        node.handle_timeout(now);
        let probes: Vec<u32> = sends(&mut node)
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::ProbeRequest { target: 1, .. } => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(probes.len(), 2, "two other neighbours are asked");
        assert!(
            node.is_neighbour(&1),
            "not dead before the indirect probes time out"
        );
        now = node.on_tick(now + config.ping_timeout);
        node.handle_timeout(now);
        assert!(!node.is_neighbour(&1));
        assert_eq!(node.stats().declared_dead, 1);
        assert!(node.is_neighbour(&2) && node.is_neighbour(&3));
    }

    #[test]
    fn an_indirect_answer_keeps_the_neighbour() {
        let mut node = node_with_three_neighbours();
        let config = Config::default();
        let pinged = node.on_tick(config.ping_interval);
        let now = node.on_tick(pinged + config.ping_timeout);
        node.handle_timeout(pinged);
        for (to, message) in sends(&mut node) {
            if let Message::Ping { nonce, .. } = message
                && to != 1
            {
                node.handle_message(
                    pinged,
                    to,
                    Message::Pong {
                        nonce,
                        latest: 0,
                        neighbour: true,
                    },
                );
            }
        }
        node.handle_timeout(now);
        let (helper, nonce) = sends(&mut node)
            .into_iter()
            .find_map(|(to, m)| match m {
                Message::ProbeRequest { target: 1, nonce } => Some((to, nonce)),
                _ => None,
            })
            .unwrap();
        node.handle_message(now, helper, Message::ProbeReply { target: 1, nonce });
        node.handle_timeout(node.on_tick(now + config.ping_timeout));
        assert!(node.is_neighbour(&1));
        assert_eq!(node.stats().declared_dead, 0);
    }

    /// Answers every ping among the node's outputs at `now`.
    fn answer_pings(node: &mut Node<u32>, now: Duration) -> Vec<u32> {
        let mut pinged = Vec::new();
        for (to, message) in sends(node) {
            if let Message::Ping { nonce, .. } = message {
                pinged.push(to);
                let pong = Message::Pong {
                    nonce,
                    latest: 0,
                    neighbour: true,
                };
                node.handle_message(now, to, pong);
            }
        }
        pinged
    }

    #[test]
    fn an_idle_node_wakes_once_a_tick_however_scattered_its_neighbours_are() {
        let peers = [1, 2, 3, 4, 5];
        let mut node = node_with_neighbours(&peers, 7);
        for (i, &peer) in peers.iter().enumerate() {
            let pong = Message::Pong {
                nonce: 0,
                latest: 0,
                neighbour: true,
            };
            node.handle_message(Duration::from_millis(10 + 170 * i as u64), peer, pong);
        }
        // The fill due since the start finds the view full and is not scheduled again.
        let fill = node.poll_timeout();
        node.handle_timeout(fill);
        let period = Config::default().ping_interval;
        let mut wakes: Vec<Duration> = Vec::new();
        let mut pings = 0;
        while wakes.last().is_none_or(|&at| at < Duration::from_secs(30)) {
            let at = node.poll_timeout();
            assert_eq!(node.on_tick(at), at, "{at:?} is on one of the node's ticks");
            if let Some(&last) = wakes.last() {
                assert!(at >= last + period, "woke at {last:?} then at {at:?}");
            }
            node.handle_timeout(at);
            pings += answer_pings(&mut node, at).len();
            wakes.push(at);
        }
        // Node 0 keeps each quiet link checked: every neighbour is pinged once every two ticks
        // (silent for a period, pinged at the tick after).
        assert!(pings >= 5 * 12, "{pings} pings in 30 s");
        assert!(wakes.len() <= 31, "{} wake-ups in 30 s", wakes.len());
    }

    #[test]
    fn a_quiet_link_is_pinged_from_the_end_with_the_smaller_key() {
        // Node 5 is the smaller end of its link with 9 and the larger of its link with 2.
        let mut node = super::super::testing::node_with_neighbours_as(5, &[2, 9], 3);
        let config = Config::default();
        let first = node.on_tick(config.ping_interval);
        node.handle_timeout(first);
        assert_eq!(
            answer_pings(&mut node, first),
            vec![9],
            "only the larger peer at first"
        );
        let later = node.on_tick(config.ping_interval * 2);
        node.handle_timeout(later);
        assert!(
            answer_pings(&mut node, later).contains(&2),
            "the smaller peer is pinged after twice the silence, in case it is gone"
        );
    }

    #[test]
    fn a_full_view_does_not_wake_the_node_to_fill_it() {
        let mut node = node_with_neighbours(&[1, 2, 3, 4, 5], 7);
        let config = Config::default();
        let at = node.poll_timeout();
        node.handle_timeout(at);
        assert!(
            node.poll_timeout() >= node.on_tick(config.ping_interval),
            "nothing before the first probe is due"
        );
    }

    #[test]
    fn ticks_fall_a_period_apart_at_the_phase() {
        let period = 1_000;
        let phase = Duration::from_nanos(300);
        let tick = |at: u64| super::super::node::tick_at(phase, period, Duration::from_nanos(at));
        assert_eq!(tick(0), Duration::from_nanos(300));
        assert_eq!(tick(300), Duration::from_nanos(300));
        assert_eq!(tick(301), Duration::from_nanos(1_300));
        assert_eq!(tick(5_299), Duration::from_nanos(5_300));
        assert_eq!(
            super::super::node::tick_at(phase, period, Duration::MAX),
            Duration::MAX,
            "never stays never"
        );
        // Far out, and with a phase past the period: the next tick at or after, on the phase.
        let phase = Duration::from_nanos(2_700);
        for at in [0, 1, 699, 700, 701, 1 << 40, u64::MAX - 5] {
            let at = Duration::from_nanos(at);
            let t = super::super::node::tick_at(phase, period, at);
            assert!(
                t >= at && t - at < Duration::from_nanos(period),
                "{at:?} -> {t:?}"
            );
            assert_eq!(t.as_nanos() % 1_000, 700, "{at:?} -> {t:?}");
        }
    }

    #[test]
    fn a_late_node_stretches_its_own_timeouts() {
        let mut node = node_with_three_neighbours();
        let due = node.poll_timeout();
        // The driver was stalled for 5 s past the deadline.
        node.handle_timeout(due + Duration::from_secs(5));
        assert_eq!(node.slowness_factor(), 2);
        assert_eq!(node.stats().late_wakeups, 1);
        let pings = sends(&mut node);
        // Nothing was declared dead because of our own stall.
        assert!(
            pings
                .iter()
                .all(|(_, m)| !matches!(m, Message::ProbeRequest { .. }))
        );
    }
}
