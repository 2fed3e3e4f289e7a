//! A member's copy of the revocation list ([`Revocations`]): read by the certificate checks of
//! both planes, replaced by the mesh task when a newer list arrives, and kept in the data
//! directory so a restarted member refuses the same peers.

use anyhow::{Context, Result};
use shoal_core::revocation::Revocations;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The file in the data directory that keeps the list.
pub const REVOCATIONS_FILE: &str = "revoked-tokens.json";

/// The largest list file read: [`shoal_core::revocation::MAX_REVOKED_TOKENS`] entries with room.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The list, shared. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SharedRevocations(Arc<RwLock<Arc<Revocations>>>);

impl SharedRevocations {
    /// A shared handle on `list`.
    pub fn new(list: Revocations) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(list))))
    }

    /// The list now.
    pub fn current(&self) -> Arc<Revocations> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the list.
    pub fn replace(&self, list: Arc<Revocations>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = list;
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
