//! Shoal's data plane: QUIC connections between nodes and the tasks that move pieces over them.
//!
//! Every process runs one [`Node`](node::Node): one quinn endpoint that both listens and dials,
//! with TLS certificates carrying libp2p peer ids ([`transport`], [`tls`], [`identity`]). Between two
//! peers there is one connection with one control stream and a stream per piece
//! ([`shoal_core::wire::piece`] describes the messages). Each release has a task that feeds the
//! sans-IO [`Swarm`](shoal_core::swarm::Swarm) scheduler and carries out what it decides
//! ([`swarm_task`]). Pieces come from and go to a [`Source`](source::Source): the store, or the
//! origin's payload file. Host-wide bandwidth caps live in [`limits`]; what a process reports
//! about itself is in [`status`], served by the local control API in [`api`]. The control
//! plane's frames travel over libp2p, through the [`overlay`].

#![warn(missing_docs)]

pub mod admitted;
pub mod api;
pub mod coordinator;
pub mod identity;
pub mod limits;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod operator_gate;
pub mod overlay;
pub mod protocol;
pub mod revocations;
pub mod source;
pub mod status;
pub mod swarm_task;
pub mod tls;
pub mod transport;
