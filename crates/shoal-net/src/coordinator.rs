//! The coordinator's operator actions: onboarding tokens and release announcements.
//!
//! The coordinator is a mesh member like any node, plus the broadcast source (its mesh task
//! signs with the coordinator key) and the origin of what it announces. These actions are
//! reached through the HTTP API, by operators whose signed requests the
//! [`OperatorGate`](crate::operator_gate::OperatorGate) let through.

use crate::mesh::{Mesh, unix_now};
use crate::node::Node;
use crate::source::Source;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use shoal_core::admission::{Token, TokenClaims};
use shoal_core::content::RootHash;
use shoal_core::keys::SecretKey;
use shoal_core::labels::Labels;
use shoal_core::manifest::{MAX_MANIFEST_BYTES, SignedManifest};
use shoal_core::trust::Trust;
use std::path::PathBuf;
use std::sync::Arc;

/// The body of `POST /v1/tokens`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenRequest {
    /// How long the token can be redeemed.
    pub ttl_secs: u64,
    /// Labels a node redeeming it must carry.
    pub labels: Labels,
}

/// The answer to `POST /v1/tokens`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenAnswer {
    /// The token, for `shoal node --token`.
    pub token: String,
    /// When it stops being accepted (Unix seconds).
    pub expires_unix_secs: u64,
}

/// The body of `POST /v1/announce`: paths on the coordinator's host.
#[derive(Debug, Serialize, Deserialize)]
pub struct AnnounceRequest {
    /// The signed manifest.
    pub manifest: PathBuf,
    /// The payload it describes.
    pub file: PathBuf,
}

/// The answer to `POST /v1/announce`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AnnounceAnswer {
    /// The release's root.
    pub root: RootHash,
    /// Its name (`service@version`).
    pub name: String,
    /// The announcement's broadcast sequence number.
    pub seq: u64,
}

/// The coordinator's signing key and the parts it acts through.
pub struct Coordinator {
    /// The coordinator key (signs tokens, certificates and broadcasts).
    pub key: SecretKey,
    /// The trust document.
    pub trust: Arc<Trust>,
    /// The data plane, where announced releases are served from.
    pub node: Node,
    /// The control plane.
    pub mesh: Mesh,
}

impl Coordinator {
    /// Issues an onboarding token valid for `request.ttl_secs`.
    ///
    /// # Errors
    ///
    /// If the TTL is zero or longer than 30 days.
    pub fn create_token(&self, request: &TokenRequest) -> Result<TokenAnswer> {
        if request.ttl_secs == 0 || request.ttl_secs > 30 * 86_400 {
            bail!(
                "a token's TTL must be between 1 s and 30 days, not {} s",
                request.ttl_secs
            );
        }
        let me = self.mesh.me();
        let expires_unix_secs = unix_now() + request.ttl_secs;
        let claims = TokenClaims {
            coordinator_peer_id: me.peer_id.to_bytes(),
            coordinator_addr: me.addr,
            root: self.trust.body().root,
            issuer: self.key.public(),
            id: rand::random(),
            expires_unix_secs,
            labels: request.labels.clone(),
        };
        Ok(TokenAnswer {
            token: Token::issue(&self.key, claims).encode(),
            expires_unix_secs,
        })
    }

    /// Verifies the manifest and the payload, serves the payload as the release's origin and
    /// broadcasts the announcement.
    ///
    /// # Errors
    ///
    /// If either file cannot be read, the manifest fails the trust document, or the payload
    /// does not hash to the manifest's root.
    pub async fn announce(&self, request: AnnounceRequest) -> Result<AnnounceAnswer> {
        let trust = self.trust.clone();
        let (bytes, manifest, source) = tokio::task::spawn_blocking(move || {
            let path = &request.manifest;
            let len = std::fs::metadata(path)
                .with_context(|| format!("cannot read manifest {}", path.display()))?
                .len();
            if len > MAX_MANIFEST_BYTES as u64 {
                bail!(
                    "{} is {len} bytes: too large for a manifest",
                    path.display()
                );
            }
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read manifest {}", path.display()))?;
            let manifest = SignedManifest::decode(&bytes)
                .and_then(|m| m.verify(&trust))
                .with_context(|| format!("manifest {} refused", path.display()))?;
            let source = Source::verified_file(&request.file, &manifest, &|_| {})?;
            Ok((bytes, manifest, source))
        })
        .await
        .context("announce task failed")??;
        let name = manifest.manifest().name();
        let root = manifest.root();
        let _complete = self.node.add_release(&manifest, source, true);
        let seq = self.mesh.announce(bytes).await?;
        tracing::info!(%root, seq, "announced {name}");
        Ok(AnnounceAnswer { root, name, seq })
    }
}
