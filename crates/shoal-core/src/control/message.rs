//! What control-plane nodes say to each other, and the signed envelopes the source broadcasts.

use super::health::Summary;
use super::place::{Entry, Place};
use crate::keys::{PublicKey, SecretKey, Signature};
use crate::trust::Trust;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::sync::{Arc, OnceLock};

/// Most entries a shuffle or shuffle reply may carry; longer ones are refused.
pub const MAX_SHUFFLE_ENTRIES: usize = 32;

/// Most envelopes a sync reply may carry; longer ones are refused.
pub const MAX_SYNC_ENVELOPES: usize = 16;

/// Signature domain of broadcast envelopes.
const ENVELOPE_DOMAIN: &[u8] = b"shoal/broadcast-envelope/v1";

/// How urgently a node asks a peer to become its neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// The asker has some neighbours but fewer than it wants: accept, displacing a random
    /// neighbour only if already one over capacity.
    Low,
    /// The asker has no neighbour at all: accept, displacing a random neighbour if at capacity.
    High,
}

/// One control-plane message between two nodes. The sender is known to the receiver from the
/// connection, so it is not repeated here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message<P> {
    /// "Take me in": sent by a new or cut-off node to a seed.
    Join {
        /// The joiner's place.
        place: Place,
    },
    /// A random walk spreading a newcomer through the overlay.
    ForwardJoin {
        /// The newcomer.
        joiner: Entry<P>,
        /// Hops left.
        ttl: u8,
    },
    /// "Become my neighbour."
    Neighbour {
        /// The asker's place.
        place: Place,
        /// How much the asker needs it.
        priority: Priority,
    },
    /// The answer to [`Message::Neighbour`] or [`Message::Join`]; an accepted reply also tells a
    /// newcomer that the sender has taken it into its active view.
    NeighbourReply {
        /// The replier's place.
        place: Place,
        /// Whether the replier now has the receiver in its active view.
        accepted: bool,
    },
    /// The sender has dropped the receiver from its active view.
    Disconnect {
        /// The sender is alive and keeps the receiver as a candidate (it was only displaced).
        alive: bool,
    },
    /// A random walk that exchanges view samples with whoever it ends at.
    Shuffle {
        /// The node that started the walk and awaits the reply.
        origin: Entry<P>,
        /// Hops left.
        ttl: u8,
        /// A sample of the origin's views.
        entries: Vec<Entry<P>>,
    },
    /// The end of a shuffle walk answers with a sample of its passive view.
    ShuffleReply {
        /// The sample.
        entries: Vec<Entry<P>>,
    },
    /// "Are you there?" Carries the sender's latest broadcast sequence number.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
        /// The sender's latest delivered sequence number.
        latest: u64,
    },
    /// "I am here."
    Pong {
        /// The ping's nonce.
        nonce: u64,
        /// The sender's latest delivered sequence number.
        latest: u64,
        /// Whether the receiver is in the sender's active view. A neighbour told `false` has a
        /// one-sided link (a reply and a disconnect crossed) and drops it.
        neighbour: bool,
    },
    /// "Please ping `target` for me": an indirect probe.
    ProbeRequest {
        /// The neighbour that did not answer the asker.
        target: P,
        /// Returned in the reply.
        nonce: u64,
    },
    /// `target` answered an indirect probe.
    ProbeReply {
        /// The probed node.
        target: P,
        /// The request's nonce.
        nonce: u64,
    },
    /// A broadcast envelope, pushed eagerly.
    Gossip {
        /// The envelope.
        envelope: Arc<Envelope>,
    },
    /// "I have envelope `seq`", sent lazily instead of the envelope itself.
    IHave {
        /// Its sequence number.
        seq: u64,
    },
    /// "Send me envelope `seq`, and push to me eagerly from now on."
    Graft {
        /// The missing sequence number.
        seq: u64,
    },
    /// "I already had that; announce lazily from now on."
    Prune,
    /// "Send me the envelopes the source asked to keep": sent by a new or rejoined node.
    Sync,
    /// The kept envelopes.
    SyncReply {
        /// At most [`MAX_SYNC_ENVELOPES`].
        envelopes: Vec<Arc<Envelope>>,
    },
    /// A child's summary of its subtree, for its parent in `round`.
    Health {
        /// Rises with every report of the same child; older reports are ignored.
        epoch: u64,
        /// The round it counts in: the sequence number of the broadcast the parent delivered
        /// to this child first.
        round: u64,
        /// The subtree's counts.
        summary: Summary,
    },
}

impl<P> Message<P> {
    /// A short name for logs and per-kind counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Join { .. } => "join",
            Message::ForwardJoin { .. } => "forward_join",
            Message::Neighbour { .. } => "neighbour",
            Message::NeighbourReply { .. } => "neighbour_reply",
            Message::Disconnect { .. } => "disconnect",
            Message::Shuffle { .. } => "shuffle",
            Message::ShuffleReply { .. } => "shuffle_reply",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::ProbeRequest { .. } => "probe_request",
            Message::ProbeReply { .. } => "probe_reply",
            Message::Gossip { .. } => "gossip",
            Message::IHave { .. } => "ihave",
            Message::Graft { .. } => "graft",
            Message::Prune => "prune",
            Message::Sync => "sync",
            Message::SyncReply { .. } => "sync_reply",
            Message::Health { .. } => "health",
        }
    }

    /// The envelopes this message carries; the driver verifies each before handing the message
    /// to the node.
    pub fn envelopes(&self) -> &[Arc<Envelope>] {
        match self {
            Message::Gossip { envelope } => std::slice::from_ref(envelope),
            Message::SyncReply { envelopes } => envelopes,
            _ => &[],
        }
    }
}

/// A message from the broadcast source: sequence-numbered and signed by a coordinator key.
///
/// Sequence numbers are dense (1, 2, 3, ...), so a node can tell which ones it missed. The body
/// is opaque to the control plane; the daemon puts a postcard-encoded directive in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Position in the source's sequence, from 1.
    pub seq: u64,
    /// Keep this envelope for nodes that join later (a release announcement), rather than only
    /// for the recent-message cache (a heartbeat).
    pub keep: bool,
    /// The directive.
    pub body: Bytes,
    /// The coordinator key that signed it.
    pub issuer: PublicKey,
    /// Signature over `seq`, `keep` and `body`.
    pub signature: Signature,
    /// The body as first decoded: see [`Envelope::decoded`].
    #[serde(skip)]
    decoded: Decoded,
}

/// An envelope's body as one reader decoded it, kept with the body it came from.
///
/// Not part of the envelope's value: it is never sent, and two envelopes are equal whatever
/// either has decoded.
#[derive(Clone, Default)]
struct Decoded(OnceLock<(Bytes, Arc<dyn Any + Send + Sync>)>);

impl PartialEq for Decoded {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Decoded {}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "decoded"
        } else {
            "not decoded"
        })
    }
}

#[derive(Serialize)]
struct Signed<'a> {
    seq: u64,
    keep: bool,
    body: &'a [u8],
}

impl Envelope {
    /// Signs a new envelope with a coordinator key.
    pub fn sign(key: &SecretKey, seq: u64, keep: bool, body: Bytes) -> Self {
        let signature = key.sign(ENVELOPE_DOMAIN, &signed_bytes(seq, keep, &body));
        Envelope {
            seq,
            keep,
            body,
            issuer: key.public(),
            signature,
            decoded: Decoded::default(),
        }
    }

    /// An envelope with an empty signature, for simulations that do not check signatures.
    pub fn unsigned(seq: u64, keep: bool, body: Bytes) -> Self {
        Envelope {
            seq,
            keep,
            body,
            issuer: PublicKey([0; 32]),
            signature: Signature([0; 64]),
            decoded: Decoded::default(),
        }
    }

    /// The body decoded by `decode`, which runs once per envelope: every holder of this
    /// envelope, and of its clones, gets the same value. A node of a simulated fleet receives
    /// the very envelope the others do, so a directive is decoded, and held, once for the whole
    /// fleet instead of once a node. If the body was changed since the first decoding, or that
    /// decoding was to another type, `decode` runs again and its value is not kept. Every
    /// caller that decodes to one type `T` must decode the body the same way.
    pub fn decoded<T: Any + Send + Sync>(&self, decode: impl FnOnce(&[u8]) -> T) -> Arc<T> {
        if let Some((body, value)) = self.decoded.0.get() {
            let same_body = body.as_ptr() == self.body.as_ptr() && body.len() == self.body.len();
            if let Ok(value) = Arc::clone(value).downcast::<T>()
                && same_body
            {
                return value;
            }
            return Arc::new(decode(&self.body));
        }
        let value = Arc::new(decode(&self.body));
        // Another thread may have decoded it meanwhile: both values are the same.
        let _ = self
            .decoded
            .0
            .set((self.body.clone(), Arc::clone(&value) as _));
        value
    }

    /// Whether a coordinator key named in `trust` signed this envelope as it is.
    pub fn verify(&self, trust: &Trust) -> bool {
        trust.is_coordinator(&self.issuer)
            && self.issuer.verify(
                ENVELOPE_DOMAIN,
                &signed_bytes(self.seq, self.keep, &self.body),
                &self.signature,
            )
    }
}

fn signed_bytes(seq: u64, keep: bool, body: &[u8]) -> Vec<u8> {
    // Serialising a struct of plain fields into a Vec cannot fail.
    postcard::to_stdvec(&Signed { seq, keep, body }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Role;

    fn key(role: Role, n: u8) -> SecretKey {
        SecretKey::from_seed(role, [n; 32])
    }

    #[test]
    fn only_coordinator_signed_untouched_envelopes_verify() {
        let coordinator = key(Role::Coordinator, 1);
        let stranger = key(Role::Coordinator, 2);
        let trust = Trust::sign(
            &key(Role::Root, 3),
            vec![key(Role::Publisher, 4).public()],
            vec![coordinator.public()],
            1,
        )
        .unwrap();
        let good = Envelope::sign(&coordinator, 7, true, Bytes::from_static(b"announce"));
        assert!(good.verify(&trust));
        let forged = Envelope::sign(&stranger, 7, true, Bytes::from_static(b"announce"));
        assert!(
            !forged.verify(&trust),
            "a key the trust document does not name"
        );
        let mut replayed = good.clone();
        replayed.seq = 8;
        assert!(!replayed.verify(&trust), "the sequence number is signed");
        let mut changed = good.clone();
        changed.body = Bytes::from_static(b"announcf");
        assert!(!changed.verify(&trust), "the body is signed");
        let mut unkept = good;
        unkept.keep = false;
        assert!(!unkept.verify(&trust), "the keep flag is signed");
    }

    #[test]
    fn a_body_is_decoded_once_for_every_holder_of_the_envelope() {
        let envelope = Arc::new(Envelope::unsigned(1, true, Bytes::from_static(b"abc")));
        let runs = std::cell::Cell::new(0);
        let decode = |body: &[u8]| {
            runs.set(runs.get() + 1);
            body.len()
        };
        let first = envelope.decoded(decode);
        let shared = Arc::clone(&envelope);
        let cloned = (*envelope).clone();
        assert!(Arc::ptr_eq(&first, &shared.decoded(decode)));
        assert!(Arc::ptr_eq(&first, &cloned.decoded(decode)));
        assert_eq!(
            (*first, runs.get()),
            (3, 1),
            "decoded once, by the first reader"
        );

        let other_type = envelope.decoded(|body| body.to_vec());
        assert_eq!(
            *other_type,
            b"abc".to_vec(),
            "another type is decoded afresh"
        );

        let mut changed = cloned;
        changed.body = Bytes::from_static(b"abcdef");
        assert_eq!(
            *changed.decoded(decode),
            6,
            "a changed body is decoded again"
        );
        assert_eq!(runs.get(), 2);
        assert_eq!(
            changed,
            Envelope::unsigned(1, true, Bytes::from_static(b"abcdef"))
        );
    }
}
