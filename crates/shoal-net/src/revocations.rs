//! A member's copy of the revocation list ([`Revocations`]): read by the certificate checks of
//! both planes, replaced by the mesh task when a newer list arrives, watched by the planes so
//! that a newer list closes the links of peers it revokes, and kept in the data directory so a
//! restarted member refuses the same peers.

use crate::node::Node;
use anyhow::{Context, Result};
use shoal_core::admission::Certificate;
use shoal_core::revocation::Revocations;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// The file in the data directory that keeps the list.
pub const REVOCATIONS_FILE: &str = "revoked-tokens.json";

/// The largest list file read: [`shoal_core::revocation::MAX_REVOKED_TOKENS`] entries with room.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The list, shared. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedRevocations(Arc<watch::Sender<Arc<Revocations>>>);

impl Default for SharedRevocations {
    fn default() -> Self {
        Self::new(Revocations::default())
    }
}

impl SharedRevocations {
    /// A shared handle on `list`.
    pub fn new(list: Revocations) -> Self {
        Self(Arc::new(watch::Sender::new(Arc::new(list))))
    }

    /// The list now.
    pub fn current(&self) -> Arc<Revocations> {
        Arc::clone(&self.0.borrow())
    }

    /// Replaces the list, and wakes every [`subscribe`](Self::subscribe)r.
    pub fn replace(&self, list: Arc<Revocations>) {
        self.0.send_replace(list);
    }

    /// A receiver that wakes at every [`replace`](Self::replace) after this call.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Revocations>> {
        self.0.subscribe()
    }

    /// The list kept in `data_dir`, or an empty one if there is none.
    ///
    /// # Errors
    ///
    /// If the file exists but cannot be read, is too large or is not a well-formed list.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(REVOCATIONS_FILE);
        let bytes = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            Ok(meta) if meta.len() > MAX_FILE_BYTES => anyhow::bail!(
                "{} is {} bytes, more than a revocation list can be: remove it, and the next \
                 broadcast list replaces it",
                path.display(),
                meta.len()
            ),
            Ok(_) => {
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
            }
        };
        let list: Revocations = serde_json::from_slice(&bytes)
            .ok()
            .filter(Revocations::is_well_formed)
            .with_context(|| {
                format!(
                    "{} is not a revocation list: remove it, and the next broadcast list \
                     replaces it",
                    path.display()
                )
            })?;
        Ok(Self::new(list))
    }

    /// Writes the list to `data_dir`.
    ///
    /// # Errors
    ///
    /// If the file cannot be written.
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join(REVOCATIONS_FILE);
        let text = serde_json::to_vec_pretty(&*self.current())?;
        shoal_store::fsutil::write_atomic(&path, &text, 0o644)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Closes `node`'s data-plane connections to the peers that each newer list in `revocations`
/// revokes, until the process ends.
pub fn close_revoked_connections(revocations: &SharedRevocations, node: Node) {
    let mut changes = revocations.subscribe();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let list = Arc::clone(&changes.borrow_and_update());
            node.recheck(|_, certificate| not_revoked(&list, certificate));
        }
    });
}

/// Whether `certificate` (encoded) still admits its holder under `list`: refuses only a
/// certificate from a revoked token. For rechecking links already up, whose certificates passed
/// every other check when they were opened.
///
/// # Errors
///
/// The reason, if the certificate's token is revoked or the bytes are no certificate.
pub fn not_revoked(list: &Revocations, certificate: &[u8]) -> Result<(), String> {
    Certificate::decode(certificate)
        .and_then(|c| c.check_revocations(list))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_kept_across_a_restart_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            SharedRevocations::load(dir.path())
                .unwrap()
                .current()
                .entries()
                .is_empty()
        );
        let mut list = Revocations::default();
        list.revoke([7; 16], 100, 0).unwrap();
        SharedRevocations::new(list.clone())
            .save(dir.path())
            .unwrap();
        let loaded = SharedRevocations::load(dir.path()).unwrap();
        assert_eq!(*loaded.current(), list);
        std::fs::write(dir.path().join(REVOCATIONS_FILE), b"{").unwrap();
        let err = SharedRevocations::load(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains(REVOCATIONS_FILE), "{err:#}");
    }
}
