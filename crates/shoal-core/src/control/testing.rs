//! Helpers shared by the control-plane unit tests.

use super::{Config, Entry, Message, Node, Output};
use std::time::Duration;

/// Peer `peer` with no known place.
pub(super) fn entry(peer: u32) -> Entry<u32> {
    Entry {
        peer,
        place: Default::default(),
    }
}

/// Node 0 with default configuration and `peers` as its neighbours, all heard from at time zero;
/// its outputs so far are drained.
pub(super) fn node_with_neighbours(peers: &[u32], seed: u64) -> Node<u32> {
    node_with_neighbours_as(0, peers, seed)
}

/// As [`node_with_neighbours`], for node `me`.
pub(super) fn node_with_neighbours_as(me: u32, peers: &[u32], seed: u64) -> Node<u32> {
    let mut node = Node::new(entry(me), vec![], Config::default(), seed, Duration::ZERO);
    for &peer in peers {
        node.handle_message(
            Duration::ZERO,
            peer,
            Message::NeighbourReply {
                place: Default::default(),
                accepted: true,
            },
        );
    }
    drain(&mut node);
    node
}

/// Everything the node asks for, until it has nothing more.
pub(super) fn drain(node: &mut Node<u32>) -> Vec<Output<u32>> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// The messages among the node's outputs, with their receivers.
pub(super) fn sends(node: &mut Node<u32>) -> Vec<(u32, Message<u32>)> {
    drain(node)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { to, message } => Some((to, message)),
            _ => None,
        })
        .collect()
}
