//! The control plane's transport: opaque frames between peers over libp2p QUIC.
//!
//! The control-plane protocols (HyParView membership, Plumtree broadcast, health reports) live
//! in the sans-IO core; this module only carries their frames. It does not look inside a frame:
//! bytes in, bytes out.
//!
//! # Model
//!
//! [`start`] builds a libp2p swarm with QUIC as its only transport, authenticated with the
//! node's [`Identity`], and spawns the task that owns it. The owner gets an [`Overlay`] handle
//! and a bounded queue of [`Event`]s.
//!
//! - **Control streams** ([`CONTROL_PROTOCOL`]) carry the core's frames, one direction each: to
//!   talk to a peer, we open one long-lived stream to it; it opens its own to talk to us. Our
//!   first frame on it is our `hello`; the peer's first frame on its stream to us is its hello,
//!   which `check_hello` must accept before any of its frames reach the owner. The hellos of
//!   open streams are kept, so that [`Overlay::recheck`] can judge them again when the rules
//!   change (a revoked token) and cut off the peers that no longer pass.
//!   [`Overlay::send`] queues a frame in a bounded per-peer queue and returns at once.
//! - **Admission** ([`ADMISSION_PROTOCOL`]) is one request and one answer, for peers that have
//!   no hello yet: [`Overlay::request`] on one side, [`Event::Request`] on the other.
//! - **Links go down** when the last connection to a peer closes, a dial to it fails or our
//!   stream to it breaks; the owner hears [`Event::Disconnected`] and decides what to do.
//!   QUIC keep-alives keep connections with open streams alive and detect dead peers within
//!   the idle timeout; connections left without streams (after an admission exchange, say)
//!   close after [`Config::idle_connection_timeout`].
//! - **Misbehaving peers** (no hello in time, refused hello, an oversize or truncated frame)
//!   are cut off: the stream is dropped, every connection to the peer closed, the event counted
//!   in [`Stats`].
//!
//! Every frame on every stream is a `u32` big-endian length and that many bytes; the length is
//! checked against [`Config::max_frame_bytes`] before anything is buffered.
//!
//! # Tasks
//!
//! One task owns the swarm (`swarm_task.rs`): a `select!` over shutdown, commands and swarm
//! events. Streams never touch it: each peer has a writer task (`outbound.rs`), each inbound
//! stream a reader task (`inbound.rs`), each request its caller's task (`request.rs`). Every
//! queue between them is bounded.

mod behaviour;
mod config;
mod error;
mod event;
mod frame;
mod handle;
mod idle;
mod inbound;
mod outbound;
mod request;
mod stats;
mod swarm_task;
#[cfg(test)]
mod tests;

pub use behaviour::{ADMISSION_PROTOCOL, CONTROL_PROTOCOL, quic_multiaddr, socket_addr};
pub use config::{Config, DEFAULT_MAX_FRAME_BYTES};
pub use error::{RequestError, SendError};
pub use event::Event;
pub use handle::Overlay;
pub use stats::Stats;

use crate::admitted::Admitted;
use crate::identity::Identity;
use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use futures::StreamExt as _;
use handle::Inner;
use inbound::{Inbound, Slots};
use libp2p::Swarm;
use libp2p::swarm::SwarmEvent;
use libp2p_identity::PeerId;
use outbound::{WriterContext, Writers};
use stats::Counters;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use swarm_task::{COMMAND_QUEUE, SwarmTask, SwarmTaskParts};
use tokio::sync::{mpsc, watch};

/// Decides whether a peer's hello admits it to the control protocol: called with the peer's
/// authenticated id and its first frame. Runs on a reader task, so it should be quick.
pub type HelloCheck = Arc<dyn Fn(&PeerId, &[u8]) -> bool + Send + Sync>;

/// How long [`start`] waits for the listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts an overlay: binds the QUIC listener, spawns its tasks on the current tokio runtime
/// and returns once it is listening.
///
/// `hello` is the first frame of every control stream we open; `check_hello` judges the hello
/// of every control stream peers open to us. Read the returned receiver promptly: while it is
/// full, inbound streams stall.
///
/// # Errors
///
/// If the configuration is invalid, `hello` exceeds the frame limit, or the listen address
/// cannot be bound.
///
/// # Panics
///
/// Outside a tokio runtime.
pub async fn start(
    identity: &Identity,
    config: Config,
    hello: Bytes,
    check_hello: HelloCheck,
) -> Result<(Overlay, mpsc::Receiver<Event>)> {
    config.validate()?;
    ensure!(
        hello.len() <= config.max_frame_bytes,
        "hello of {} bytes exceeds max_frame_bytes {}",
        hello.len(),
        config.max_frame_bytes
    );
    let mut swarm = behaviour::build_swarm(identity.keypair(), &config)?;
    let port = listen(&mut swarm, config.listen).await?;
    let local_addr = SocketAddr::new(config.listen.ip(), port);

    let mut control = swarm.behaviour().streams.new_control();
    let incoming_control = control
        .accept(CONTROL_PROTOCOL)
        .context("control protocol registered twice")?;
    let incoming_admission = control
        .accept(ADMISSION_PROTOCOL)
        .context("admission protocol registered twice")?;

    let (events, event_receiver) = mpsc::channel(config.event_queue);
    let (commands, command_receiver) = mpsc::channel(COMMAND_QUEUE);
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let (stopped, stopped_receiver) = watch::channel(());
    let stats = Arc::new(Counters::default());
    let admitted = Arc::new(Admitted::default());

    let inbound = Arc::new(Inbound {
        events: events.clone(),
        commands: commands.clone(),
        stats: Arc::clone(&stats),
        check_hello,
        admitted: Arc::clone(&admitted),
        max_frame_bytes: config.max_frame_bytes,
        hello_timeout: config.hello_timeout,
        reply_timeout: config.reply_timeout,
        control_slots: Slots::new(config.max_control_streams_per_peer),
        admission_slots: Slots::new(config.max_admission_streams_per_peer),
    });
    let helpers = vec![
        tokio::spawn(Arc::clone(&inbound).accept_control(incoming_control)),
        tokio::spawn(inbound.accept_admission(incoming_admission)),
    ];
    let runtime = tokio::runtime::Handle::current();
    let writers = Writers::new(WriterContext {
        hello: std::sync::Mutex::new(hello),
        control: control.clone(),
        commands: commands.clone(),
        stats: Arc::clone(&stats),
        queue_frames: config.peer_queue_frames,
        connect_timeout: config.connect_timeout,
        runtime: runtime.clone(),
    });
    let task = SwarmTask::new(
        swarm,
        SwarmTaskParts {
            shutdown: shutdown_receiver,
            commands: command_receiver,
            events,
            writers: Arc::clone(&writers),
            stats: Arc::clone(&stats),
            close_timeout: config.flush_timeout,
            idle_check_period: config.idle_connection_timeout,
            helpers,
            stopped,
        },
    );
    tokio::spawn(task.run());
    let overlay = Overlay::new(Inner {
        peer_id: identity.peer_id(),
        local_addr,
        max_frame_bytes: config.max_frame_bytes,
        flush_timeout: config.flush_timeout,
        control,
        commands,
        writers,
        stats,
        admitted,
        runtime,
        shutdown,
        stopped: stopped_receiver,
    });
    Ok((overlay, event_receiver))
}

/// Starts listening on `addr` and waits for the listener to report its first address; returns
/// the bound port.
async fn listen(swarm: &mut Swarm<behaviour::Behaviour>, addr: SocketAddr) -> Result<u16> {
    let listener = swarm
        .listen_on(quic_multiaddr(addr))
        .with_context(|| format!("cannot listen on udp {addr} for the overlay"))?;
    let reported = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } if listener_id == listener => return socket_addr(&address).map(|a| a.port()),
                SwarmEvent::ListenerClosed { reason, .. } => {
                    bail!("overlay listener on {addr} closed: {reason:?}")
                }
                SwarmEvent::ListenerError { error, .. } => {
                    bail!("overlay listener on {addr} failed: {error}")
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(LISTEN_TIMEOUT, reported)
        .await
        .with_context(|| format!("overlay listener on udp {addr} reported no address"))?
}
