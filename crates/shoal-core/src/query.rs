//! Fleet queries: which machines match a selector and a predicate, without a machine list.
//!
//! The coordinator broadcasts a [`Query`]
//! ([`Directive::Query`](crate::control::Directive::Query)). Every node with a rollout agent
//! evaluates it against its labels and its services ([`Query::answer`]) and puts its
//! [`QueryAnswer`] in the health summary it reports to its parent, which adds its children's
//! answers to its own ([`QueryAnswer::add`]) as it does every other count; so the coordinator's
//! subtree summary carries the whole fleet's answer: how many nodes answered, how many match,
//! and a sample of at most `limit` of them (the ones with the smallest node ids, so the sample
//! does not depend on the tree's shape). A node answers a query until it expires, and holds at
//! most [`MAX_QUERIES`] at once.

use crate::activation::ServiceState;
use crate::labels::Labels;
use serde::{Deserialize, Serialize};

/// The largest sample a query may ask for.
pub const MAX_QUERY_SAMPLE: u16 = 50;

/// Queries a node answers at once; a newer one displaces the oldest.
pub const MAX_QUERIES: usize = 4;

/// The longest a query lives, in seconds.
pub const MAX_QUERY_SECS: u64 = 120;

/// Services a sampled node shows; the rest are left out.
pub const MAX_SAMPLE_SERVICES: usize = 8;

/// The longest service or version name a query or a sample carries, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Region and fault-domain cells an answer counts apart; matches in further cells count only in
/// the totals.
pub const MAX_QUERY_CELLS: usize = 64;

/// Matching nodes in one region and fault domain (the `region` and `fd` labels; empty when a
/// node has none).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CellMatch {
    /// The region.
    pub region: String,
    /// The fault domain.
    pub fault_domain: String,
    /// Matching nodes in it.
    pub matched: u32,
}

/// "Not running this version": of one service, or of any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRef {
    /// The service, or none for any service.
    pub service: Option<String>,
    /// The version.
    pub version: String,
}

impl std::str::FromStr for VersionRef {
    type Err = String;

    /// `SERVICE@VERSION`, or `VERSION` for any service.
    fn from_str(text: &str) -> Result<Self, String> {
        let (service, version) = match text.split_once('@') {
            Some((service, version)) => (Some(service.to_owned()), version.to_owned()),
            None => (None, text.to_owned()),
        };
        if version.is_empty() || service.as_deref().is_some_and(str::is_empty) {
            return Err(format!(
                "{text:?} is not a version: write VERSION or SERVICE@VERSION, e.g. web@1.4"
            ));
        }
        let reference = VersionRef { service, version };
        if !reference.is_well_formed() {
            return Err(format!(
                "{text:?} is too long: service and version are at most {MAX_NAME_BYTES} bytes each"
            ));
        }
        Ok(reference)
    }
}

impl VersionRef {
    fn is_well_formed(&self) -> bool {
        self.version.len() <= MAX_NAME_BYTES
            && self
                .service
                .as_ref()
                .is_none_or(|s| s.len() <= MAX_NAME_BYTES)
    }
}

/// A service's state by name, for `--state`.
///
/// # Errors
///
/// A message naming the states there are.
pub fn parse_state(text: &str) -> Result<ServiceState, String> {
    ServiceState::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = ServiceState::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown state {text:?}: one of {}", names.join(", "))
        })
}

/// What the coordinator asks the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Its id, which its answers carry.
    pub id: u64,
    /// Labels a node must carry, each with the same value; empty: every node.
    pub select: Labels,
    /// A node matches only if it does not run this version.
    pub version_not: Option<VersionRef>,
    /// A node matches only if one of its services is in this state.
    pub state: Option<ServiceState>,
    /// The most nodes to sample, at most [`MAX_QUERY_SAMPLE`].
    pub limit: u16,
    /// Until when nodes answer (Unix seconds).
    pub expires_unix_secs: u64,
}

impl Query {
    /// Whether a query received from elsewhere keeps the limits.
    pub fn is_well_formed(&self) -> bool {
        self.limit <= MAX_QUERY_SAMPLE
            && self
                .version_not
                .as_ref()
                .is_none_or(VersionRef::is_well_formed)
    }

    /// Whether a node with `labels` running `services` matches.
    pub fn matches(&self, labels: &Labels, services: &[ServiceHit]) -> bool {
        let selected = self.select.iter().all(|(k, v)| labels.get(k) == Some(v));
        let not_running = self.version_not.as_ref().is_none_or(|not| {
            !services.iter().any(|s| {
                s.version.as_deref() == Some(not.version.as_str())
                    && not.service.as_ref().is_none_or(|name| *name == s.service)
            })
        });
        let in_state = self
            .state
            .is_none_or(|state| services.iter().any(|s| s.state == state));
        selected && not_running && in_state
    }

    /// One node's answer.
    pub fn answer(&self, node: QueryHit) -> QueryAnswer {
        let matched = self.matches(&node.labels, &node.services);
        let cells = if matched {
            vec![CellMatch {
                region: node.labels.get("region").unwrap_or("").to_owned(),
                fault_domain: node.labels.get("fd").unwrap_or("").to_owned(),
                matched: 1,
            }]
        } else {
            Vec::new()
        };
        QueryAnswer {
            id: self.id,
            limit: self.limit,
            answered: 1,
            matched: u32::from(matched),
            cells,
            sample: if matched && self.limit > 0 {
                vec![node]
            } else {
                Vec::new()
            },
        }
    }
}

/// One service of a sampled node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHit {
    /// The service.
    pub service: String,
    /// The version it runs, if any.
    pub version: Option<String>,
    /// Its state.
    pub state: ServiceState,
}

/// A sampled node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryHit {
    /// Its node id (the daemon's peer id bytes).
    pub node_id: Vec<u8>,
    /// Its name (the daemon's: its address and peer id).
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its services, at most [`MAX_SAMPLE_SERVICES`].
    pub services: Vec<ServiceHit>,
}

/// A subtree's answer to one query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryAnswer {
    /// The query.
    pub id: u64,
    /// Its sample limit.
    pub limit: u16,
    /// Nodes that answered.
    pub answered: u32,
    /// Nodes that match.
    pub matched: u32,
    /// Matching nodes per region and fault domain, sorted, at most [`MAX_QUERY_CELLS`].
    pub cells: Vec<CellMatch>,
    /// Matching nodes, sorted by node id, at most `limit`.
    pub sample: Vec<QueryHit>,
}

impl QueryAnswer {
    /// Adds another subtree's answer to the same query: counts add up, the sample keeps the
    /// smallest node ids.
    pub fn add(&mut self, other: &QueryAnswer) {
        self.answered = self.answered.saturating_add(other.answered);
        self.matched = self.matched.saturating_add(other.matched);
        for cell in &other.cells {
            let key = |c: &CellMatch| (c.region.clone(), c.fault_domain.clone());
            match self.cells.binary_search_by_key(&key(cell), key) {
                Ok(i) => {
                    self.cells[i].matched = self.cells[i].matched.saturating_add(cell.matched);
                }
                Err(i) => self.cells.insert(i, cell.clone()),
            }
        }
        self.cells.truncate(MAX_QUERY_CELLS);
        for hit in &other.sample {
            if let Err(i) = self
                .sample
                .binary_search_by(|h| h.node_id.as_slice().cmp(&hit.node_id))
            {
                self.sample.insert(i, hit.clone());
            }
        }
        self.sample.truncate(usize::from(self.limit));
    }

    /// Whether this answer, the coordinator's sum, is complete: as many nodes have answered as
    /// the coordinator counted when it asked, and as it counts now.
    ///
    /// The count when asked is the floor because the query opens a new round of the health
    /// tree: in a large fleet the coordinator shows the new round's counts before every subtree
    /// has reported in it (after `health_settle`), and such a partial count must not pass for
    /// the whole fleet. `shoal-sim --bench query` saw 28,051 of 30,000 nodes counted for half a
    /// second, all of them answered.
    pub fn is_complete(&self, fleet_when_asked: u32, fleet_now: u32) -> bool {
        let fleet = fleet_when_asked.max(fleet_now);
        fleet > 0 && self.answered >= fleet
    }

    /// Whether an answer received from a peer keeps the limits.
    pub fn is_well_formed(&self) -> bool {
        self.limit <= MAX_QUERY_SAMPLE
            && self.cells.len() <= MAX_QUERY_CELLS
            && self
                .cells
                .windows(2)
                .all(|w| (&w[0].region, &w[0].fault_domain) < (&w[1].region, &w[1].fault_domain))
            && self.cells.iter().all(|c| {
                c.region.len() <= crate::labels::MAX_LABEL_BYTES
                    && c.fault_domain.len() <= crate::labels::MAX_LABEL_BYTES
            })
            && self.sample.len() <= usize::from(self.limit)
            && self.sample.windows(2).all(|w| w[0].node_id < w[1].node_id)
            && self.sample.iter().all(|h| {
                h.services.len() <= MAX_SAMPLE_SERVICES
                    && h.name.len() <= MAX_NAME_BYTES
                    && h.services.iter().all(|s| {
                        s.service.len() <= MAX_NAME_BYTES
                            && s.version.as_ref().is_none_or(|v| v.len() <= MAX_NAME_BYTES)
                    })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: u8, labels: &str, services: &[(&str, Option<&str>, ServiceState)]) -> QueryHit {
        QueryHit {
            node_id: vec![id],
            name: format!("node{id}"),
            labels: labels.parse().unwrap(),
            services: services
                .iter()
                .map(|(s, v, state)| ServiceHit {
                    service: (*s).to_owned(),
                    version: v.map(str::to_owned),
                    state: *state,
                })
                .collect(),
        }
    }

    fn query(select: &str, version_not: Option<&str>, state: Option<&str>, limit: u16) -> Query {
        Query {
            id: 7,
            select: select.parse().unwrap(),
            version_not: version_not.map(|v| v.parse().unwrap()),
            state: state.map(|s| parse_state(s).unwrap()),
            limit,
            expires_unix_secs: 100,
        }
    }

    #[test]
    fn a_node_matches_its_selector_version_and_state() {
        let web14 = hit(
            1,
            "region=eu1,fd=2",
            &[("web", Some("1.4"), ServiceState::Healthy)],
        );
        let idle = hit(2, "region=us1", &[("web", None, ServiceState::Idle)]);
        let cases = [
            (query("", None, None, 5), true, true),
            (query("region=eu1", None, None, 5), true, false),
            (query("region=eu1,fd=3", None, None, 5), false, false),
            (query("", Some("web@1.4"), None, 5), false, true),
            (query("", Some("1.4"), None, 5), false, true),
            (query("", Some("db@1.4"), None, 5), true, true),
            (query("", None, Some("healthy"), 5), true, false),
            (query("", None, Some("idle"), 5), false, true),
            (
                query("region=us1", Some("web@1.4"), Some("idle"), 5),
                false,
                true,
            ),
        ];
        for (q, first, second) in cases {
            assert_eq!(q.matches(&web14.labels, &web14.services), first, "{q:?}");
            assert_eq!(q.matches(&idle.labels, &idle.services), second, "{q:?}");
        }
    }

    #[test]
    fn answers_add_up_and_keep_the_smallest_ids_within_the_limit() {
        let q = query("", None, None, 2);
        let mut total = q.answer(hit(5, "a=1", &[]));
        for id in [3, 9, 1] {
            total.add(&q.answer(hit(id, "a=1", &[])));
        }
        let other = query("a=2", None, None, 2).answer(hit(0, "a=1", &[]));
        total.add(&QueryAnswer { id: 7, ..other });
        assert_eq!(total.answered, 5);
        assert_eq!(total.matched, 4);
        assert_eq!(
            total.cells,
            [CellMatch {
                region: String::new(),
                fault_domain: String::new(),
                matched: 4
            }]
        );
        let ids: Vec<u8> = total.sample.iter().map(|h| h.node_id[0]).collect();
        assert_eq!(ids, [1, 3]);
        assert!(total.is_well_formed());
        // The same answer counted twice adds counts but never repeats a node in the sample.
        let copy = total.clone();
        total.add(&copy);
        assert_eq!(total.sample.len(), 2);
    }

    #[test]
    fn bad_versions_states_and_limits_are_refused_by_name() {
        assert!(
            "web@"
                .parse::<VersionRef>()
                .unwrap_err()
                .contains("SERVICE@VERSION")
        );
        assert!("@1.4".parse::<VersionRef>().is_err());
        assert!(parse_state("running").unwrap_err().contains("healthy"));
        let mut q = query("", None, None, MAX_QUERY_SAMPLE);
        assert!(q.is_well_formed());
        q.limit = MAX_QUERY_SAMPLE + 1;
        assert!(!q.is_well_formed());
        let mut answer = query("", None, None, 1).answer(hit(1, "a=1", &[]));
        answer.sample.push(hit(2, "a=1", &[]));
        assert!(!answer.is_well_formed());
    }

    #[test]
    fn an_answer_is_complete_only_once_the_fleet_counted_when_asked_has_answered() {
        let mut answer = query("", None, None, 1).answer(hit(1, "a=1", &[]));
        answer.answered = 28_051;
        // The coordinator shows a new round's partial count: not the whole fleet.
        assert!(!answer.is_complete(30_000, 28_051));
        answer.answered = 30_000;
        assert!(answer.is_complete(30_000, 29_990));
        // More nodes counted since: they must answer too.
        assert!(!answer.is_complete(30_000, 30_010));
        // No fleet, no answer.
        answer.answered = 0;
        assert!(!answer.is_complete(0, 0));
    }
}
