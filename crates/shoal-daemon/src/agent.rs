//! The driver of a node's rollout [`Agent`]: feeds it directives, the store's releases,
//! executor results and time; carries out its commands with the [`Executor`]; saves its state.
//!
//! One task, `select! { biased; shutdown, commands, results, crashes, timer, tick }`, each arm
//! a call into the agent; everything it decides is in the agent.

use crate::executor::{Event, Executor};
use crate::services::Service;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use shoal_core::activation::{Command, ServiceState};
use shoal_core::content::RootHash;
use shoal_core::labels::Labels;
use shoal_core::rollout::agent::{Agent, Output, Persisted, Refused};
use shoal_core::rollout::{Directive, Release, RolloutReport};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// The agent's state file in the data directory.
pub const STATE_FILE: &str = "agent.state";
/// The largest state file read.
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;
/// Commands waiting for the task.
const COMMAND_QUEUE: usize = 64;
/// How often the store's releases are looked at and the shared status refreshed.
const TICK: Duration = Duration::from_secs(1);

/// A service as `shoal status --node` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service.
    pub name: String,
    /// The version it runs ("" if none).
    pub version: String,
    /// The root of the release it runs ("" if none).
    pub root: String,
    /// `idle`, `staged`, `activating`, `healthy`, `failed` or `rolled_back`.
    pub state: String,
    /// The version being activated, if any.
    pub target: Option<String>,
    /// The version it would go back to.
    pub previous: Option<String>,
    /// Why its last activation failed, until the next one starts.
    pub reason: Option<String>,
}

/// What the agent shows to the rest of the process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Per service.
    pub services: Vec<ServiceStatus>,
    /// Directives refused, by reason.
    pub refused_directives: Refused,
    /// Whether the node is drained.
    pub drained: bool,
    /// The node's own rollout reports (for the health summary).
    #[serde(skip)]
    pub reports: Vec<RolloutReport>,
}

enum Request {
    Directive(Box<Directive>),
    Drain {
        drained: bool,
        reply: oneshot::Sender<()>,
    },
}

/// A handle on the running agent task. Cheap to clone.
#[derive(Clone)]
pub struct AgentHandle {
    requests: mpsc::Sender<Request>,
    status: Arc<Mutex<AgentStatus>>,
}

impl AgentHandle {
    /// Hands a rollout directive (its envelope verified) to the agent.
    pub fn directive(&self, directive: Directive) {
        if self
            .requests
            .try_send(Request::Directive(Box::new(directive)))
            .is_err()
        {
            tracing::error!("rollout agent queue full: directive dropped");
        }
    }

    /// Drains (`true`) or undrains the node.
    ///
    /// # Errors
    ///
    /// If the agent task has stopped.
    pub async fn set_drained(&self, drained: bool) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Drain { drained, reply })
            .await
            .context("the rollout agent stopped")?;
        answer.await.context("the rollout agent stopped")
    }

    /// The latest status.
    pub fn status(&self) -> AgentStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The node's own rollout reports.
    pub fn reports(&self) -> Vec<RolloutReport> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reports
            .clone()
    }
}

/// How the agent is set up.
pub struct Config {
    /// The data directory (state file, service directories, the store).
    pub data_dir: PathBuf,
    /// The node's id (its peer id bytes) and its name for failure samples.
    pub node_id: Vec<u8>,
    /// The name shown in failure samples.
    pub name: String,
    /// The node's labels (from its certificate).
    pub labels: Labels,
    /// The services file's services.
    pub services: BTreeMap<String, Service>,
}

/// Loads the agent's saved state and starts its task. `releases` lists the store's releases
/// (root, complete).
///
/// # Errors
///
/// If the state file exists but cannot be read or decoded (it is left as it is).
pub fn start(
    config: Config,
    releases: Box<dyn Fn() -> Vec<(RootHash, bool)> + Send>,
    shutdown: watch::Receiver<bool>,
) -> Result<AgentHandle> {
    let state_path = config.data_dir.join(STATE_FILE);
    let saved = load_state(&state_path)?;
    let epoch = Instant::now();
    let policies = config
        .services
        .iter()
        .map(|(n, s)| (n.clone(), s.policy))
        .collect();
    let agent = Agent::new(config.node_id, config.name, config.labels, policies, saved);
    let (crash_tx, crashes) = mpsc::channel(16);
    let executor = Executor::new(&config.data_dir, config.services, crash_tx);
    let (requests, request_rx) = mpsc::channel(COMMAND_QUEUE);
    let (result_tx, results) = mpsc::channel(COMMAND_QUEUE);
    let status = Arc::new(Mutex::new(AgentStatus::default()));
    let task = Task {
        agent,
        executor,
        epoch,
        state_path,
        releases,
        complete: BTreeSet::new(),
        status: status.clone(),
        results: result_tx,
    };
    tokio::spawn(task.run(request_rx, results, crashes, shutdown));
    Ok(AgentHandle { requests, status })
}

fn load_state(path: &Path) -> Result<Persisted> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Persisted::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if len > MAX_STATE_BYTES {
        bail!("{} is {len} bytes: not an agent state file", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    postcard::from_bytes(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a readable agent state ({e}): move it aside to start this node without its rollout history",
            path.display()
        )
    })
}

/// A command's answer.
struct Answer {
    service: String,
    kind: Kind,
    result: Result<(), String>,
}

enum Kind {
    Prepared,
    Switched,
    Checked,
}

struct Task {
    agent: Agent,
    executor: Executor,
    epoch: Instant,
    state_path: PathBuf,
    releases: Box<dyn Fn() -> Vec<(RootHash, bool)> + Send>,
    complete: BTreeSet<RootHash>,
    status: Arc<Mutex<AgentStatus>>,
    results: mpsc::Sender<Answer>,
}

impl Task {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut results: mpsc::Receiver<Answer>,
        mut crashes: mpsc::Receiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.resume_services().await;
        self.sync_releases();
        self.drain();
        let mut tick = tokio::time::interval(TICK);
        loop {
            let wake = self
                .agent
                .poll_timeout()
                .map(|t| self.epoch + t)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                Some(request) = requests.recv() => match request {
                    Request::Directive(d) => {
                        // A directive may follow its release's announcement closely: look at
                        // the store first so the manifest counts as verified.
                        self.sync_releases();
                        if let Err(refusal) = self.agent.handle_directive(unix_now(), *d) {
                            tracing::warn!("rollout directive refused: {refusal}");
                        }
                    }
                    Request::Drain { drained, reply } => {
                        self.agent.set_drained(drained);
                        let _ = reply.send(());
                    }
                },
                Some(answer) = results.recv() => {
                    let now = self.now();
                    let Answer { service, kind, result } = answer;
                    match kind {
                        Kind::Prepared => self.agent.handle_prepared(now, &service, result),
                        Kind::Switched => self.agent.handle_switched(now, &service, result),
                        Kind::Checked => self.agent.handle_check(now, &service, result),
                    }
                }
                Some(Event::Crashed { service, reason }) = crashes.recv() => {
                    tracing::warn!(%service, "{reason}");
                    self.agent.handle_crashed(&service, reason);
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = self.now();
                    self.agent.handle_timeout(now);
                }
                _ = tick.tick() => self.sync_releases(),
            }
            self.drain();
        }
        self.executor.shutdown().await;
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// After a restart: supervised services run their current release again.
    async fn resume_services(&mut self) {
        let running: Vec<(String, Release)> = self
            .agent
            .services()
            .filter(|(_, s)| s.is_steady())
            .filter_map(|(n, s)| s.current().map(|r| (n.to_owned(), r.clone())))
            .collect();
        for (name, release) in running {
            if let Err(e) = self.executor.resume(&name, &release).await {
                tracing::warn!(service = %name, "cannot start {} again: {e:#}", release.version);
            }
        }
    }

    fn sync_releases(&mut self) {
        for (root, complete) in (self.releases)() {
            self.agent.handle_manifest(root);
            if complete && self.complete.insert(root) {
                self.agent.handle_complete(root);
            }
        }
    }

    fn drain(&mut self) {
        let mut persist = false;
        while let Some(output) = self.agent.poll_output() {
            match output {
                Output::Persist => persist = true,
                Output::Execute { service, command } => self.execute(service, command),
            }
        }
        if persist {
            let bytes = postcard::to_stdvec(&self.agent.persisted()).unwrap_or_default();
            if let Err(e) = shoal_store::fsutil::write_atomic(&self.state_path, &bytes, 0o600) {
                tracing::error!("cannot save {}: {e}", self.state_path.display());
            }
        }
        self.publish_status();
    }

    fn execute(&self, service: String, command: Command) {
        let executor = self.executor.clone();
        let results = self.results.clone();
        let check_release = match &command {
            Command::Check(root) => self.agent.service(&service).and_then(|s| {
                s.target()
                    .into_iter()
                    .chain(s.current())
                    .find(|r| r.root == *root)
                    .cloned()
            }),
            _ => None,
        };
        tokio::spawn(async move {
            let (kind, result) = match command {
                Command::Prepare(r) => (Kind::Prepared, executor.prepare(&service, &r).await),
                Command::Switch(r) => (Kind::Switched, executor.switch(&service, &r).await),
                Command::Check(root) => {
                    let result = match check_release {
                        Some(r) => executor.check(&service, &r).await,
                        None => Err(anyhow::anyhow!("no release {root} to check")),
                    };
                    (Kind::Checked, result)
                }
            };
            let result = result.map_err(|e| format!("{e:#}"));
            let _ = results
                .send(Answer {
                    service,
                    kind,
                    result,
                })
                .await;
        });
    }

    fn publish_status(&self) {
        let services = self
            .agent
            .services()
            .map(|(name, s)| ServiceStatus {
                name: name.to_owned(),
                version: s.current().map(|r| r.version.clone()).unwrap_or_default(),
                root: s.current().map(|r| r.root.to_hex()).unwrap_or_default(),
                state: match (s.state(), s.is_steady()) {
                    (ServiceState::Healthy | ServiceState::Failed, false) => "activating",
                    (state, _) => state.as_str(),
                }
                .to_owned(),
                target: s.target().map(|r| r.version.clone()),
                previous: s.previous().map(|r| r.version.clone()),
                reason: s.failure().map(str::to_owned),
            })
            .collect();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        *status = AgentStatus {
            services,
            refused_directives: self.agent.refused(),
            drained: self.agent.is_drained(),
            reports: self.agent.reports(),
        };
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
