//! `GET /metrics`: a process's counters in the OpenMetrics text format Prometheus scrapes,
//! with `prometheus-client`'s encoder.
//!
//! The families are read at scrape time from the same status documents `/v1/status`,
//! `/v1/members` and `/v1/fleet` serve, so a scrape and the JSON API never disagree and
//! nothing is counted twice. Counters are cumulative since the process started.

use crate::mesh::{FleetStatus, MembersStatus};
use crate::status::NodeStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The content type of [`render`]'s text, which Prometheus asks for first.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`to_text_format`]'s text, for clients that do not ask for OpenMetrics.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to a scrape whose `Accept` header is `accept`: OpenMetrics if it asks for it,
/// else the older Prometheus text format. Content type and text.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS, openmetrics)
    } else {
        (TEXT_FORMAT, to_text_format(&openmetrics))
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter family is named with its
/// `_total` suffix in its `# HELP` and `# TYPE` lines, as its samples are, and `# UNIT` and
/// `# EOF` go. The samples are the same.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

type Labels = Vec<(&'static str, String)>;

/// A sample another part of the process adds to its scrape (the node's agent, the
/// coordinator's conductor): plain data, so no metrics types cross crates.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The family's name without the `shoal_` prefix (and, for a counter, without `_total`).
    pub name: &'static str,
    /// The family's help text.
    pub help: &'static str,
    /// Whether it only grows (a counter) or goes up and down (a gauge).
    pub counter: bool,
    /// Its labels.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: f64,
}

/// What adds samples to a scrape: called at every scrape.
pub type MoreSamples =
    std::sync::Arc<dyn Fn() -> futures::future::BoxFuture<'static, Vec<Sample>> + Send + Sync>;

/// Registers `samples`, one family per name, in the order their names first come.
fn register_samples(r: &mut Registry, samples: &[Sample]) {
    type C = Counter<f64, AtomicU64>;
    type G = Gauge<f64, AtomicU64>;
    let mut names: Vec<&'static str> = Vec::new();
    for s in samples {
        if !names.contains(&s.name) {
            names.push(s.name);
        }
    }
    for name in names {
        let of_name = || samples.iter().filter(move |s| s.name == name);
        let first = of_name().next().expect("a sample of each name");
        if first.labels.is_empty() {
            // One sample without labels: a plain metric, not a family.
            if first.counter {
                let c = C::default();
                c.inc_by(first.value);
                r.register(name, first.help, c);
            } else {
                let g = G::default();
                g.set(first.value);
                r.register(name, first.help, g);
            }
        } else if first.counter {
            let family = Family::<Labels, C>::default();
            for s in of_name() {
                family.get_or_create(&s.labels).inc_by(s.value);
            }
            r.register(name, first.help, family);
        } else {
            let family = Family::<Labels, G>::default();
            for s in of_name() {
                family.get_or_create(&s.labels).set(s.value);
            }
            r.register(name, first.help, family);
        }
    }
}

/// A sample of family `name`.
fn one(
    name: &'static str,
    help: &'static str,
    counter: bool,
    labels: Vec<(&'static str, String)>,
    value: f64,
) -> Sample {
    Sample {
        name,
        help,
        counter,
        labels,
        value,
    }
}

/// A family with one label whose samples are `values`, as (label value, sample value).
fn by<'a>(
    name: &'static str,
    help: &'static str,
    counter: bool,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, f64)>,
) -> impl Iterator<Item = Sample> {
    values
        .into_iter()
        .map(move |(v, n)| one(name, help, counter, vec![(label, v.to_owned())], n))
}

/// Families of one sample without labels: (name, help, counter, value).
fn unlabelled<const N: usize>(
    rows: [(&'static str, &'static str, bool, f64); N],
) -> impl Iterator<Item = Sample> {
    rows.into_iter()
        .map(|(name, help, counter, v)| one(name, help, counter, Vec::new(), v))
}

/// The metrics text of a process: its data plane's `node`, its mesh membership `members`
/// (mesh members and the coordinator), the `fleet` (the coordinator), and `more` from the
/// daemon.
pub fn render(
    node: &NodeStatus,
    members: Option<&MembersStatus>,
    fleet: Option<&FleetStatus>,
    more: &[Sample],
) -> String {
    let mut samples = data_plane(node);
    if let Some(m) = members {
        samples.extend(mesh(m));
    }
    if let Some(f) = fleet {
        samples.extend(fleet_counts(f));
    }
    samples.extend_from_slice(more);
    let mut r = Registry::with_prefix("shoal");
    register_samples(&mut r, &samples);
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &r);
    text
}

fn data_plane(node: &NodeStatus) -> Vec<Sample> {
    let sum = |f: fn(&crate::status::ReleaseStatus) -> u64| {
        node.releases.iter().map(f).sum::<u64>() as f64
    };
    let count = |n: usize| n as f64;
    let mut out: Vec<Sample> = by(
        "piece_bytes",
        "Piece bytes moved by the data plane, verified ones received and sent",
        true,
        "direction",
        [
            ("received", sum(|x| x.bytes_down)),
            ("sent", sum(|x| x.bytes_up)),
        ],
    )
    .collect();
    out.extend(by(
        "piece_transfers",
        "Pieces moved by the data plane, verified ones received and sent",
        true,
        "direction",
        [
            ("received", sum(|x| x.pieces_down)),
            ("sent", sum(|x| x.pieces_up)),
        ],
    ));
    out.extend(by(
        "pieces",
        "Pieces of the releases in the store: held verified, and in all",
        false,
        "state",
        [
            ("held", sum(|x| u64::from(x.have))),
            ("total", sum(|x| u64::from(x.total))),
        ],
    ));
    out.extend(by(
        "releases",
        "Releases in the store, complete or still being fetched",
        false,
        "state",
        [
            (
                "complete",
                count(node.releases.iter().filter(|x| x.complete).count()),
            ),
            (
                "partial",
                count(node.releases.iter().filter(|x| !x.complete).count()),
            ),
        ],
    ));
    let plain = [
        (
            "verification_failures",
            "Pieces that failed BLAKE3 verification on arrival",
            true,
            sum(|x| x.corrupt_pieces),
        ),
        (
            "piece_timeouts",
            "Piece requests that timed out",
            true,
            sum(|x| x.timeouts),
        ),
        (
            "banned_peers",
            "Peers banned by the data plane (bad pieces, false claims), over all releases",
            false,
            count(node.releases.iter().map(|x| x.banned.len()).sum()),
        ),
        (
            "swarm_connections",
            "Data-plane (QUIC) connections open",
            false,
            count(node.connections.len()),
        ),
        (
            "swarm_peers",
            "Swarm peers over all releases being fetched or served",
            false,
            count(node.releases.iter().map(|x| x.peers.len()).sum()),
        ),
        (
            "refused_peers",
            "Data-plane peers refused for a missing or invalid certificate",
            true,
            node.refused_peers as f64,
        ),
        (
            "refused_connections",
            "Data-plane connections refused by the connection limits",
            true,
            node.refused_connections as f64,
        ),
    ];
    out.extend(unlabelled(plain));
    out
}

fn mesh(m: &MembersStatus) -> Vec<Sample> {
    let mut out: Vec<Sample> = by(
        "view_peers",
        "Members in the membership views: active (neighbours) and passive (candidates)",
        false,
        "view",
        [
            ("active", m.active.len() as f64),
            ("passive", m.passive.len() as f64),
        ],
    )
    .collect();
    out.extend(by(
        "control_frames",
        "Control-plane frames, sent and received",
        true,
        "direction",
        [
            ("sent", m.frames_sent as f64),
            ("received", m.frames_received as f64),
        ],
    ));
    out.extend(by(
        "control_bytes",
        "Control-plane bytes, sent and received",
        true,
        "direction",
        [
            ("sent", m.bytes_sent as f64),
            ("received", m.bytes_received as f64),
        ],
    ));
    let plain = [
        (
            "suspect_neighbours",
            "Active neighbours that missed a ping and are being probed",
            false,
            m.active.iter().filter(|a| a.suspect).count() as f64,
        ),
        (
            "broadcast_sequence",
            "The latest broadcast sequence number delivered (sent, at the coordinator)",
            false,
            m.latest_seq as f64,
        ),
        (
            "broadcasts_delivered",
            "Broadcast envelopes delivered",
            true,
            m.delivered as f64,
        ),
        (
            "broadcast_lag",
            "Broadcasts the most advanced active neighbour has delivered and this member has not",
            false,
            m.broadcast_lag as f64,
        ),
        (
            "health_reports_sent",
            "Health reports sent to the parent in the broadcast tree",
            true,
            m.health_reports_sent as f64,
        ),
        (
            "broadcast_duplicates",
            "Broadcast envelopes received again",
            true,
            m.duplicates as f64,
        ),
        (
            "refused_envelopes",
            "Broadcast envelopes or manifests refused for a bad or unknown signature",
            true,
            m.refused_envelopes as f64,
        ),
        (
            "malformed_frames",
            "Control-plane frames that did not decode",
            true,
            m.malformed_frames as f64,
        ),
        (
            "members_declared_dead",
            "Neighbours this member declared dead",
            true,
            m.declared_dead as f64,
        ),
    ];
    out.extend(unlabelled(plain));
    out
}

fn fleet_counts(f: &FleetStatus) -> Vec<Sample> {
    let s = &f.states;
    let mut out = vec![one(
        "fleet_nodes",
        "Nodes the coordinator counts through the health tree (itself not included)",
        false,
        Vec::new(),
        f64::from(f.nodes),
    )];
    out.extend(by(
        "fleet_nodes_by_state",
        "Nodes per health state",
        false,
        "state",
        [
            ("unknown", f64::from(s.unknown)),
            ("healthy", f64::from(s.healthy)),
            ("degraded", f64::from(s.degraded)),
            ("failed", f64::from(s.failed)),
        ],
    ));
    for release in &f.releases {
        let root = release.root.to_string();
        for (state, n) in [
            ("complete", release.complete),
            ("fetching", release.fetching),
        ] {
            out.push(one(
                "fleet_release_nodes",
                "Nodes per release (by root) holding it complete, and still fetching it",
                false,
                vec![("release", root.clone()), ("state", state.to_owned())],
                f64::from(n),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_with_the_prefix_and_their_units() {
        let node = NodeStatus::default();
        let more = [
            Sample {
                name: "activations",
                help: "Activations, by outcome",
                counter: true,
                labels: vec![("outcome", "activated".into())],
                value: 2.0,
            },
            Sample {
                name: "activations",
                help: "Activations, by outcome",
                counter: true,
                labels: vec![("outcome", "failed".into())],
                value: 1.0,
            },
        ];
        let text = render(&node, None, None, &more);
        assert!(
            text.contains("shoal_activations_total{outcome=\"failed\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE shoal_piece_bytes counter"), "{text}");
        assert!(
            text.contains("shoal_piece_bytes_total{direction=\"received\"} 0.0"),
            "{text}"
        );
        assert!(text.contains("shoal_pieces{state=\"held\"} 0.0"), "{text}");
        assert!(text.contains("\nshoal_swarm_connections 0.0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        let old = to_text_format(&text);
        assert!(
            old.contains("# HELP shoal_piece_bytes_total Piece bytes"),
            "{old}"
        );
        assert!(
            old.contains("# TYPE shoal_piece_bytes_total counter"),
            "{old}"
        );
        assert!(old.contains("# TYPE shoal_pieces gauge"), "{old}");
        assert!(!old.contains("# EOF"));
    }
}
