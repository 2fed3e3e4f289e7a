//! The one task that owns the libp2p swarm.
//!
//! It polls the swarm, dials on behalf of the stream tasks, closes connections it is told to
//! close, and turns lost connections and failed dials into [`Event::Disconnected`]. It never
//! reads or writes a stream: those live in their own tasks, so a slow peer or a slow owner
//! cannot stall the swarm.

use super::behaviour::{Behaviour, quic_multiaddr, socket_addr};
use super::event::Event;
use super::outbound::Writers;
use super::stats::{Counters, bump};
use futures::StreamExt as _;
use libp2p::Swarm;
use libp2p::core::ConnectedPoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p_identity::PeerId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Commands queued for the swarm task; the handle, the stream tasks and the readers send them.
pub(crate) const COMMAND_QUEUE: usize = 1024;

/// Where the swarm task sends the outcome of a dial: the peer connected, or why not.
pub(crate) type ConnectReply = oneshot::Sender<Result<PeerId, String>>;

/// What the rest of the overlay asks of the swarm task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Answer once there is a connection to `peer` at `addr` (dialling if there is none), or,
    /// with no `peer`, to whoever answers at `addr`.
    Connect {
        /// The peer expected at `addr`; the TLS handshake proves it.
        peer: Option<PeerId>,
        /// Its QUIC address.
        addr: SocketAddr,
        /// Where the outcome goes.
        reply: ConnectReply,
    },
    /// Close every connection to `peer`.
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// Why, for the log.
        reason: &'static str,
    },
    /// Our control stream to `peer` broke: report the link down.
    LinkDown {
        /// The peer.
        peer: PeerId,
    },
}

/// The swarm task's state. Build it with [`SwarmTask::new`], then spawn [`SwarmTask::run`].
pub(crate) struct SwarmTask {
    swarm: Swarm<Behaviour>,
    /// Changes (or closes, when the last handle is dropped) when the overlay shuts down.
    shutdown: watch::Receiver<bool>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    link_down: LinkDownQueue,
    dials: PendingDials,
    /// Every established connection: whose it is, and the peer's address.
    connections: HashMap<ConnectionId, (PeerId, Option<SocketAddr>)>,
    /// The writers, retired here when their peer's last connection closes.
    writers: Arc<Writers>,
    stats: Arc<Counters>,
    /// How long shutdown waits for connections to close.
    close_timeout: Duration,
    /// When to wake every connection so that those without streams notice (see `idle.rs`).
    idle_check: tokio::time::Interval,
    /// Tasks that end with this one (the accept loops).
    helpers: Vec<JoinHandle<()>>,
    /// Dropped when the task ends, which tells [`Overlay::shutdown`](super::Overlay::shutdown).
    _stopped: watch::Sender<()>,
}

/// The inputs and outputs of a [`SwarmTask`].
pub(crate) struct SwarmTaskParts {
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) writers: Arc<Writers>,
    pub(crate) stats: Arc<Counters>,
    pub(crate) close_timeout: Duration,
    pub(crate) idle_check_period: Duration,
    pub(crate) helpers: Vec<JoinHandle<()>>,
    pub(crate) stopped: watch::Sender<()>,
}

impl SwarmTask {
    /// A task driving `swarm`, which is already listening.
    pub(crate) fn new(swarm: Swarm<Behaviour>, parts: SwarmTaskParts) -> Self {
        Self {
            swarm,
            shutdown: parts.shutdown,
            commands: parts.commands,
            events: parts.events,
            link_down: LinkDownQueue::default(),
            dials: PendingDials::default(),
            connections: HashMap::new(),
            writers: parts.writers,
            stats: parts.stats,
            close_timeout: parts.close_timeout,
            idle_check: idle_check(parts.idle_check_period),
            helpers: parts.helpers,
            _stopped: parts.stopped,
        }
    }

    /// Runs until the overlay shuts down, then closes every connection (waiting at most the
    /// close timeout) and stops the accept loops.
    pub(crate) async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                () = report_link_down(&self.events, &mut self.link_down),
                    if self.link_down.is_pending() => {}
                _ = self.idle_check.tick() => self.handle_idle_check(),
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
            }
        }
        self.close_all().await;
        for helper in &self.helpers {
            helper.abort();
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Connect { peer, addr, reply } => self.handle_connect(peer, addr, reply),
            Command::Disconnect { peer, reason } => {
                debug!(%peer, reason, "closing connections to peer");
                // Err means no connection: nothing to close.
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::LinkDown { peer } => self.link_down.push(peer),
        }
    }

    fn handle_connect(&mut self, peer: Option<PeerId>, addr: SocketAddr, reply: ConnectReply) {
        let Some(peer) = peer else {
            // Whoever we are connected to at `addr` will do; a new dial would count against
            // that peer's connection limit.
            let known = self.connections.values().find(|(_, at)| *at == Some(addr));
            if let Some((peer, _)) = known {
                let _ = reply.send(Ok(*peer));
                return;
            }
            let opts = DialOpts::unknown_peer_id()
                .address(quic_multiaddr(addr))
                .build();
            let connection = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => self.dials.wait_for_connection(connection, reply),
                Err(error) => self.refuse_dial(reply, &error),
            }
            return;
        };
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![quic_multiaddr(addr)])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            // Already dialling: the dial under way answers this one too.
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                self.dials.wait_for_peer(peer, reply);
            }
            Err(error) => self.refuse_dial(reply, &error),
        }
    }

    fn refuse_dial(&self, reply: ConnectReply, error: &DialError) {
        bump(&self.stats.dial_failures);
        let _ = reply.send(Err(error.to_string()));
    }

    fn handle_swarm_event(
        &mut self,
        event: SwarmEvent<<Behaviour as libp2p::swarm::NetworkBehaviour>::ToSwarm>,
    ) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let remote = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                let remote = socket_addr(remote).ok();
                self.connections.insert(connection_id, (peer_id, remote));
                self.count_connections();
                self.dials.connected(peer_id, connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.connections.remove(&connection_id);
                self.count_connections();
                debug!(peer = %peer_id, ?cause, remaining = num_established, "connection closed");
                if num_established == 0 {
                    self.link_lost(peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                bump(&self.stats.dial_failures);
                debug!(?peer_id, %error, "dial failed");
                let reason = error.to_string();
                self.dials.failed_connection(connection_id, &reason);
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                {
                    self.dials.failed_peer(peer, &reason);
                    self.link_lost(peer);
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => debug!(%send_back_addr, %error, "inbound connection refused"),
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => warn!(?addresses, ?reason, "overlay listener closed"),
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "overlay listener error"),
            _ => {}
        }
    }

    fn count_connections(&self) {
        let count = self.connections.len() as u64;
        self.stats.connections.store(count, Ordering::Relaxed);
    }

    fn handle_idle_check(&mut self) {
        let connections = self
            .connections
            .iter()
            .map(|(connection, (peer, _))| (*peer, *connection));
        self.swarm.behaviour_mut().idle.wake(connections);
    }

    /// The link to `peer` is gone: stop its writer before the owner hears of it, so that a
    /// frame sent after [`Event::Disconnected`] starts a new link instead of joining the dead one.
    fn link_lost(&mut self, peer: PeerId) {
        self.writers.retire(peer);
        self.link_down.push(peer);
    }

    /// Closes every connection, waiting at most the close timeout for them to go.
    async fn close_all(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let deadline = tokio::time::sleep(self.close_timeout);
        tokio::pin!(deadline);
        while !self.connections.is_empty() {
            tokio::select! {
                () = &mut deadline => break,
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
            }
        }
    }
}

/// A timer ticking every `period`, first after one period, never catching up on missed ticks.
fn idle_check(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Tells the owner of the next link that went down, once there is room in its queue.
///
/// Cancel safe: nothing leaves the queue until the event has its slot.
async fn report_link_down(events: &mpsc::Sender<Event>, link_down: &mut LinkDownQueue) {
    match events.reserve().await {
        Ok(permit) => {
            if let Some(peer) = link_down.pop() {
                permit.send(Event::Disconnected { peer });
            }
        }
        // The owner dropped its receiver: nobody to tell.
        Err(_) => link_down.clear(),
    }
}

/// Peers whose link went down, each queued once until the owner has been told.
#[derive(Debug, Default)]
struct LinkDownQueue {
    order: VecDeque<PeerId>,
    queued: HashSet<PeerId>,
}

impl LinkDownQueue {
    fn push(&mut self, peer: PeerId) {
        if self.queued.insert(peer) {
            self.order.push_back(peer);
        }
    }

    fn pop(&mut self) -> Option<PeerId> {
        let peer = self.order.pop_front()?;
        self.queued.remove(&peer);
        Some(peer)
    }

    fn is_pending(&self) -> bool {
        !self.order.is_empty()
    }

    fn clear(&mut self) {
        self.order.clear();
        self.queued.clear();
    }
}

/// Tasks waiting for a dial to end. Every entry ends with its dial (libp2p bounds a dial by
/// the QUIC handshake timeout), and waiters that gave up are pruned as new ones arrive.
#[derive(Debug, Default)]
struct PendingDials {
    by_peer: HashMap<PeerId, Vec<ConnectReply>>,
    by_connection: HashMap<ConnectionId, ConnectReply>,
}

impl PendingDials {
    fn wait_for_peer(&mut self, peer: PeerId, reply: ConnectReply) {
        let waiting = self.by_peer.entry(peer).or_default();
        waiting.retain(|reply| !reply.is_closed());
        waiting.push(reply);
    }

    fn wait_for_connection(&mut self, connection: ConnectionId, reply: ConnectReply) {
        self.by_connection.insert(connection, reply);
    }

    fn connected(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(reply) = self.by_connection.remove(&connection) {
            let _ = reply.send(Ok(peer));
        }
        for reply in self.by_peer.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Ok(peer));
        }
    }

    fn failed_connection(&mut self, connection: ConnectionId, reason: &str) {
        if let Some(reply) = self.by_connection.remove(&connection) {
            let _ = reply.send(Err(reason.to_owned()));
        }
    }

    fn failed_peer(&mut self, peer: PeerId, reason: &str) {
        for reply in self.by_peer.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Err(reason.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_down_is_queued_once_until_taken() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut queue = LinkDownQueue::default();
        queue.push(a);
        queue.push(b);
        queue.push(a);
        assert_eq!(queue.pop(), Some(a));
        queue.push(a);
        assert_eq!(queue.pop(), Some(b));
        assert_eq!(queue.pop(), Some(a));
        assert_eq!(queue.pop(), None);
        assert!(!queue.is_pending());
    }
}
