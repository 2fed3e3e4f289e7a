use super::*;
use crate::control::{Config, Entry, Envelope};
use crate::labels::Labels;
use crate::rollout::agent::Persisted;
use bytes::Bytes;

fn entry(peer: u32) -> Entry<u32> {
    Entry {
        peer,
        place: Default::default(),
    }
}

/// Node 1 with the source (0) and node 2 as neighbours, with a rollout agent if `agent`.
fn machine(agent: bool) -> Machine<u32, u32> {
    let mut control = control::Node::new(entry(1), vec![], Config::default(), 9, Duration::ZERO);
    for peer in [0, 2] {
        control.handle_message(
            Duration::ZERO,
            peer,
            Message::NeighbourReply {
                place: Default::default(),
                accepted: true,
            },
        );
    }
    let agent = agent.then(|| {
        Agent::new(
            vec![1],
            "node1".into(),
            Labels::default(),
            BTreeMap::new(),
            Persisted::default(),
        )
    });
    let mut m = Machine::new(control, agent, None, 1_800_000_000);
    drain(&mut m);
    m
}

fn drain(m: &mut Machine<u32, u32>) -> Vec<Output<u32, u32>> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn deliver(
    m: &mut Machine<u32, u32>,
    seq: u64,
    directive: &Directive<u32>,
) -> Vec<Output<u32, u32>> {
    let envelope = Envelope::unsigned(seq, false, Bytes::from(directive.encode()));
    let message = Message::Gossip {
        envelope: Arc::new(envelope),
    };
    m.handle_message(Duration::from_secs(1), 0, message);
    drain(m)
}

#[test]
fn an_announcement_it_cannot_verify_is_refused_and_not_fetched() {
    let mut m = machine(true);
    let directive = Directive::Announce {
        manifest: vec![1, 2, 3],
        origin: 0,
    };
    let out = deliver(&mut m, 1, &directive);
    assert!(
        out.iter().any(|o| matches!(o, Output::ManifestRefused(_))),
        "{out:?}"
    );
    assert!(!out.iter().any(|o| matches!(o, Output::AddRelease { .. })));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Control(control::Output::Deliver { .. }))),
        "the delivery is passed on for the driver's counters"
    );
}

#[test]
fn a_stored_release_shows_in_the_own_summary_and_brings_swarm_peers_until_complete() {
    let mut m = machine(true);
    let root = RootHash([7; 32]);
    m.release_stored(root, false, Duration::ZERO);
    let fetching = m.control().subtree();
    let count = fetching
        .releases
        .iter()
        .find(|r| r.root == root)
        .expect("counted");
    assert_eq!(count.complete, 0);
    m.handle_timeout(fetch::REFRESH);
    let out = drain(&mut m);
    let peers: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            Output::Connect(p) => Some(p.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        peers.len(),
        2,
        "both neighbours are swarm candidates: {out:?}"
    );
    m.release_stored(root, true, fetch::REFRESH);
    let complete = m.control().subtree();
    let count = complete.releases.iter().find(|r| r.root == root).unwrap();
    assert_eq!(count.complete, 1);
    m.handle_timeout(fetch::REFRESH * 3);
    assert!(
        !drain(&mut m)
            .iter()
            .any(|o| matches!(o, Output::Connect(_))),
        "a complete node looked for swarm peers"
    );
}

#[test]
fn a_heartbeat_is_delivered_and_the_source_sets_no_own_summary() {
    let mut m = machine(false);
    let out = deliver(&mut m, 1, &Directive::Heartbeat { fleet: 1000 });
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Control(control::Output::Deliver { .. })))
    );
    assert_eq!(
        m.control().fleet_size(),
        1000,
        "the heartbeat set the fleet size"
    );
    m.release_stored(RootHash([3; 32]), true, Duration::ZERO);
    assert!(
        m.control().subtree().releases.is_empty(),
        "a machine without an agent (the source) reported an own summary"
    );
}

#[test]
fn the_driver_hears_that_the_agent_changed_only_after_it_could_have() {
    let mut m = machine(true);
    assert!(m.take_agent_changed(), "a new agent has a state to show");
    assert!(!m.take_agent_changed(), "taken once");
    deliver(&mut m, 1, &Directive::Heartbeat { fleet: 10 });
    assert!(
        !m.take_agent_changed(),
        "a heartbeat does not touch the agent"
    );
    m.set_drained(true);
    assert!(m.take_agent_changed());
    assert!(m.agent().is_some_and(Agent::is_drained));
    let mut source = machine(false);
    source.set_drained(true);
    assert!(!source.take_agent_changed(), "the source has no agent");
}

#[test]
fn only_a_newer_revocation_list_replaces_the_one_held() {
    let mut m = machine(true);
    let mut list = crate::revocation::Revocations::default();
    list.revoke([1; 16], 100, 0).unwrap();
    list.revoke([2; 16], 100, 0).unwrap();
    let newer = Arc::new(list.clone());
    let out = deliver(&mut m, 1, &Directive::Revoked(Arc::clone(&newer)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Revocations(r) if r.generation == 2)),
        "the driver is told of the new list"
    );
    let mut older = crate::revocation::Revocations::default();
    older.revoke([3; 16], 100, 0).unwrap();
    let out = deliver(&mut m, 2, &Directive::Revoked(Arc::new(older)));
    assert!(!out.iter().any(|o| matches!(o, Output::Revocations(_))));
    assert!(m.revocations().is_revoked(&[2; 16]));
    assert!(!m.revocations().is_revoked(&[3; 16]));
}

#[test]
fn links_up_to_revoked_peers_are_cut_once_the_list_has_had_time_to_reach_them() {
    let cut_offs = |out: &[Output<u32, u32>]| -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Output::CutOff(list) => Some(list.generation),
                _ => None,
            })
            .collect()
    };
    let mut list = crate::revocation::Revocations::default();
    list.revoke([1; 16], 100, 0).unwrap();
    let list = Arc::new(list);
    let arrived = Duration::from_secs(1);
    let due = arrived + CUT_OFF_AFTER;

    // A member that hears the broadcast.
    let mut m = machine(true);
    let out = deliver(&mut m, 1, &Directive::Revoked(Arc::clone(&list)));
    assert!(cut_offs(&out).is_empty(), "not cut at once: {out:?}");
    assert!(m.poll_timeout() <= due);
    m.handle_timeout(due - Duration::from_millis(1));
    assert!(cut_offs(&drain(&mut m)).is_empty(), "cut too early");
    m.handle_timeout(due);
    assert_eq!(cut_offs(&drain(&mut m)), vec![1]);
    m.handle_timeout(due + CUT_OFF_AFTER);
    assert!(cut_offs(&drain(&mut m)).is_empty(), "cut once");

    // The source that issues it.
    let mut source = machine(false);
    source.issue_revocations(arrived, Arc::clone(&list));
    assert!(source.revocations().is_revoked(&[1; 16]));
    assert!(source.poll_timeout() <= due);
    source.handle_timeout(due);
    assert_eq!(cut_offs(&drain(&mut source)), vec![1]);
}

#[test]
fn a_node_answers_a_fleet_query_in_its_summary_until_it_expires() {
    let mut m = machine(true);
    let query = |id, select: &str, expires| crate::query::Query {
        id,
        select: select.parse().unwrap(),
        version_not: None,
        state: None,
        limit: 3,
        expires_unix_secs: expires,
    };
    let unix = 1_800_000_000;
    deliver(
        &mut m,
        1,
        &Directive::Query(Arc::new(query(1, "", unix + 60))),
    );
    deliver(
        &mut m,
        2,
        &Directive::Query(Arc::new(query(2, "region=x", unix + 60))),
    );
    let subtree = m.control().subtree();
    let all = subtree.query(1).expect("query 1 answered");
    assert_eq!((all.answered, all.matched), (1, 1));
    assert_eq!(all.sample[0].name, "node1");
    let none = subtree.query(2).expect("query 2 answered");
    assert_eq!((none.answered, none.matched), (1, 0));
    assert!(none.sample.is_empty());
    // A query is dropped once its time is past, with nothing else happening: the machine wakes
    // for it.
    deliver(
        &mut m,
        3,
        &Directive::Query(Arc::new(query(3, "", unix + 2))),
    );
    assert!(m.control().subtree().query(3).is_some());
    let expiry = Duration::from_secs(3);
    assert!(m.poll_timeout() <= expiry, "no wake-up for the expiry");
    m.handle_timeout(expiry - Duration::from_millis(1));
    assert!(
        m.control().subtree().query(3).is_some(),
        "dropped too early"
    );
    m.handle_timeout(expiry);
    let subtree = m.control().subtree();
    assert!(
        subtree.query(3).is_none(),
        "an expired query is still answered"
    );
    assert!(subtree.query(1).is_some());
}
