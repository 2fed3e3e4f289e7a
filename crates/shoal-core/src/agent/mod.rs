//! A node's agent machine ([`Machine`]) and the parts of it that are not a protocol of their
//! own: how the data plane keeps its connections ([`peering`]) and which releases a node
//! fetches ([`fetch`]).
//!
//! A node's decisions are made by sans-IO machines, each fed inputs and time by a driver that
//! carries out their outputs:
//!
//! - [`control::Node`](crate::control::Node): membership, broadcast, failure detection, health;
//! - [`fetch::Fetch`]: announced release → store → swarm, and when to look for more swarm peers;
//! - [`peering::Peering`]: dials, redials, duplicate connections, peer exchange, early `Have`s;
//! - [`swarm::Swarm`](crate::swarm::Swarm), one per release: which piece to ask of whom;
//! - [`rollout::agent::Agent`](crate::rollout::agent::Agent): rollout directives and each
//!   service's activation.
//!
//! Each takes its randomness from a seed and its time from the driver, so the daemon and the
//! simulator drive the same decisions.

pub mod fetch;
pub mod machine;
pub mod peering;

pub use machine::Machine;
