//! Revoking onboarding tokens at the coordinator: `POST /v1/tokens/revoke` lists a token
//! (given whole, or by its id), saves the list and broadcasts it; `GET /v1/tokens/revoked`
//! shows it. An operator needs scope admin to revoke and read to look.

use crate::db::Db;
use crate::routes::outcome;
use anyhow::{Context, Result, bail};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_core::admission::{MAX_TOKEN_CHARS, Token};
use shoal_core::revocation::{Revocations, keep_until};
use shoal_core::trust::Trust;
use shoal_net::mesh::{Mesh, unix_now};
use shoal_net::revocations::SharedRevocations;
use std::sync::Arc;

/// Revoke a token (`POST`).
pub const REVOKE_PATH: &str = "/v1/tokens/revoke";
/// The revocation list (`GET`).
pub const REVOKED_PATH: &str = "/v1/tokens/revoked";

/// The longest a token can be valid (`shoal token create --ttl`): a token revoked by id alone
/// stays listed as if it expired this long from now.
const MAX_TOKEN_TTL_SECS: u64 = 30 * 86_400;

/// The body of `POST /v1/tokens/revoke`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// The token's text, or its id (32 hex digits, as `shoal token revoked` shows).
    pub token: String,
}

/// The answer to `POST /v1/tokens/revoke`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeAnswer {
    /// The token's id.
    pub id: String,
    /// Until when it stays listed (Unix seconds).
    pub until_unix_secs: u64,
    /// Whether the token was listed before this request.
    pub already: bool,
    /// Whether this request changed the list (listed it, or for longer).
    pub changed: bool,
    /// The broadcast that carried the list, if it changed.
    pub seq: Option<u64>,
}

/// What revoking needs. The lock keeps two revocations from losing one another.
pub struct Revoker {
    /// Where the list is kept.
    pub db: Arc<Db>,
    /// Where it is broadcast.
    pub mesh: Mesh,
    /// The coordinator's own copy, which admission and renewal check.
    pub shared: SharedRevocations,
    /// Checks a revoked token's signature.
    pub trust: Arc<Trust>,
    /// How long the coordinator's certificates live: a revoked token stays listed at least
    /// that long.
    pub certificate_ttl_secs: u64,
    /// Serialises revocations.
    pub lock: tokio::sync::Mutex<()>,
}

impl Revoker {
    async fn revoke(&self, request: &RevokeRequest) -> Result<RevokeAnswer> {
        let now = unix_now();
        let (id, expires) = parse(&request.token, &self.trust, now)?;
        let _guard = self.lock.lock().await;
        let mut list: Revocations = (*self.shared.current()).clone();
        let until = keep_until(expires, now, self.certificate_ttl_secs);
        let already = list.is_revoked(&id);
        let changed = list.revoke(id, until, now)?;
        let seq = if changed {
            self.db
                .put_revocations(&list)
                .context("cannot save the revocation list")?;
            Some(self.mesh.broadcast_revocations(list.clone()).await?)
        } else {
            None
        };
        tracing::info!(id = %hex::encode(id), "onboarding token revoked");
        Ok(RevokeAnswer {
            id: hex::encode(id),
            until_unix_secs: until,
            already,
            changed,
            seq,
        })
    }
}

/// The token's id and expiry from its text (whose signature must check out against `trust`,
/// expired or not: certificates issued against it may live on), or its id alone.
fn parse(text: &str, trust: &Trust, now: u64) -> Result<([u8; 16], u64)> {
    let text = text.trim();
    if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut id = [0u8; 16];
        hex::decode_to_slice(text, &mut id).context("the token id")?;
        return Ok((id, now + MAX_TOKEN_TTL_SECS));
    }
    if text.len() > MAX_TOKEN_CHARS {
        bail!(
            "a token is at most {MAX_TOKEN_CHARS} characters, not {}",
            text.len()
        );
    }
    let token: Token = text
        .parse()
        .context("give the token's whole text (shoal-token-1....) or its id (32 hex digits)")?;
    let expires = token.claims().expires_unix_secs;
    // Checked as at its expiry, so that an expired token can still be revoked.
    let claims = token
        .verify(trust, expires)
        .context("this token was not issued in this mesh")?;
    Ok((claims.id, claims.expires_unix_secs))
}

/// The routes.
pub fn routes(revoker: Arc<Revoker>) -> Router {
    let reader = revoker.shared.clone();
    Router::new()
        .route(
            REVOKE_PATH,
            post(move |Json(request): Json<RevokeRequest>| {
                let revoker = revoker.clone();
                async move { outcome(revoker.revoke(&request).await) }
            }),
        )
        .route(
            REVOKED_PATH,
            get(move || {
                let list = reader.current();
                async move { outcome(Ok(&*list)) }
            }),
        )
}
