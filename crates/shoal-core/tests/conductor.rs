//! The conductor on its own: what it does when the fleet does not answer or keeps growing, and
//! one rollout per service.

use shoal_core::content::RootHash;
use shoal_core::rollout::conductor::{Conductor, ConductorError, Config, Output, RolloutState};
use shoal_core::rollout::report::CellCount;
use shoal_core::rollout::{Action, Cell, NodeState, Plan, Release, RolloutReport};
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

const T0: Duration = Duration::from_secs(1_800_000_000);

fn strict_plan() -> Plan {
    Plan::from_toml(
        "[[stage]]\nname = \"all\"\nsize = \"100%\"\nbake_secs = 0\nsuccess = \"100%\"\nfailure_threshold = \"1\"",
    )
    .expect("a one-stage plan")
}

fn cell(fault_domain: &str) -> Cell {
    Cell {
        stage: 0,
        region: "r1".into(),
        fault_domain: fault_domain.into(),
    }
}

/// A report of every node having seen the latest directive: `census` matching counts and
/// `cells` per state (pending, healthy).
fn report(census: &[(&str, u32)], cells: &[(&str, u32, u32)]) -> RolloutReport {
    let mut r = RolloutReport::new(1, u32::MAX);
    r.census = census
        .iter()
        .map(|(fd, n)| CellCount {
            cell: cell(fd),
            counts: [*n, 0, 0, 0, 0],
        })
        .collect();
    r.cells = cells
        .iter()
        .map(|(fd, pending, healthy)| {
            let mut counts = [0; 5];
            counts[NodeState::Pending as usize] = *pending;
            counts[NodeState::Healthy as usize] = *healthy;
            CellCount {
                cell: cell(fd),
                counts,
            }
        })
        .collect();
    let census_nodes: u32 = census.iter().map(|c| c.1).sum();
    let cell_nodes: u32 = cells.iter().map(|c| c.1 + c.2).sum();
    r.nodes = census_nodes.max(cell_nodes);
    r
}

fn records(c: &mut Conductor) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(o) = c.poll_output() {
        if let Output::Record(r) = o {
            out.push(r.event);
        }
    }
    out
}

fn started() -> Conductor {
    let mut c = Conductor::new(Config::default(), Vec::new());
    c.start(T0, 1, strict_plan(), "web".into(), release(2), None, false)
        .expect("starts");
    records(&mut c);
    c
}

#[test]
fn a_census_waits_while_the_fleet_count_grows_and_then_counts_everyone() {
    let mut c = started();
    let mut log = Vec::new();
    // A join storm: the count climbs for 30 s, with a plateau of 3 s in the middle.
    let mut count = 0;
    for s in 0..30u32 {
        if !(12..15).contains(&s) {
            count += 300;
        }
        let at = T0 + Duration::from_secs(u64::from(s));
        c.handle_reports(at, count, &[report(&[("a", count)], &[])]);
        log.extend(records(&mut c));
        assert!(
            log.iter().all(|e| !e.contains("census done")),
            "census taken at {s} s on {count} nodes: {log:?}"
        );
    }
    // Then it holds: the census is taken once it has held for `census_settle`.
    let mut done_at = None;
    for s in 30..45u64 {
        let at = T0 + Duration::from_secs(s);
        c.handle_reports(at, count, &[report(&[("a", count)], &[])]);
        c.handle_timeout(at);
        let new = records(&mut c);
        if new
            .iter()
            .any(|e| e.contains(&format!("census done: {count} nodes")))
        {
            done_at.get_or_insert(s);
        }
    }
    let settle = Config::default().census_settle.as_secs();
    assert_eq!(
        done_at,
        Some(29 + settle),
        "the census waits exactly the settle time"
    );
}

#[test]
fn a_census_whose_count_moves_past_its_timeout_goes_on_and_counts_everyone() {
    let mut c = started();
    // A fleet still joining for 90 s, past the 60 s timeout: 10 more nodes a second.
    let mut count = 0;
    for s in 0..=90u32 {
        count = 100 + 10 * s;
        let at = T0 + Duration::from_secs(u64::from(s));
        c.handle_reports(at, count, &[report(&[("a", count)], &[])]);
        c.handle_timeout(at);
    }
    assert_eq!(c.status(1).expect("known").state, "running");
    let mut log = records(&mut c);
    for s in 91..=101u64 {
        let at = T0 + Duration::from_secs(s);
        c.handle_reports(at, count, &[report(&[("a", count)], &[])]);
        c.handle_timeout(at);
        log.extend(records(&mut c));
    }
    assert!(
        log.iter()
            .any(|e| e.contains(&format!("census done: {count} nodes"))),
        "{log:?}"
    );
}

#[test]
fn a_census_whose_count_never_holds_aborts_at_its_limit_and_says_so() {
    let mut c = started();
    let limit = Config::default().census_limit.as_secs();
    let mut reason = String::new();
    for s in 0..=limit {
        // Up and down by 5% every second: always moving, never steady.
        let count = if s % 2 == 0 { 1000 } else { 1050 };
        let at = T0 + Duration::from_secs(s);
        c.handle_reports(at, count, &[report(&[("a", count)], &[])]);
        c.handle_timeout(at);
        let status = c.status(1).expect("known");
        if s < limit {
            assert_eq!(status.state, "running", "at {s} s: {:?}", status.reason);
        }
        reason = status.reason.unwrap_or_default();
    }
    assert_eq!(c.status(1).expect("known").state, "aborted");
    assert!(
        reason.contains("did not settle within its limit of 600s")
            && reason.contains("fleet count had stayed within 1%"),
        "{reason}"
    );
}

#[test]
fn a_census_that_stops_changing_without_every_answer_aborts_a_timeout_after_its_last_change() {
    let mut c = started();
    // The fleet grows for 40 s, then holds at 500 nodes, of which 490 ever answer.
    let mut aborted_at = None;
    for s in 0..=200u32 {
        let fleet = (100 + 10 * s).min(500);
        let mut r = report(&[("a", fleet.min(490))], &[]);
        r.nodes = fleet.min(490);
        let at = T0 + Duration::from_secs(u64::from(s));
        c.handle_reports(at, fleet, &[r]);
        c.handle_timeout(at);
        if aborted_at.is_none() && c.status(1).expect("known").state == "aborted" {
            aborted_at = Some(s);
        }
    }
    // The answers last grew at 39 s (490), the count last left its band at 40 s (500).
    assert_eq!(aborted_at, Some(100));
    let reason = c.status(1).expect("known").reason.unwrap_or_default();
    assert!(
        reason.contains("nothing changed for 60s, 490 of 500 nodes answered"),
        "{reason}"
    );
}

/// Census and assignment with `assigned` pending nodes in cell "a"; returns at the first wave.
fn in_first_wave(assigned: u32) -> Conductor {
    let mut c = started();
    // The count has held since 0 s: the census is taken at `census_settle`, 10 s.
    for s in 0..=10u64 {
        c.handle_reports(
            T0 + Duration::from_secs(s),
            assigned,
            &[report(&[("a", assigned)], &[])],
        );
    }
    for s in 11..24u64 {
        let r = report(&[], &[("a", assigned, 0)]);
        c.handle_reports(T0 + Duration::from_secs(s), assigned, &[r]);
        c.handle_timeout(T0 + Duration::from_secs(s));
    }
    assert_eq!(c.waves(1).len(), 1, "one wave for the one cell");
    assert_eq!(c.waves(1)[0].expected, assigned);
    c
}

#[test]
fn a_wave_expects_the_nodes_that_joined_its_cells_after_the_assignment() {
    let mut c = in_first_wave(100);
    records(&mut c);
    // 100 healthy, as assigned, but 40 more joined and are still activating.
    for s in 24..30u64 {
        let r = report(&[], &[("a", 40, 100)]);
        c.handle_reports(T0 + Duration::from_secs(s), 140, &[r]);
    }
    let log = records(&mut c);
    assert_eq!(c.status(1).expect("known").state, "running", "{log:?}");
    assert_eq!(c.waves(1)[0].expected, 140);
    assert_eq!(c.waves(1)[0].assigned, 100);
    assert!(
        log.iter()
            .any(|e| e.contains("140 nodes report in its cells, 100 at assignment")),
        "{log:?}"
    );
    for s in 30..34u64 {
        let r = report(&[], &[("a", 0, 140)]);
        c.handle_reports(T0 + Duration::from_secs(s), 140, &[r]);
    }
    let log = records(&mut c);
    assert!(
        log.iter()
            .any(|e| e.contains("wave 1 passed: 140 of 140 healthy")),
        "{log:?}"
    );
    assert_eq!(c.status(1).expect("known").state, "completed");
    assert_eq!(
        c.state(1),
        Some(RolloutState::Completed),
        "the state alone says the same"
    );
    assert_eq!(c.state(2), None);
}

#[test]
fn nodes_in_a_cell_the_assignment_did_not_find_get_a_wave_before_completion() {
    let mut c = in_first_wave(100);
    records(&mut c);
    // Cell "a" is healthy; 5 nodes turned up in cell "b", which no wave has.
    for s in 24..28u64 {
        let r = report(&[], &[("a", 0, 100), ("b", 5, 0)]);
        c.handle_reports(T0 + Duration::from_secs(s), 105, &[r]);
    }
    let log = records(&mut c);
    assert!(
        log.iter().any(
            |e| e.contains("5 nodes in cells the assignment did not find (r1/b): 1 more waves")
        ),
        "{log:?}"
    );
    assert_eq!(c.status(1).expect("known").state, "running", "{log:?}");
    let waves = c.waves(1);
    assert_eq!(waves.len(), 2);
    assert_eq!(waves[1].cells, vec![cell("b")]);
    assert!(waves[1].opened_at.is_some(), "the new wave is open");
    for s in 28..32u64 {
        let r = report(&[], &[("a", 0, 100), ("b", 0, 5)]);
        c.handle_reports(T0 + Duration::from_secs(s), 105, &[r]);
    }
    assert_eq!(c.status(1).expect("known").state, "completed");
}

/// A census of 60 nodes in cell "a" and 40 in "b", taken at 10 s; then "b" goes silent during
/// the assignment, from 11 s until `heal_at` (if ever). Returns the conductor at `until`.
fn assignment_with_b_cut(heal_at: Option<u64>, until: u64) -> (Conductor, Vec<String>) {
    let mut c = started();
    for s in 0..=10u64 {
        let r = report(&[("a", 60), ("b", 40)], &[]);
        c.handle_reports(T0 + Duration::from_secs(s), 100, &[r]);
    }
    let mut log = records(&mut c);
    assert!(
        log.iter().any(|e| e.contains("census done: 100 nodes")),
        "{log:?}"
    );
    for s in 11..=until {
        let healed = heal_at.is_some_and(|h| s >= h);
        let (r, fleet) = if healed {
            (report(&[], &[("a", 60, 0), ("b", 40, 0)]), 100)
        } else {
            (report(&[], &[("a", 60, 0)]), 60)
        };
        let at = T0 + Duration::from_secs(s);
        c.handle_reports(at, fleet, &[r]);
        c.handle_timeout(at);
        log.extend(records(&mut c));
    }
    (c, log)
}

#[test]
fn an_assignment_waits_for_a_fault_domain_cut_off_since_the_census() {
    let (c, log) = assignment_with_b_cut(None, 50);
    assert!(c.waves(1).is_empty(), "no wave without r1/b: {log:?}");
    assert!(
        log.iter().any(
            |e| e.contains("assignment waits: nothing heard from r1/b since it reported nodes")
        ),
        "{log:?}"
    );
    assert_eq!(c.status(1).expect("known").state, "running");

    let (c, log) = assignment_with_b_cut(None, 71);
    assert_eq!(c.status(1).expect("known").state, "aborted", "{log:?}");
    let reason = c.status(1).and_then(|s| s.reason).unwrap_or_default();
    assert!(
        reason.contains(
            "nothing was heard since from fault domains that reported nodes: r1/b (40 nodes)"
        ),
        "{reason}"
    );

    let (c, log) = assignment_with_b_cut(Some(30), 45);
    let waves = c.waves(1);
    assert_eq!(waves.len(), 2, "a wave per fault domain: {log:?}");
    assert_eq!(waves[1].cells, vec![cell("b")]);
    assert_eq!(waves[1].expected, 40);
}

#[test]
fn a_census_that_has_not_heard_every_node_sends_its_directive_again() {
    let mut c = started();
    let resend = Config::default().census_resend.as_secs();
    let mut census_sent_at = Vec::new();
    let mut log = Vec::new();
    // Two of ten nodes missed the census directive until 20 s; then every node answers.
    for s in 0..=25u64 {
        let at = T0 + Duration::from_secs(s);
        let answered = if s <= 20 { 8 } else { 10 };
        c.handle_reports(at, 10, &[report(&[("a", answered)], &[])]);
        c.handle_timeout(at);
        while let Some(o) = c.poll_output() {
            match o {
                Output::Broadcast(d) if d.action == Action::Census => census_sent_at.push(s),
                Output::Record(r) => log.push(r.event),
                _ => {}
            }
        }
    }
    assert_eq!(
        census_sent_at,
        vec![resend],
        "sent again once {resend} s after the first, and not once every node answered"
    );
    assert!(
        log.iter().any(|e| e.contains("census done: 10 nodes")),
        "{log:?}"
    );
}
