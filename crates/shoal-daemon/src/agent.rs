//! A node's rollout agent, set up for the mesh task's agent machine: its saved state loaded,
//! its supervised services running again, and a [`NodeHost`] that carries out what the machine
//! decides (fetch into the store, connect the data plane, run the executor, save the state).
//!
//! The agent itself runs inside the machine; [`AgentHandle`] is what the rest of the process
//! sees of it.

use crate::events::{self, Hub};
use crate::executor::{Event, Executor};
use crate::host::NodeHost;
use crate::services::Service;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use shoal_core::activation::ServiceState;
use shoal_core::labels::Labels;
use shoal_core::rollout::Release;
use shoal_core::rollout::agent::{Agent, Persisted, Refused};
use shoal_net::mesh::{self, Input, Inputs, Local};
use shoal_net::node::Node;
use shoal_store::Store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The agent's state file in the data directory.
pub const STATE_FILE: &str = "agent.state";
/// The largest state file read.
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;
/// Crash reports waiting to be forwarded to the machine.
const CRASH_QUEUE: usize = 16;

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
}

impl AgentStatus {
    /// What `agent` shows.
    pub fn of(agent: &Agent) -> Self {
        let services = agent
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
        AgentStatus {
            services,
            refused_directives: agent.refused(),
            drained: agent.is_drained(),
        }
    }
}

/// What the rest of the process sees of the agent. Cheap to clone.
#[derive(Clone)]
pub struct AgentHandle {
    inputs: Inputs,
    status: Arc<Mutex<AgentStatus>>,
}

impl AgentHandle {
    /// Drains (`true`) or undrains the node.
    ///
    /// # Errors
    ///
    /// If the mesh task has stopped.
    pub async fn set_drained(&self, drained: bool) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        if !self.inputs.send(Input::Drain { drained, reply }) {
            bail!("the node's mesh task stopped");
        }
        answer.await.context("the node's mesh task stopped")
    }

    /// The latest status.
    pub fn status(&self) -> AgentStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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

/// The node's agent, ready for [`mesh::start`].
pub struct Prepared {
    /// The agent, its host and the host's answers.
    pub local: Local,
    /// What the rest of the process sees of the agent.
    pub handle: AgentHandle,
    /// The executor, to stop supervised services when the node stops.
    pub executor: Executor,
    /// The local subscribers to service changes (served on the data directory's socket).
    pub events: Hub,
}

/// Loads the agent's saved state, starts the services it was running again, and puts the
/// store's releases in `node`'s data plane; the machine hears of each release through the
/// returned inputs.
///
/// It also listens for local subscribers on the data directory's [`events::SOCKET_FILE`].
///
/// # Errors
///
/// If the state file exists but cannot be read or decoded (it is left as it is), or the
/// subscription socket cannot be bound.
pub async fn prepare(config: Config, store: Store, node: Node) -> Result<Prepared> {
    let state_path = config.data_dir.join(STATE_FILE);
    let saved = load_state(&state_path)?;
    let policies = config
        .services
        .iter()
        .map(|(n, s)| (n.clone(), s.policy))
        .collect();
    let agent = Agent::new(config.node_id, config.name, config.labels, policies, saved);
    let (inputs, input_rx) = mesh::inputs();
    let (crash_tx, crashes) = mpsc::channel(CRASH_QUEUE);
    tokio::spawn(forward_crashes(crashes, inputs.clone()));
    let executor = Executor::new(&config.data_dir, config.services, crash_tx);
    resume_services(&agent, &executor).await;
    let status = Arc::new(Mutex::new(AgentStatus::of(&agent)));
    let hub = Hub::default();
    hub.update(&status.lock().unwrap_or_else(|e| e.into_inner()));
    events::listen(&config.data_dir, hub.clone())?;
    let host = NodeHost::new(
        store,
        node,
        executor.clone(),
        state_path,
        status.clone(),
        inputs.clone(),
        hub.clone(),
    );
    Ok(Prepared {
        local: Local {
            agent: Some(agent),
            host: Box::new(host),
            inputs: input_rx,
        },
        handle: AgentHandle { inputs, status },
        executor,
        events: hub,
    })
}

/// After a restart: supervised services run their current release again.
async fn resume_services(agent: &Agent, executor: &Executor) {
    let running: Vec<(String, Release)> = agent
        .services()
        .filter(|(_, s)| s.is_steady())
        .filter_map(|(n, s)| s.current().map(|r| (n.to_owned(), r.clone())))
        .collect();
    for (name, release) in running {
        if let Err(e) = executor.resume(&name, &release).await {
            tracing::warn!(service = %name, "cannot start {} again: {e:#}", release.version);
        }
    }
}

/// Hands the executor's crash reports to the machine.
async fn forward_crashes(mut crashes: mpsc::Receiver<Event>, inputs: Inputs) {
    while let Some(Event::Crashed { service, reason }) = crashes.recv().await {
        if !inputs.send(Input::Crashed { service, reason }) {
            return;
        }
    }
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
