//! The conductor on its own: what it does when the fleet does not answer, and one rollout per
//! service.

use shoal_core::content::RootHash;
use shoal_core::rollout::conductor::{Conductor, ConductorError, Config};
use shoal_core::rollout::{Plan, Release, RolloutReport};
use std::time::Duration;

fn release(n: u8) -> Release {
    Release {
        version: format!("{n}.0"),
        root: RootHash([n; 32]),
        counter: u64::from(n),
    }
}

fn plan() -> Plan {
    Plan::from_toml("[[stage]]\nname = \"all\"\nsize = \"100%\"").expect("a one-stage plan")
}

#[test]
fn a_census_that_never_hears_every_node_aborts_naming_the_count() {
    let mut c = Conductor::new(Config::default(), Vec::new());
    let t0 = Duration::from_secs(1_800_000_000);
    c.start(
        t0,
        1,
        plan(),
        "web".into(),
        release(2),
        Some(release(1)),
        false,
    )
    .expect("starts");
    while c.poll_output().is_some() {}
    let mut half = RolloutReport::new(1, 1);
    half.nodes = 5;
    for s in 0..=61 {
        c.handle_reports(t0 + Duration::from_secs(s), 10, std::slice::from_ref(&half));
    }
    let status = c.status(1).expect("known");
    assert_eq!(status.state, "aborted");
    let reason = status.reason.expect("a reason");
    assert!(reason.contains("5 of 10 nodes answered"), "{reason}");
    assert!(c.waves(1).is_empty(), "no wave was cut");
}

#[test]
fn one_rollout_in_flight_per_service() {
    let mut c = Conductor::new(Config::default(), Vec::new());
    let t0 = Duration::from_secs(1_800_000_000);
    c.start(t0, 1, plan(), "web".into(), release(2), None, false)
        .expect("starts");
    let second = c.start(t0, 2, plan(), "web".into(), release(3), None, false);
    assert_eq!(
        second,
        Err(ConductorError::InFlight {
            service: "web".into(),
            rollout: 1
        })
    );
    c.start(t0, 3, plan(), "db".into(), release(3), None, false)
        .expect("another service may roll out");
    c.abort(t0, 1, false).expect("aborts");
    c.start(t0, 4, plan(), "web".into(), release(3), None, false)
        .expect("once the first is aborted");
}
