//! Shoal's on-disk piece store.
//!
//! Every machine keeps its releases in a data directory:
//!
//! ```text
//! DATA_DIR/
//!   lock                    advisory lock: one writing process per store
//!   releases/<root-hex>/
//!     manifest              the signed manifest, as received
//!     payload               the payload, preallocated to its full size, pieces written in place
//!     pieces                bitmap of verified pieces
//!     complete              present once the whole payload verified against the root
//!     pinned                present while the release is pinned
//!   staging/                releases being laid out; moved into releases/ once their files exist
//! ```
//!
//! The rules that keep it honest:
//! - A piece is written only after it verifies against the manifest, and marked in the bitmap only
//!   after its bytes are flushed, in batches ([`Release::write_piece`], [`SyncBatch`]); only
//!   verified pieces are ever read back ([`Release::read_piece`]). A crash or a power cut loses at
//!   most the batch not yet flushed.
//! - A release is complete once every piece is flushed: each was checked against the manifest's
//!   piece list, which is checked to combine to the root when the release is opened. A release
//!   found with every piece marked but never marked complete (a crash in between) is hashed again
//!   in full before it counts as complete.
//! - A release directory appears under `releases/` only once its files are all there, so nothing
//!   half-created is ever listed.
//! - [`Store::gc`] keeps the newest release of every service, the `keep_previous` before it, and
//!   every pinned release; beyond that it frees the oldest releases first while the store's own
//!   bytes exceed its budget.
//!
//! The entry point is [`Store::open`]. [`hashing`] hashes payload files on every core.

#![warn(missing_docs)]

mod bitmap;
mod durability;
mod error;
pub mod fsutil;
mod gc;
pub mod hashing;
mod release;

pub use durability::{Durability, SyncBatch};
pub use error::StoreError;
pub use gc::{GcAction, GcPlan, GcReason};
pub use release::{PieceWritten, Release};

use shoal_core::content::{PieceIndex, RootHash};
use shoal_core::manifest::VerifiedManifest;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RELEASES_DIR: &str = "releases";
const STAGING_DIR: &str = "staging";
const LOCK_FILE: &str = "lock";

/// How a store behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many releases to keep per service besides the newest one.
    pub keep_previous: usize,
    /// The most bytes the store's own files may occupy; `None` for no limit.
    pub budget_bytes: Option<u64>,
    /// How hard to keep verified pieces across a power cut.
    pub durability: Durability,
    /// How many written pieces are flushed together.
    pub sync_batch: SyncBatch,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keep_previous: 2,
            budget_bytes: None,
            durability: Durability::Flush,
            sync_batch: SyncBatch::default(),
        }
    }
}

/// A release directory that could not be opened. Listed, never served, and always collected.
#[derive(Clone, Debug)]
pub struct Broken {
    /// The release directory.
    pub dir: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// A data directory of releases. See the [crate documentation](crate) for the layout and rules.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    config: Config,
    releases: BTreeMap<RootHash, Arc<Release>>,
    broken: Vec<Broken>,
    /// The advisory lock, held while the store is open for writing; `None` when read-only.
    lock: Option<File>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` for reading and writing, taking its lock.
    /// Releases whose pieces were all written before a crash but never marked complete are
    /// verified now.
    ///
    /// # Errors
    ///
    /// [`StoreError::DataDir`] if the directory cannot be created or written,
    /// [`StoreError::Locked`] if another process has it open for writing.
    pub fn open(dir: impl Into<PathBuf>, config: Config) -> Result<Self, StoreError> {
        let dir = dir.into();
        let data_dir_err = |source| StoreError::DataDir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(dir.join(RELEASES_DIR)).map_err(data_dir_err)?;
        std::fs::create_dir_all(dir.join(STAGING_DIR)).map_err(data_dir_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(data_dir_err)?;
        if !fsutil::try_lock_exclusive(&lock).map_err(data_dir_err)? {
            return Err(StoreError::Locked(dir));
        }
        // Anything in staging is a release whose layout was interrupted: start it over.
        if let Ok(entries) = std::fs::read_dir(dir.join(STAGING_DIR)) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let mut store = Self::load(dir, config, true)?;
        store.lock = Some(lock);
        for release in store.releases.values() {
            if release.have().is_full() && !release.is_complete() {
                // A failed check marks the bad pieces missing; the release stays listed as
                // incomplete, which is what the caller needs to know.
                let _ = release.finish();
            }
        }
        Ok(store)
    }

    /// Opens the store in `dir` for inspection, without its lock, while another process may be
    /// writing. Nothing is created, repaired or changed: the releases it lists refuse writes with
    /// [`StoreError::ReadOnly`], and so do the store's own changing methods.
    ///
    /// # Errors
    ///
    /// [`StoreError::DataDir`] if `dir` is not a readable store.
    pub fn open_read_only(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        if let Err(source) = std::fs::read_dir(dir.join(RELEASES_DIR)) {
            return Err(StoreError::DataDir { path: dir, source });
        }
        Self::load(dir, Config::default(), false)
    }

    fn load(dir: PathBuf, config: Config, writable: bool) -> Result<Self, StoreError> {
        let releases_dir = dir.join(RELEASES_DIR);
        let entries = std::fs::read_dir(&releases_dir).map_err(|source| StoreError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let mut releases = BTreeMap::new();
        let mut broken = Vec::new();
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let named_root = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<RootHash>().ok());
            match (
                named_root,
                Release::open(&path, config.durability, config.sync_batch, writable),
            ) {
                (Some(root), Ok(release)) if release.root() == root => {
                    releases.insert(root, Arc::new(release));
                }
                (_, Ok(_)) => broken.push(Broken {
                    dir: path,
                    reason: "directory name is not the release's root".into(),
                }),
                (_, Err(reason)) => broken.push(Broken { dir: path, reason }),
            }
        }
        Ok(Self {
            dir,
            config,
            releases,
            broken,
            lock: None,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// All releases, ordered by root.
    pub fn releases(&self) -> impl Iterator<Item = &Arc<Release>> {
        self.releases.values()
    }

    /// Release directories that could not be opened.
    pub fn broken(&self) -> &[Broken] {
        &self.broken
    }

    /// The release with this root, if the store has it.
    pub fn get(&self, root: &RootHash) -> Option<Arc<Release>> {
        self.releases.get(root).cloned()
    }

    /// Finds a release by a unique prefix of its root in hex (at least 4 digits).
    ///
    /// # Errors
    ///
    /// A message naming the prefix if it matches no release, several, or is too short.
    pub fn find(&self, prefix: &str) -> Result<Arc<Release>, String> {
        let prefix = prefix.trim().to_ascii_lowercase();
        if prefix.len() < 4 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "{prefix:?} is not a release root: give at least 4 hex digits of it"
            ));
        }
        let mut matches = self
            .releases
            .values()
            .filter(|r| r.root().to_hex().starts_with(&prefix));
        match (matches.next(), matches.next()) {
            (Some(r), None) => Ok(r.clone()),
            (None, _) => Err(format!("no release in the store starts with {prefix}")),
            (Some(_), Some(_)) => Err(format!(
                "several releases start with {prefix}: give more digits"
            )),
        }
    }

    /// Bytes the store's own files occupy on disk.
    pub fn used_bytes(&self) -> u64 {
        fsutil::allocated_bytes(&self.dir.join(RELEASES_DIR))
            + fsutil::allocated_bytes(&self.dir.join(STAGING_DIR))
    }

    /// Adds a verified release, laid out empty, ready for pieces; returns the existing one if the
    /// store already has it (so an interrupted fetch resumes). Makes room within the budget first,
    /// collecting what [`gc`](Self::gc) may collect.
    ///
    /// # Errors
    ///
    /// [`StoreError::OverBudget`] if it does not fit the budget, [`StoreError::NoSpace`] if the
    /// disk is full, other IO errors. Nothing is left behind on error.
    pub fn add(&mut self, manifest: &VerifiedManifest) -> Result<Arc<Release>, StoreError> {
        self.check_writable()?;
        if let Some(existing) = self.get(&manifest.root()) {
            return Ok(existing);
        }
        let needed = manifest.layout().size_bytes();
        if let Some(budget) = self.config.budget_bytes {
            self.gc_with_incoming(needed)?;
            let used = self.used_bytes();
            if used + needed > budget {
                return Err(StoreError::OverBudget {
                    needed_bytes: needed,
                    budget_bytes: budget,
                    used_bytes: used,
                });
            }
        }
        let name = manifest.root().to_hex();
        let staging = self.dir.join(STAGING_DIR).join(&name);
        let _ = std::fs::remove_dir_all(&staging);
        Release::create(&staging, manifest.signed(), self.config.durability)?;
        let target = self.dir.join(RELEASES_DIR).join(&name);
        if let Err(e) = std::fs::rename(&staging, &target) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(StoreError::io("rename", &target, e));
        }
        if self.config.durability == Durability::Flush {
            let releases = self.dir.join(RELEASES_DIR);
            fsutil::sync_dir(&releases).map_err(|e| StoreError::io("sync", &releases, e))?;
        }
        let release = Release::open(
            &target,
            self.config.durability,
            self.config.sync_batch,
            true,
        )
        .map_err(|reason| StoreError::io("open", &target, std::io::Error::other(reason)))?;
        let release = Arc::new(release);
        self.releases.insert(release.root(), release.clone());
        Ok(release)
    }

    /// Adds a release and fills it from a local copy of its payload, verifying every piece; pieces
    /// already stored are skipped, so an interrupted import resumes. `progress` is called with the
    /// bytes of each piece as it is stored or skipped.
    ///
    /// # Errors
    ///
    /// [`StoreError::SourceLength`] if `source` has the wrong length (nothing is added),
    /// [`StoreError::SourceMismatch`] at the first piece of `source` that does not verify (the
    /// release stays incomplete), and the errors of [`add`](Self::add) and
    /// [`Release::write_piece`].
    pub fn import(
        &mut self,
        manifest: &VerifiedManifest,
        source: &File,
        source_path: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Arc<Release>, StoreError> {
        let source_len = source
            .metadata()
            .map_err(|e| StoreError::io("read", source_path, e))?
            .len();
        if source_len != manifest.layout().size_bytes() {
            return Err(StoreError::SourceLength {
                path: source_path.to_owned(),
                len_bytes: source_len,
                expected_bytes: manifest.layout().size_bytes(),
            });
        }
        let release = self.add(manifest)?;
        let have = release.have();
        let missing: Vec<u32> = have.missing().collect();
        for i in have.iter() {
            progress(u64::from(release.layout().piece_len(PieceIndex(i))));
        }
        if missing.is_empty() {
            if !release.is_complete() {
                release.finish()?;
            }
            return Ok(release);
        }
        hashing::for_each_index(
            missing.len(),
            hashing::default_threads(),
            Vec::new,
            |buf, k| {
                let index = PieceIndex(missing[k]);
                import_piece(&release, source, source_path, index, buf)?;
                progress(u64::from(release.layout().piece_len(index)));
                Ok(())
            },
        )?;
        Ok(release)
    }

    /// Pins or unpins a release. Pinned releases are never collected.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownRelease`], or an IO error writing the marker.
    pub fn set_pinned(&self, root: &RootHash, pinned: bool) -> Result<(), StoreError> {
        self.get(root)
            .ok_or(StoreError::UnknownRelease(*root))?
            .set_pinned(pinned)
    }

    /// Removes a release and its files.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownRelease`], [`StoreError::Pinned`], or an IO error.
    pub fn remove(&mut self, root: &RootHash) -> Result<(), StoreError> {
        self.check_writable()?;
        let release = self.get(root).ok_or(StoreError::UnknownRelease(*root))?;
        if release.is_pinned() {
            return Err(StoreError::Pinned(*root));
        }
        self.remove_dir(release.dir())?;
        self.releases.remove(root);
        Ok(())
    }

    /// What [`gc`](Self::gc) would remove now, without removing anything.
    pub fn plan_gc(&self) -> GcPlan {
        gc::plan(self, 0)
    }

    /// Collects releases beyond retention and, while the store exceeds its budget, the oldest
    /// releases that are neither pinned nor the newest of their service. Broken release
    /// directories are always removed.
    ///
    /// # Errors
    ///
    /// An IO error removing a directory; what was removed before it stays removed.
    pub fn gc(&mut self) -> Result<GcPlan, StoreError> {
        self.check_writable()?;
        let plan = gc::plan(self, 0);
        self.apply(&plan)?;
        Ok(plan)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.lock.is_some() {
            Ok(())
        } else {
            Err(StoreError::ReadOnly(self.dir.clone()))
        }
    }

    fn gc_with_incoming(&mut self, incoming_bytes: u64) -> Result<(), StoreError> {
        let plan = gc::plan(self, incoming_bytes);
        self.apply(&plan)
    }

    fn apply(&mut self, plan: &GcPlan) -> Result<(), StoreError> {
        for action in &plan.remove {
            self.remove_dir(&action.dir)?;
            if let Some(root) = action.root {
                self.releases.remove(&root);
            } else {
                self.broken.retain(|b| b.dir != action.dir);
            }
        }
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> Result<(), StoreError> {
        std::fs::remove_dir_all(dir).map_err(|e| StoreError::io("remove", dir, e))?;
        if self.config.durability == Durability::Flush {
            let releases = self.dir.join(RELEASES_DIR);
            fsutil::sync_dir(&releases).map_err(|e| StoreError::io("sync", &releases, e))?;
        }
        Ok(())
    }
}

fn import_piece(
    release: &Release,
    source: &File,
    source_path: &Path,
    index: PieceIndex,
    buf: &mut Vec<u8>,
) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt;
    let len = release.layout().piece_len(index) as usize;
    buf.resize(len, 0);
    source
        .read_exact_at(buf, release.layout().offset(index))
        .map_err(|e| StoreError::io("read", source_path, e))?;
    match release.write_piece(index, buf) {
        Ok(_) => Ok(()),
        Err(StoreError::BadPiece { source, .. }) => Err(StoreError::SourceMismatch {
            path: source_path.to_owned(),
            source,
        }),
        Err(e) => Err(e),
    }
}
