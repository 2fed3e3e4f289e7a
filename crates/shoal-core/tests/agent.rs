//! The rollout agent refuses directives it must not act on, counts them, and acts on none.

use shoal_core::activation::Policy;
use shoal_core::content::RootHash;
use shoal_core::rollout::agent::{Agent, Output, Persisted, Refusal};
use shoal_core::rollout::directive::StageRule;
use shoal_core::rollout::plan::Size;
use shoal_core::rollout::{Action, Cell, Directive, Release, Selector, Spec};
use std::collections::BTreeMap;

const NOW: u64 = 1_800_000_000;

fn release(version: &str, n: u8) -> Release {
    Release {
        version: version.into(),
        root: RootHash([n; 32]),
        counter: u64::from(n),
    }
}

fn directive(seq: u32, release: Release, action: Action) -> Directive {
    Directive {
        seq,
        expires_at_unix: NOW + 60,
        action,
        spec: Spec {
            rollout: 9,
            service: "web".into(),
            release,
            label_region: "region".into(),
            label_fault_domain: "fd".into(),
            skip_labels: BTreeMap::from([("maintenance".into(), "true".into())]),
            stages: vec![StageRule {
                select: Selector::default(),
                size: Size::Percent(10_000),
                threshold: u64::MAX,
            }],
        },
        open: vec![Cell {
            stage: 0,
            region: "r1".into(),
            fault_domain: "1".into(),
        }],
    }
}

fn agent(labels: &str, running: Release) -> Agent {
    let mut agent = Agent::new(
        b"node-a".to_vec(),
        "node-a".into(),
        labels.parse().expect("valid labels"),
        BTreeMap::from([("web".to_owned(), Policy::default())]),
        Persisted::running("web", running),
    );
    while agent.poll_output().is_some() {}
    agent
}

fn starts_anything(agent: &mut Agent) -> bool {
    std::iter::from_fn(|| agent.poll_output()).any(|o| matches!(o, Output::Execute { .. }))
}

#[test]
fn a_wave_for_this_node_starts_its_activation() {
    let (v5, v6) = (release("5", 5), release("6", 6));
    let mut a = agent("region=r1,fd=1", v5);
    a.handle_complete(v6.root);
    a.handle_directive(NOW, directive(1, v6, Action::Wave))
        .unwrap();
    assert!(starts_anything(&mut a));
}

#[test]
fn expired_replayed_lower_and_unverified_directives_are_refused_and_counted() {
    let (v5, v6, v4) = (release("5", 5), release("6", 6), release("4", 4));
    let mut a = agent("region=r1,fd=1", v5.clone());

    // Not verified here.
    let err = a.handle_directive(NOW, directive(1, v6.clone(), Action::Wave));
    assert_eq!(err, Err(Refusal::Unverified(v6.root)));
    a.handle_complete(v6.root);
    a.handle_complete(v4.root);

    let mut expired = directive(1, v6.clone(), Action::Wave);
    expired.expires_at_unix = NOW - 1;
    assert!(matches!(
        a.handle_directive(NOW, expired),
        Err(Refusal::Expired { .. })
    ));

    // A lower counter than the running 5, without a rollback.
    let lower = directive(1, v4.clone(), Action::Wave);
    assert!(matches!(
        a.handle_directive(NOW, lower),
        Err(Refusal::LowerCounter {
            running: 5,
            offered: 4,
            ..
        })
    ));
    assert!(!starts_anything(&mut a), "nothing acted on so far");

    a.handle_directive(NOW, directive(2, v6.clone(), Action::Pause))
        .unwrap();
    let replay = directive(2, v6.clone(), Action::Wave);
    assert!(matches!(
        a.handle_directive(NOW, replay),
        Err(Refusal::Replayed { last: 2, .. })
    ));
    assert!(
        !starts_anything(&mut a),
        "a pause starts nothing, a replay is ignored"
    );

    let refused = a.refused();
    assert_eq!(
        (
            refused.unverified,
            refused.expired,
            refused.lower_counter,
            refused.replayed
        ),
        (1, 1, 1, 1)
    );
}

#[test]
fn a_rollback_directive_may_name_a_lower_counter() {
    let (v5, v6, v4) = (release("5", 5), release("6", 6), release("4", 4));
    let mut a = agent("region=r1,fd=1", v5);
    a.handle_complete(v6.root);
    a.handle_complete(v4.root);
    let rollback = directive(1, v6, Action::Rollback { to: v4.clone() });
    a.handle_directive(NOW, rollback).unwrap();
    assert!(starts_anything(&mut a), "it switches to 4");
}

#[test]
fn drained_and_maintenance_nodes_never_activate() {
    let (v5, v6) = (release("5", 5), release("6", 6));
    let mut maintenance = agent("region=r1,fd=1,maintenance=true", v5.clone());
    maintenance.handle_complete(v6.root);
    maintenance
        .handle_directive(NOW, directive(1, v6.clone(), Action::Wave))
        .unwrap();
    assert!(!starts_anything(&mut maintenance));
    assert_eq!(maintenance.reports()[0].excluded, 1);

    let mut drained = agent("region=r1,fd=1", v5);
    drained.set_drained(true);
    drained.handle_complete(v6.root);
    drained
        .handle_directive(NOW, directive(1, v6, Action::Wave))
        .unwrap();
    assert!(!starts_anything(&mut drained));
    assert_eq!(drained.reports()[0].excluded, 1);
}

#[test]
fn a_completed_rollout_takes_a_node_in_a_cell_no_wave_opened() {
    let (v5, v6) = (release("5", 5), release("6", 6));
    // Fault domain 2 is in no open cell: a wave leaves the node alone.
    let mut waiting = agent("region=r1,fd=2", v5.clone());
    waiting.handle_complete(v6.root);
    waiting
        .handle_directive(NOW, directive(1, v6.clone(), Action::Wave))
        .unwrap();
    assert!(!starts_anything(&mut waiting));
    // Once every stage is done, it goes to the release too.
    waiting
        .handle_directive(NOW, directive(2, v6.clone(), Action::Complete))
        .unwrap();
    assert!(starts_anything(&mut waiting));
    // Unless it is in maintenance.
    let mut maintenance = agent("region=r1,fd=2,maintenance=true", v5);
    maintenance.handle_complete(v6.root);
    maintenance
        .handle_directive(NOW, directive(1, v6, Action::Complete))
        .unwrap();
    assert!(!starts_anything(&mut maintenance));
}
