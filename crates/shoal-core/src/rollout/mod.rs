//! Rollouts: plans, the directives the coordinator broadcasts, what nodes report, and the two
//! state machines that decide: the coordinator's [`Conductor`] and every node's [`Agent`].
//!
//! No machine list exists anywhere. The conductor broadcasts a rollout's stages; each node
//! decides for itself which stage and cell (stage, region, fault domain) it is in, from its
//! labels and [`node_hash`]; counts flow back up the broadcast tree as [`RolloutReport`]s; the
//! conductor opens cells wave by wave and gates each wave on those counts.
//!
//! - [`plan`]: the plan file (TOML) and its checks.
//! - [`selector`]: label selectors and the per-rollout node hash.
//! - [`directive`]: the directive snapshot a coordinator signs and broadcasts.
//! - [`report`]: per-rollout counts, added up the tree, bounded.
//! - [`conductor`]: the coordinator's decisions.
//! - [`agent`]: a node's decisions, driving [`crate::activation`].

pub mod agent;
pub mod conductor;
pub mod directive;
pub mod plan;
pub mod report;
pub mod selector;

pub use agent::Agent;
pub use conductor::Conductor;
pub use directive::{Action, Cell, Directive, Release, Spec};
pub use plan::Plan;
pub use report::{NodeState, RolloutReport};
pub use selector::{Selector, node_hash};
