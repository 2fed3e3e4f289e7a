//! The driver of the coordinator's [`Conductor`]: operator requests, the fleet's aggregated
//! reports and time in; every record committed to the [`Db`] before the directive it explains is
//! broadcast.

use crate::db::{AuditEntry, Db, Published};
use anyhow::{Context, Result, bail};
use shoal_core::rollout::Plan;
use shoal_core::rollout::conductor::{Conductor, Config, Output, Record, Status};
use shoal_net::mesh::Mesh;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// How often the fleet's counts are read from the coordinator's health tree (a local read).
const REPORT_INTERVAL: Duration = Duration::from_millis(250);
/// Requests waiting for the task.
const REQUEST_QUEUE: usize = 64;

/// An operator command on a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Open no new wave.
    Pause,
    /// Continue a paused rollout.
    Resume,
    /// Pass the current wave now.
    Promote,
    /// Stop; with `revert`, nodes go back to their previous release.
    Abort {
        /// Whether nodes go back.
        revert: bool,
    },
    /// Every node back to the release the rollout replaced.
    Rollback,
}

enum Request {
    Start {
        plan: Box<Plan>,
        service: String,
        version: String,
        dry_run: bool,
        reply: oneshot::Sender<Result<u64>>,
    },
    Verb {
        id: u64,
        verb: Verb,
        reply: oneshot::Sender<Result<()>>,
    },
    Status {
        id: Option<u64>,
        reply: oneshot::Sender<Vec<Status>>,
    },
}

/// A handle on the conductor task. Cheap to clone.
#[derive(Clone)]
pub struct ConductorHandle {
    requests: mpsc::Sender<Request>,
    db: Arc<Db>,
}

impl ConductorHandle {
    /// Starts a rollout (or, with `dry_run`, a census only) of `service@version`; returns its
    /// id at once.
    ///
    /// # Errors
    ///
    /// If the release is not published or the service has a rollout in flight.
    pub async fn start(
        &self,
        plan: Plan,
        service: String,
        version: String,
        dry_run: bool,
    ) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Start {
            plan: Box::new(plan),
            service,
            version,
            dry_run,
            reply,
        })
        .await?;
        answer.await.context("the conductor stopped")?
    }

    /// Carries out `verb` on rollout `id`.
    ///
    /// # Errors
    ///
    /// If the rollout is unknown or the verb does not apply now.
    pub async fn verb(&self, id: u64, verb: Verb) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Verb { id, verb, reply }).await?;
        answer.await.context("the conductor stopped")?
    }

    /// The status of rollout `id`, or of every rollout.
    ///
    /// # Errors
    ///
    /// If the conductor task has stopped.
    pub async fn status(&self, id: Option<u64>) -> Result<Vec<Status>> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Status { id, reply }).await?;
        answer.await.context("the conductor stopped")
    }

    /// The audit log.
    ///
    /// # Errors
    ///
    /// If the database cannot be read.
    pub fn audit(&self) -> Result<Vec<AuditEntry>> {
        self.db.audit()
    }

    /// Records a published release.
    ///
    /// # Errors
    ///
    /// If the database cannot be written.
    pub fn published(&self, published: &Published) -> Result<()> {
        self.db.put_release(published)
    }

    async fn send(&self, request: Request) -> Result<()> {
        self.requests
            .send(request)
            .await
            .map_err(|_| anyhow::anyhow!("the conductor stopped"))
    }
}

/// Restores the conductor from `db`, sends the current directive of every unfinished rollout
/// again, and starts its task.
///
/// # Errors
///
/// If the saved rollouts cannot be read.
pub fn start(db: Arc<Db>, mesh: Mesh, shutdown: watch::Receiver<bool>) -> Result<ConductorHandle> {
    let rollouts = db.rollouts().context("cannot read the saved rollouts")?;
    let mut conductor = Conductor::new(Config::default(), rollouts);
    conductor.resend_all(wall_now());
    let (requests, rx) = mpsc::channel(REQUEST_QUEUE);
    let task = Task {
        conductor,
        db: db.clone(),
        mesh,
    };
    tokio::spawn(task.run(rx, shutdown));
    Ok(ConductorHandle { requests, db })
}

struct Task {
    conductor: Conductor,
    db: Arc<Db>,
    mesh: Mesh,
}

impl Task {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.drain().await;
        let mut reports = tokio::time::interval(REPORT_INTERVAL);
        loop {
            let wake = self
                .conductor
                .poll_timeout()
                .map_or(Duration::from_secs(3600), |t| t.saturating_sub(wall_now()));
            let read_reports = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                Some(request) = requests.recv() => {
                    self.handle(request);
                    false
                }
                _ = reports.tick() => true,
                () = tokio::time::sleep(wake) => {
                    self.conductor.handle_timeout(wall_now());
                    false
                }
            };
            if read_reports && let Ok(summary) = self.mesh.subtree().await {
                self.conductor
                    .handle_reports(wall_now(), summary.nodes, &summary.rollouts);
            }
            self.drain().await;
        }
    }

    fn handle(&mut self, request: Request) {
        let now = wall_now();
        match request {
            Request::Start {
                plan,
                service,
                version,
                dry_run,
                reply,
            } => {
                let _ = reply.send(self.start(now, *plan, service, version, dry_run));
            }
            Request::Verb { id, verb, reply } => {
                let c = &mut self.conductor;
                let result = match verb {
                    Verb::Pause => c.pause(now, id),
                    Verb::Resume => c.resume(now, id),
                    Verb::Promote => c.promote(now, id),
                    Verb::Abort { revert } => c.abort(now, id, revert),
                    Verb::Rollback => c.rollback(now, id),
                };
                let _ = reply.send(result.map_err(anyhow::Error::from));
            }
            Request::Status { id, reply } => {
                let ids = match id {
                    Some(id) => vec![id],
                    None => self.conductor.ids(),
                };
                let statuses = ids
                    .into_iter()
                    .filter_map(|id| self.conductor.status(id))
                    .collect();
                let _ = reply.send(statuses);
            }
        }
    }

    fn start(
        &mut self,
        now: Duration,
        plan: Plan,
        service: String,
        version: String,
        dry_run: bool,
    ) -> Result<u64> {
        let published = self.db.releases()?;
        let Some(target) = published
            .iter()
            .find(|p| p.service == service && p.release.version == version)
        else {
            let known: Vec<String> = published
                .iter()
                .filter(|p| p.service == service)
                .map(|p| p.release.version.clone())
                .collect();
            if known.is_empty() {
                bail!("no release of service {service:?} is published: run shoal publish first");
            }
            bail!(
                "service {service:?} has no published version {version:?} (published: {})",
                known.join(", ")
            );
        };
        // The rollback target: what the last completed rollout of the service put in place,
        // else the newest earlier release of it.
        let previous = self
            .conductor
            .last_completed(&service)
            .cloned()
            .or_else(|| {
                published
                    .iter()
                    .filter(|p| p.service == service && p.release.counter < target.release.counter)
                    .max_by_key(|p| p.release.counter)
                    .map(|p| p.release.clone())
            })
            .filter(|p| p.root != target.release.root);
        let id = self.conductor.ids().last().map_or(1, |last| last + 1);
        self.conductor.start(
            now,
            id,
            plan,
            service,
            target.release.clone(),
            previous,
            dry_run,
        )?;
        Ok(id)
    }

    /// Commits records (with the rollouts' state) before the broadcasts they explain.
    async fn drain(&mut self) {
        let mut records: Vec<Record> = Vec::new();
        while let Some(output) = self.conductor.poll_output() {
            match output {
                Output::Record(record) => {
                    tracing::info!(rollout = record.rollout, "{}", record.event);
                    records.push(record);
                }
                Output::Broadcast(directive) => {
                    self.commit(&mut records);
                    if let Err(e) = self.mesh.broadcast_rollout(*directive).await {
                        tracing::error!("cannot broadcast a rollout directive: {e:#}");
                    }
                }
            }
        }
        self.commit(&mut records);
    }

    fn commit(&self, records: &mut Vec<Record>) {
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.db.commit(records, &self.conductor.persisted()) {
            // Without the record on disk the decision must not go out: stop the process
            // rather than broadcast what a restart would not know.
            tracing::error!("cannot write the coordinator database: {e:#}; stopping");
            std::process::exit(1);
        }
        records.clear();
    }
}

/// Wall-clock time since the Unix epoch: the conductor's clock, so deadlines survive restarts.
pub fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
