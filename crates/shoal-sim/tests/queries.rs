//! Fleet queries over the simulated control plane: the real agent machine on every node answers
//! in its health summary, and the source's subtree holds the whole fleet's answer, exact
//! whatever the shape of the tree.

use shoal_core::query::{Query, VersionRef};
use shoal_sim::queries::FleetAnswer;
use shoal_sim::rollouts::release;
use shoal_sim::{Config, Model, Network, NodeId};
use std::time::Duration;

const NODES: u32 = 600;
const STEP: Duration = Duration::from_millis(100);
/// Far more than a query needs: a few health intervals per level of the tree.
const LIMIT: Duration = Duration::from_secs(60);

fn network(seed: u64) -> Network {
    let mut net = Network::new(
        Config {
            seed,
            ..Config::default()
        },
        NODES,
    );
    net.enable_rollouts(Model::quick("web", release("1.0", 1)));
    net.run_for(Duration::from_secs(40));
    net
}

fn query(net: &Network, id: u64, select: &str, version_not: Option<&str>, limit: u16) -> Query {
    Query {
        id,
        select: select.parse().expect("labels"),
        version_not: version_not.map(|v| v.parse::<VersionRef>().expect("version")),
        state: None,
        limit,
        expires_unix_secs: net.unix_now() + 120,
    }
}

/// The running nodes, the source left out, that `keep` accepts.
fn nodes_where(net: &Network, keep: impl Fn(u32, u32) -> bool) -> Vec<NodeId> {
    net.alive()
        .filter(|&id| id != 0)
        .filter(|&id| {
            net.node(id)
                .is_some_and(|n| keep(n.me().place.region, n.me().place.fault_domain))
        })
        .collect()
}

/// Runs `q` to its complete answer.
fn answered(net: &mut Network, q: Query) -> FleetAnswer {
    let (answer, after) = net.run_query(q, STEP, LIMIT);
    assert!(
        answer.is_complete(),
        "not complete after {after:?}: {answer:?}"
    );
    answer
}

#[test]
fn the_source_holds_the_exact_answer_of_the_whole_fleet() {
    for seed in [5, 6] {
        let mut net = network(seed);
        let everyone = nodes_where(&net, |_, _| true);

        let fleet = {
            let q = query(&net, 1, "region=r1", None, 10);
            answered(&mut net, q)
        };
        let answer = fleet.answer.expect("an answer");
        assert_eq!(fleet.fleet as usize, everyone.len(), "seed {seed}");
        assert_eq!(answer.answered as usize, everyone.len(), "seed {seed}");
        let matching = nodes_where(&net, |region, _| region == 1);
        assert_eq!(answer.matched as usize, matching.len(), "seed {seed}");
        assert!(!matching.is_empty());

        // Per fault domain of region 1, as the nodes' labels say.
        for cell in &answer.cells {
            assert_eq!(cell.region, "r1");
            let fd: u32 = cell.fault_domain.parse().expect("a numbered fault domain");
            let there = nodes_where(&net, |region, f| region == 1 && f == fd);
            assert_eq!(cell.matched as usize, there.len(), "seed {seed}: {cell:?}");
        }
        let counted: u32 = answer.cells.iter().map(|c| c.matched).sum();
        assert_eq!(counted, answer.matched);

        // The sample: the matching nodes with the smallest ids, whatever the tree.
        let mut expected: Vec<Vec<u8>> = matching
            .iter()
            .map(|id| id.to_le_bytes().to_vec())
            .collect();
        expected.sort();
        expected.truncate(10);
        let sampled: Vec<Vec<u8>> = answer.sample.iter().map(|h| h.node_id.clone()).collect();
        assert_eq!(sampled, expected, "seed {seed}");
        assert!(
            answer
                .sample
                .iter()
                .all(|h| h.labels.get("region") == Some("r1"))
        );

        // A version predicate: every node runs 1.0.
        let fleet = {
            let q = query(&net, 2, "", Some("web@1.0"), 5);
            answered(&mut net, q)
        };
        assert_eq!(fleet.answer.expect("an answer").matched, 0);
        let fleet = {
            let q = query(&net, 3, "", Some("web@2.0"), 5);
            answered(&mut net, q)
        };
        let answer = fleet.answer.expect("an answer");
        assert_eq!(answer.matched as usize, everyone.len());
        assert_eq!(answer.sample.len(), 5);
    }
}

#[test]
fn an_expired_query_leaves_the_summaries() {
    let mut net = network(7);
    let q = query(&net, 9, "", None, 3);
    let expires = q.expires_unix_secs;
    answered(&mut net, q);
    while net.unix_now() <= expires {
        net.run_for(Duration::from_secs(5));
    }
    // Nodes drop it at their next summary after the expiry; give the tree a few reports.
    net.run_for(Duration::from_secs(10));
    assert!(
        net.query_answer(9, 0).answer.is_none(),
        "an expired query is still answered"
    );
}
