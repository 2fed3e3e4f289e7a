//! HTTP endpoints of the rollout machinery, merged into the process's API.
//!
//! On a node: `GET /v1/services` (the agent's services and refusal counts), `POST /v1/drain`
//! and `POST /v1/undrain`. On the coordinator: `POST /v1/publish`, `POST /v1/rollouts` (start,
//! or a dry run), `GET /v1/rollouts[/ID]`, `POST /v1/rollouts/ID/VERB` and `GET /v1/audit`.
//! A node takes drain and undrain from its own host only; the coordinator's requests are checked
//! by its operator gate ([`shoal_net::operator_gate`]) before they reach these routes, and
//! [`audit_hook`] writes who asked for what to the audit log.

use crate::agent::AgentHandle;
use crate::conductor::{ConductorHandle, Verb, wall_now};
use crate::db::{Db, Published};
use anyhow::{Context, Result, bail};
use axum::extract::{ConnectInfo, Path};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_core::manifest::SignedManifest;
use shoal_core::rollout::Plan;
use shoal_core::rollout::conductor::Status;
use shoal_net::api::is_local;
use shoal_net::coordinator::{AnnounceRequest, Coordinator};
use shoal_net::operator_gate::{AuditHook, OperatorAction};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The node's services (`GET`).
pub const SERVICES_PATH: &str = "/v1/services";
/// Drain this node (`POST`).
pub const DRAIN_PATH: &str = "/v1/drain";
/// Undrain it (`POST`).
pub const UNDRAIN_PATH: &str = "/v1/undrain";
/// Publish a release: announce it and record it (`POST`, coordinator).
pub const PUBLISH_PATH: &str = "/v1/publish";
/// Rollouts (`GET` every one, `POST` to start one).
pub const ROLLOUTS_PATH: &str = "/v1/rollouts";
/// The audit log (`GET`).
pub const AUDIT_PATH: &str = "/v1/audit";

/// How long `POST /v1/rollouts` waits for the census before it answers.
const CENSUS_WAIT: Duration = Duration::from_secs(90);

/// The body of `POST /v1/rollouts`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartRequest {
    /// The plan file's text.
    pub plan: String,
    /// The service.
    pub service: String,
    /// The published version to roll out.
    pub version: String,
    /// Count only (`shoal rollout plan`).
    pub dry_run: bool,
}

/// The answer to `POST /v1/publish`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishAnswer {
    /// The release's root.
    pub root: String,
    /// The service.
    pub service: String,
    /// The version.
    pub version: String,
    /// Its release counter.
    pub counter: u64,
    /// The announcement's broadcast sequence.
    pub seq: u64,
}

/// An answer of the daemon's routes: a status and a JSON body.
pub(crate) type Answer = (StatusCode, Json<serde_json::Value>);

/// `{"error": message}` with `code`.
pub(crate) fn error(code: StatusCode, message: String) -> Answer {
    (code, Json(serde_json::json!({ "error": message })))
}

fn ok<T: Serialize>(value: &T) -> Answer {
    match serde_json::to_value(value) {
        Ok(v) => (StatusCode::OK, Json(v)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// 200 with the value, or 400 with the error's whole chain.
pub(crate) fn outcome<T: Serialize>(result: Result<T>) -> Answer {
    match result {
        Ok(v) => ok(&v),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

fn local_only(peer: SocketAddr, local: SocketAddr, what: &str) -> Result<(), Answer> {
    if is_local(peer, local) {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            format!("{what} from this machine only, not from {peer}"),
        ))
    }
}

/// A node's routes.
pub fn node(agent: AgentHandle, local: SocketAddr) -> Router {
    let a1 = agent.clone();
    let a2 = agent.clone();
    Router::new()
        .route(
            SERVICES_PATH,
            get(move || {
                let agent = agent.clone();
                async move { Json(agent.status()) }
            }),
        )
        .route(
            DRAIN_PATH,
            post(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                let agent = a1.clone();
                async move {
                    if let Err(refusal) = local_only(peer, local, "a node is drained") {
                        return refusal;
                    }
                    outcome(agent.set_drained(true).await.map(|()| agent.status()))
                }
            }),
        )
        .route(
            UNDRAIN_PATH,
            post(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                let agent = a2.clone();
                async move {
                    if let Err(refusal) = local_only(peer, local, "a node is undrained") {
                        return refusal;
                    }
                    outcome(agent.set_drained(false).await.map(|()| agent.status()))
                }
            }),
        )
}

/// Writes operator requests to the coordinator's audit log: the key, the request and its
/// answer, and the rollout it concerns.
pub fn audit_hook(db: Arc<Db>) -> AuditHook {
    Arc::new(move |action: OperatorAction| {
        let rollout = action
            .request
            .split_once(' ')
            .and_then(|(_, path)| path.strip_prefix("/v1/rollouts/"))
            .and_then(|rest| rest.split('/').next())
            .and_then(|id| id.parse().ok());
        let event = match &action.refused {
            Some(reason) => format!("refused {} ({reason}): {}", action.request, action.status),
            None => format!("{}: {}", action.request, action.status),
        };
        let at_unix_ms = u64::try_from(wall_now().as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = db.record_action(action.actor, rollout, event, at_unix_ms) {
            tracing::error!("cannot write an operator action to the audit log: {e:#}");
        }
    })
}

/// The coordinator's routes. Published manifests are kept in `published_dir`.
pub fn coordinator(
    conductor: ConductorHandle,
    coordinator: Arc<Coordinator>,
    published_dir: PathBuf,
) -> Router {
    let (c1, c2, c3, c4, c5) = (
        conductor.clone(),
        conductor.clone(),
        conductor.clone(),
        conductor.clone(),
        conductor.clone(),
    );
    Router::new()
        .route(
            PUBLISH_PATH,
            post(move |Json(request): Json<AnnounceRequest>| {
                let conductor = conductor.clone();
                let coordinator = coordinator.clone();
                let dir = published_dir.clone();
                async move { outcome(publish(&conductor, &coordinator, &dir, request).await) }
            }),
        )
        .route(
            ROLLOUTS_PATH,
            get(move || {
                let conductor = c1.clone();
                async move { outcome(conductor.status(None).await) }
            })
            .post(move |Json(request): Json<StartRequest>| {
                let conductor = c2.clone();
                async move { outcome(start(&conductor, request).await) }
            }),
        )
        .route(
            "/v1/rollouts/{id}",
            get(move |Path(id): Path<u64>| {
                let conductor = c3.clone();
                async move {
                    match conductor.status(Some(id)).await {
                        Ok(mut s) if !s.is_empty() => ok(&s.remove(0)),
                        Ok(_) => error(StatusCode::NOT_FOUND, format!("no rollout {id}")),
                        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
                    }
                }
            }),
        )
        .route(
            "/v1/rollouts/{id}/{verb}",
            post(move |Path((id, verb)): Path<(u64, String)>| {
                let conductor = c4.clone();
                async move {
                    let verb = match verb.as_str() {
                        "pause" => Verb::Pause,
                        "resume" => Verb::Resume,
                        "promote" => Verb::Promote,
                        "rollback" => Verb::Rollback,
                        "abort" => Verb::Abort { revert: false },
                        "abort-revert" => Verb::Abort { revert: true },
                        other => {
                            return error(
                                StatusCode::NOT_FOUND,
                                format!("no rollout command {other:?}"),
                            );
                        }
                    };
                    let result = conductor.verb(id, verb).await;
                    match result {
                        Ok(()) => outcome(conductor.status(Some(id)).await),
                        Err(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
                    }
                }
            }),
        )
        .route(
            AUDIT_PATH,
            get(move || {
                let conductor = c5.clone();
                async move { outcome(conductor.audit()) }
            }),
        )
}

/// Announces the release (the coordinator verifies both files and serves the payload), keeps
/// a copy of its manifest and records it.
async fn publish(
    conductor: &ConductorHandle,
    coordinator: &Coordinator,
    dir: &std::path::Path,
    request: AnnounceRequest,
) -> Result<PublishAnswer> {
    let manifest_bytes = tokio::fs::read(&request.manifest)
        .await
        .with_context(|| format!("cannot read manifest {}", request.manifest.display()))?;
    let file = std::path::absolute(&request.file)
        .with_context(|| format!("cannot resolve {}", request.file.display()))?;
    let answer = coordinator
        .announce(AnnounceRequest {
            manifest: request.manifest.clone(),
            file: file.clone(),
        })
        .await?;
    // The announce above verified the manifest; decode it again for its fields.
    let manifest = SignedManifest::decode(&manifest_bytes)
        .and_then(|m| m.verify(&coordinator.trust))
        .context("the manifest changed while it was announced")?;
    let m = manifest.manifest();
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let kept = dir.join(format!("{}.manifest", answer.root.to_hex()));
    tokio::fs::write(&kept, &manifest_bytes)
        .await
        .with_context(|| format!("cannot keep the manifest in {}", kept.display()))?;
    let release = shoal_core::rollout::Release {
        version: m.version.clone(),
        root: answer.root,
        counter: m.release_counter,
    };
    let published = Published {
        service: m.service.clone(),
        release: release.clone(),
        manifest: kept,
        file,
        announced_unix: wall_now().as_secs(),
    };
    conductor.published(&published)?;
    Ok(PublishAnswer {
        root: answer.root.to_hex(),
        service: published.service,
        version: release.version,
        counter: release.counter,
        seq: answer.seq,
    })
}

/// Starts a rollout or a dry run and waits for its census, so that a plan the fleet cannot
/// carry out is refused here with the census counts.
pub(crate) async fn start(conductor: &ConductorHandle, request: StartRequest) -> Result<Status> {
    let plan = Plan::from_toml(&request.plan).context("the plan")?;
    let id = conductor
        .start(plan, request.service, request.version, request.dry_run)
        .await?;
    let deadline = Instant::now() + CENSUS_WAIT;
    loop {
        let status = conductor
            .status(Some(id))
            .await?
            .pop()
            .context("the rollout vanished")?;
        let counted = !status.waves.is_empty() || status.state != "running";
        if counted {
            if status.state == "aborted" {
                bail!(
                    "rollout {id} refused: {}",
                    status.reason.as_deref().unwrap_or("aborted")
                );
            }
            if request.dry_run && status.reason.as_deref().is_some_and(|r| r != "census done") {
                bail!("plan refused: {}", status.reason.as_deref().unwrap_or(""));
            }
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!(
                "rollout {id} started, but its census took more than {CENSUS_WAIT:?}: see shoal rollout status {id}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
