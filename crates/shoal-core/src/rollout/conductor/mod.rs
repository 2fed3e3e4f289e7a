//! The conductor: the coordinator's rollout decisions, as a sans-IO state machine.
//!
//! Inputs: rollouts to start (a [`Plan`], a service and a release), operator commands (pause,
//! resume, promote, abort, rollback), the aggregated [`RolloutReport`]s of the fleet with its
//! node count, and time. Outputs: [`Output::Record`]s to append to the audit log and
//! [`Output::Broadcast`]s of [`Directive`]s to sign and send. A record always comes before the
//! broadcast it explains; the driver must make both the record and [`Conductor::persisted`]
//! durable before it broadcasts, so a crash neither skips nor repeats a wave.
//!
//! A rollout goes through three phases:
//!
//! 1. **Census**: the stages' selectors are broadcast; nodes report how many match each, and
//!    for exact-count stages their hashes. Once every node the fleet count knows of has answered
//!    (and the count has held still for [`Config::settle`], and stayed within
//!    [`Config::census_band_bp`] of one value for [`Config::census_settle`]), thresholds are
//!    fixed: the k-th smallest hash for a count stage, a fraction of the hash space for a
//!    percent.
//! 2. **Assignment**: the thresholds are broadcast; every node works out its own stage and cell
//!    (stage, region, fault domain) and reports it as pending. The waves are cut from those
//!    cells: stage by stage, one region at a time, `max_parallel_fault_domains` fault domains at
//!    a time, and each wave's expected count is what its cells reported. Census and assignment
//!    wait while a fault domain that reported nodes during them is silent (cut off or gone
//!    since), and abort naming it, rather than leave it out of every wave, once nothing has
//!    changed for [`Config::census_timeout`]: neither more nodes answering nor the fleet count
//!    leaving its band. A phase still changing goes on, up to [`Config::census_limit`].
//! 3. **Waves**: each wave's cells are opened in turn. A wave passes once its success criteria
//!    have held for the bake time; it fails when its failed count reaches the threshold, or at
//!    its deadline if it has not passed (nodes expected but silent count as failed then). When
//!    more nodes report in a wave's cells than the assignment found (they joined since), the
//!    wave expects them all. Nodes in cells no wave has are given waves of their own after the
//!    last one, before the rollout completes.
//!
//! Counts that are not settled (more nodes reporting than the fleet has, a report that had to
//! drop entries, a sudden drop of the fleet count) give no decision at all: never a pass.
//!
//! Time is a [`Duration`] since the Unix epoch (the driver's wall clock, or the simulator's), so
//! a restored conductor's deadlines still hold.

mod census;
mod fleet;
mod status;
mod waves;

pub use status::{StageStatus, Status};
pub use waves::Wave;

use super::directive::{Action, Cell, DIRECTIVE_TTL_SECS, Directive, Release, Spec, StageRule};
use super::plan::{OnFailure, Plan, Success};
use super::report::{NodeState, RolloutReport};
use census::{Counts, Domain};
use fleet::FleetCount;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use waves::{cut_waves, describe};

/// How the conductor runs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Config {
    /// How long the counts must hold still before a census or assignment is taken as complete.
    pub settle: Duration,
    /// How often the current directive is sent again (fresh expiry, for late joiners). Each
    /// one is kept by the broadcast for nodes that join later, where only the newest few are,
    /// so this stays well apart; it must stay under the directives' TTL.
    pub refresh: Duration,
    /// How long the census, and then the assignment, may go without progress (more nodes
    /// answering, or the fleet count leaving its [`Config::census_band_bp`] band) before the
    /// rollout is aborted with the count of nodes that answered.
    pub census_timeout: Duration,
    /// How long the census, and then the assignment, may take at most, progress or not: a
    /// fleet still joining in its thousands moves its count for minutes.
    pub census_limit: Duration,
    /// A fall of the fleet count by more than this share (basis points) within
    /// [`Config::settle`] holds every decision until it settles.
    pub drop_bp: u16,
    /// How long every fleet count must stay within [`Config::census_band_bp`] of one value
    /// before a census or an assignment is taken as complete: longer than the plateaus of a
    /// forming health tree.
    pub census_settle: Duration,
    /// The band, in basis points of the count, that the fleet count must stay within for
    /// [`Config::census_settle`]. Nodes that join later are counted by the wave gates.
    pub census_band_bp: u16,
    /// While a census or an assignment has not heard every node answer the latest directive,
    /// the directive is sent again this often. A node that was in another part of a still
    /// merging overlay when it went out is not reached by the broadcast's repair, which pulls
    /// only from neighbours that may have missed it too.
    pub census_resend: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            settle: Duration::from_secs(2),
            refresh: Duration::from_secs(DIRECTIVE_TTL_SECS / 6),
            census_timeout: Duration::from_secs(60),
            census_limit: Duration::from_secs(600),
            drop_bp: 1000,
            census_settle: Duration::from_secs(10),
            census_band_bp: 100,
            census_resend: Duration::from_secs(15),
        }
    }
}

/// Why a rollout cannot start or a command cannot be carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConductorError {
    /// The service already has a rollout in flight.
    #[error(
        "service {service:?} already has rollout {rollout} in flight: wait for it, or abort it"
    )]
    InFlight {
        /// The service.
        service: String,
        /// The rollout in flight.
        rollout: u64,
    },
    /// No rollout has that id.
    #[error("no rollout {0}")]
    Unknown(u64),
    /// The command does not apply in the rollout's state.
    #[error("rollout {rollout} is {state}: cannot {command}")]
    NotNow {
        /// The rollout.
        rollout: u64,
        /// Its state.
        state: &'static str,
        /// The command.
        command: &'static str,
    },
    /// A rollback needs a previous release, and there is none.
    #[error("rollout {0} has no previous release to roll back to")]
    NoPrevious(u64),
}

/// A rollout's state, as `shoal rollout status` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    /// Counting, assigning or running waves.
    Running,
    /// Stopped by the operator or a failure; waiting for resume or abort.
    Paused,
    /// Every stage passed.
    Completed,
    /// Failed and rolled back, or rolled back by the operator.
    RolledBack,
    /// Aborted by the operator.
    Aborted,
    /// A dry run whose census is done (`shoal rollout plan`).
    Planned,
}

impl RolloutState {
    /// The lower-case name used in status.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
            RolloutState::Planned => "planned",
        }
    }

    fn is_finished(self) -> bool {
        !matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    Census { since: Duration },
    Assigning { since: Duration },
    Waves,
}

/// An audit-log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The rollout.
    pub rollout: u64,
    /// When (since the Unix epoch).
    pub at: Duration,
    /// What happened, in one line.
    pub event: String,
    /// The wave it concerns, if any (index into the rollout's waves).
    pub wave: Option<u32>,
}

/// Work for the driver, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Append to the audit log (and save [`Conductor::persisted`]) before what follows.
    Record(Record),
    /// Sign and broadcast.
    Broadcast(Box<Directive>),
}

/// One rollout as the conductor keeps it (and persists it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    plan: Plan,
    spec: Spec,
    previous: Option<Release>,
    dry_run: bool,
    state: RolloutState,
    phase: Phase,
    seq: u32,
    open: Vec<Cell>,
    waves: Vec<Wave>,
    wave: usize,
    action: Action,
    /// Since when the current wave's success criteria hold.
    holding_since: Option<Duration>,
    last_broadcast: Duration,
    reason: Option<String>,
    #[serde(skip)]
    report: Option<RolloutReport>,
    /// The census as taken (kept for status).
    census: Option<RolloutReport>,
    /// The fault domains the census and assignment heard from, with the most nodes each reported.
    #[serde(default)]
    heard: Vec<Domain>,
    /// Whether the wait on fault domains gone silent is recorded.
    #[serde(skip)]
    silent_recorded: bool,
    /// The most nodes that answered in the current census or assignment, and when that grew.
    #[serde(default)]
    answered: (u32, Duration),
}

/// The conductor. See the module docs for the model and the call order.
#[derive(Debug, Default)]
pub struct Conductor {
    config: Config,
    rollouts: BTreeMap<u64, Rollout>,
    outputs: VecDeque<Output>,
    fleet: FleetCount,
    /// The latest time an input carried.
    now: Duration,
}

impl Conductor {
    /// A conductor with `config`, resuming the saved `rollouts`.
    pub fn new(config: Config, rollouts: Vec<(u64, Rollout)>) -> Self {
        Conductor {
            config,
            rollouts: rollouts.into_iter().collect(),
            ..Conductor::default()
        }
    }

    /// Starts rollout `id` of `release` for `service` with `plan`: the census goes out first.
    /// `previous` is the release it replaces (the rollback target). A `dry_run` stops after the
    /// census with state [`RolloutState::Planned`].
    ///
    /// # Errors
    ///
    /// [`ConductorError::InFlight`] if the service has a rollout running or paused.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        now: Duration,
        id: u64,
        plan: Plan,
        service: String,
        release: Release,
        previous: Option<Release>,
        dry_run: bool,
    ) -> Result<(), ConductorError> {
        if !dry_run
            && let Some((other, _)) = self
                .rollouts
                .iter()
                .find(|(_, r)| r.spec.service == service && !r.dry_run && !r.state.is_finished())
        {
            return Err(ConductorError::InFlight {
                service,
                rollout: *other,
            });
        }
        let stages = plan
            .stages
            .iter()
            .map(|s| StageRule {
                select: s.select.clone(),
                size: s.size,
                threshold: 0,
            })
            .collect();
        let spec = Spec {
            rollout: id,
            service,
            release,
            label_region: plan.label_region.clone(),
            label_fault_domain: plan.label_fault_domain.clone(),
            skip_labels: plan.skip_labels.clone(),
            stages,
        };
        let rollout = Rollout {
            plan,
            spec,
            previous,
            dry_run,
            state: RolloutState::Running,
            phase: Phase::Census { since: now },
            seq: 0,
            open: Vec::new(),
            waves: Vec::new(),
            wave: 0,
            action: Action::Census,
            holding_since: None,
            last_broadcast: now,
            reason: None,
            report: None,
            census: None,
            heard: Vec::new(),
            silent_recorded: false,
            answered: (0, now),
        };
        self.rollouts.insert(id, rollout);
        self.now = self.now.max(now);
        let what = if dry_run { "dry run" } else { "rollout" };
        self.record(now, id, None, format!("{what} started: census"));
        self.send(now, id);
        Ok(())
    }

    /// The fleet's latest aggregated reports (the coordinator's subtree) and its node count.
    pub fn handle_reports(&mut self, now: Duration, fleet_nodes: u32, reports: &[RolloutReport]) {
        self.fleet.observe(&self.config, now, fleet_nodes);
        for report in reports {
            if let Some(r) = self.rollouts.get_mut(&report.rollout) {
                r.report = Some(report.clone());
            }
        }
        self.step(now);
    }

    /// Call when [`Conductor::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.step(now);
    }

    /// Pauses rollout `id`: no new wave opens.
    ///
    /// # Errors
    ///
    /// If it is unknown or not running.
    pub fn pause(&mut self, now: Duration, id: u64) -> Result<(), ConductorError> {
        let r = self.running(id, "pause", &[RolloutState::Running])?;
        r.state = RolloutState::Paused;
        r.action = Action::Pause;
        self.record(now, id, None, "paused by the operator".into());
        self.send(now, id);
        Ok(())
    }

    /// Resumes a paused rollout `id`; the current wave's deadline starts again.
    ///
    /// # Errors
    ///
    /// If it is unknown or not paused.
    pub fn resume(&mut self, now: Duration, id: u64) -> Result<(), ConductorError> {
        let r = self.running(id, "resume", &[RolloutState::Paused])?;
        r.state = RolloutState::Running;
        r.reason = None;
        r.holding_since = None;
        if r.phase == Phase::Waves {
            r.action = Action::Wave;
            let wave = r.wave;
            if let Some(w) = r.waves.get_mut(wave) {
                w.opened_at = Some(now);
            }
        }
        self.record(now, id, None, "resumed by the operator".into());
        self.send(now, id);
        Ok(())
    }

    /// Passes the current wave of `id` without waiting for its gate.
    ///
    /// # Errors
    ///
    /// If it is unknown, not running or not in its waves yet.
    pub fn promote(&mut self, now: Duration, id: u64) -> Result<(), ConductorError> {
        let r = self.running(id, "promote", &[RolloutState::Running])?;
        if r.phase != Phase::Waves {
            return Err(ConductorError::NotNow {
                rollout: id,
                state: "counting the fleet",
                command: "promote",
            });
        }
        let wave = r.wave;
        self.pass_wave(now, id, wave, "promoted by the operator".into());
        Ok(())
    }

    /// Aborts `id`; with `revert`, nodes that activated the release go back to their previous
    /// one.
    ///
    /// # Errors
    ///
    /// If it is unknown or already finished.
    pub fn abort(&mut self, now: Duration, id: u64, revert: bool) -> Result<(), ConductorError> {
        let r = self.running(id, "abort", &[RolloutState::Running, RolloutState::Paused])?;
        r.state = RolloutState::Aborted;
        r.action = Action::Abort { revert };
        let how = if revert { " with revert" } else { "" };
        self.record(now, id, None, format!("aborted by the operator{how}"));
        self.send(now, id);
        Ok(())
    }

    /// Rolls every node of `id`'s service back to the release the rollout replaced.
    ///
    /// # Errors
    ///
    /// If it is unknown or there is no previous release.
    pub fn rollback(&mut self, now: Duration, id: u64) -> Result<(), ConductorError> {
        let r = self
            .rollouts
            .get_mut(&id)
            .ok_or(ConductorError::Unknown(id))?;
        let to = r.previous.clone().ok_or(ConductorError::NoPrevious(id))?;
        r.state = RolloutState::RolledBack;
        r.action = Action::Rollback { to: to.clone() };
        self.record(
            now,
            id,
            None,
            format!("rolled back by the operator to {}", to.version),
        );
        self.send(now, id);
        Ok(())
    }

    /// After a restart: sends the current directive of every unfinished rollout again (a
    /// fresh sequence and expiry, the same decisions), so a directive lost in the crash is not
    /// skipped and no wave is opened twice.
    pub fn resend_all(&mut self, now: Duration) {
        self.now = self.now.max(now);
        let ids: Vec<u64> = self
            .rollouts
            .iter()
            .filter(|(_, r)| !r.state.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.record(
                now,
                id,
                None,
                "coordinator restarted: current directive sent again".into(),
            );
            self.send(now, id);
        }
    }

    /// The release the newest completed rollout of `service` put in place.
    pub fn last_completed(&self, service: &str) -> Option<&Release> {
        self.rollouts
            .values()
            .rev()
            .find(|r| r.spec.service == service && !r.dry_run && r.state == RolloutState::Completed)
            .map(|r| &r.spec.release)
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Conductor::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let now = self.now;
        // Only times still ahead: one that has passed was handled by the last input (or waits
        // on counts, which the next report brings).
        let mut at = |t: Duration| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for r in self.rollouts.values().filter(|r| !r.state.is_finished()) {
            at(r.last_broadcast + self.config.refresh);
            if let Some(since) = r.holding_since
                && let Some(stage) = r.waves.get(r.wave).map(|w| w.stage)
            {
                let bake = r.plan.stages[usize::from(stage)].bake_secs;
                at(since + Duration::from_secs(bake));
            }
            if let Some(opened) = r.waves.get(r.wave).and_then(|w| w.opened_at) {
                let stage = usize::from(r.waves[r.wave].stage);
                at(opened + Duration::from_secs(r.plan.stages[stage].deadline_secs));
            }
            for t in self.fleet.deadlines(&self.config) {
                at(t);
            }
            if let Phase::Census { since } | Phase::Assigning { since } = r.phase {
                at(self.census_deadline(r, since));
            }
        }
        next
    }

    /// Every rollout, to save.
    pub fn persisted(&self) -> Vec<(u64, Rollout)> {
        self.rollouts
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect()
    }

    /// The rollout in flight for `service`, if any.
    pub fn in_flight(&self, service: &str) -> Option<u64> {
        self.rollouts
            .iter()
            .find(|(_, r)| r.spec.service == service && !r.dry_run && !r.state.is_finished())
            .map(|(id, _)| *id)
    }

    /// The ids of every rollout, oldest first.
    pub fn ids(&self) -> Vec<u64> {
        self.rollouts.keys().copied().collect()
    }

    /// The state of `id`: what [`Conductor::status`] reports, without building the rest.
    pub fn state(&self, id: u64) -> Option<RolloutState> {
        self.rollouts.get(&id).map(|r| r.state)
    }

    /// The latest directive's action of `id`.
    pub fn action(&self, id: u64) -> Option<&Action> {
        self.rollouts.get(&id).map(|r| &r.action)
    }

    /// The waves of `id` (empty until the assignment is done).
    pub fn waves(&self, id: u64) -> &[Wave] {
        self.rollouts.get(&id).map_or(&[], |r| &r.waves)
    }

    fn running(
        &mut self,
        id: u64,
        command: &'static str,
        allowed: &[RolloutState],
    ) -> Result<&mut Rollout, ConductorError> {
        let r = self
            .rollouts
            .get_mut(&id)
            .ok_or(ConductorError::Unknown(id))?;
        if !allowed.contains(&r.state) {
            return Err(ConductorError::NotNow {
                rollout: id,
                state: r.state.as_str(),
                command,
            });
        }
        Ok(r)
    }

    fn step(&mut self, now: Duration) {
        self.now = self.now.max(now);
        let ids: Vec<u64> = self.rollouts.keys().copied().collect();
        let settled = self.fleet.is_settled(&self.config, now);
        let steady = self.fleet.is_steady(&self.config, now);
        let fleet = self.fleet.nodes();
        for id in ids {
            let Some(r) = self.rollouts.get(&id) else {
                continue;
            };
            if r.state.is_finished() {
                continue;
            }
            if now >= r.last_broadcast + self.config.refresh {
                self.send(now, id);
            }
            let Some(r) = self.rollouts.get(&id) else {
                continue;
            };
            let report = r.report.clone();
            // Every node of the fleet has heard the latest directive, no more nodes report than
            // exist, and nothing was dropped: only then do the counts decide anything.
            let complete = report.as_ref().is_some_and(|rep| {
                rep.seq >= r.seq && rep.nodes == fleet && !rep.truncated && fleet > 0
            });
            let inflated = report.as_ref().is_some_and(|rep| rep.nodes > fleet);
            match r.phase.clone() {
                Phase::Census { since } | Phase::Assigning { since } => {
                    let census = matches!(r.phase, Phase::Census { .. });
                    if !complete && now >= r.last_broadcast + self.config.census_resend {
                        self.send(now, id);
                    }
                    let counts = Counts {
                        complete,
                        settled,
                        steady,
                        fleet,
                    };
                    self.step_census(now, id, census, since, report, counts);
                }
                Phase::Waves => {
                    if r.state == RolloutState::Running
                        && let Some(rep) = report
                    {
                        let usable = settled && !inflated && !rep.truncated && rep.seq >= r.seq;
                        self.gate(now, id, &rep, usable);
                    }
                }
            }
        }
    }

    fn open_wave(&mut self, now: Duration, id: u64, index: usize) {
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        r.wave = index;
        r.holding_since = None;
        if index == r.waves.len()
            && let Some(report) = &r.report
        {
            let mut uncovered = report.clone();
            uncovered
                .cells
                .retain(|c| !r.waves.iter().any(|w| w.cells.contains(&c.cell)));
            let more = cut_waves(&r.plan, &uncovered);
            if !more.is_empty() {
                let text = format!(
                    "{} nodes in cells the assignment did not find ({}): {} more waves",
                    more.iter().map(|w| w.expected).sum::<u32>(),
                    describe(
                        &more
                            .iter()
                            .flat_map(|w| w.cells.clone())
                            .collect::<Vec<_>>()
                    ),
                    more.len()
                );
                r.waves.extend(more);
                self.record(now, id, None, text);
            }
        }
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        let Some(wave) = r.waves.get_mut(index) else {
            self.finish(now, id, RolloutState::Completed, "every wave passed".into());
            return;
        };
        wave.opened_at = Some(now);
        r.open.extend(wave.cells.iter().cloned());
        let stage = &r.plan.stages[usize::from(wave.stage)];
        let text = format!(
            "wave {} opened: stage {}, {} nodes in {}",
            index + 1,
            stage.name,
            wave.expected,
            describe(&wave.cells)
        );
        self.record(now, id, Some(index), text);
        self.send(now, id);
    }

    fn gate(&mut self, now: Duration, id: u64, report: &RolloutReport, usable: bool) {
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        let index = r.wave;
        let Some(wave) = r.waves.get_mut(index) else {
            return;
        };
        let mut counts = [0u32; 5];
        for c in &wave.cells {
            for (sum, n) in counts.iter_mut().zip(report.cell(c)) {
                *sum += n;
            }
        }
        let healthy = counts[NodeState::Healthy as usize];
        let failed = counts[NodeState::Failed as usize] + counts[NodeState::Reverted as usize];
        let reported: u32 = counts.iter().sum();
        let grew = usable && reported > wave.expected;
        let first_growth = grew && wave.expected == wave.assigned;
        if grew {
            wave.expected = reported;
        }
        let expected = wave.expected;
        let assigned = wave.assigned;
        let stage = &r.plan.stages[usize::from(wave.stage)];
        let threshold = stage.failure_threshold.of(expected).max(1);
        let needed = match stage.success {
            Success::Strict => expected,
            Success::Percent { bp, min_count } => super::plan::Amount::Percent(bp)
                .of(expected)
                .max(min_count.min(expected)),
        };
        let deadline = wave
            .opened_at
            .map(|t| t + Duration::from_secs(stage.deadline_secs));
        let bake = Duration::from_secs(stage.bake_secs);
        let on_failure = stage.on_failure;
        if !usable {
            r.holding_since = None;
            return;
        }
        if first_growth {
            let text = format!(
                "wave {}: {expected} nodes report in its cells, {assigned} at assignment; it expects them all",
                index + 1
            );
            self.record(now, id, Some(index), text);
        }
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        if failed >= threshold {
            let reason = format!(
                "wave {} failed: {failed} of {expected} nodes failed (threshold {threshold})",
                index + 1
            );
            self.fail(now, id, on_failure, reason);
            return;
        }
        if healthy >= needed {
            let since = *r.holding_since.get_or_insert(now);
            if now >= since + bake {
                let text = format!("wave {} passed: {healthy} of {expected} healthy", index + 1);
                self.pass_wave(now, id, index, text);
            }
            return;
        }
        r.holding_since = None;
        if deadline.is_some_and(|d| now >= d) {
            let silent = expected.saturating_sub(reported);
            let reason = format!(
                "wave {} missed its deadline: {healthy} of {expected} healthy (needed {needed}), {failed} failed, {silent} silent",
                index + 1
            );
            self.fail(now, id, on_failure, reason);
        }
    }

    fn pass_wave(&mut self, now: Duration, id: u64, index: usize, text: String) {
        if let Some(w) = self
            .rollouts
            .get_mut(&id)
            .and_then(|r| r.waves.get_mut(index))
        {
            w.passed_at = Some(now);
        }
        self.record(now, id, Some(index), text);
        self.open_wave(now, id, index + 1);
    }

    fn fail(&mut self, now: Duration, id: u64, on_failure: OnFailure, reason: String) {
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        let wave = Some(r.wave);
        match on_failure {
            OnFailure::Pause => {
                r.state = RolloutState::Paused;
                r.action = Action::Pause;
                r.reason = Some(reason.clone());
                self.record(now, id, wave, format!("{reason}: paused"));
            }
            OnFailure::Rollback => {
                r.state = RolloutState::RolledBack;
                r.action = Action::Abort { revert: true };
                r.reason = Some(reason.clone());
                self.record(now, id, wave, format!("{reason}: rolling back"));
            }
        }
        self.send(now, id);
    }

    fn finish(&mut self, now: Duration, id: u64, state: RolloutState, reason: String) {
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        r.state = state;
        if state == RolloutState::Completed {
            r.action = Action::Complete;
        } else if state != RolloutState::Planned {
            r.action = Action::Abort { revert: false };
            r.reason = Some(reason.clone());
        } else {
            r.reason = Some(reason.clone());
        }
        let dry = r.dry_run;
        self.record(now, id, None, format!("{}: {reason}", state.as_str()));
        if !dry {
            self.send(now, id);
        }
    }

    fn record(&mut self, now: Duration, id: u64, wave: Option<usize>, event: String) {
        self.outputs.push_back(Output::Record(Record {
            rollout: id,
            at: now,
            event,
            wave: wave.map(|w| u32::try_from(w).unwrap_or(u32::MAX)),
        }));
    }

    fn send(&mut self, now: Duration, id: u64) {
        let Some(r) = self.rollouts.get_mut(&id) else {
            return;
        };
        r.seq += 1;
        r.last_broadcast = now;
        self.outputs
            .push_back(Output::Broadcast(Box::new(Directive {
                seq: r.seq,
                expires_at_unix: now.as_secs() + DIRECTIVE_TTL_SECS,
                action: r.action.clone(),
                spec: r.spec.clone(),
                open: r.open.clone(),
            })));
    }
}
