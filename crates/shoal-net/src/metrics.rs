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
    use prometheus_client::metrics::counter::Counter as C;
    use prometheus_client::metrics::gauge::Gauge as G;
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
                let c = C::<f64, std::sync::atomic::AtomicU64>::default();
                c.inc_by(first.value);
                r.register(name, first.help, c);
            } else {
                let g = G::<f64, std::sync::atomic::AtomicU64>::default();
                g.set(first.value);
                r.register(name, first.help, g);
            }
        } else if first.counter {
            let family = Family::<Labels, C<f64, std::sync::atomic::AtomicU64>>::default();
            for s in of_name() {
                family.get_or_create(&s.labels).inc_by(s.value);
            }
            r.register(name, first.help, family);
        } else {
            let family = Family::<Labels, G<f64, std::sync::atomic::AtomicU64>>::default();
            for s in of_name() {
                family.get_or_create(&s.labels).set(s.value);
            }
            r.register(name, first.help, family);
        }
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counters<'a>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (value, n) in values {
        family
            .get_or_create(&vec![(label, value.to_string())])
            .inc_by(n);
    }
    registry.register(name, help, family);
}

fn gauges<'a>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (value, n) in values {
        family
            .get_or_create(&vec![(label, value.to_string())])
            .set(n);
    }
    registry.register(name, help, family);
}

fn signed(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The metrics text of a process: its data plane's `node`, its mesh membership `members`
/// (mesh members and the coordinator), and the `fleet` (the coordinator).
pub fn render(
    node: &NodeStatus,
    members: Option<&MembersStatus>,
    fleet: Option<&FleetStatus>,
    more: &[Sample],
) -> String {
    let mut r = Registry::with_prefix("shoal");
    data_plane(&mut r, node);
    register_samples(&mut r, more);
    if let Some(m) = members {
        mesh(&mut r, m);
    }
    if let Some(f) = fleet {
        fleet_counts(&mut r, f);
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &r);
    text
}

fn data_plane(r: &mut Registry, node: &NodeStatus) {
    let sum =
        |f: fn(&crate::status::ReleaseStatus) -> u64| node.releases.iter().map(f).sum::<u64>();
    counters(
        r,
        "piece_bytes",
        "Piece bytes moved by the data plane, verified ones received and sent",
        "direction",
        [
            ("received", sum(|x| x.bytes_down)),
            ("sent", sum(|x| x.bytes_up)),
        ],
    );
    gauges(
        r,
        "pieces",
        "Pieces of the releases in the store: held verified, and in all",
        "state",
        [
            ("held", signed(sum(|x| u64::from(x.have)))),
            ("total", signed(sum(|x| u64::from(x.total)))),
        ],
    );
    gauges(
        r,
        "releases",
        "Releases in the store, complete or still being fetched",
        "state",
        [
            (
                "complete",
                signed(node.releases.iter().filter(|x| x.complete).count()),
            ),
            (
                "partial",
                signed(node.releases.iter().filter(|x| !x.complete).count()),
            ),
        ],
    );
    counter(
        r,
        "verification_failures",
        "Pieces that failed BLAKE3 verification on arrival",
        sum(|x| x.corrupt_pieces),
    );
    counter(
        r,
        "piece_timeouts",
        "Piece requests that timed out",
        sum(|x| x.timeouts),
    );
    gauge(
        r,
        "banned_peers",
        "Peers banned by the data plane (bad pieces, false claims), over all releases",
        signed(node.releases.iter().map(|x| x.banned.len()).sum::<usize>()),
    );
    gauge(
        r,
        "swarm_connections",
        "Data-plane (QUIC) connections open",
        signed(node.connections.len()),
    );
    gauge(
        r,
        "swarm_peers",
        "Swarm peers over all releases being fetched or served",
        signed(node.releases.iter().map(|x| x.peers.len()).sum::<usize>()),
    );
    counter(
        r,
        "refused_peers",
        "Data-plane peers refused for a missing or invalid certificate",
        node.refused_peers,
    );
    counter(
        r,
        "refused_connections",
        "Data-plane connections refused by the connection limits",
        node.refused_connections,
    );
}

fn mesh(r: &mut Registry, m: &MembersStatus) {
    gauges(
        r,
        "view_peers",
        "Members in the membership views: active (neighbours) and passive (candidates)",
        "view",
        [
            ("active", signed(m.active.len())),
            ("passive", signed(m.passive.len())),
        ],
    );
    gauge(
        r,
        "suspect_neighbours",
        "Active neighbours that missed a ping and are being probed",
        signed(m.active.iter().filter(|a| a.suspect).count()),
    );
    gauge(
        r,
        "broadcast_sequence",
        "The latest broadcast sequence number delivered (sent, at the coordinator)",
        signed(m.latest_seq),
    );
    counter(
        r,
        "broadcasts_delivered",
        "Broadcast envelopes delivered",
        m.delivered,
    );
    counter(
        r,
        "broadcast_duplicates",
        "Broadcast envelopes received again",
        m.duplicates,
    );
    counters(
        r,
        "control_frames",
        "Control-plane frames, sent and received",
        "direction",
        [("sent", m.frames_sent), ("received", m.frames_received)],
    );
    counters(
        r,
        "control_bytes",
        "Control-plane bytes, sent and received",
        "direction",
        [("sent", m.bytes_sent), ("received", m.bytes_received)],
    );
    counter(
        r,
        "refused_envelopes",
        "Broadcast envelopes or manifests refused for a bad or unknown signature",
        m.refused_envelopes,
    );
    counter(
        r,
        "malformed_frames",
        "Control-plane frames that did not decode",
        m.malformed_frames,
    );
    counter(
        r,
        "members_declared_dead",
        "Neighbours this member declared dead",
        m.declared_dead,
    );
}

fn fleet_counts(r: &mut Registry, f: &FleetStatus) {
    gauge(
        r,
        "fleet_nodes",
        "Nodes the coordinator counts through the health tree (itself not included)",
        signed(f.nodes),
    );
    let s = &f.states;
    gauges(
        r,
        "fleet_nodes_by_state",
        "Nodes per health state",
        "state",
        [
            ("unknown", i64::from(s.unknown)),
            ("healthy", i64::from(s.healthy)),
            ("degraded", i64::from(s.degraded)),
            ("failed", i64::from(s.failed)),
        ],
    );
    let family = Family::<Labels, Gauge>::default();
    for release in &f.releases {
        let root = release.root.to_string();
        for (state, n) in [
            ("complete", release.complete),
            ("fetching", release.fetching),
        ] {
            family
                .get_or_create(&vec![
                    ("release", root.clone()),
                    ("state", state.to_string()),
                ])
                .set(i64::from(n));
        }
    }
    r.register(
        "fleet_release_nodes",
        "Nodes per release (by root) holding it complete, and still fetching it",
        family,
    );
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
            text.contains("shoal_piece_bytes_total{direction=\"received\"} 0"),
            "{text}"
        );
        assert!(text.contains("shoal_pieces{state=\"held\"} 0"), "{text}");
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
