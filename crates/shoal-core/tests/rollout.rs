//! The conductor and thousands of rollout agents over an in-process network: directives reach
//! nodes after random delays (and not at all while a node is down), executors answer after
//! random delays, some nodes fail their health checks, some crash and come back from what they
//! persisted. Invariants are checked after every event.

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shoal_core::activation::{Command, Policy};
use shoal_core::content::RootHash;
use shoal_core::rollout::agent::{Agent, Output as AgentOutput, Persisted};
use shoal_core::rollout::conductor::{Conductor, Config, Output, RolloutState};
use shoal_core::rollout::{Cell, Directive, NodeState, Plan, Release, RolloutReport};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SERVICE: &str = "web";
const ROLLOUT: u64 = 42;
/// Directives and executor answers take up to this long.
const MAX_DELAY_MS: u64 = 500;
/// Reports reach the conductor this often (the health tree's refresh).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Simulated time at which the run gives up waiting for the rollout to finish.
const LIMIT: Duration = Duration::from_secs(3 * 3600);

fn release(version: &str, n: u8) -> Release {
    Release {
        version: version.into(),
        root: RootHash([n; 32]),
        counter: u64::from(n),
    }
}

#[derive(Clone, Copy)]
struct Scenario {
    nodes: usize,
    regions: usize,
    fault_domains: usize,
    /// Every node fails the new release's health check.
    bad_release: bool,
    /// Basis points of nodes that fail it.
    failing_bp: u32,
    /// Basis points of nodes that crash once (and come back).
    crashing_bp: u32,
    /// Basis points of nodes that join only after the assignment, half of them in a fault
    /// domain of their own.
    late_bp: u32,
    seed: u64,
}

enum Event {
    Deliver {
        node: usize,
        directive: usize,
    },
    Answer {
        node: usize,
        incarnation: u32,
        command: Command,
    },
    Wake {
        node: usize,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Report,
    ConductorWake,
}

struct SimNode {
    labels: String,
    agent: Option<Agent>,
    saved: Persisted,
    incarnation: u32,
    failing: bool,
    excluded_by_label: bool,
    activated_at: Vec<Duration>,
}

struct Fleet {
    now: Duration,
    queue: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    conductor: Conductor,
    directives: Vec<Directive>,
    latest_directive: Option<usize>,
    plan: Plan,
    v1: Release,
    v2: Release,
    /// When the conductor decided a wave failed.
    failed_at: Option<Duration>,
    /// Truth: when each node started activating v2 (node, time, cell region).
    starts: Vec<(usize, Duration)>,
    audit: Vec<String>,
}

/// The fault domain of half the late joiners: no node is in it at the assignment.
const LATE_FAULT_DOMAIN: usize = 9;

const PLAN: &str = r#"
one_region_at_a_time = true
fault_domain_by_fault_domain = true
max_parallel_fault_domains = 1

[[stage]]
name = "canary"
select = { region = "r0" }
size = "1"
bake_secs = 5
success = "100%"
failure_threshold = "1"
deadline_secs = 120
on_failure = "rollback"

[[stage]]
name = "pilot"
size = "20%"
bake_secs = 5
success = "100%"
failure_threshold = "5%"
deadline_secs = 300
on_failure = "rollback"

[[stage]]
name = "broad"
size = "100%"
success = "100%"
failure_threshold = "5%"
deadline_secs = 600
on_failure = "pause"
"#;

impl Fleet {
    fn new(scenario: Scenario) -> Self {
        let mut rng = SmallRng::seed_from_u64(scenario.seed);
        let v1 = release("1.0", 1);
        let v2 = release("2.0", 2);
        let late: Vec<bool> = (0..scenario.nodes)
            .map(|_| rng.random_range(0..10_000) < scenario.late_bp)
            .collect();
        let nodes = (0..scenario.nodes)
            .map(|i| {
                let region = i % scenario.regions;
                let fd = if late[i] && i % 2 == 0 {
                    LATE_FAULT_DOMAIN
                } else {
                    (i / scenario.regions) % scenario.fault_domains
                };
                let maintenance = i % 97 == 13;
                let labels = format!(
                    "region=r{region},fd={fd},maintenance={}",
                    if maintenance { "true" } else { "false" }
                );
                let failing =
                    scenario.bad_release || rng.random_range(0..10_000) < scenario.failing_bp;
                SimNode {
                    labels,
                    agent: None,
                    saved: Persisted::running(SERVICE, v1.clone()),
                    incarnation: 0,
                    failing,
                    excluded_by_label: maintenance,
                    activated_at: Vec::new(),
                }
            })
            .collect();
        let config = Config {
            settle: Duration::from_secs(2),
            refresh: Duration::from_secs(60),
            census_timeout: Duration::from_secs(60),
            drop_bp: 1000,
            ..Config::default()
        };
        let mut fleet = Fleet {
            now: Duration::from_secs(1_800_000_000),
            queue: BTreeMap::new(),
            seq: 0,
            rng,
            nodes,
            conductor: Conductor::new(config, Vec::new()),
            directives: Vec::new(),
            latest_directive: None,
            plan: Plan::from_toml(PLAN).expect("the test plan parses"),
            v1,
            v2,
            failed_at: None,
            starts: Vec::new(),
            audit: Vec::new(),
        };
        for (i, late) in late.into_iter().enumerate() {
            if late {
                let at = Duration::from_millis(fleet.rng.random_range(60_000..240_000));
                fleet.schedule(at, Event::Restart { node: i });
                continue;
            }
            fleet.boot(i);
            if fleet.rng.random_range(0..10_000) < scenario.crashing_bp {
                let at = Duration::from_millis(fleet.rng.random_range(5_000..120_000));
                fleet.schedule(at, Event::Crash { node: i });
            }
        }
        fleet.schedule(REPORT_EVERY, Event::Report);
        fleet
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), event);
    }

    fn delay(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(1..=MAX_DELAY_MS))
    }

    fn boot(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut agent = Agent::new(
            (i as u64).to_le_bytes().to_vec(),
            format!("node{i}"),
            node.labels.parse().expect("valid labels"),
            BTreeMap::from([(
                SERVICE.to_owned(),
                Policy {
                    grace: Duration::from_secs(10),
                    passes: 2,
                    interval: Duration::from_secs(1),
                },
            )]),
            node.saved.clone(),
        );
        // Both releases were announced and prefetched before the rollout.
        agent.handle_complete(self.v1.root);
        agent.handle_complete(self.v2.root);
        node.incarnation += 1;
        node.agent = Some(agent);
        self.drain_agent(i);
        // A node that comes back syncs the newest directive.
        if let Some(d) = self.latest_directive {
            let delay = self.delay();
            self.schedule(
                delay,
                Event::Deliver {
                    node: i,
                    directive: d,
                },
            );
        }
    }

    fn drain_agent(&mut self, i: usize) {
        let mut work = Vec::new();
        {
            let Some(agent) = self.nodes[i].agent.as_mut() else {
                return;
            };
            while let Some(out) = agent.poll_output() {
                work.push(out);
            }
            agent.check_invariants();
        }
        for out in work {
            match out {
                AgentOutput::Persist => {
                    let agent = self.nodes[i].agent.as_ref().expect("a drained node is up");
                    self.nodes[i].saved = agent.persisted();
                }
                AgentOutput::Execute { command, .. } => {
                    let incarnation = self.nodes[i].incarnation;
                    let delay = self.delay();
                    self.schedule(
                        delay,
                        Event::Answer {
                            node: i,
                            incarnation,
                            command,
                        },
                    );
                }
            }
        }
        // Track activation starts of the new release (truth for the invariants).
        let agent = self.nodes[i].agent.as_ref().expect("a drained node is up");
        let activating = agent.state(ROLLOUT) == Some(NodeState::Activating);
        let timeout = agent.poll_timeout();
        if activating && self.nodes[i].activated_at.is_empty() {
            self.starts.push((i, self.now));
            self.nodes[i].activated_at.push(self.now);
        }
        if let Some(t) = timeout {
            let after = t.saturating_sub(self.now);
            self.schedule(after, Event::Wake { node: i });
        }
    }

    fn drain_conductor(&mut self) {
        while let Some(out) = self.conductor.poll_output() {
            match out {
                Output::Record(r) => {
                    if r.event.contains("failed") || r.event.contains("missed its deadline") {
                        self.failed_at.get_or_insert(self.now);
                    }
                    self.audit.push(r.event);
                }
                Output::Broadcast(d) => {
                    self.directives.push(*d);
                    let index = self.directives.len() - 1;
                    self.latest_directive = Some(index);
                    for node in 0..self.nodes.len() {
                        if self.nodes[node].agent.is_some() {
                            let delay = self.delay();
                            self.schedule(
                                delay,
                                Event::Deliver {
                                    node,
                                    directive: index,
                                },
                            );
                        }
                    }
                }
            }
        }
        if let Some(t) = self.conductor.poll_timeout() {
            self.schedule(t.saturating_sub(self.now), Event::ConductorWake);
        }
    }

    fn step(&mut self) -> bool {
        let Some(((at, _), event)) = self.queue.pop_first() else {
            return false;
        };
        self.now = at;
        match event {
            Event::Deliver { node, directive } => {
                let d = self.directives[directive].clone();
                let unix = self.now.as_secs();
                if let Some(agent) = self.nodes[node].agent.as_mut() {
                    // Late copies of older directives are refused as replays: that is fine.
                    let _ = agent.handle_directive(unix, d);
                    self.drain_agent(node);
                }
            }
            Event::Answer {
                node,
                incarnation,
                command,
            } => {
                let now = self.now;
                let failing = self.nodes[node].failing;
                let v2 = self.v2.root;
                let n = &mut self.nodes[node];
                if n.incarnation != incarnation {
                    return true;
                }
                let Some(agent) = n.agent.as_mut() else {
                    return true;
                };
                match command {
                    Command::Prepare(_) => agent.handle_prepared(now, SERVICE, Ok(())),
                    Command::Switch(_) => agent.handle_switched(now, SERVICE, Ok(())),
                    Command::Check(root) => {
                        let result = if root == v2 && failing {
                            Err("GET /health: 500".to_owned())
                        } else {
                            Ok(())
                        };
                        agent.handle_check(now, SERVICE, result);
                    }
                }
                self.drain_agent(node);
            }
            Event::Wake { node } => {
                let now = self.now;
                if let Some(agent) = self.nodes[node].agent.as_mut()
                    && agent.poll_timeout().is_some_and(|t| t <= now)
                {
                    agent.handle_timeout(now);
                    self.drain_agent(node);
                }
            }
            Event::Crash { node } => {
                self.nodes[node].agent = None;
                let down = Duration::from_millis(self.rng.random_range(1_000..30_000));
                self.schedule(down, Event::Restart { node });
            }
            Event::Restart { node } => self.boot(node),
            Event::Report => {
                let (nodes, reports) = self.aggregate();
                let now = self.now;
                self.conductor.handle_reports(now, nodes, &reports);
                self.drain_conductor();
                self.schedule(REPORT_EVERY, Event::Report);
            }
            Event::ConductorWake => {
                let now = self.now;
                if self.conductor.poll_timeout().is_some_and(|t| t <= now) {
                    self.conductor.handle_timeout(now);
                    self.drain_conductor();
                }
            }
        }
        self.check_invariants();
        true
    }

    /// What the health tree would deliver: the sum of every live node's own report.
    fn aggregate(&self) -> (u32, Vec<RolloutReport>) {
        let mut live = 0;
        let mut total: Option<RolloutReport> = None;
        for n in &self.nodes {
            let Some(agent) = &n.agent else { continue };
            live += 1;
            for r in agent.reports() {
                match &mut total {
                    Some(t) => t.add(&r),
                    None => total = Some(r),
                }
            }
        }
        (live, total.into_iter().collect())
    }

    fn check_invariants(&self) {
        let waves = self.conductor.waves(ROLLOUT);
        // The conductor never has unfinished waves in two regions.
        let running: BTreeSet<&str> = waves
            .iter()
            .filter(|w| w.opened_at.is_some() && w.passed_at.is_none())
            .flat_map(|w| w.cells.iter().map(|c| c.region.as_str()))
            .collect();
        assert!(running.len() <= 1, "waves running in {running:?}");
        // No wave passed before its bake time.
        for w in waves {
            if let (Some(opened), Some(passed)) = (w.opened_at, w.passed_at) {
                let bake = self.plan.stages[usize::from(w.stage)].bake_secs;
                assert!(passed >= opened + Duration::from_secs(bake));
            }
        }
        // Once a wave failed, nothing more opens, and no node starts activating after the
        // decision has had time to reach it.
        if let Some(failed) = self.failed_at {
            let open = waves.iter().filter(|w| w.opened_at.is_some()).count();
            let last_opened = waves.iter().filter_map(|w| w.opened_at).max();
            assert!(
                last_opened.is_none_or(|t| t <= failed),
                "a wave opened after a failure"
            );
            let _ = open;
            let late = Duration::from_millis(MAX_DELAY_MS);
            for (node, at) in &self.starts {
                assert!(
                    *at <= failed + late,
                    "node{node} started activating at {at:?}, after the failure at {failed:?}"
                );
            }
        }
    }

    fn run(&mut self) {
        let plan = self.plan.clone();
        let now = self.now;
        // Let the first reports arrive, then start.
        self.conductor
            .start(
                now + Duration::from_secs(3),
                ROLLOUT,
                plan,
                SERVICE.into(),
                self.v2.clone(),
                Some(self.v1.clone()),
                false,
            )
            .expect("no other rollout in flight");
        self.drain_conductor();
        let deadline = self.now + LIMIT;
        while self.now < deadline && self.step() {
            let finished = self
                .conductor
                .status(ROLLOUT)
                .is_some_and(|s| s.state != RolloutState::Running.as_str());
            if finished && self.all_steady() && self.none_down() {
                break;
            }
        }
        // Let stragglers finish what they are doing.
        let settle = self.now + Duration::from_secs(120);
        while self.now < settle && self.step() {}
    }

    fn all_steady(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.agent
                .as_ref()
                .is_some_and(|a| a.service(SERVICE).is_some_and(|s| s.is_steady()))
        })
    }

    fn none_down(&self) -> bool {
        self.nodes.iter().all(|n| n.agent.is_some())
    }

    fn state(&self) -> String {
        self.conductor
            .status(ROLLOUT)
            .expect("the rollout exists")
            .state
    }

    fn running(&self, i: usize) -> Release {
        let agent = self.nodes[i].agent.as_ref().expect("node is up");
        let s = agent.service(SERVICE).expect("every node runs the service");
        assert!(s.is_steady(), "node{i} is still switching");
        s.current().cloned().expect("runs a release")
    }

    fn canary_cells(&self) -> BTreeSet<Cell> {
        self.conductor
            .waves(ROLLOUT)
            .iter()
            .filter(|w| w.stage == 0)
            .flat_map(|w| w.cells.iter().cloned())
            .collect()
    }
}

fn scenario(nodes: usize, seed: u64) -> Scenario {
    Scenario {
        nodes,
        regions: 3,
        fault_domains: 2,
        bad_release: false,
        failing_bp: 0,
        crashing_bp: 0,
        late_bp: 0,
        seed,
    }
}

#[test]
fn a_good_release_reaches_every_node_region_by_region() {
    for seed in 1..=2 {
        let mut fleet = Fleet::new(scenario(3000, seed));
        fleet.run();
        assert_eq!(
            fleet.state(),
            "completed",
            "seed {seed}: {:#?}",
            fleet.audit
        );
        for i in 0..fleet.nodes.len() {
            let expected = if fleet.nodes[i].excluded_by_label {
                &fleet.v1
            } else {
                &fleet.v2
            };
            assert_eq!(&fleet.running(i), expected, "seed {seed}: node{i}");
            if fleet.nodes[i].excluded_by_label {
                assert!(
                    fleet.nodes[i].activated_at.is_empty(),
                    "node{i} is in maintenance"
                );
            }
        }
        // Waves: canary, then per stage one region and one fault domain at a time.
        let waves = fleet.conductor.waves(ROLLOUT);
        assert_eq!(waves[0].expected, 1, "the canary is exactly one node");
        assert!(waves.iter().all(|w| w.cells.len() == 1));
        // Truth: nodes activating at once are all in one region.
        let mut intervals: Vec<(Duration, Duration, String)> = Vec::new();
        for (i, n) in fleet.nodes.iter().enumerate() {
            if let Some(start) = n.activated_at.first() {
                let region = n.labels.split(',').next().unwrap().to_owned();
                let wave_passed = waves
                    .iter()
                    .filter(|w| {
                        w.cells
                            .iter()
                            .any(|c| format!("region={}", c.region) == region)
                    })
                    .filter_map(|w| w.passed_at)
                    .filter(|p| p >= start)
                    .min()
                    .unwrap_or_else(|| panic!("node{i}'s wave never passed"));
                intervals.push((*start, wave_passed, region));
            }
        }
        for a in &intervals {
            for b in &intervals {
                if a.2 != b.2 {
                    assert!(
                        a.1 <= b.0 || b.1 <= a.0,
                        "seed {seed}: {} and {} activating at once",
                        a.2,
                        b.2
                    );
                }
            }
        }
    }
}

#[test]
fn a_bad_release_stops_at_the_canary_and_rolls_back() {
    for seed in 1..=3 {
        let mut s = scenario(2000, seed);
        s.bad_release = true;
        let mut fleet = Fleet::new(s);
        fleet.run();
        assert_eq!(
            fleet.state(),
            "rolled_back",
            "seed {seed}: {:#?}",
            fleet.audit
        );
        let canary = fleet.canary_cells();
        for i in 0..fleet.nodes.len() {
            assert_eq!(
                fleet.running(i),
                fleet.v1,
                "seed {seed}: node{i} is not back on 1.0"
            );
        }
        let activated: Vec<usize> = fleet.starts.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            activated.len(),
            1,
            "seed {seed}: only the canary activated: {activated:?}"
        );
        let labels = &fleet.nodes[activated[0]].labels;
        assert!(
            canary
                .iter()
                .any(|c| labels.contains(&format!("region={}", c.region))),
            "the node that activated is in the canary"
        );
        let healthy = fleet.nodes[activated[0]]
            .agent
            .as_ref()
            .unwrap()
            .service(SERVICE)
            .unwrap()
            .state();
        assert_eq!(healthy.as_str(), "failed", "the canary reports the failure");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, .. ProptestConfig::default() })]

    /// Random failing and crashing nodes: whatever the conductor decides, no invariant breaks
    /// on the way (checked after every event) and every node ends on exactly one release.
    #[test]
    fn crashes_and_failures_never_break_the_invariants(
        seed in 1u64..10_000,
        failing_bp in 0u32..60,
        crashing_bp in 0u32..300,
    ) {
        let mut s = scenario(1500, seed);
        s.failing_bp = failing_bp;
        s.crashing_bp = crashing_bp;
        let mut fleet = Fleet::new(s);
        fleet.run();
        let state = fleet.state();
        prop_assert!(
            ["completed", "rolled_back", "paused"].contains(&state.as_str()),
            "{state}: {:#?}", fleet.audit
        );
        for i in 0..fleet.nodes.len() {
            let running = fleet.running(i);
            prop_assert!(running == fleet.v1 || running == fleet.v2);
            if state == "rolled_back" {
                prop_assert_eq!(&running, &fleet.v1, "node{} after a rollback", i);
            }
            if fleet.nodes[i].failing && running == fleet.v2 {
                prop_assert!(false, "node{} fails 2.0 but runs it", i);
            }
        }
    }
}

#[test]
fn nodes_that_join_after_the_assignment_are_rolled_out_too() {
    let mut s = scenario(1500, 7);
    s.late_bp = 400;
    let mut fleet = Fleet::new(s);
    fleet.run();
    assert_eq!(fleet.state(), "completed", "{:#?}", fleet.audit);
    let late_fd = LATE_FAULT_DOMAIN.to_string();
    let mut late_nodes = 0;
    for i in 0..fleet.nodes.len() {
        if fleet.nodes[i].labels.contains(&format!("fd={late_fd},")) {
            late_nodes += 1;
        }
        if !fleet.nodes[i].excluded_by_label {
            assert_eq!(
                fleet.running(i),
                fleet.v2,
                "node{i} ({})",
                fleet.nodes[i].labels
            );
        }
    }
    assert!(
        late_nodes > 0,
        "some late nodes are in a fault domain of their own"
    );
    let waves = fleet.conductor.waves(ROLLOUT);
    let new_cells = waves
        .iter()
        .filter(|w| w.cells.iter().any(|c| c.fault_domain == late_fd))
        .count();
    assert!(
        new_cells > 0,
        "the new fault domain got waves: {:#?}",
        fleet.audit
    );
    assert!(
        waves.iter().any(|w| w.expected > w.assigned),
        "some wave counted nodes that joined after the assignment: {:#?}",
        fleet.audit
    );
    assert!(
        fleet
            .audit
            .iter()
            .any(|e| e.contains("cells the assignment did not find")),
        "{:#?}",
        fleet.audit
    );
}
