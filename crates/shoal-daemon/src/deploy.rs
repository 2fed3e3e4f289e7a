//! The shapes of the simple deployment APIs operators already know, on top of Shoal's own:
//! `POST /v1/deploy` (a published release to the machines with some labels, in batches),
//! `GET /v1/deploy/status`, `POST /v1/deploy/progress` (promote the current batch),
//! `POST /v1/deploy/rollback`, and `GET /v1/inventory/instances` (a fleet query).
//!
//! A deployment is a rollout whose plan is built from the request: stages `batch-1`,
//! `batch-2`, ... that bring `batch_size`, then twice that, ... of the selected machines onto the
//! release (at most [`MAX_BATCHES`] of them), then one stage for the rest; each stops and rolls
//! back at `failure_threshold` failed machines. A batch passes on to the next by itself once its
//! machines are healthy (the reconciliation of those APIs); `progress` passes it at once. Only
//! one deployment runs at a time.

use crate::conductor::{ConductorHandle, Verb};
use crate::query::{self, QueryParams};
use crate::routes::{StartRequest, error, outcome, start};
use anyhow::{Context, Result, bail};
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_core::rollout::conductor::Status;
use shoal_net::mesh::Mesh;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Start a deployment (`POST`).
pub const DEPLOY_PATH: &str = "/v1/deploy";
/// The latest deployment (`GET`).
pub const DEPLOY_STATUS_PATH: &str = "/v1/deploy/status";
/// Pass the current batch now (`POST`).
pub const DEPLOY_PROGRESS_PATH: &str = "/v1/deploy/progress";
/// Send the deployment's machines back (`POST`).
pub const DEPLOY_ROLLBACK_PATH: &str = "/v1/deploy/rollback";
/// The machines with some labels (`GET`).
pub const INVENTORY_PATH: &str = "/v1/inventory/instances";

/// Batches of `batch_size` before the last stage takes the rest.
pub const MAX_BATCHES: u32 = 15;
/// The longest a batch may take to become healthy unless told otherwise.
const DEFAULT_DEADLINE_SECS: u64 = 600;

/// The body of `POST /v1/deploy`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The service.
    pub service: String,
    /// The published version to deploy.
    pub version: String,
    /// Labels a machine must carry to be deployed to; none: every machine.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Machines per batch.
    pub batch_size: u32,
    /// Failed machines in a batch that stop the deployment and roll it back.
    pub failure_threshold: u32,
    /// How long a batch may take to become healthy, in seconds.
    #[serde(default)]
    pub deadline_secs: Option<u64>,
}

/// The plan text a deployment request stands for.
///
/// # Errors
///
/// A batch size or failure threshold of zero.
pub fn plan(request: &DeployRequest) -> Result<String> {
    if request.batch_size == 0 {
        bail!("batch_size must be at least 1");
    }
    if request.failure_threshold == 0 {
        bail!("failure_threshold must be at least 1 (the failed machines that stop a batch)");
    }
    let deadline = request.deadline_secs.unwrap_or(DEFAULT_DEADLINE_SECS);
    let mut select = String::from("{ ");
    for (i, (k, v)) in request.labels.iter().enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        // TOML basic strings: serde_json's quoting is a subset that TOML reads the same.
        let _ = write!(
            select,
            "{sep}{} = {}",
            serde_json::to_string(k)?,
            serde_json::to_string(v)?
        );
    }
    select.push_str(" }");
    let mut text =
        String::from("one_region_at_a_time = false\nfault_domain_by_fault_domain = false\n");
    let stage = |text: &mut String, name: &str, size: &str| {
        let _ = write!(
            text,
            "\n[[stage]]\nname = \"{name}\"\nselect = {select}\nsize = \"{size}\"\n\
             success = \"100%\"\nfailure_threshold = \"{}\"\ndeadline_secs = {deadline}\n\
             on_failure = \"rollback\"\n",
            request.failure_threshold
        );
    };
    for batch in 1..=MAX_BATCHES {
        let size = u64::from(request.batch_size) * u64::from(batch);
        if size > u64::from(shoal_core::rollout::plan::MAX_EXACT_COUNT) {
            break;
        }
        stage(&mut text, &format!("batch-{batch}"), &size.to_string());
    }
    stage(&mut text, "rest", "100%");
    Ok(text)
}

/// The newest rollout, if any.
async fn latest(conductor: &ConductorHandle) -> Result<Option<Status>> {
    Ok(conductor
        .status(None)
        .await?
        .into_iter()
        .max_by_key(|s| s.id))
}

async fn deploy(conductor: &ConductorHandle, request: DeployRequest) -> Result<Status> {
    let plan = plan(&request)?;
    if let Some(running) = latest(conductor)
        .await?
        .filter(|s| s.state == "running" || s.state == "paused")
    {
        bail!(
            "deployment {} of {} {} is still {}: one deployment runs at a time",
            running.id,
            running.service,
            running.version,
            running.state
        );
    }
    start(
        conductor,
        StartRequest {
            plan,
            service: request.service,
            version: request.version,
            dry_run: false,
        },
    )
    .await
}

async fn steer(conductor: &ConductorHandle, verb: Verb) -> Result<Status> {
    let Some(current) = latest(conductor).await? else {
        bail!("there is no deployment");
    };
    conductor.verb(current.id, verb).await?;
    conductor
        .status(Some(current.id))
        .await?
        .pop()
        .context("the deployment vanished")
}

/// The query string of `GET /v1/inventory/instances`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryParams {
    labels: Option<String>,
    limit: Option<u16>,
}

/// The answer to `GET /v1/inventory/instances`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Inventory {
    /// Machines with the labels.
    pub count: u32,
    /// Whether every machine answered in time.
    pub complete: bool,
    /// Some of them, at most `limit`.
    pub instances: Vec<query::SampleNode>,
}

async fn inventory(mesh: &Mesh, raw: Option<&str>) -> Result<Inventory> {
    let params: InventoryParams = serde_urlencoded::from_str(raw.unwrap_or(""))
        .context("the query string (known keys: labels, limit)")?;
    let query = serde_urlencoded::to_string(QueryParams {
        select: params.labels,
        limit: params.limit,
        ..QueryParams::default()
    })?;
    let result = query::run(mesh, Some(&query)).await?;
    Ok(Inventory {
        count: result.matched,
        complete: result.complete,
        instances: result.sample,
    })
}

/// The routes.
pub fn routes(conductor: ConductorHandle, mesh: Mesh) -> Router {
    let (c1, c2, c3, c4) = (
        conductor.clone(),
        conductor.clone(),
        conductor.clone(),
        conductor,
    );
    Router::new()
        .route(
            DEPLOY_PATH,
            post(move |Json(request): Json<DeployRequest>| {
                let conductor = c1.clone();
                async move { outcome(deploy(&conductor, request).await) }
            }),
        )
        .route(
            DEPLOY_STATUS_PATH,
            get(move || {
                let conductor = c2.clone();
                async move {
                    match latest(&conductor).await {
                        Ok(Some(status)) => outcome(Ok(status)),
                        Ok(None) => error(StatusCode::NOT_FOUND, "there is no deployment".into()),
                        Err(e) => outcome::<()>(Err(e)),
                    }
                }
            }),
        )
        .route(
            DEPLOY_PROGRESS_PATH,
            post(move || {
                let conductor = c3.clone();
                async move { outcome(steer(&conductor, Verb::Promote).await) }
            }),
        )
        .route(
            DEPLOY_ROLLBACK_PATH,
            post(move || {
                let conductor = c4.clone();
                async move { outcome(steer(&conductor, Verb::Rollback).await) }
            }),
        )
        .route(
            INVENTORY_PATH,
            get(move |RawQuery(raw): RawQuery| {
                let mesh = mesh.clone();
                async move { outcome(inventory(&mesh, raw.as_deref()).await) }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::rollout::Plan;

    fn request(batch_size: u32, failure_threshold: u32) -> DeployRequest {
        DeployRequest {
            service: "web".into(),
            version: "1.4".into(),
            labels: [("env".to_owned(), "prod \"eu\"".to_owned())].into(),
            batch_size,
            failure_threshold,
            deadline_secs: None,
        }
    }

    #[test]
    fn a_deployment_is_a_plan_of_batches_then_the_rest() {
        let three = Plan::from_toml(&plan(&request(20, 1)).unwrap()).unwrap();
        let names: Vec<&str> = three.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["batch-1", "batch-2", "batch-3", "rest"]);
        let most = Plan::from_toml(&plan(&request(1, 2)).unwrap()).unwrap();
        assert_eq!(most.stages.len(), MAX_BATCHES as usize + 1);
        assert!(!most.one_region_at_a_time);
    }

    #[test]
    fn zero_batches_and_thresholds_are_refused() {
        assert!(
            plan(&request(0, 1))
                .unwrap_err()
                .to_string()
                .contains("batch_size")
        );
        assert!(
            plan(&request(1, 0))
                .unwrap_err()
                .to_string()
                .contains("failure_threshold")
        );
    }
}
