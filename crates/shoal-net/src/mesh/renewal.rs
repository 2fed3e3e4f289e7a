//! Keeping a member's certificate fresh: in the last third of its lifetime the member asks the
//! coordinator that admitted it for a new one ([`shoal_core::renewal`]), keeps it in the data
//! directory and presents it on both planes from then on.

use super::{MeshRequest, MeshResponse, ask_coordinator, unix_now};
use crate::identity::Identity;
use crate::mesh::Mesh;
use crate::node::Node;
use anyhow::{Context, Result, bail};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use shoal_core::admission::{AdmissionResponse, Certificate};
use shoal_core::trust::Trust;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The file in a member's data directory naming the coordinator that admitted it.
pub const COORDINATOR_FILE: &str = "coordinator.json";

/// The largest [`COORDINATOR_FILE`] read: a peer id and an address, with room.
const MAX_RECORD_BYTES: u64 = 4096;

/// The longest the loop sleeps before it looks at the certificate again.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// The wait after a failed renewal, doubled after each failure up to [`LONGEST_WAIT`].
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The coordinator that admitted this member, as kept in [`COORDINATOR_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorRecord {
    /// Its peer id.
    pub peer_id: String,
    /// Its `--listen` address.
    pub addr: SocketAddr,
}

impl CoordinatorRecord {
    /// The coordinator a token names.
    ///
    /// # Errors
    ///
    /// If the token's peer id is malformed.
    pub fn from_token(claims: &shoal_core::admission::TokenClaims) -> Result<Self> {
        let peer_id = PeerId::from_bytes(&claims.coordinator_peer_id)
            .context("the token names a malformed coordinator peer id")?;
        Ok(Self {
            peer_id: peer_id.to_string(),
            addr: claims.coordinator_addr,
        })
    }

    /// Writes it to `data_dir`.
    ///
    /// # Errors
    ///
    /// If the file cannot be written.
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join(COORDINATOR_FILE);
        let text = serde_json::to_vec_pretty(self)?;
        shoal_store::fsutil::write_atomic(&path, &text, 0o644)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reads it from `data_dir`; `None` if the member was admitted before it was kept.
    ///
    /// # Errors
    ///
    /// If the file exists but cannot be read or parsed.
    pub fn load(data_dir: &Path) -> Result<Option<Self>> {
        let path = data_dir.join(COORDINATOR_FILE);
        let len = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other
                .with_context(|| format!("cannot read {}", path.display()))?
                .len(),
        };
        if len > MAX_RECORD_BYTES {
            anyhow::bail!(
                "{} is {len} bytes, more than a coordinator record can be: remove it and join \
                 again with a token",
                path.display()
            );
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let record: Self = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a coordinator record: remove it and join again with a token",
                path.display()
            )
        })?;
        record
            .peer_id()
            .with_context(|| format!("{} names a malformed peer id", path.display()))?;
        Ok(Some(record))
    }

    fn peer_id(&self) -> Result<PeerId> {
        self.peer_id.parse().context("not a peer id")
    }
}

/// What the renewal loop works with.
pub struct Renewal {
    /// This member's identity, which proves its peer id to the coordinator.
    pub identity: Identity,
    /// The coordinator to renew at.
    pub coordinator: CoordinatorRecord,
    /// The trust document the new certificate must verify against.
    pub trust: Arc<Trust>,
    /// Where the certificate is kept.
    pub certificate_path: PathBuf,
    /// The data plane, which presents the certificate on new connections.
    pub node: Node,
    /// The control plane, which presents it on new streams.
    pub mesh: Mesh,
}

impl Renewal {
    /// Renews `certificate` whenever it is due, until `shutdown`. A failed renewal is tried
    /// again, first after [`FIRST_RETRY`], then less and less often.
    pub async fn run(self, mut certificate: Certificate, mut shutdown: watch::Receiver<bool>) {
        let mut retry = FIRST_RETRY;
        loop {
            let now = unix_now();
            let lifetime = certificate
                .expires_unix_secs()
                .saturating_sub(certificate.issued_unix_secs());
            let due = certificate.expires_unix_secs().saturating_sub(lifetime / 3);
            let wait = Duration::from_secs(due.saturating_sub(now)).min(LONGEST_WAIT);
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                () = tokio::time::sleep(wait) => {}
            }
            if !certificate.is_renewal_due(unix_now()) {
                continue;
            }
            match self.renew(&certificate).await {
                Ok(renewed) => {
                    tracing::info!(
                        expires_unix_secs = renewed.expires_unix_secs(),
                        "admission certificate renewed"
                    );
                    certificate = renewed;
                    retry = FIRST_RETRY;
                }
                Err(e) => {
                    tracing::warn!(
                        expires_unix_secs = certificate.expires_unix_secs(),
                        "cannot renew the admission certificate: {e:#}; trying again in {retry:?}"
                    );
                    tokio::select! {
                        biased;
                        _ = shutdown.wait_for(|s| *s) => return,
                        () = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(LONGEST_WAIT);
                }
            }
        }
    }

    async fn renew(&self, certificate: &Certificate) -> Result<Certificate> {
        let request = MeshRequest::Renewal {
            certificate: certificate.encode(),
        };
        let answer = ask_coordinator(
            &self.identity,
            self.coordinator.peer_id()?,
            self.coordinator.addr,
            &request,
        )
        .await
        .with_context(|| format!("cannot reach the coordinator at {}", self.coordinator.addr))?;
        let renewed = match postcard::from_bytes::<MeshResponse>(&answer) {
            Ok(MeshResponse::Admission(AdmissionResponse::Admitted { certificate, .. })) => {
                certificate
            }
            Ok(MeshResponse::Admission(AdmissionResponse::Refused { reason })) => {
                let reason: String = reason.chars().take(512).collect();
                bail!("the coordinator refused: {reason}")
            }
            _ => bail!("the coordinator gave a malformed answer"),
        };
        renewed
            .verify(&self.trust, &self.identity.peer_id().to_bytes(), unix_now())
            .context("the renewed certificate does not check out")?;
        let bytes = renewed.encode();
        shoal_store::fsutil::write_atomic(&self.certificate_path, &bytes, 0o600)
            .with_context(|| format!("cannot save {}", self.certificate_path.display()))?;
        self.node.set_certificate(bytes);
        self.mesh.set_certificate(renewed.clone()).await?;
        Ok(renewed)
    }
}
