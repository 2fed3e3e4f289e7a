//! Shoal's protocol core: everything that decides, and nothing that waits.
//!
//! This crate holds the parts of Shoal that every process shares and that must behave the same in
//! the daemon, in tests and in the simulator. It does no IO: no sockets, no files, no clocks and no
//! ambient randomness. Callers pass bytes, times and random sources in, and get values out.
//!
//! - [`rollout`]: rollout plans, directives and reports, the coordinator's conductor and each
//!   node's rollout agent.
//! - [`agent`]: the parts of a node's agent machine beside the protocols: the data plane's
//!   connections and which releases to fetch.
//! - [`activation`]: how one service on a node switches releases, checks health and goes back.
//! - [`control`]: the control plane: HyParView membership, Plumtree broadcast, failure detection
//!   and health aggregation, as one sans-IO state machine per process.
//! - [`content`]: the content model. A payload is cut into power-of-two [pieces](content::PieceLayout);
//!   each piece has a BLAKE3 chaining value, and the chaining values combine to the
//!   [root](content::RootHash), which equals what `b3sum` prints for the payload.
//! - [`keys`]: ed25519 keys for the four roles (root, publisher, coordinator, node) and their text
//!   encodings.
//! - [`trust`]: the trust document, signed by the root key, naming publisher and coordinator keys.
//! - [`admission`]: onboarding tokens, and the certificates that admit a machine's peer id to the
//!   mesh on both planes.
//! - [`manifest`]: the signed release manifest and its verification chain.
//! - [`bitfield`]: a fixed-length set of piece indices, used for "which pieces do I have".
//! - [`labels`]: machine labels (`region=eu1,fd=2,rack=7`) and the locality they describe.
//! - [`swarm`]: the swarm scheduler: which piece to ask of which peer, which request to serve.
//! - [`wire`]: length-prefixed, versioned, size-checked frames of postcard-encoded messages.

#![warn(missing_docs)]

pub mod activation;
pub mod admission;
pub mod agent;
pub mod bitfield;
pub mod content;
pub mod control;
pub mod keys;
pub mod labels;
pub mod manifest;
pub mod operator;
pub mod query;
pub mod renewal;
pub mod revocation;
pub mod rollout;
pub mod swarm;
pub mod trust;
pub mod units;
pub mod wire;

mod hexbytes;
