//! One release in the store: its manifest, its preallocated payload and its verified pieces.

use crate::bitmap::BitmapFile;
use crate::durability::{Durability, SyncBatch};
use crate::error::StoreError;
use crate::fsutil;
use crate::hashing;
use shoal_core::bitfield::Bitfield;
use shoal_core::content::{PieceIndex, PieceLayout, PieceVerifier, RootHash, combine_root};
use shoal_core::manifest::{MAX_MANIFEST_BYTES, Manifest, SignedManifest};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub(crate) const MANIFEST_FILE: &str = "manifest";
pub(crate) const PAYLOAD_FILE: &str = "payload";
pub(crate) const BITMAP_FILE: &str = "pieces";
pub(crate) const COMPLETE_FILE: &str = "complete";
pub(crate) const PINNED_FILE: &str = "pinned";

/// What [`Release::write_piece`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceWritten {
    /// The piece verified and is stored; more pieces are missing.
    Stored,
    /// The piece verified and, with it, every piece is stored and flushed: the release is
    /// complete. Exactly one call per release says so (it may be the call that flushed the last
    /// batch rather than the one that wrote the last piece).
    Completed,
    /// The piece was already stored; nothing was written.
    AlreadyHad,
}

/// A release in the store. Shared between tasks behind an `Arc`: every method takes `&self`.
#[derive(Debug)]
pub struct Release {
    dir: PathBuf,
    manifest: SignedManifest,
    verifier: PieceVerifier,
    payload: File,
    bitmap: BitmapFile,
    durability: Durability,
    batch: SyncBatch,
    writable: bool,
    state: Mutex<State>,
    pinned: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// Verified and written, perhaps only to the page cache: served and counted.
    have: Bitfield,
    /// Marked in the bitmap file; with [`Durability::Flush`], only after their bytes were flushed.
    durable: Bitfield,
    /// In `have` but not yet in `durable`: the batch waiting for its flush.
    pending: Vec<u32>,
    pending_bytes: u64,
    /// When the oldest piece of the batch was written.
    pending_since: Option<Instant>,
    complete: bool,
}

impl Release {
    /// Opens a release directory written by [`Release::create`]. Checks that the manifest decodes
    /// and its piece list combines to its root; the signature was checked when it was added.
    /// With `writable` false nothing on disk is changed, and every method that would change
    /// something returns [`StoreError::ReadOnly`].
    pub(crate) fn open(
        dir: &Path,
        durability: Durability,
        batch: SyncBatch,
        writable: bool,
    ) -> Result<Self, String> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_len = std::fs::metadata(&manifest_path)
            .map_err(|e| format!("manifest: {e}"))?
            .len();
        if manifest_len > MAX_MANIFEST_BYTES as u64 {
            return Err(format!(
                "manifest is {manifest_len} bytes, larger than any manifest"
            ));
        }
        let bytes = std::fs::read(&manifest_path).map_err(|e| format!("manifest: {e}"))?;
        let manifest = SignedManifest::decode(&bytes).map_err(|e| e.to_string())?;
        let m = &manifest.manifest;
        if combine_root(&m.pieces) != Some(m.root) {
            return Err("manifest piece list does not combine to its root".into());
        }
        let layout = m.layout().map_err(|e| e.to_string())?;
        let payload_path = dir.join(PAYLOAD_FILE);
        let payload = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&payload_path)
            .map_err(|e| format!("payload: {e}"))?;
        let len = payload
            .metadata()
            .map_err(|e| format!("payload: {e}"))?
            .len();
        if len != layout.size_bytes() {
            return Err(format!(
                "payload is {len} bytes, the manifest says {}",
                layout.size_bytes()
            ));
        }
        let (bitmap, have, _reset) =
            BitmapFile::open(&dir.join(BITMAP_FILE), layout.piece_count(), writable)
                .map_err(|e| format!("bitmap: {e}"))?;
        let complete = dir.join(COMPLETE_FILE).exists() && have.is_full();
        let verifier = PieceVerifier::new(layout, m.pieces.clone(), m.root);
        Ok(Self {
            dir: dir.to_owned(),
            pinned: AtomicBool::new(dir.join(PINNED_FILE).exists()),
            manifest,
            verifier,
            payload,
            bitmap,
            durability,
            batch,
            writable,
            state: Mutex::new(State {
                durable: have.clone(),
                have,
                pending: Vec::new(),
                pending_bytes: 0,
                pending_since: None,
                complete,
            }),
        })
    }

    /// Lays out a new release in `dir` (which must not exist yet): the manifest, the payload
    /// preallocated to its full size, and an empty bitmap. On error, `dir` is removed again.
    pub(crate) fn create(
        dir: &Path,
        manifest: &SignedManifest,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let result = Self::create_files(dir, manifest);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        } else if durability == Durability::Flush {
            fsutil::sync_dir(dir).map_err(|e| StoreError::io("sync", dir, e))?;
        }
        result
    }

    fn create_files(dir: &Path, manifest: &SignedManifest) -> Result<(), StoreError> {
        let layout = manifest
            .manifest
            .layout()
            .expect("a decoded manifest has a valid layout");
        std::fs::create_dir(dir).map_err(|e| StoreError::io("create", dir, e))?;
        let path = dir.join(MANIFEST_FILE);
        std::fs::write(&path, manifest.encode()).map_err(|e| StoreError::io("write", &path, e))?;
        let path = dir.join(PAYLOAD_FILE);
        let payload = File::create(&path).map_err(|e| StoreError::io("create", &path, e))?;
        fsutil::preallocate(&payload, layout.size_bytes()).map_err(|e| {
            match StoreError::io("preallocate", &path, e) {
                StoreError::NoSpace { path, .. } => StoreError::NoSpace {
                    path,
                    needed_bytes: layout.size_bytes(),
                },
                other => other,
            }
        })?;
        payload
            .sync_all()
            .map_err(|e| StoreError::io("sync", &path, e))?;
        let path = dir.join(BITMAP_FILE);
        BitmapFile::create(&path, layout.piece_count())
            .and_then(|b| b.sync())
            .map_err(|e| StoreError::io("create", &path, e))?;
        Ok(())
    }

    /// The release id.
    pub fn root(&self) -> RootHash {
        self.manifest.manifest.root
    }

    /// The manifest content.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest.manifest
    }

    /// The manifest with its signature, to hand to peers.
    pub fn signed_manifest(&self) -> &SignedManifest {
        &self.manifest
    }

    /// The payload's piece layout.
    pub fn layout(&self) -> &PieceLayout {
        self.verifier.layout()
    }

    /// The directory holding this release.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the payload is. Only a [complete](Self::is_complete) payload is the release.
    pub fn payload_path(&self) -> PathBuf {
        self.dir.join(PAYLOAD_FILE)
    }

    /// The verified pieces.
    pub fn have(&self) -> Bitfield {
        self.lock().have.clone()
    }

    /// How many pieces are verified.
    pub fn have_count(&self) -> u32 {
        self.lock().have.count()
    }

    /// Whether every piece is verified, written and flushed: the payload is the release.
    pub fn is_complete(&self) -> bool {
        self.lock().complete
    }

    /// Whether the release is pinned (never garbage-collected).
    pub fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Verifies `data` as piece `index` and, only if it verifies, writes it in place. The piece
    /// counts as stored at once (it is read back from the page cache if asked for); its bit in the
    /// bitmap file is set only when its batch is flushed ([`flush`](Self::flush)): once
    /// [`SyncBatch::bytes`] are waiting, when the oldest has waited [`SyncBatch::interval`], and
    /// with the last piece. The payload's bytes are flushed first, so the file never claims a piece
    /// that a power cut could take back. Each piece was checked against the manifest's piece
    /// list, which combines to the root, so a release whose pieces are all flushed is complete
    /// without reading the payload again.
    ///
    /// # Errors
    ///
    /// [`StoreError::BadPiece`] if the piece does not verify (nothing is written),
    /// [`StoreError::NoSpace`] or [`StoreError::Io`] if it cannot be written or flushed (a piece
    /// that did not reach the disk is missing again), [`StoreError::ReadOnly`] if the store was
    /// opened read-only.
    pub fn write_piece(&self, index: PieceIndex, data: &[u8]) -> Result<PieceWritten, StoreError> {
        self.check_writable()?;
        self.verifier
            .verify(index, data)
            .map_err(|source| StoreError::BadPiece {
                root: self.root(),
                source,
            })?;
        if self.lock().have.contains(index.0) {
            return Ok(PieceWritten::AlreadyHad);
        }
        self.payload
            .write_all_at(data, self.layout().offset(index))
            .map_err(|e| StoreError::io("write", self.payload_path(), e))?;
        let flush_now = {
            let mut state = self.lock();
            if !state.have.insert(index.0) {
                return Ok(PieceWritten::AlreadyHad);
            }
            state.pending.push(index.0);
            state.pending_bytes += data.len() as u64;
            let since = *state.pending_since.get_or_insert_with(Instant::now);
            self.durability == Durability::None
                || state.have.is_full()
                || state.pending_bytes >= self.batch.bytes
                || since.elapsed() >= self.batch.interval
        };
        if flush_now && self.flush()? {
            Ok(PieceWritten::Completed)
        } else {
            Ok(PieceWritten::Stored)
        }
    }

    /// Flushes the pieces written since the last flush and marks them in the bitmap file (with
    /// [`Durability::None`], marks them without flushing). Returns whether this call completed the
    /// release. Called by [`write_piece`](Self::write_piece) and when the release is dropped; call
    /// it to make what arrived so far survive a power cut now.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the payload or the bitmap cannot be flushed; the pieces of a batch
    /// whose payload flush failed are missing again. [`StoreError::ReadOnly`] if read-only.
    pub fn flush(&self) -> Result<bool, StoreError> {
        self.check_writable()?;
        let batch = {
            let mut state = self.lock();
            state.pending_bytes = 0;
            state.pending_since = None;
            std::mem::take(&mut state.pending)
        };
        if batch.is_empty() {
            return Ok(false);
        }
        let flush = self.durability == Durability::Flush;
        // Every piece of the batch was written before it was queued, so this flush covers it.
        if flush && let Err(e) = self.payload.sync_data() {
            let mut state = self.lock();
            for &i in &batch {
                state.have.remove(i);
            }
            return Err(StoreError::io("sync", self.payload_path(), e));
        }
        let mut state = self.lock();
        for &i in &batch {
            state.durable.insert(i);
        }
        let bitmap_path = || self.dir.join(BITMAP_FILE);
        self.bitmap
            .store_bits(&state.durable, &batch)
            .and_then(|()| if flush { self.bitmap.sync() } else { Ok(()) })
            .map_err(|e| StoreError::io("write", bitmap_path(), e))?;
        if state.complete || !state.durable.is_full() {
            return Ok(false);
        }
        let marker = self.dir.join(COMPLETE_FILE);
        fsutil::write_atomic(&marker, self.root().to_hex().as_bytes(), 0o644)
            .map_err(|e| StoreError::io("write", &marker, e))?;
        state.complete = true;
        Ok(true)
    }

    /// Reads piece `index`, only if it is verified.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotHave`] for a piece not verified (or out of range), or a read error.
    pub fn read_piece(&self, index: PieceIndex) -> Result<Vec<u8>, StoreError> {
        if !self.lock().have.contains(index.0) {
            return Err(StoreError::NotHave {
                root: self.root(),
                index,
            });
        }
        let mut data = vec![0u8; self.layout().piece_len(index) as usize];
        self.payload
            .read_exact_at(&mut data, self.layout().offset(index))
            .map_err(|e| StoreError::io("read", self.payload_path(), e))?;
        Ok(data)
    }

    /// Re-hashes the whole payload on disk and compares it with the root. On a match (and all
    /// pieces present) the release is marked complete; on a mismatch, the pieces that no longer
    /// verify are marked missing, so they are fetched again. The store runs it when it opens a
    /// release whose pieces are all marked but which was never marked complete (a crash between
    /// the last flush and the marker), and on an import that finds every piece already there.
    ///
    /// # Errors
    ///
    /// [`StoreError::RootMismatch`] naming the bad pieces, [`StoreError::ReadOnly`], or a read or
    /// write error.
    pub fn finish(&self) -> Result<(), StoreError> {
        self.check_writable()?;
        let hashed = hashing::hash_file(
            &self.payload,
            self.layout(),
            hashing::default_threads(),
            &|_| {},
        )
        .map_err(|e| StoreError::io("read", self.payload_path(), e))?;
        self.flush()?;
        let mut state = self.lock();
        if hashed.root == self.root() {
            if !state.have.is_full() {
                return Ok(());
            }
            let bitmap_path = self.dir.join(BITMAP_FILE);
            self.bitmap
                .sync()
                .map_err(|e| StoreError::io("sync", &bitmap_path, e))?;
            let marker = self.dir.join(COMPLETE_FILE);
            fsutil::write_atomic(&marker, self.root().to_hex().as_bytes(), 0o644)
                .map_err(|e| StoreError::io("write", &marker, e))?;
            state.complete = true;
            return Ok(());
        }
        let bad_pieces: Vec<u32> = hashed
            .pieces
            .iter()
            .enumerate()
            .filter(|&(i, cv)| self.verifier.expected(PieceIndex(i as u32)) != Some(cv))
            .map(|(i, _)| i as u32)
            .collect();
        for &i in &bad_pieces {
            state.have.remove(i);
            state.durable.remove(i);
        }
        state.complete = false;
        let _ = std::fs::remove_file(self.dir.join(COMPLETE_FILE));
        self.bitmap
            .store_all(&state.durable)
            .and_then(|()| self.bitmap.sync())
            .map_err(|e| StoreError::io("write", self.dir.join(BITMAP_FILE), e))?;
        Err(StoreError::RootMismatch {
            root: self.root(),
            bad_pieces,
        })
    }

    pub(crate) fn set_pinned(&self, pinned: bool) -> Result<(), StoreError> {
        self.check_writable()?;
        let marker = self.dir.join(PINNED_FILE);
        if pinned {
            fsutil::write_atomic(&marker, b"pinned\n", 0o644)
                .map_err(|e| StoreError::io("write", &marker, e))?;
        } else if let Err(e) = std::fs::remove_file(&marker)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(StoreError::io("remove", &marker, e));
        }
        self.pinned.store(pinned, Ordering::Relaxed);
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.writable {
            Ok(())
        } else {
            Err(StoreError::ReadOnly(self.dir.clone()))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a bitfield and two flags, always left consistent: a panic elsewhere while
        // holding the lock cannot have broken it, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Release {
    /// A release let go of (the process shutting down, the release removed) flushes its last
    /// batch, so an orderly stop keeps every piece written.
    fn drop(&mut self) {
        if self.writable
            && let Err(e) = self.flush()
        {
            tracing::warn!(
                "cannot flush the last pieces of {}: {e}",
                self.dir.display()
            );
        }
    }
}
