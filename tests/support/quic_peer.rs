//! A QUIC endpoint with a fresh node identity on a free loopback port, on a runtime of its own:
//! the base of the test peers that speak Shoal's data plane (bad_peer.rs, flooder.rs).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use shoal_core::keys::{Role, SecretKey};
use shoal_net::identity::Identity;
use shoal_net::transport::{self, Congestion};

/// Its runtime (one worker), its identity and its endpoint.
pub fn start(congestion: Congestion) -> (tokio::runtime::Runtime, Identity, quinn::Endpoint) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let identity =
        Identity::from_secret(&SecretKey::from_seed(Role::Node, rand::random())).unwrap();
    let endpoint = runtime.block_on(async {
        transport::bind(&identity, "127.0.0.1:0".parse().unwrap(), congestion).unwrap()
    });
    (runtime, identity, endpoint)
}
