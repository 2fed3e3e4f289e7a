//! A static peer is dialled as soon as the node starts, not at the peering's first timeout.

use shoal_core::keys::{Role, SecretKey};
use shoal_net::identity::Identity;
use shoal_net::node::{Config, Node};
use std::net::SocketAddr;
use std::time::Duration;

/// Long enough that a dial left for the first timeout never happens within the test.
const NEVER: Duration = Duration::from_secs(3600);
/// How long the test waits for the connection: generous, for a loaded CI machine.
const WAIT: Duration = Duration::from_secs(60);

fn identity(byte: u8) -> Identity {
    Identity::from_secret(&SecretKey::from_seed(Role::Node, [byte; 32])).expect("a node key")
}

fn start(byte: u8, peers: Vec<SocketAddr>) -> Node {
    let mut config = Config::new("127.0.0.1:0".parse().expect("an address"));
    config.peers = peers;
    config.exchange_interval = NEVER;
    Node::start(identity(byte), config).expect("the node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_peer_is_dialled_at_start() {
    let listener = start(1, Vec::new());
    let addr = listener.local_addr().expect("bound");
    let dialler = start(2, vec![addr]);
    let connected = tokio::time::timeout(WAIT, async {
        loop {
            if !dialler.status().connections.is_empty() && !listener.status().connections.is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        connected.is_ok(),
        "no connection {} s after start: the first dial of a static peer waited for a timeout",
        WAIT.as_secs()
    );
    dialler.shutdown().await;
    listener.shutdown().await;
}
