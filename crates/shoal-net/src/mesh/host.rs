//! What a process's agent machine asks of the rest of the process ([`Host`]), and the answers
//! that come back to it ([`Input`]).
//!
//! The mesh task owns the machine. When the machine decides that a release is fetched, that the
//! data plane connects to swarm peers, or that a service is staged, switched or checked, the
//! task hands that to the host, which only carries it out. Whatever finishes later (a release
//! complete, a command's result, a supervised service that keeps exiting) comes back as an
//! [`Input`] through [`Inputs`], and the task feeds it to the machine.

use super::contact::Contact;
use shoal_core::activation::Command;
use shoal_core::content::RootHash;
use shoal_core::manifest::VerifiedManifest;
use shoal_core::rollout::agent::Agent;
use tokio::sync::{mpsc, oneshot};

/// Carries out the machine's outputs beyond the control plane. Called from the mesh task: each
/// call returns at once (long work is spawned and answers through [`Inputs`]).
pub trait Host: Send + 'static {
    /// Adds `manifest`'s release to the store and joins its swarm, served first by `origin`;
    /// `false` if the store refused it. Completion comes back as [`Input::Stored`].
    fn add_release(&mut self, manifest: &VerifiedManifest, origin: Contact) -> bool;

    /// Connects the data plane to these swarm peers.
    fn connect(&mut self, peers: &[Contact]);

    /// Starts an activation command for `service`; its result comes back as
    /// [`Input::Prepared`], [`Input::Switched`] or [`Input::Checked`].
    fn execute(&mut self, agent: &Agent, service: String, command: Command);

    /// Saves the agent's durable state, before anything that follows is carried out.
    fn persist(&mut self, agent: &Agent);

    /// The agent may have changed: refresh what the process shows of it.
    fn changed(&mut self, agent: &Agent);
}

/// The coordinator's host: it runs no services and is itself the origin of what it announces,
/// so it fetches nothing.
pub struct NoHost;

impl Host for NoHost {
    fn add_release(&mut self, _: &VerifiedManifest, _: Contact) -> bool {
        false
    }
    fn connect(&mut self, _: &[Contact]) {}
    fn execute(&mut self, _: &Agent, _: String, _: Command) {}
    fn persist(&mut self, _: &Agent) {}
    fn changed(&mut self, _: &Agent) {}
}

/// An answer for the machine.
#[derive(Debug)]
pub enum Input {
    /// The store holds `root`, `complete` or not.
    Stored {
        /// The release.
        root: RootHash,
        /// Whether every piece is here.
        complete: bool,
    },
    /// A release was staged for `service` (or why not).
    Prepared {
        /// The service.
        service: String,
        /// The outcome.
        result: Result<(), String>,
    },
    /// `service` was switched (or why not).
    Switched {
        /// The service.
        service: String,
        /// The outcome.
        result: Result<(), String>,
    },
    /// One health check of `service` finished.
    Checked {
        /// The service.
        service: String,
        /// The outcome.
        result: Result<(), String>,
    },
    /// A supervised `service` keeps exiting.
    Crashed {
        /// The service.
        service: String,
        /// Why it is given up.
        reason: String,
    },
    /// Drain (`true`) or undrain the node; `reply` is answered once the host has seen the change.
    Drain {
        /// Drained or not.
        drained: bool,
        /// Answered when done.
        reply: oneshot::Sender<()>,
    },
}

/// Where a host sends its answers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Inputs(mpsc::UnboundedSender<Input>);

/// The mesh task's end of [`Inputs`].
#[derive(Debug)]
pub struct InputReceiver(pub(super) mpsc::UnboundedReceiver<Input>);

/// A new channel of inputs for the machine.
pub fn inputs() -> (Inputs, InputReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Inputs(tx), InputReceiver(rx))
}

impl Inputs {
    /// Sends `input` to the machine; `false` once the mesh task has stopped.
    pub fn send(&self, input: Input) -> bool {
        self.0.send(input).is_ok()
    }
}

/// What runs beside the control plane in this process: the rollout agent (none on the
/// coordinator), the host that carries out the machine's outputs, and its answers.
pub struct Local {
    /// The rollout agent, restored from its saved state.
    pub agent: Option<Agent>,
    /// Carries out the machine's outputs.
    pub host: Box<dyn Host>,
    /// The host's answers.
    pub inputs: InputReceiver,
}

impl Local {
    /// The coordinator's: no agent, nothing fetched.
    pub fn source() -> Self {
        Local {
            agent: None,
            host: Box::new(NoHost),
            inputs: inputs().1,
        }
    }
}
