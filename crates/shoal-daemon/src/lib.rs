//! Shoal's process runtime: everything a `shoal node` or `shoal coordinator` process does
//! besides moving bytes, as thin drivers of the core's state machines.
//!
//! - [`agent`]: sets up a node's rollout agent ([`shoal_core::rollout::Agent`]) for the mesh
//!   task's agent machine; [`host`] carries out what that machine decides.
//! - [`executor`] and [`supervisor`]: carry out activation commands: stage, switch, restart,
//!   health-check; keep supervised services running.
//! - [`services`]: the node's services file; [`events`]: the local subscription socket.
//! - [`conductor`]: drives the coordinator's conductor ([`shoal_core::rollout::Conductor`]).
//! - [`db`]: the coordinator's database (redb): releases, rollouts, audit log; [`origin`]
//!   serves its published releases again after a restart.
//! - [`routes`]: their HTTP endpoints, served beside the data plane's API; [`metrics`]: their
//!   part of `/metrics`.

#![warn(missing_docs)]

pub mod agent;
pub mod conductor;
pub mod db;
pub mod deploy;
pub mod events;
pub mod executor;
pub mod host;
pub mod metrics;
pub mod openapi;
pub mod origin;
pub mod query;
pub mod revoke;
pub mod routes;
pub mod services;
pub mod supervisor;
pub mod ui;
