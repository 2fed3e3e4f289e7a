//! What the coordinator broadcasts: the bodies of control-plane envelopes.

use super::contact::Contact;
use serde::{Deserialize, Serialize};

/// The body of a broadcast envelope, postcard-encoded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Directive {
    /// "The source is alive": keeps the broadcast tree fresh and lets cut-off nodes notice.
    Heartbeat,
    /// A new release: prefetch it.
    Announce {
        /// The signed manifest, as `shoal release create` wrote it (checked against the trust
        /// document's publishers on arrival).
        manifest: Vec<u8>,
        /// The origin that serves it.
        origin: Contact,
    },
    /// A rollout directive (a whole snapshot of the rollout; see
    /// [`shoal_core::rollout::directive`]).
    Rollout(Box<shoal_core::rollout::Directive>),
}

impl Directive {
    /// Encodes for an envelope body.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes an envelope body; `None` if it is not a directive this version knows.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let directive: Directive = postcard::from_bytes(body).ok()?;
        match &directive {
            Directive::Rollout(d) if !d.is_well_formed() => None,
            _ => Some(directive),
        }
    }
}

/// The first frame on every control stream: who the sender is and its admission certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's `--listen` address.
    pub addr: std::net::SocketAddr,
    /// Its encoded [`Certificate`](shoal_core::admission::Certificate).
    pub certificate: Vec<u8>,
}
