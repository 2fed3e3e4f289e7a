//! Wakes connections now and then, so that libp2p's idle timeout sees streams that have ended.
//!
//! libp2p closes a connection once it has had no stream for the idle connection timeout, but it
//! only checks when the connection's task runs, and dropping a stream does not wake that task.
//! Over QUIC nothing else does either (keep-alive packets stay inside quinn), so a connection
//! whose last stream ended, for example one opened for a single admission request, would stay
//! open for good. This behaviour sends every connection an empty event once per idle timeout;
//! handling it runs the check. A connection without streams then closes between one and two
//! idle timeouts after its last stream ended; connections with streams are not affected.

use libp2p::Multiaddr;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p_identity::PeerId;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll, Waker};

/// The behaviour: a queue of connections to wake.
#[derive(Debug, Default)]
pub(crate) struct Behaviour {
    /// Connections to wake, at most one entry per established connection.
    pending: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

impl Behaviour {
    /// Wakes each of `connections` once, replacing any wake-ups still queued.
    pub(crate) fn wake(&mut self, connections: impl IntoIterator<Item = (PeerId, ConnectionId)>) {
        self.pending.clear();
        self.pending.extend(connections);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.pending.pop_front() {
            Some((peer_id, connection)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: (),
            }),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The per-connection half: receiving the event is all it is for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handler;

impl ConnectionHandler for Handler {
    type FromBehaviour = ();
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn on_behaviour_event(&mut self, (): ()) {}

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
    }
}
