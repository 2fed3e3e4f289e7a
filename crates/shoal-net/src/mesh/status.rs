//! What `shoal members` and `shoal status --coordinator` show, as JSON documents.

use serde::{Deserialize, Serialize};
use shoal_core::content::RootHash;
use shoal_core::control::Summary;
use shoal_core::labels::Labels;
use std::net::SocketAddr;

/// A member's views and counters (`GET /v1/members`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembersStatus {
    /// This member's peer id.
    pub peer_id: String,
    /// Its `--listen` address.
    pub addr: SocketAddr,
    /// Its certified labels.
    pub labels: Labels,
    /// The active view: the neighbours it is connected to.
    pub active: Vec<MemberStatus>,
    /// The passive view: candidates for refilling the active view.
    pub passive: Vec<MemberEntry>,
    /// Members in its rack or fault domain.
    pub locality: Vec<MemberEntry>,
    /// The neighbour it reports health to.
    pub parent: Option<String>,
    /// The latest broadcast sequence number delivered (sent, on the coordinator).
    pub latest_seq: u64,
    /// How much it stretches its failure-detection timeouts (1 = not at all).
    pub slowness_factor: u32,
    /// Peers refused for a missing or invalid certificate, and refused admission requests.
    pub refused_peers: u64,
    /// Envelopes or announced manifests refused for a bad or unknown signature.
    pub refused_envelopes: u64,
    /// Malformed or oversize control frames.
    pub malformed_frames: u64,
    /// Messages dropped because a peer's queue was full.
    pub dropped_sends: u64,
    /// Frames dropped because their sender's address was not known (forgotten by a full table).
    #[serde(default)]
    pub unnamed_frames: u64,
    /// Neighbours the failure detector declared dead.
    pub declared_dead: u64,
    /// Joins sent through seeds.
    pub joins_sent: u64,
    /// Broadcasts delivered.
    pub delivered: u64,
    /// Broadcasts the most advanced active neighbour has delivered and this member has not.
    #[serde(default)]
    pub broadcast_lag: u64,
    /// Health reports sent to the parent.
    #[serde(default)]
    pub health_reports_sent: u64,
    /// Broadcast copies received after the first.
    pub duplicates: u64,
    /// Control frames sent.
    pub frames_sent: u64,
    /// Control bytes sent.
    pub bytes_sent: u64,
    /// Control frames received.
    pub frames_received: u64,
    /// Control bytes received.
    pub bytes_received: u64,
    /// Open control-plane connections.
    pub connections: u64,
}

/// One neighbour in the active view.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its peer id.
    pub peer_id: String,
    /// Its `--listen` address.
    pub addr: SocketAddr,
    /// Round-trip time of its last answered ping.
    pub rtt_ms: Option<f64>,
    /// It missed a ping and is being probed.
    pub suspect: bool,
    /// Broadcasts go to it in full (a broadcast-tree edge).
    pub eager: bool,
    /// Nodes in its latest health report, if it reports to this member.
    pub reported_nodes: Option<u32>,
}

/// One passive-view or locality-cache entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberEntry {
    /// Its peer id.
    pub peer_id: String,
    /// Its `--listen` address.
    pub addr: SocketAddr,
}

/// The fleet as the coordinator sees it (`GET /v1/fleet`): health aggregated up the broadcast tree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Nodes counted (the coordinator itself is not).
    pub nodes: u32,
    /// Nodes per status.
    pub states: FleetStates,
    /// Per release.
    pub releases: Vec<FleetRelease>,
    /// The latest broadcast sequence number.
    pub latest_seq: u64,
}

/// Nodes per status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetStates {
    /// `UNKNOWN`.
    pub unknown: u32,
    /// `HEALTHY`.
    pub healthy: u32,
    /// `DEGRADED`.
    pub degraded: u32,
    /// `FAILED`.
    pub failed: u32,
}

/// How many nodes hold one release.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetRelease {
    /// The release's root.
    pub root: RootHash,
    /// Nodes holding it verified and complete.
    pub complete: u32,
    /// Nodes still fetching it.
    pub fetching: u32,
}

impl FleetStatus {
    /// The document for an aggregated `summary`.
    pub fn from_summary(summary: &Summary, latest_seq: u64) -> Self {
        FleetStatus {
            nodes: summary.nodes,
            states: FleetStates {
                unknown: summary.states[0],
                healthy: summary.states[1],
                degraded: summary.states[2],
                failed: summary.states[3],
            },
            releases: summary
                .releases
                .iter()
                .map(|r| FleetRelease {
                    root: r.root,
                    complete: r.complete,
                    fetching: r.fetching,
                })
                .collect(),
            latest_seq,
        }
    }
}
