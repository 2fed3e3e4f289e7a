//! After a restart, the coordinator serves again every release it published: each payload is
//! hashed against its manifest before a byte of it is served, as when it was first announced.

use crate::db::Db;
use anyhow::{Context, Result};
use shoal_core::manifest::SignedManifest;
use shoal_core::trust::Trust;
use shoal_net::node::Node;
use shoal_net::source::Source;
use std::sync::Arc;

/// Serves every published release whose files still check out; logs the ones that do not.
///
/// # Errors
///
/// If the database cannot be read.
pub async fn serve_published(db: Arc<Db>, node: Node, trust: Arc<Trust>) -> Result<usize> {
    let published = db
        .releases()
        .context("cannot read the published releases")?;
    let mut served = 0;
    for p in published {
        let trust = trust.clone();
        let checked = tokio::task::spawn_blocking(move || -> Result<_> {
            let bytes = std::fs::read(&p.manifest)
                .with_context(|| format!("cannot read {}", p.manifest.display()))?;
            let manifest = SignedManifest::decode(&bytes)
                .and_then(|m| m.verify(&trust))
                .with_context(|| format!("manifest {} refused", p.manifest.display()))?;
            let source = Source::verified_file(&p.file, &manifest, &|_| {})?;
            Ok((manifest, source))
        })
        .await
        .context("the serving task failed")?;
        match checked {
            Ok((manifest, source)) => {
                let _ = node.add_release(&manifest, source, true);
                served += 1;
            }
            Err(e) => tracing::error!("a published release cannot be served again: {e:#}"),
        }
    }
    Ok(served)
}
