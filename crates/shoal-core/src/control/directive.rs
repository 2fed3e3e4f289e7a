//! What the source broadcasts: the bodies of control-plane envelopes.

use crate::query::Query;
use crate::revocation::Revocations;
use crate::rollout;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The body of a broadcast envelope, postcard-encoded. `O` names an origin that serves a
/// release: the daemon's peer id and address, or a simulator's node id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Directive<O> {
    /// "The source is alive": keeps the broadcast tree fresh and lets cut-off nodes notice.
    Heartbeat {
        /// The nodes the source counts, which paces nodes' seed probes
        /// ([`Node::set_fleet_size`](super::Node::set_fleet_size)).
        fleet: u32,
    },
    /// A new release: prefetch it.
    Announce {
        /// The signed manifest, as `shoal release create` wrote it (checked against the trust
        /// document's publishers on arrival).
        manifest: Vec<u8>,
        /// The origin that serves it.
        origin: O,
    },
    /// A rollout directive (a whole snapshot of the rollout; see [`rollout::directive`]),
    /// shared by every rollout agent that holds it.
    Rollout(Arc<rollout::Directive>),
    /// The coordinator's whole list of revoked onboarding tokens: refuse peers whose certificate
    /// was issued against one. A newer list (by its generation) replaces an older one.
    Revoked(Arc<Revocations>),
    /// A fleet query: answer it in health reports until it expires.
    Query(Arc<Query>),
}

impl<O: Serialize + DeserializeOwned> Directive<O> {
    /// Encodes for an envelope body.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes an envelope body; `None` if it is not a directive this version knows, or a
    /// rollout directive over the size limits.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let directive: Directive<O> = postcard::from_bytes(body).ok()?;
        match &directive {
            Directive::Rollout(d) if !d.is_well_formed() => None,
            Directive::Revoked(r) if !r.is_well_formed() => None,
            Directive::Query(q) if !q.is_well_formed() => None,
            _ => Some(directive),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_does_not_know() {
        let heartbeat: Directive<u32> = Directive::Heartbeat { fleet: 7 };
        assert_eq!(Directive::decode(&heartbeat.encode()), Some(heartbeat));
        let announce = Directive::Announce {
            manifest: vec![1, 2, 3],
            origin: 9u32,
        };
        assert_eq!(Directive::decode(&announce.encode()), Some(announce));
        assert_eq!(Directive::<u32>::decode(&[200, 1, 2]), None);
    }
}
