//! What the coordinator broadcasts (the core's directive with the daemon's origins), and the
//! hello that opens every control stream.

use super::contact::Contact;
use serde::{Deserialize, Serialize};

/// The body of a broadcast envelope: the core's [`Directive`](shoal_core::control::Directive)
/// with origins named by peer id and address.
pub type Directive = shoal_core::control::Directive<Contact>;

/// The first frame on every control stream: who the sender is and its admission certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's `--listen` address.
    pub addr: std::net::SocketAddr,
    /// Its encoded [`Certificate`](shoal_core::admission::Certificate).
    pub certificate: Vec<u8>,
}
