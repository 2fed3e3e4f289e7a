//! Where a node reads the pieces it serves: its store, or (for an origin) the published file.

use anyhow::{Context, Result, bail};
use shoal_core::bitfield::Bitfield;
use shoal_core::content::{PieceIndex, PieceLayout};
use shoal_core::manifest::VerifiedManifest;
use shoal_store::Release;
use shoal_store::hashing;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The pieces of one release that a node can serve. Only verified pieces are ever read.
#[derive(Debug, Clone)]
pub enum Source {
    /// A release in the store: served piece by piece as they verify.
    Store(Arc<Release>),
    /// A payload file checked in full against the manifest when the origin started.
    File {
        /// The open file.
        file: Arc<File>,
        /// Its path.
        path: PathBuf,
        /// The release's layout.
        layout: PieceLayout,
    },
}

impl Source {
    /// Opens `path` as the payload of `manifest`, hashing it in full first: an origin serves
    /// only bytes it has verified, like every other node.
    ///
    /// # Errors
    ///
    /// If the file cannot be read, has the wrong length, or does not hash to the manifest's root.
    pub fn verified_file(
        path: &Path,
        manifest: &VerifiedManifest,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let layout = manifest.layout();
        let len = file.metadata()?.len();
        if len != layout.size_bytes() {
            bail!(
                "{} is {len} bytes, but the manifest's release is {} bytes: is it the right file?",
                path.display(),
                layout.size_bytes()
            );
        }
        let hashed = hashing::hash_file(&file, layout, hashing::default_threads(), progress)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if hashed.root != manifest.root() {
            bail!(
                "{} hashes to {}, but the manifest's root is {}: the file changed after the manifest was made",
                path.display(),
                hashed.root,
                manifest.root()
            );
        }
        Ok(Self::File {
            file: Arc::new(file),
            path: path.to_owned(),
            layout: *layout,
        })
    }

    /// The verified pieces.
    pub fn have(&self) -> Bitfield {
        match self {
            Self::Store(release) => release.have(),
            Self::File { layout, .. } => Bitfield::full(layout.piece_count()),
        }
    }

    /// Where the payload lives.
    pub fn payload_path(&self) -> PathBuf {
        match self {
            Self::Store(release) => release.payload_path(),
            Self::File { path, .. } => path.clone(),
        }
    }

    /// Reads verified piece `index`.
    ///
    /// # Errors
    ///
    /// If the piece is not verified here or cannot be read.
    pub fn read_piece(&self, index: PieceIndex) -> Result<Vec<u8>> {
        match self {
            Self::Store(release) => Ok(release.read_piece(index)?),
            Self::File { file, path, layout } => {
                if !layout.contains(index) {
                    bail!("piece {index} is past the end of the release");
                }
                let mut data = vec![0u8; layout.piece_len(index) as usize];
                file.read_exact_at(&mut data, layout.offset(index))
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Ok(data)
            }
        }
    }
}
