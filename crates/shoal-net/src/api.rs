//! The local control API: HTTP/JSON on TCP at the same IP:PORT as the QUIC endpoint (UDP).
//!
//! `GET /v1/status` returns the [`NodeStatus`](crate::status::NodeStatus). The CLI's
//! `shoal status --node ADDR` reads it; so can `curl`.

use crate::node::Node;
use anyhow::{Context, Result};
use axum::Json;
use axum::Router;
use axum::routing::get;
use std::net::SocketAddr;
use tokio::sync::watch;

/// The path of the status document.
pub const STATUS_PATH: &str = "/v1/status";

/// Binds the control API on TCP `addr` (the node's own address).
///
/// # Errors
///
/// If the TCP port is taken.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (TCP) for the control API: is another process using it?")
    })
}

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new().route(
        STATUS_PATH,
        get(move || {
            let node = node.clone();
            async move { Json(node.status()) }
        }),
    );
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!("control API stopped: {e}");
    }
}
