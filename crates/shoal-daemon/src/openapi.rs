//! The coordinator's API document: `configs/openapi.json` (OpenAPI 3.1), served at
//! `GET /v1/openapi.json` without a signature. `tests/openapi.rs` has schemathesis check the
//! running coordinator against it.

use axum::Router;
use axum::http::header;
use axum::routing::get;

/// The document (`GET`).
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The document's text.
pub const DOCUMENT: &str = include_str!("../../../configs/openapi.json");

/// The route.
pub fn routes() -> Router {
    Router::new().route(
        OPENAPI_PATH,
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], DOCUMENT) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_json_naming_every_coordinator_path() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            crate::routes::PUBLISH_PATH,
            crate::routes::ROLLOUTS_PATH,
            crate::routes::AUDIT_PATH,
            crate::revoke::REVOKE_PATH,
            crate::revoke::REVOKED_PATH,
            crate::query::QUERY_PATH,
            crate::deploy::DEPLOY_PATH,
            crate::deploy::DEPLOY_STATUS_PATH,
            crate::deploy::DEPLOY_PROGRESS_PATH,
            crate::deploy::DEPLOY_ROLLBACK_PATH,
            crate::deploy::INVENTORY_PATH,
            OPENAPI_PATH,
            shoal_net::api::TOKENS_PATH,
            shoal_net::api::FLEET_PATH,
            shoal_net::api::HEALTH_PATH,
            shoal_net::api::METRICS_PATH,
        ] {
            assert!(
                doc["paths"][path].is_object(),
                "{path} is not in the document"
            );
        }
    }
}
