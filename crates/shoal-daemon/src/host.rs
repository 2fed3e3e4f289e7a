//! A node's [`Host`]: carries out what its agent machine decides beyond the control plane.
//!
//! - a release to fetch goes into the store and the data plane; its completion comes back to
//!   the machine as [`Input::Stored`];
//! - swarm peers are dialled by the data plane;
//! - activation commands run on the [`Executor`], each in its own task, and answer as inputs;
//! - the agent's durable state is written to its state file before anything that follows.
//!
//! Nothing here decides: every choice was the machine's.

use crate::agent::AgentStatus;
use crate::events::Hub;
use crate::executor::Executor;
use shoal_core::activation::Command;
use shoal_core::content::RootHash;
use shoal_core::manifest::VerifiedManifest;
use shoal_core::rollout::agent::Agent;
use shoal_net::mesh::{Contact, Host, Input, Inputs};
use shoal_net::node::Node;
use shoal_store::Store;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// See the module documentation.
pub struct NodeHost {
    store: Store,
    node: Node,
    executor: Executor,
    state_path: PathBuf,
    status: Arc<Mutex<AgentStatus>>,
    inputs: Inputs,
    events: Hub,
}

impl NodeHost {
    /// A host over `store` and the data plane `node`. The store's releases join the data plane
    /// now, and the machine hears of each through `inputs`; `events`' subscribers hear of
    /// every change of their services.
    pub fn new(
        store: Store,
        node: Node,
        executor: Executor,
        state_path: PathBuf,
        status: Arc<Mutex<AgentStatus>>,
        inputs: Inputs,
        events: Hub,
    ) -> Self {
        for release in store.releases() {
            let complete = node.add_stored_release(release);
            let root = release.root();
            let done = *complete.borrow();
            inputs.send(Input::Stored {
                root,
                complete: done,
            });
            if !done {
                report_complete(root, complete, inputs.clone());
            }
        }
        NodeHost {
            store,
            node,
            executor,
            state_path,
            status,
            inputs,
            events,
        }
    }
}

/// Tells the machine through `inputs` when `root` is complete here.
fn report_complete(root: RootHash, mut complete: watch::Receiver<bool>, inputs: Inputs) {
    tokio::spawn(async move {
        if complete.wait_for(|c| *c).await.is_ok() {
            inputs.send(Input::Stored {
                root,
                complete: true,
            });
        }
    });
}

impl Host for NodeHost {
    fn add_release(&mut self, manifest: &VerifiedManifest, origin: Contact) -> bool {
        let root = manifest.root();
        match self.store.add(manifest) {
            Ok(release) => {
                tracing::info!(%root, origin = %origin.addr, "prefetching {}", manifest.manifest().name());
                let complete = self.node.add_stored_release(&release);
                report_complete(root, complete, self.inputs.clone());
                true
            }
            Err(e) => {
                tracing::error!(%root, "cannot prefetch: {e}");
                false
            }
        }
    }

    fn connect(&mut self, peers: &[Contact]) {
        for peer in peers {
            self.node.connect(peer.addr);
        }
    }

    fn execute(&mut self, agent: &Agent, service: String, command: Command) {
        // A check names only the root: the release (its version) is the agent's target or
        // current one.
        let check_release = match &command {
            Command::Check(root) => agent.service(&service).and_then(|s| {
                s.target()
                    .into_iter()
                    .chain(s.current())
                    .find(|r| r.root == *root)
                    .cloned()
            }),
            _ => None,
        };
        let executor = self.executor.clone();
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let answer = match command {
                Command::Prepare(r) => {
                    let result = executor.prepare(&service, &r).await;
                    Input::Prepared {
                        result: result.map_err(|e| format!("{e:#}")),
                        service,
                    }
                }
                Command::Switch(r) => {
                    let result = executor.switch(&service, &r).await;
                    Input::Switched {
                        result: result.map_err(|e| format!("{e:#}")),
                        service,
                    }
                }
                Command::Check(root) => {
                    let result = match check_release {
                        Some(r) => executor.check(&service, &r).await,
                        None => Err(anyhow::anyhow!("no release {root} to check")),
                    };
                    Input::Checked {
                        result: result.map_err(|e| format!("{e:#}")),
                        service,
                    }
                }
            };
            inputs.send(answer);
        });
    }

    fn persist(&mut self, agent: &Agent) {
        let bytes = match postcard::to_stdvec(&agent.persisted()) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!("cannot encode the agent's state: {e}");
                return;
            }
        };
        if let Err(e) = shoal_store::fsutil::write_atomic(&self.state_path, &bytes, 0o600) {
            tracing::error!("cannot save {}: {e}", self.state_path.display());
        }
    }

    fn changed(&mut self, agent: &Agent) {
        let status = AgentStatus::of(agent);
        self.events.update(&status);
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }
}
