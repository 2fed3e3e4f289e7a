//! Activation: how one service on one node moves from one release to another, and back.
//!
//! A [`Service`] is a sans-IO state machine. It never runs anything itself: it asks the driver's
//! executor for [`Command`]s (prepare a release, switch the service to it, run one health
//! check) and is told their results. The sequence for a new release is:
//!
//! 1. `Prepare`: stage the payload (save it as an executable, run the `pre` hooks).
//! 2. `Switch`: atomically point the service's `current` link at it and (re)start the service or
//!    run the `activate` hooks.
//! 3. `Check` every [`Policy::interval`] until [`Policy::passes`] checks in a row pass (healthy),
//!    or [`Policy::grace`] passes without that, or the executor reports the service keeps
//!    crashing (failed).
//! 4. On failure, `Switch` back to the previous release and check it the same way, then report
//!    [`Outcome::Failed`] with the reason.
//!
//! [`Service::persisted`] is what the driver writes to disk after every step; a node killed at
//! any point and started again with [`Service::restore`] either finishes the switch it was doing
//! (checking the target again from the start) or finishes going back, so it always ends on one
//! release, never half-switched.

use crate::content::RootHash;
use crate::rollout::directive::Release;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// How a service's health is judged after a switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// How long the service has to become healthy after a switch.
    pub grace: Duration,
    /// Consecutive passing checks that make it healthy.
    pub passes: u32,
    /// Time between checks.
    pub interval: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            grace: Duration::from_secs(10),
            passes: 2,
            interval: Duration::from_secs(1),
        }
    }
}

/// Work for the executor. Each is answered by the matching `handle_*` call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Command {
    /// Stage `release` (write the executable, run `pre` hooks); answer with
    /// [`Service::handle_prepared`].
    Prepare(Release),
    /// Make `release` the running one (switch `current`, restart or run `activate` hooks);
    /// answer with [`Service::handle_switched`].
    Switch(Release),
    /// Run the health check once against the running release; answer with
    /// [`Service::handle_check`].
    Check(RootHash),
}

/// What came of an activation, for the rollout agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `release` runs and passed its health checks.
    Healthy(Release),
    /// `release` failed; the service is back on `back_on` (if there was a previous release).
    Failed {
        /// The release that failed.
        release: Release,
        /// Why.
        reason: String,
        /// Where the service runs now.
        back_on: Option<Release>,
    },
}

/// Where a service stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Running `current` (if any), nothing under way.
    Steady,
    /// Staging the target.
    Preparing,
    /// Switching to the target.
    Switching,
    /// Checking the target, with passes so far and when the grace period ends.
    Checking {
        /// Consecutive passes.
        passes: u32,
        /// End of the grace period.
        deadline: Duration,
    },
    /// Going back to the previous release after the target failed.
    Reverting {
        /// Why the target failed.
        reason: String,
    },
    /// Checking the previous release after going back.
    CheckingBack {
        /// Why the target failed.
        reason: String,
        /// Consecutive passes.
        passes: u32,
        /// End of the grace period.
        deadline: Duration,
    },
}

/// The part of a [`Service`] that must survive a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    /// The release the service runs (or was switching from, while activating).
    pub current: Option<Release>,
    /// The release before it: the rollback target, kept pinned.
    pub previous: Option<Release>,
    /// The release being activated, if any.
    pub target: Option<Release>,
    /// Whether the target failed and the service is going back to `current`.
    pub failed_reason: Option<String>,
    /// The last outcome, for status.
    pub state: ServiceState,
}

/// A service's state as shown in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    /// No release activated yet.
    Idle,
    /// Staged and about to switch.
    Staged,
    /// Switching and checking health.
    Activating,
    /// Running a release that passed its checks.
    Healthy,
    /// The last release failed (and the service went back).
    Failed,
    /// Went back to the previous release on the coordinator's word.
    RolledBack,
}

impl ServiceState {
    /// Every state, in the order of a service's life.
    pub const ALL: [ServiceState; 6] = [
        ServiceState::Idle,
        ServiceState::Staged,
        ServiceState::Activating,
        ServiceState::Healthy,
        ServiceState::Failed,
        ServiceState::RolledBack,
    ];

    /// Lower-case name, as in status and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Idle => "idle",
            ServiceState::Staged => "staged",
            ServiceState::Activating => "activating",
            ServiceState::Healthy => "healthy",
            ServiceState::Failed => "failed",
            ServiceState::RolledBack => "rolled_back",
        }
    }
}

/// One service's activation state machine. See the module docs for the sequence.
///
/// Call order: one input (`activate`, `go_back`, a `handle_*` result or `handle_timeout` once
/// [`Service::poll_timeout`] has passed), then drain [`Service::poll_command`] and
/// [`Service::poll_outcome`], then save [`Service::persisted`].
#[derive(Debug)]
pub struct Service {
    policy: Policy,
    current: Option<Release>,
    previous: Option<Release>,
    target: Option<Release>,
    phase: Phase,
    state: ServiceState,
    /// When the next check is due, while checking; `None` while a check is out.
    next_check: Option<Duration>,
    /// The latest failing check's detail, for the reason if the grace period runs out.
    last_failure: Option<String>,
    /// Why the last activation failed, until the next one starts (not saved: after a restart
    /// only the state says it failed).
    failure: Option<String>,
    commands: VecDeque<Command>,
    outcomes: VecDeque<Outcome>,
}

impl Service {
    /// A service that has never run anything.
    pub fn new(policy: Policy) -> Self {
        Service::restore(
            policy,
            Persisted {
                current: None,
                previous: None,
                target: None,
                failed_reason: None,
                state: ServiceState::Idle,
            },
        )
    }

    /// A service as it was saved; resumes whatever it was doing (the deadlines of a check
    /// start again when the switch is answered).
    pub fn restore(policy: Policy, saved: Persisted) -> Self {
        let mut service = Service {
            policy,
            current: saved.current,
            previous: saved.previous,
            target: saved.target,
            phase: Phase::Steady,
            state: saved.state,
            next_check: None,
            last_failure: None,
            failure: None,
            commands: VecDeque::new(),
            outcomes: VecDeque::new(),
        };
        match (&service.target, saved.failed_reason) {
            (Some(_), Some(reason)) => service.revert(reason),
            (Some(target), None) => {
                // Killed while preparing, switching or checking: switch again and check from the
                // start (both are idempotent).
                let target = target.clone();
                service.state = ServiceState::Activating;
                service.phase = Phase::Switching;
                service.commands.push_back(Command::Switch(target));
            }
            (None, _) => {}
        }
        service
    }

    /// The release it runs.
    pub fn current(&self) -> Option<&Release> {
        self.current.as_ref()
    }

    /// The release before it.
    pub fn previous(&self) -> Option<&Release> {
        self.previous.as_ref()
    }

    /// The release being activated.
    pub fn target(&self) -> Option<&Release> {
        self.target.as_ref()
    }

    /// Its state for status.
    pub fn state(&self) -> ServiceState {
        self.state
    }

    /// Why the last activation failed, until the next one starts.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Whether nothing is under way.
    pub fn is_steady(&self) -> bool {
        self.phase == Phase::Steady
    }

    /// Starts activating `release`. Ignored while another activation is under way or if it
    /// already runs.
    pub fn activate(&mut self, release: Release) {
        if !self.is_steady() || self.current.as_ref() == Some(&release) {
            return;
        }
        self.target = Some(release.clone());
        self.failure = None;
        self.phase = Phase::Preparing;
        self.state = ServiceState::Staged;
        self.commands.push_back(Command::Prepare(release));
    }

    /// Switches to `release` without a rollout's checks deciding anything: used to go back on
    /// the coordinator's word (abort with revert, rollback). The release must be on disk.
    pub fn go_back_to(&mut self, release: Release) {
        if !self.is_steady() || self.current.is_none() || self.current.as_ref() == Some(&release) {
            return;
        }
        // Going back to the release before the current one: the current one becomes the
        // target that "failed" by decision, and the switch goes the usual way back.
        self.target = self.current.take();
        self.current = Some(release);
        self.previous = None;
        self.revert("rolled back by the coordinator".into());
        self.state = ServiceState::RolledBack;
    }

    /// The result of [`Command::Prepare`].
    pub fn handle_prepared(&mut self, now: Duration, result: Result<(), String>) {
        if self.phase != Phase::Preparing {
            return;
        }
        let _ = now;
        match result {
            Ok(()) => {
                self.phase = Phase::Switching;
                self.state = ServiceState::Activating;
                if let Some(target) = self.target.clone() {
                    self.commands.push_back(Command::Switch(target));
                }
            }
            Err(reason) => {
                // Nothing was switched: the service still runs `current`.
                let release = self.target.take();
                self.phase = Phase::Steady;
                self.state = ServiceState::Failed;
                if let Some(release) = release {
                    self.failed(release, format!("staging failed: {reason}"));
                }
            }
        }
    }

    /// The result of [`Command::Switch`].
    pub fn handle_switched(&mut self, now: Duration, result: Result<(), String>) {
        match (&self.phase, result) {
            (Phase::Switching, Ok(())) => {
                self.phase = Phase::Checking {
                    passes: 0,
                    deadline: now + self.policy.grace,
                };
                self.next_check = Some(now);
            }
            (Phase::Switching, Err(reason)) => self.revert(format!("switch failed: {reason}")),
            (Phase::Reverting { reason }, Ok(())) => {
                self.phase = Phase::CheckingBack {
                    reason: reason.clone(),
                    passes: 0,
                    deadline: now + self.policy.grace,
                };
                self.next_check = Some(now);
            }
            (Phase::Reverting { reason }, Err(e)) => {
                let reason = format!("{reason}; going back failed too: {e}");
                self.finish_failed(reason);
            }
            _ => {}
        }
    }

    /// The result of one [`Command::Check`].
    pub fn handle_check(&mut self, now: Duration, result: Result<(), String>) {
        let passes_needed = self.policy.passes.max(1);
        match &mut self.phase {
            Phase::Checking { passes, .. } => {
                *passes = if result.is_ok() { *passes + 1 } else { 0 };
                if *passes >= passes_needed {
                    self.finish_healthy();
                    return;
                }
            }
            Phase::CheckingBack { reason, passes, .. } => {
                *passes = if result.is_ok() { *passes + 1 } else { 0 };
                if *passes >= passes_needed {
                    let reason = reason.clone();
                    self.finish_failed(reason);
                    return;
                }
            }
            _ => return,
        }
        self.next_check = Some(now + self.policy.interval);
        self.last_check_failure(result.err());
    }

    /// The executor's word that the service keeps crashing (a supervised process that exits
    /// again and again): it is failed whatever its checks say.
    pub fn handle_crashed(&mut self, reason: String) {
        match &self.phase {
            Phase::Checking { .. } | Phase::Switching => {
                self.revert(format!("the service keeps exiting: {reason}"));
            }
            Phase::CheckingBack { reason: why, .. } => {
                let why = format!("{why}; the previous release keeps exiting too: {reason}");
                self.finish_failed(why);
            }
            Phase::Steady if self.state == ServiceState::Healthy => {
                self.state = ServiceState::Failed;
            }
            _ => {}
        }
    }

    /// Call when [`Service::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Duration) {
        let deadline = match &self.phase {
            Phase::Checking { deadline, .. } | Phase::CheckingBack { deadline, .. } => *deadline,
            _ => return,
        };
        if now >= deadline {
            match &self.phase {
                Phase::Checking { .. } => {
                    let detail = self.last_failure.take().unwrap_or_default();
                    let reason = if detail.is_empty() {
                        format!("not healthy within {:?}", self.policy.grace)
                    } else {
                        format!("not healthy within {:?}: {detail}", self.policy.grace)
                    };
                    self.revert(reason);
                }
                Phase::CheckingBack { reason, .. } => {
                    let reason = format!("{reason}; the previous release is not healthy either");
                    self.finish_failed(reason);
                }
                _ => {}
            }
            return;
        }
        if let Some(due) = self.next_check
            && now >= due
        {
            self.next_check = None;
            if let Some(running) = self.running_root() {
                self.commands.push_back(Command::Check(running));
            }
        }
    }

    /// The next command for the executor.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next finished activation.
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcomes.pop_front()
    }

    /// When to call [`Service::handle_timeout`]; `None` if nothing is waiting on time.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.phase {
            Phase::Checking { deadline, .. } | Phase::CheckingBack { deadline, .. } => {
                Some(self.next_check.map_or(*deadline, |due| due.min(*deadline)))
            }
            _ => None,
        }
    }

    /// What to save.
    pub fn persisted(&self) -> Persisted {
        let failed_reason = match &self.phase {
            Phase::Reverting { reason } | Phase::CheckingBack { reason, .. } => {
                Some(reason.clone())
            }
            _ => None,
        };
        Persisted {
            current: self.current.clone(),
            previous: self.previous.clone(),
            target: self.target.clone(),
            failed_reason,
            state: self.state,
        }
    }

    /// The releases that must stay on disk: the running one, the rollback target, the target.
    pub fn pinned(&self) -> impl Iterator<Item = &Release> {
        self.current
            .iter()
            .chain(self.previous.iter())
            .chain(self.target.iter())
    }

    /// Checks the machine's invariants; panics on a programmer error.
    pub fn check_invariants(&self) {
        match &self.phase {
            Phase::Steady => assert!(self.target.is_none(), "steady with a target"),
            _ => assert!(self.target.is_some(), "{:?} without a target", self.phase),
        }
        assert!(
            self.current.is_none() || self.current != self.previous,
            "current and previous are the same release"
        );
    }

    /// The root the service runs at this moment, from the executor's point of view.
    fn running_root(&self) -> Option<RootHash> {
        match &self.phase {
            Phase::Checking { .. } | Phase::Switching => self.target.as_ref().map(|r| r.root),
            _ => self.current.as_ref().map(|r| r.root),
        }
    }

    fn last_check_failure(&mut self, failure: Option<String>) {
        if let Some(f) = failure {
            self.last_failure = Some(f);
        }
    }

    /// The target failed: switch back to `current`, or finish failed if there is none.
    fn revert(&mut self, reason: String) {
        self.next_check = None;
        match self.current.clone() {
            Some(back) => {
                self.phase = Phase::Reverting { reason };
                self.commands.push_back(Command::Switch(back));
            }
            None => self.finish_failed(reason),
        }
    }

    fn finish_healthy(&mut self) {
        self.next_check = None;
        self.last_failure = None;
        if let Some(target) = self.target.take() {
            if self.current.as_ref() != Some(&target) {
                self.previous = self.current.take();
            }
            self.current = Some(target.clone());
            self.outcomes.push_back(Outcome::Healthy(target));
        }
        self.phase = Phase::Steady;
        self.state = ServiceState::Healthy;
    }

    fn failed(&mut self, release: Release, reason: String) {
        self.failure = Some(reason.clone());
        self.outcomes.push_back(Outcome::Failed {
            release,
            reason,
            back_on: self.current.clone(),
        });
    }

    fn finish_failed(&mut self, reason: String) {
        self.next_check = None;
        self.last_failure = None;
        let decided = self.state == ServiceState::RolledBack;
        self.phase = Phase::Steady;
        if let Some(release) = self.target.take() {
            self.failed(release, reason);
        }
        if !decided {
            self.state = ServiceState::Failed;
        }
    }
}

#[cfg(test)]
mod tests;
