//! One release in the store: its manifest, its preallocated payload and its verified pieces.

use crate::bitmap::BitmapFile;
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

pub(crate) const MANIFEST_FILE: &str = "manifest";
pub(crate) const PAYLOAD_FILE: &str = "payload";
pub(crate) const BITMAP_FILE: &str = "pieces";
pub(crate) const COMPLETE_FILE: &str = "complete";
pub(crate) const PINNED_FILE: &str = "pinned";

/// How hard the store works to keep verified pieces across a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Each piece's bytes are flushed to disk before its bit is set, and the bitmap is flushed
    /// every [`BITMAP_SYNC_PIECES`] pieces: a crash of the process loses only pieces in flight,
    /// a power cut at most the pieces since the last bitmap flush.
    Flush,
    /// Nothing is flushed explicitly: a crash of the process still loses only pieces in flight
    /// (the page cache survives it), a power cut may lose any unflushed piece. For tests and
    /// benchmarks on throw-away directories.
    None,
}

/// With [`Durability::Flush`], the bitmap is flushed after this many new pieces.
pub const BITMAP_SYNC_PIECES: u32 = 32;

/// What [`Release::write_piece`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceWritten {
    /// The piece verified and is stored; more pieces are missing.
    Stored,
    /// The piece verified, was the last one missing, and the whole payload verified against the
    /// root: the release is complete.
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
    writable: bool,
    state: Mutex<State>,
    pinned: AtomicBool,
}

#[derive(Debug)]
struct State {
    have: Bitfield,
    complete: bool,
    unsynced_pieces: u32,
}

impl Release {
    /// Opens a release directory written by [`Release::create`]. Checks that the manifest decodes
    /// and its piece list combines to its root; the signature was checked when it was added.
    /// With `writable` false nothing on disk is changed, and every method that would change
    /// something returns [`StoreError::ReadOnly`].
    pub(crate) fn open(dir: &Path, durability: Durability, writable: bool) -> Result<Self, String> {
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
            writable,
            state: Mutex::new(State {
                have,
                complete,
                unsynced_pieces: 0,
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

    /// Whether every piece is stored and the whole payload verified against the root.
    pub fn is_complete(&self) -> bool {
        self.lock().complete
    }

    /// Whether the release is pinned (never garbage-collected).
    pub fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Verifies `data` as piece `index` and, only if it verifies, writes it in place and marks it.
    /// When it was the last missing piece, verifies the whole payload against the root and marks
    /// the release complete.
    ///
    /// # Errors
    ///
    /// [`StoreError::BadPiece`] if the piece does not verify (nothing is written),
    /// [`StoreError::NoSpace`] or [`StoreError::Io`] if it cannot be written (it is not marked),
    /// [`StoreError::RootMismatch`] if the finished payload does not hash to the root,
    /// [`StoreError::ReadOnly`] if the store was opened read-only.
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
        let payload_path = || self.dir.join(PAYLOAD_FILE);
        self.payload
            .write_all_at(data, self.layout().offset(index))
            .map_err(|e| StoreError::io("write", payload_path(), e))?;
        if self.durability == Durability::Flush {
            self.payload
                .sync_data()
                .map_err(|e| StoreError::io("sync", payload_path(), e))?;
        }
        let full = {
            let mut state = self.lock();
            if !state.have.insert(index.0) {
                return Ok(PieceWritten::AlreadyHad);
            }
            let bitmap_path = || self.dir.join(BITMAP_FILE);
            self.bitmap
                .store_bit(&state.have, index.0)
                .map_err(|e| StoreError::io("write", bitmap_path(), e))?;
            state.unsynced_pieces += 1;
            if self.durability == Durability::Flush && state.unsynced_pieces >= BITMAP_SYNC_PIECES {
                self.bitmap
                    .sync()
                    .map_err(|e| StoreError::io("sync", bitmap_path(), e))?;
                state.unsynced_pieces = 0;
            }
            state.have.is_full()
        };
        if full {
            self.finish()?;
            Ok(PieceWritten::Completed)
        } else {
            Ok(PieceWritten::Stored)
        }
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
    /// verify are marked missing, so they are fetched again.
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
        }
        state.complete = false;
        let _ = std::fs::remove_file(self.dir.join(COMPLETE_FILE));
        self.bitmap
            .store_all(&state.have)
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
