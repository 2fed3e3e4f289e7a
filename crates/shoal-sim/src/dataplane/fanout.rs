//! Messages a node sends to every swarm neighbour at once (its first bitfield, each piece it
//! announces) travel as one event per distance class instead of one per neighbour: every
//! neighbour at the same distance gets the message after the same latency, so one event
//! delivers it to all of them, in link order. A fleet with 40 neighbours a node puts a tenth
//! of the events on the queue for them.

use super::{DataPlane, Msg};
use shoal_core::bitfield::Bitfield;
use shoal_core::content::PieceIndex;
use shoal_core::labels::Closeness;
use shoal_core::swarm::PeerKey;
use std::sync::Arc;

/// What a node sends all its neighbours.
#[derive(Clone, Debug)]
pub(super) enum Fanned {
    /// Its whole bitfield.
    Have(Arc<Bitfield>),
    /// One piece it now holds.
    Delta(PieceIndex),
}

/// The distance classes, in the order their events are booked.
const CLASSES: [Closeness; 4] = [
    Closeness::Rack,
    Closeness::FaultDomain,
    Closeness::Region,
    Closeness::Remote,
];

fn bit(class: Closeness) -> u8 {
    1 << class as u8
}

impl DataPlane {
    /// Sends `what` from `from` to each of its neighbours: one event for each distance at which
    /// it has any.
    pub(super) fn fan_out(&mut self, from: u32, what: Fanned) {
        let here = self.places[from as usize];
        let mut classes = 0u8;
        for &to in &self.links[from as usize] {
            classes |= bit(here.closeness(&self.places[to as usize]));
        }
        let mut what = Some(what);
        let last = CLASSES.iter().rposition(|&c| classes & bit(c) != 0);
        for (i, &class) in CLASSES.iter().enumerate() {
            if classes & bit(class) == 0 {
                continue;
            }
            let msg = if Some(i) == last {
                what.take()
            } else {
                what.clone()
            };
            let msg = match msg {
                Some(Fanned::Have(have)) => Msg::HaveTo(have, class),
                Some(Fanned::Delta(piece)) => Msg::DeltaTo(piece, class),
                None => continue,
            };
            let at = self.now + self.latency_of(class);
            self.schedule(at, from, from, msg);
        }
    }

    /// Delivers `what` from `from` to its neighbours at distance `class`, each as if it had come
    /// alone.
    pub(super) fn deliver_fanned(&mut self, from: u32, what: Fanned, class: Closeness) {
        let here = self.places[from as usize];
        let mut to_all = std::mem::take(&mut self.scratch);
        to_all.clear();
        to_all.extend(
            self.links[from as usize]
                .iter()
                .copied()
                .filter(|&to| here.closeness(&self.places[to as usize]) == class),
        );
        let key = PeerKey(u64::from(from));
        for &to in &to_all {
            if self.crashed[to as usize] {
                continue;
            }
            if !self.reachable(from, to) {
                self.hold(from, to, what.single());
                continue;
            }
            // From a peer the recipient no longer knows, both are refused as unknown and change
            // nothing.
            let swarm = &mut self.swarms[to as usize];
            let _ = match &what {
                Fanned::Have(have) => swarm.handle_have(key, Bitfield::clone(have)),
                Fanned::Delta(piece) => swarm.handle_have_delta(key, &[*piece]),
            };
            self.act(to);
        }
        self.scratch = to_all;
    }
}

impl Fanned {
    /// The same, as a message to one neighbour.
    fn single(&self) -> Msg {
        match self {
            Fanned::Have(have) => Msg::Have(have.clone()),
            Fanned::Delta(piece) => Msg::Delta(*piece),
        }
    }
}
