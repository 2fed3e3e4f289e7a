//! The control plane's protocol core: membership, broadcast, failure detection and health.
//!
//! Every Shoal process runs one [`Node`]. It keeps no list of the whole fleet: it knows a small
//! **active view** of neighbours it is connected to, a larger **passive view** of candidates, and a
//! **locality cache** of machines in its own rack and fault domain. On top of the active view it
//! runs four protocols, all in this one state machine so they share the neighbour table:
//!
//! - **Membership** ([HyParView]): join through a contact, random walks that spread the newcomer
//!   (forward-join), neighbour requests to refill the active view from the passive one, and
//!   periodic shuffles that keep the passive views fresh and mixed. Shuffle entries carry each
//!   machine's [`Place`], which feeds the locality cache.
//! - **Failure detection** between neighbours only: a neighbour that has been silent for a ping
//!   interval is pinged; if it does not answer in time, two other neighbours are asked to ping it
//!   (SWIM's indirect probe) before it is declared dead and dropped. A node that finds itself slow
//!   (its timers fire late) stretches its own timeouts instead of accusing others (Lifeguard).
//! - **Broadcast** ([Plumtree]) from a single source, the coordinator: eager push along a spanning
//!   tree, lazy `IHave` announcements to the other neighbours, `Graft` to repair the tree when a
//!   message is announced but does not arrive, `Prune` to cut duplicate paths. Messages are
//!   [`Envelope`]s: sequence-numbered, signed by the source (checked by the driver with
//!   [`Envelope::verify`] before they reach this core) and delivered at most once. Neighbours
//!   compare their latest sequence numbers in every ping, so a node that missed a message pulls
//!   it; a node that is new or was cut off asks a neighbour for the envelopes the source marked to
//!   be kept ([`Message::Sync`]).
//! - **Health** flows back up the broadcast tree in rounds: every broadcast opens one, and a
//!   node sends the neighbour that delivered it first (its parent for the round) a [`Summary`]
//!   of its subtree tagged with the round; a parent adds up only its own round's reports, so no
//!   node is counted in two subtrees while the tree changes (see `health`).
//!
//! Rejoin is built in: a node whose active view stays empty joins again through a seed, and a node
//! that hears no broadcast for a while (the source sends heartbeats) rejoins through a seed too,
//! which is how the two halves of a healed partition become one overlay again.
//!
//! # Driving a node
//!
//! The node does no IO and reads no clock. The driver (the libp2p task in the daemon, or the
//! simulator) feeds it inputs and carries out its outputs:
//!
//! 1. Inputs: [`Node::handle_message`] for every message from a peer, [`Node::handle_disconnected`]
//!    when the link to a peer breaks, [`Node::handle_timeout`] when the deadline from
//!    [`Node::poll_timeout`] has passed, and [`Node::broadcast`] on the source.
//! 2. After each input, drain [`Node::poll_output`] until it returns `None`, then sleep until
//!    [`Node::poll_timeout`].
//!
//! Time is a [`Duration`](std::time::Duration) since an epoch the driver chooses; randomness comes
//! from the seed passed to [`Node::new`], so a run is reproducible.
//!
//! [HyParView]: https://asc.di.fct.unl.pt/~jleitao/pdf/dsn07-leitao.pdf
//! [Plumtree]: https://asc.di.fct.unl.pt/~jleitao/pdf/srds07-leitao.pdf

mod broadcast;
mod config;
mod detector;
mod directive;
mod health;
mod membership;
mod message;
mod node;
mod place;
#[cfg(test)]
mod testing;

pub use config::Config;
pub use directive::Directive;
pub use health::{MAX_SUMMARY_RELEASES, MAX_SUMMARY_ROLLOUTS, ReleaseCount, Status, Summary};
pub use message::{Envelope, MAX_SHUFFLE_ENTRIES, MAX_SYNC_ENVELOPES, Message, Priority};
pub use node::{Neighbour, Node, Output, Stats};
pub use place::{Entry, Place};

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;

/// What a node is known by: an id, plus whatever the driver needs to reach it.
///
/// The daemon uses a peer id with a socket address (compared by peer id only); the simulator uses
/// a dense `u32`. Equality must mean "the same machine".
pub trait Peer: Copy + Eq + Ord + Hash + Debug + Serialize + DeserializeOwned {}

impl<T: Copy + Eq + Ord + Hash + Debug + Serialize + DeserializeOwned> Peer for T {}
