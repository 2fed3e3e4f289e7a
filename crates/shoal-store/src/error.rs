//! Store errors.

use shoal_core::content::{PieceIndex, RootHash, VerifyError};
use std::io;
use std::path::PathBuf;

/// What went wrong in the store. Every variant names the path or release involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created, read or written.
    #[error(
        "cannot use data directory {path}: {source} (check that it is a writable directory, or pass another --data-dir)"
    )]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another process holds the store open for writing.
    #[error(
        "data directory {0} is in use by another shoal process; stop it or use another --data-dir"
    )]
    Locked(PathBuf),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The disk is full.
    #[error(
        "no space left on the device holding {path} ({needed_bytes} bytes needed): free space or give the store another --data-dir"
    )]
    NoSpace {
        /// The file that could not grow.
        path: PathBuf,
        /// Bytes that were needed.
        needed_bytes: u64,
    },
    /// The release does not fit the store's byte budget, even after collecting what may be collected.
    #[error(
        "release of {needed_bytes} bytes does not fit the store budget of {budget_bytes} bytes: {used_bytes} bytes are used by releases that are pinned or current; unpin or remove some, or raise the budget"
    )]
    OverBudget {
        /// Bytes the new release needs.
        needed_bytes: u64,
        /// The budget.
        budget_bytes: u64,
        /// Bytes still used after collection.
        used_bytes: u64,
    },
    /// No release with this root is in the store.
    #[error("release {0} is not in the store (see `shoal store list`)")]
    UnknownRelease(RootHash),
    /// A piece failed verification and was not written.
    #[error("refused piece of release {root}: {source}")]
    BadPiece {
        /// The release.
        root: RootHash,
        /// Why the piece was refused.
        source: VerifyError,
    },
    /// A piece was asked for that the store has not verified.
    #[error("piece {index} of release {root} is not verified in the store")]
    NotHave {
        /// The release.
        root: RootHash,
        /// The piece.
        index: PieceIndex,
    },
    /// All pieces verified, but the payload on disk does not hash to the root: the disk changed
    /// the bytes after they were written. The listed pieces were marked missing again.
    #[error(
        "payload of release {root} does not match its root on disk: pieces {bad_pieces:?} changed after they were verified and will be fetched again"
    )]
    RootMismatch {
        /// The release.
        root: RootHash,
        /// Pieces whose bytes on disk no longer verify.
        bad_pieces: Vec<u32>,
    },
    /// The release is pinned and cannot be removed.
    #[error("release {0} is pinned; unpin it first")]
    Pinned(RootHash),
    /// The store was opened read-only, for inspection.
    #[error("the store at {0} is open read-only; open it for writing to change it")]
    ReadOnly(PathBuf),
    /// A source file has another length than the release.
    #[error("{path} is {len_bytes} bytes, but the release is {expected_bytes} bytes")]
    SourceLength {
        /// The source file.
        path: PathBuf,
        /// Its length.
        len_bytes: u64,
        /// The release's length.
        expected_bytes: u64,
    },
    /// A source file does not hold the release it was said to hold.
    #[error("{path} does not match the manifest: {source}")]
    SourceMismatch {
        /// The source file.
        path: PathBuf,
        /// The first piece that did not verify.
        source: VerifyError,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return StoreError::NoSpace {
                path,
                needed_bytes: 0,
            };
        }
        StoreError::Io { op, path, source }
    }
}
