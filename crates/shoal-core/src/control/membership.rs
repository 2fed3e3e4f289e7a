//! HyParView: the active and passive views, joins, neighbour requests, shuffles, rejoins and the
//! locality cache.

use super::Peer;
use super::message::{Message, Priority};
use super::node::{Neighbour, Node, Output, Probe, jitter};
use super::place::Entry;
use crate::labels::Closeness;
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use std::time::Duration;

impl<P: Peer> Node<P> {
    pub(super) fn on_join(&mut self, joiner: Entry<P>) {
        if self.is_neighbour(&joiner.peer) {
            // A repeated join from a neighbour: confirm, but do not walk it through the overlay again.
            self.send(
                joiner.peer,
                Message::NeighbourReply {
                    place: self.me.place,
                    accepted: true,
                },
            );
            return;
        }
        let (start, count) = self.join_window;
        if self.now.saturating_sub(start) >= Duration::from_secs(1) {
            self.join_window = (self.now, 1);
        } else if count >= self.config.max_joins_per_sec {
            // Over the limit the view stays as it is, but the joiner is pointed at other
            // members: it asks one of them to be its neighbour, which spreads a join storm over
            // the overlay instead of queueing it at the seeds.
            self.stats.joins_refused += 1;
            let entries = self.shuffle_sample(joiner.peer);
            self.send(joiner.peer, Message::ShuffleReply { entries });
            return;
        } else {
            self.join_window.1 += 1;
        }
        let capacity = self.config.active_view_capacity;
        self.add_active(joiner, capacity);
        self.send(
            joiner.peer,
            Message::NeighbourReply {
                place: self.me.place,
                accepted: true,
            },
        );
        // A newcomer knows only its contact: give it candidates to fill its views from at once.
        let entries = self.shuffle_sample(joiner.peer);
        self.send(joiner.peer, Message::ShuffleReply { entries });
        let ttl = self.config.active_random_walk_length;
        let others: Vec<P> = self
            .active
            .iter()
            .map(|n| n.entry.peer)
            .filter(|p| *p != joiner.peer)
            .collect();
        for peer in others {
            self.send(peer, Message::ForwardJoin { joiner, ttl });
        }
    }

    pub(super) fn on_forward_join(&mut self, from: P, joiner: Entry<P>, ttl: u8) {
        if joiner.peer == self.me.peer || self.is_neighbour(&joiner.peer) {
            return;
        }
        let ttl = ttl.min(self.config.active_random_walk_length);
        let next: Vec<P> = self
            .active
            .iter()
            .map(|n| n.entry.peer)
            .filter(|p| *p != from && *p != joiner.peer)
            .collect();
        if ttl == 0 || next.is_empty() {
            let capacity = self.config.active_view_capacity;
            self.add_active(joiner, capacity);
            self.send(
                joiner.peer,
                Message::NeighbourReply {
                    place: self.me.place,
                    accepted: true,
                },
            );
            return;
        }
        if ttl == self.config.passive_random_walk_length {
            self.add_passive(joiner);
        }
        let Some(&to) = next.choose(&mut self.rng) else {
            return;
        };
        self.send(
            to,
            Message::ForwardJoin {
                joiner,
                ttl: ttl - 1,
            },
        );
    }

    pub(super) fn on_neighbour(&mut self, asker: Entry<P>, priority: Priority) {
        // Only a node short of neighbours asks, so a request is always taken. A node already
        // one over capacity makes room by displacing a random neighbour: that neighbour is then
        // short by one and asks in turn, so a shortage walks through the overlay until it
        // reaches a node with a neighbour to spare. Refusing instead can leave a short node
        // stuck when every candidate it knows is one over capacity (seen in a 12-node mesh).
        let capacity = self.config.active_view_capacity;
        let limit = match priority {
            Priority::High => capacity,
            Priority::Low => capacity + 1,
        };
        self.add_active(asker, limit);
        self.send(
            asker.peer,
            Message::NeighbourReply {
                place: self.me.place,
                accepted: true,
            },
        );
    }

    pub(super) fn on_neighbour_reply(&mut self, replier: Entry<P>, accepted: bool) {
        if self.pending.is_some_and(|(p, _)| p == replier.peer) {
            self.pending = None;
        }
        if accepted {
            let limit = self.config.active_view_capacity + 1;
            self.add_active(replier, limit);
        } else {
            self.add_passive(replier);
            // The candidates known so far are full: learn more at once rather than at the
            // next periodic shuffle.
            self.shuffle();
        }
    }

    pub(super) fn on_disconnect(&mut self, from: P, alive: bool) {
        let place = self
            .active
            .iter()
            .find(|n| n.entry.peer == from)
            .map(|n| n.entry.place);
        if self.remove_active(&from) {
            self.outputs.push_back(Output::Disconnect { peer: from });
        }
        match (alive, place) {
            (true, Some(place)) => self.add_passive(Entry { peer: from, place }),
            (true, None) => {}
            (false, _) => self.forget(&from),
        }
    }

    pub(super) fn on_shuffle(
        &mut self,
        from: P,
        origin: Entry<P>,
        ttl: u8,
        entries: Vec<Entry<P>>,
    ) {
        if origin.peer == self.me.peer {
            return;
        }
        let ttl = ttl.min(self.config.passive_random_walk_length);
        if ttl > 0 {
            let next: Vec<P> = self
                .active
                .iter()
                .map(|n| n.entry.peer)
                .filter(|p| *p != from && *p != origin.peer)
                .collect();
            if let Some(&to) = next.choose(&mut self.rng) {
                self.send(
                    to,
                    Message::Shuffle {
                        origin,
                        ttl: ttl - 1,
                        entries,
                    },
                );
                return;
            }
        }
        let reply: Vec<Entry<P>> = self
            .passive
            .choose_multiple(&mut self.rng, entries.len().max(1))
            .copied()
            .collect();
        self.send(
            origin.peer,
            Message::ShuffleReply {
                entries: reply.clone(),
            },
        );
        let mut received = entries;
        received.push(origin);
        let sent: Vec<P> = reply.iter().map(|e| e.peer).collect();
        self.integrate(&received, &sent);
    }

    /// Adds `entries` to the passive view, making room by dropping `sent` entries first (they
    /// now live on in the other node's view), then random ones.
    pub(super) fn integrate(&mut self, entries: &[Entry<P>], sent: &[P]) {
        let mut sent: Vec<P> = sent.to_vec();
        for entry in entries {
            if entry.peer == self.me.peer || self.is_neighbour(&entry.peer) {
                continue;
            }
            self.consider_locality(*entry);
            if let Some(known) = self.passive.iter_mut().find(|e| e.peer == entry.peer) {
                known.place = entry.place;
                continue;
            }
            if self.passive.len() >= self.config.passive_view_capacity {
                let victim = sent
                    .pop()
                    .and_then(|p| self.passive.iter().position(|e| e.peer == p))
                    .unwrap_or_else(|| self.rng.random_range(0..self.passive.len()));
                self.passive.swap_remove(victim);
            }
            self.passive.push(*entry);
        }
    }

    /// Puts `entry` in the active view, first displacing a random neighbour if the view already
    /// holds `limit` peers. Does nothing if it is already there.
    pub(super) fn add_active(&mut self, entry: Entry<P>, limit: usize) {
        if entry.peer == self.me.peer || self.is_neighbour(&entry.peer) {
            return;
        }
        if self.active.len() >= limit.max(1) {
            let victim = self.active[self.rng.random_range(0..self.active.len())].entry;
            self.remove_active(&victim.peer);
            self.send(victim.peer, Message::Disconnect { alive: true });
            self.outputs
                .push_back(Output::Disconnect { peer: victim.peer });
            self.add_passive(victim);
        }
        self.passive.retain(|e| e.peer != entry.peer);
        self.consider_locality(entry);
        self.active.push(Neighbour {
            entry,
            eager: true,
            latest: 0,
            last_heard: self.now,
            rtt: None,
            probe: Probe::Idle,
            child: None,
        });
        self.empty_since = None;
        self.outputs.push_back(Output::NeighbourUp { entry });
        if self.needs_sync {
            self.needs_sync = false;
            self.send(entry.peer, Message::Sync);
        }
    }

    /// Removes `peer` from the active view; returns whether it was there.
    pub(super) fn remove_active(&mut self, peer: &P) -> bool {
        let Some(i) = self.active.iter().position(|n| n.entry.peer == *peer) else {
            return false;
        };
        let gone = self.active.swap_remove(i);
        self.outputs
            .push_back(Output::NeighbourDown { peer: *peer });
        if self.parent == Some(*peer) {
            // Not replaced until the next round: a new parent now could count this subtree
            // twice, once more in the old parent's last report.
            self.parent = None;
        }
        if let Some(child) = gone.child.filter(|c| c.round == self.latest) {
            self.report_changed(!child.summary.rollouts.is_empty());
            // On the source, a lost child leaves its whole subtree uncounted until the next
            // round: open one soon, once the view has had time to refill.
            if let Some(at) = &mut self.next_heartbeat {
                *at = (*at).min(self.now + self.config.heartbeat_after_loss);
            }
        }
        for missing in &mut self.missing {
            missing.announcers.retain(|p| p != peer);
        }
        if self.active.is_empty() {
            self.empty_since = Some(self.now);
        }
        self.next_fill = self.now;
        true
    }

    /// `peer` is dead: drop it from every view.
    pub(super) fn fail(&mut self, peer: P) {
        if self.remove_active(&peer) {
            self.outputs.push_back(Output::Disconnect { peer });
        }
        self.forget(&peer);
    }

    fn forget(&mut self, peer: &P) {
        self.passive.retain(|e| e.peer != *peer);
        self.locality.retain(|e| e.peer != *peer);
        if self.pending.is_some_and(|(p, _)| p == *peer) {
            self.pending = None;
        }
    }

    fn add_passive(&mut self, entry: Entry<P>) {
        self.integrate(&[entry], &[]);
    }

    /// Keeps `entry` in the locality cache if it shares this node's rack or fault domain and is
    /// closer than the farthest entry already there.
    fn consider_locality(&mut self, entry: Entry<P>) {
        let closeness = self.me.place.closeness(&entry.place);
        if closeness < Closeness::FaultDomain || entry.peer == self.me.peer {
            return;
        }
        if let Some(known) = self.locality.iter_mut().find(|e| e.peer == entry.peer) {
            known.place = entry.place;
            return;
        }
        if self.locality.len() < self.config.locality_cache_capacity {
            self.locality.push(entry);
            return;
        }
        let me = self.me.place;
        if let Some((i, farthest)) = self
            .locality
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| me.closeness(&e.place))
            && me.closeness(&farthest.place) < closeness
        {
            self.locality[i] = entry;
        }
    }

    pub(super) fn membership_timers(&mut self) {
        let now = self.now;
        if let Some((peer, deadline)) = self.pending
            && now >= deadline
        {
            // The candidate never answered: it is probably gone.
            self.pending = None;
            self.passive.retain(|e| e.peer != peer);
        }
        if now >= self.next_fill {
            // A full view needs no filling until a neighbour leaves (`remove_active`).
            self.next_fill = if self.active.len() < self.config.active_view_capacity {
                now + self.config.fill_interval
            } else {
                Duration::MAX
            };
            self.fill();
        }
        if now >= self.next_shuffle {
            let wait = jitter(&mut self.rng, self.config.shuffle_interval);
            self.next_shuffle = self.on_tick(now + wait);
            self.shuffle();
        }
        if now >= self.stale_deadline() {
            self.needs_sync = true;
            if !self.join_through_seed() {
                // No seed to join through yet: the next attempt is a stale time away.
                self.last_join = Some(now);
            }
        }
        if now >= self.next_seed_probe {
            let interval = self.seed_probe_interval();
            self.seed_probe_every = interval;
            let wait = jitter(&mut self.rng, interval);
            self.next_seed_probe = self.on_tick(now + wait);
            self.probe_seed();
        }
    }

    /// Asks a passive peer to become a neighbour if the active view is short, or joins through
    /// a seed if it has been empty for a while.
    fn fill(&mut self) {
        let capacity = self.config.active_view_capacity;
        if self.active.len() >= capacity {
            return;
        }
        if let Some(since) = self.empty_since
            && self.now.saturating_sub(since) >= self.config.rejoin_after
            && self
                .last_join
                .is_none_or(|at| self.now.saturating_sub(at) >= self.config.rejoin_after)
        {
            self.join_through_seed();
        } else if self.last_join.is_none() && self.active.is_empty() {
            self.join_through_seed();
        }
        if self.pending.is_some() {
            return;
        }
        let Some(&candidate) = self.passive.choose(&mut self.rng) else {
            // Short of neighbours and no candidate known (a newcomer whose contact knew few):
            // learn some now rather than at the next periodic shuffle.
            self.shuffle();
            return;
        };
        let priority = if self.active.is_empty() {
            Priority::High
        } else {
            Priority::Low
        };
        self.pending = Some((
            candidate.peer,
            self.now + self.config.neighbour_request_timeout,
        ));
        self.send(
            candidate.peer,
            Message::Neighbour {
                place: self.me.place,
                priority,
            },
        );
    }

    /// Sends a join to the next of its seeds in turn, starting from a random one, so a live seed
    /// is reached within one round of them however many of the others are down (a random pick
    /// each time can miss the one live seed of three for a minute). Returns whether there was a
    /// seed to send to.
    pub(super) fn join_through_seed(&mut self) -> bool {
        if self.seeds.is_empty() {
            return false;
        }
        let seed = self.seeds[self.seed_turn % self.seeds.len()];
        self.seed_turn = self.seed_turn.wrapping_add(1);
        self.last_join = Some(self.now);
        self.stats.joins_sent += 1;
        self.send(
            seed,
            Message::Join {
                place: self.me.place,
            },
        );
        true
    }

    fn shuffle(&mut self) {
        let Some(target) = self.active.choose(&mut self.rng).map(|n| n.entry.peer) else {
            return;
        };
        let entries = self.shuffle_sample(target);
        self.send(
            target,
            Message::Shuffle {
                origin: self.me,
                ttl: self.config.passive_random_walk_length,
                entries,
            },
        );
    }

    fn shuffle_sample(&mut self, exclude: P) -> Vec<Entry<P>> {
        let mut entries: Vec<Entry<P>> = self
            .active
            .iter()
            .map(|n| n.entry)
            .filter(|e| e.peer != exclude)
            .collect();
        entries.shuffle(&mut self.rng);
        entries.truncate(self.config.shuffle_active_entries);
        entries.extend(
            self.passive
                .choose_multiple(&mut self.rng, self.config.shuffle_passive_entries)
                .copied(),
        );
        entries
    }

    /// Exchanges a shuffle with a random seed now and then, so views stay mixed across the whole
    /// fleet and a healed partition has entries from both sides in its passive views.
    /// The configured interval, or longer if the fleet is so large that probes at that
    /// interval would give a seed more than `seed_probes_per_sec`.
    pub(super) fn seed_probe_interval(&self) -> Duration {
        let seeds = self.seeds.len().max(1) as u64;
        let rate = u64::from(self.config.seed_probes_per_sec.max(1));
        let spread =
            Duration::from_secs_f64(u64::from(self.fleet_size) as f64 / (seeds * rate) as f64);
        self.config.seed_probe_interval.max(spread)
    }

    fn probe_seed(&mut self) {
        let Some(&seed) = self.seeds.choose(&mut self.rng) else {
            return;
        };
        if self.is_neighbour(&seed) {
            return;
        }
        let entries = self.shuffle_sample(seed);
        self.send(
            seed,
            Message::Shuffle {
                origin: self.me,
                ttl: 0,
                entries,
            },
        );
    }

    /// A node that has delivered no broadcast for `stale_after` (the source sends heartbeats
    /// more often than that) is cut off from the source, as after a partition: it joins again
    /// through a seed and asks its new neighbour for what it missed. The source never is.
    /// When this node, having delivered no broadcast since, takes itself for cut off from the
    /// source and joins again through a seed (never on the source). A node that never heard the
    /// source counts from its start: it may have joined a group of nodes that is cut off from
    /// the source from the beginning.
    pub(super) fn stale_deadline(&self) -> Duration {
        if self.config.heartbeat_interval.is_some() {
            return Duration::MAX;
        }
        let stale = self.config.stale_after;
        let heard = self.last_delivery.unwrap_or(self.started) + stale;
        let joined = self.last_join.map_or(Duration::ZERO, |at| at + stale);
        self.on_tick(heard.max(joined))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{drain, entry};
    use super::super::{Config, Node, Output, Place};
    use super::*;

    #[test]
    fn a_joiner_tries_every_seed_in_turn() {
        let mut node = Node::new(
            entry(9),
            vec![1, 2, 3],
            Config::default(),
            5,
            Duration::ZERO,
        );
        let mut asked = Vec::new();
        while asked.len() < 6 {
            let at = node.poll_timeout();
            node.handle_timeout(at);
            for output in drain(&mut node) {
                if let Output::Send {
                    to,
                    message: Message::Join { .. },
                } = output
                {
                    asked.push(to);
                }
            }
        }
        for round in asked.chunks(3) {
            let mut seeds = round.to_vec();
            seeds.sort_unstable();
            assert_eq!(seeds, vec![1, 2, 3], "joins went to {asked:?}");
        }
    }

    #[test]
    fn seed_probes_of_a_large_fleet_are_spread_so_a_seed_hears_a_bounded_rate() {
        let seeds: Vec<u32> = vec![1, 2, 3];
        let mut node = Node::new(entry(0), seeds, Config::default(), 1, Duration::ZERO);
        assert_eq!(node.seed_probe_interval(), Duration::from_secs(30));
        // 1,000 nodes at one probe per 30 s give each of 3 seeds 11 a second: over the 10.
        node.set_fleet_size(1_000);
        assert_eq!(
            node.seed_probe_interval(),
            Duration::from_secs_f64(1_000.0 / 30.0)
        );
        node.set_fleet_size(3_000_000);
        let every = node.seed_probe_interval();
        assert_eq!(every, Duration::from_secs(100_000));
        // The probe already scheduled moves out too, not only the ones after it.
        assert!(
            node.next_seed_probe >= every / 2,
            "{:?}",
            node.next_seed_probe
        );
    }

    #[test]
    fn swarm_candidates_are_mostly_close_and_always_some_from_other_fault_domains() {
        let here = Place {
            region: 1,
            fault_domain: 1,
            rack: 1,
        };
        let elsewhere = Place {
            fault_domain: 2,
            ..here
        };
        // 20 machines in this rack and 10 in another fault domain, learnt from a shuffle.
        let entries: Vec<Entry<u32>> = (1..=30)
            .map(|peer| Entry {
                peer,
                place: if peer <= 20 { here } else { elsewhere },
            })
            .collect();
        let mut far_total = 0;
        for seed in 0..20 {
            let me = Entry {
                peer: 0,
                place: here,
            };
            let mut node = Node::new(me, vec![], Config::default(), seed, Duration::ZERO);
            node.handle_message(
                Duration::ZERO,
                99,
                Message::ShuffleReply {
                    entries: entries.clone(),
                },
            );
            let chosen = node.swarm_candidates(8, 2);
            assert_eq!(chosen.len(), 8);
            let mut peers: Vec<u32> = chosen.iter().map(|e| e.peer).collect();
            peers.sort_unstable();
            peers.dedup();
            assert_eq!(peers.len(), 8, "a candidate chosen twice");
            assert!(peers.iter().all(|p| (1..=30).contains(p)), "{peers:?}");
            let near = chosen.iter().filter(|e| e.place == here).count();
            assert!(near >= 6, "seed {seed}: only {near} from this rack");
            far_total += chosen.len() - near;
        }
        assert!(
            far_total > 0,
            "the outside places reach other fault domains"
        );
    }

    #[test]
    fn a_join_is_accepted_and_forwarded_to_every_other_neighbour() {
        let mut seed = Node::new(entry(0), vec![], Config::default(), 1, Duration::ZERO);
        for peer in 1..=3 {
            seed.handle_message(
                Duration::ZERO,
                peer,
                Message::Join {
                    place: Default::default(),
                },
            );
        }
        drain(&mut seed);
        seed.handle_message(
            Duration::ZERO,
            4,
            Message::Join {
                place: Default::default(),
            },
        );
        let out = drain(&mut seed);
        assert!(seed.is_neighbour(&4));
        let forwards: Vec<u32> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    message: Message::ForwardJoin { joiner, .. },
                } => {
                    assert_eq!(joiner.peer, 4);
                    Some(*to)
                }
                _ => None,
            })
            .collect();
        assert_eq!(forwards.len(), 3);
        assert!(!forwards.contains(&4));
    }

    #[test]
    fn a_flood_of_joins_is_limited_and_a_repeated_join_is_not_forwarded_again() {
        let config = Config::default();
        let limit = config.max_joins_per_sec;
        let mut seed = Node::new(entry(0), vec![], config, 1, Duration::ZERO);
        for peer in 1..=limit + 10 {
            seed.handle_message(
                Duration::ZERO,
                peer,
                Message::Join {
                    place: Default::default(),
                },
            );
        }
        assert_eq!(seed.stats().joins_refused, 10);
        drain(&mut seed);
        let neighbour = seed.active()[0].entry.peer;
        seed.handle_message(
            Duration::from_secs(2),
            neighbour,
            Message::Join {
                place: Default::default(),
            },
        );
        let out = drain(&mut seed);
        assert!(
            !out.iter().any(|o| matches!(
                o,
                Output::Send {
                    message: Message::ForwardJoin { .. },
                    ..
                }
            )),
            "a neighbour joining again is not walked through the overlay again"
        );
        // A new second starts a new allowance.
        seed.handle_message(
            Duration::from_secs(2),
            10_000,
            Message::Join {
                place: Default::default(),
            },
        );
        assert!(seed.is_neighbour(&10_000));
    }

    #[test]
    fn a_short_node_always_finds_a_place() {
        let config = Config::default();
        let capacity = config.active_view_capacity;
        let mut node = Node::new(entry(0), vec![], config, 1, Duration::ZERO);
        for peer in 1..=(capacity as u32 + 1) {
            node.handle_message(
                Duration::ZERO,
                peer,
                Message::Neighbour {
                    place: Default::default(),
                    priority: Priority::Low,
                },
            );
        }
        assert_eq!(
            node.active().len(),
            capacity + 1,
            "one above capacity without displacing"
        );
        drain(&mut node);
        node.handle_message(
            Duration::ZERO,
            100,
            Message::Neighbour {
                place: Default::default(),
                priority: Priority::Low,
            },
        );
        assert!(node.is_neighbour(&100));
        assert_eq!(
            node.active().len(),
            capacity + 1,
            "a random neighbour made room"
        );
        let out = drain(&mut node);
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Send {
                    message: Message::Disconnect { alive: true },
                    ..
                }
            )),
            "the displaced neighbour is told"
        );
        node.handle_message(
            Duration::ZERO,
            101,
            Message::Neighbour {
                place: Default::default(),
                priority: Priority::High,
            },
        );
        assert!(node.is_neighbour(&101));
        assert_eq!(
            node.active().len(),
            capacity + 1,
            "a high-priority asker displaces one too"
        );
    }
}
