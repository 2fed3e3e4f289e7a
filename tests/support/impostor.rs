//! An admitted member that speaks the real control protocol, for tests that send a node what an
//! honest member never would (envelopes signed by the wrong key, or by the right one with
//! stale contents). Included with `#[path]` beside `support/mesh.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::harness::{Mesh, Proc, Work, loopback_listen};
use shoal_core::admission::Token;
use shoal_core::control::{Envelope, Message};
use shoal_net::identity::Identity;
use shoal_net::mesh::{Contact, Hello, control_addr};
use shoal_net::overlay;
use std::net::SocketAddr;
use std::sync::Arc;

/// The member: its runtime, overlay and address. Dropping it leaves the mesh.
pub struct Impostor {
    runtime: tokio::runtime::Runtime,
    overlay: overlay::Overlay,
    _events: tokio::sync::mpsc::Receiver<overlay::Event>,
    /// Who it is, as an origin or sender would be named.
    pub contact: Contact,
}

impl Impostor {
    /// Joins `mesh` the honest way, with the mesh's own token, from directory `name` of `work`.
    pub fn admit(work: &Work, mesh: &Mesh<'_>, name: &str) -> Impostor {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = work.file(name);
        std::fs::create_dir_all(&dir).unwrap();
        let token: Token = mesh.token.parse().unwrap();
        let (overlay, events, contact) = runtime.block_on(async {
            let identity = Identity::load_or_create(&dir).unwrap();
            let labels = Default::default();
            let (certificate, _) = shoal_net::mesh::redeem_token(&identity, &token, &labels)
                .await
                .unwrap();
            let listen = loopback_listen();
            let hello = Hello {
                addr: listen,
                certificate: certificate.encode(),
            };
            let (overlay, events) = overlay::start(
                &identity,
                overlay::Config::new(control_addr(listen)),
                postcard::to_stdvec(&hello).unwrap().into(),
                Arc::new(|_: &libp2p_identity::PeerId, _: &[u8]| true),
            )
            .await
            .unwrap();
            let contact = Contact {
                peer_id: identity.peer_id(),
                addr: listen,
            };
            (overlay, events, contact)
        });
        Impostor {
            runtime,
            overlay,
            _events: events,
            contact,
        }
    }

    /// Sends `envelope` to `target` as a broadcast it passes on.
    pub fn gossip(&self, target: &Proc, envelope: Envelope) {
        let peer: libp2p_identity::PeerId = target
            .peer_id
            .as_deref()
            .expect("the node answered on its API")
            .parse()
            .unwrap();
        let to: SocketAddr = control_addr(target.api.listen);
        let message: Message<Contact> = Message::Gossip {
            envelope: Arc::new(envelope),
        };
        let _guard = self.runtime.enter();
        self.overlay
            .send(peer, to, postcard::to_stdvec(&message).unwrap().into())
            .unwrap();
    }
}
