//! The local control API: HTTP/JSON on TCP at the same IP:PORT as the QUIC endpoint (UDP).
//!
//! `GET /v1/status` returns the [`NodeStatus`](crate::status::NodeStatus); `GET /v1/members`
//! a mesh member's views; on the coordinator, `GET /v1/fleet` the aggregated fleet summary and
//! `POST /v1/tokens` and `POST /v1/announce` its operator actions. The CLI's `shoal status`,
//! `members`, `token create` and `announce` read and call them. At the coordinator every request
//! but the probes' is signed by an operator key and checked by the [`OperatorGate`].
//!
//! For probes and scrapers every process also answers `GET /health` (200 while its loops run),
//! `GET /ready` (a mesh member: it has a neighbour; the coordinator and processes outside the
//! mesh: they serve), `GET /role` and `GET /metrics` ([`crate::metrics`]).

use crate::coordinator::{AnnounceRequest, Coordinator, TokenRequest};
use crate::mesh::Mesh;
use crate::node::Node;
use crate::operator_gate::OperatorGate;
use anyhow::{Context, Result};
use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
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

/// The mesh paths: a member's views (`GET`).
pub const MEMBERS_PATH: &str = "/v1/members";
/// The coordinator's aggregated fleet summary (`GET`).
pub const FLEET_PATH: &str = "/v1/fleet";
/// Create an onboarding token (`POST`, coordinator, scope admin).
pub const TOKENS_PATH: &str = "/v1/tokens";
/// Announce a release (`POST`, coordinator, scope release).
pub const ANNOUNCE_PATH: &str = "/v1/announce";

/// Liveness (`GET`): 200 while the process's loops answer.
pub const HEALTH_PATH: &str = "/health";
/// Readiness (`GET`): 200 once a mesh member has a neighbour; at once for the coordinator and
/// processes outside the mesh.
pub const READY_PATH: &str = "/ready";
/// The process's role (`GET`): `{"role": "node"}` or `{"role": "coordinator"}`.
pub const ROLE_PATH: &str = "/role";
/// Prometheus metrics (`GET`).
pub const METRICS_PATH: &str = "/metrics";

/// How long `/health` and `/ready` wait for the control loop's answer: a loop that cannot
/// answer in this long is not running as it should.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The control loop's view of the mesh, if the process is a member, within [`PROBE_WAIT`].
async fn members_now(mesh: &Mesh) -> Result<crate::mesh::MembersStatus, String> {
    match tokio::time::timeout(PROBE_WAIT, mesh.members()).await {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(format!("the control loop does not answer: {e:#}")),
        Err(_) => Err(format!(
            "the control loop did not answer within {PROBE_WAIT:?}"
        )),
    }
}

/// The probe and metrics routes.
fn probes(
    node: Node,
    mesh: Option<Mesh>,
    coordinator: Option<Arc<Coordinator>>,
    more: Option<crate::metrics::MoreSamples>,
    gate: Option<Arc<OperatorGate>>,
) -> Router {
    let role = if coordinator.is_some() {
        "coordinator"
    } else {
        "node"
    };
    let (mesh1, mesh2, mesh3) = (mesh.clone(), mesh.clone(), mesh);
    Router::new()
        .route(
            HEALTH_PATH,
            get(move || {
                let mesh = mesh1.clone();
                async move {
                    match mesh {
                        Some(mesh) => match members_now(&mesh).await {
                            Ok(_) => ok(&serde_json::json!({ "status": "ok" })),
                            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
                        },
                        None => ok(&serde_json::json!({ "status": "ok" })),
                    }
                }
            }),
        )
        .route(
            READY_PATH,
            get(move || {
                let mesh = mesh2.clone();
                async move {
                    let Some(mesh) = mesh else {
                        return ok(&serde_json::json!({ "ready": true }));
                    };
                    match members_now(&mesh).await {
                        Ok(_) if role == "coordinator" => ok(&serde_json::json!({ "ready": true })),
                        Ok(m) if !m.active.is_empty() => ok(&serde_json::json!({
                            "ready": true, "neighbours": m.active.len()
                        })),
                        Ok(_) => error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: no neighbour in the mesh yet".into(),
                        ),
                        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
                    }
                }
            }),
        )
        .route(
            ROLE_PATH,
            get(move || async move { ok(&serde_json::json!({ "role": role })) }),
        )
        .route(
            METRICS_PATH,
            get(move |headers: axum::http::HeaderMap| {
                let (node, mesh, coordinator) = (node.clone(), mesh3.clone(), coordinator.clone());
                let (more, gate) = (more.clone(), gate.clone());
                async move {
                    let mut more = match more {
                        Some(more) => tokio::time::timeout(PROBE_WAIT, more())
                            .await
                            .unwrap_or_default(),
                        None => Vec::new(),
                    };
                    if let Some(gate) = gate {
                        more.extend(gate.samples());
                    }
                    let members = match &mesh {
                        Some(m) => members_now(m).await.ok(),
                        None => None,
                    };
                    let fleet = match &coordinator {
                        Some(c) => tokio::time::timeout(PROBE_WAIT, c.mesh.fleet())
                            .await
                            .ok()
                            .and_then(Result::ok),
                        None => None,
                    };
                    let text = crate::metrics::render(
                        &node.status(),
                        members.as_ref(),
                        fleet.as_ref(),
                        &more,
                    );
                    let accept = headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok());
                    let (content_type, text) = crate::metrics::negotiate(accept, text);
                    (
                        StatusCode::OK,
                        [(axum::http::header::CONTENT_TYPE, content_type)],
                        text,
                    )
                }
            }),
        )
}

/// What the API serves besides the data plane's status.
#[derive(Clone, Default)]
pub struct Extras {
    /// The control plane, for `/v1/members` and `/v1/fleet`.
    pub mesh: Option<Mesh>,
    /// The coordinator's actions, for `/v1/tokens` and `/v1/announce`.
    pub coordinator: Option<Arc<Coordinator>>,
    /// More routes, served beside these (the daemon's rollout and service endpoints).
    pub routes: Option<Router>,
    /// More samples for `/metrics` (the daemon's agent or conductor).
    pub metrics: Option<crate::metrics::MoreSamples>,
    /// The check of operator requests, in front of every route (the coordinator's).
    pub gate: Option<Arc<OperatorGate>>,
}

type Answer = (StatusCode, Json<serde_json::Value>);

fn error(code: StatusCode, message: String) -> Answer {
    (code, Json(serde_json::json!({ "error": message })))
}

fn ok<T: serde::Serialize>(value: &T) -> Answer {
    match serde_json::to_value(value) {
        Ok(v) => (StatusCode::OK, Json(v)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Whether `peer` is this machine: loopback or the address the API listens on. Nodes take
/// their own drain and undrain from their own host only.
pub fn is_local(peer: SocketAddr, local: SocketAddr) -> bool {
    peer.ip().is_loopback() || peer.ip() == local.ip()
}

/// The coordinator, for an operator action; or the answer that says this process is not it.
fn operator(coordinator: &Option<Arc<Coordinator>>) -> Result<Arc<Coordinator>, Answer> {
    coordinator.clone().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "this process is not the coordinator".into(),
        )
    })
}

/// The answer to an operator action: its result, or what was wrong with the request.
fn outcome<T: serde::Serialize>(result: Result<T>) -> Answer {
    match result {
        Ok(answer) => ok(&answer),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

/// Serves the API on `listener` until `shutdown` turns true, on a thread of its own with a
/// single-threaded runtime, so that a probe, a scrape or a status call does not queue behind
/// the data plane's tasks when they take every core.
///
/// # Errors
///
/// If the thread cannot be started or the listener cannot be moved to it.
pub fn spawn(
    listener: tokio::net::TcpListener,
    node: Node,
    extras: Extras,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("shoal-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, node, extras, shutdown).await,
                    Err(e) => tracing::error!("control API cannot listen: {e}"),
                }
            });
        })
}

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    extras: Extras,
    mut shutdown: watch::Receiver<bool>,
) {
    let probes = probes(
        node.clone(),
        extras.mesh.clone(),
        extras.coordinator.clone(),
        extras.metrics.clone(),
        extras.gate.clone(),
    );
    let mesh = extras.mesh.clone();
    let coordinator = extras.coordinator.clone();
    let coordinator2 = extras.coordinator.clone();
    let coordinator3 = extras.coordinator.clone();
    let app = Router::new()
        .route(
            STATUS_PATH,
            get(move || {
                let node = node.clone();
                async move { Json(node.status()) }
            }),
        )
        .route(
            MEMBERS_PATH,
            get(move || {
                let mesh = mesh.clone();
                async move {
                    match mesh {
                        None => error(StatusCode::NOT_FOUND, "this process is not a mesh member (start it with --join or as the coordinator)".into()),
                        Some(mesh) => match mesh.members().await {
                            Ok(m) => ok(&m),
                            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
                        },
                    }
                }
            }),
        )
        .route(
            FLEET_PATH,
            get(move || {
                let coordinator = coordinator.clone();
                async move {
                    match coordinator {
                        None => error(StatusCode::NOT_FOUND, "this process is not the coordinator".into()),
                        Some(c) => match c.mesh.fleet().await {
                            Ok(f) => ok(&f),
                            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
                        },
                    }
                }
            }),
        )
        .route(
            TOKENS_PATH,
            post(
                move |Json(request): Json<TokenRequest>| {
                    let coordinator = operator(&coordinator2);
                    async move {
                        match coordinator {
                            Ok(c) => outcome(c.create_token(&request)),
                            Err(refusal) => refusal,
                        }
                    }
                },
            ),
        )
        .route(
            ANNOUNCE_PATH,
            post(
                move |Json(request): Json<AnnounceRequest>| {
                    let coordinator = operator(&coordinator3);
                    async move {
                        match coordinator {
                            Ok(c) => outcome(c.announce(request).await),
                            Err(refusal) => refusal,
                        }
                    }
                },
            ),
        );
    let app = app.merge(probes);
    let app = match extras.routes {
        Some(routes) => app.merge(routes),
        None => app,
    };
    let app = match extras.gate {
        Some(gate) => app.layer(axum::middleware::from_fn_with_state(
            gate,
            crate::operator_gate::check,
        )),
        None => app,
    };
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
    .await;
    if let Err(e) = result {
        tracing::error!("control API stopped: {e}");
    }
}
