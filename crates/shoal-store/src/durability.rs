//! How hard the store works to keep verified pieces across a crash or a power cut.

use std::time::Duration;

/// Whether the store flushes what it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Pieces are flushed to disk in batches ([`SyncBatch`]) before their bits are set in the
    /// bitmap file, so the file never claims a piece whose bytes a power cut could take back. A
    /// crash of the process or a power cut loses at most the batch not yet flushed; those pieces
    /// are fetched again.
    Flush,
    /// Nothing is flushed explicitly; bits are set as soon as pieces are written. A crash of the
    /// process loses only pieces in flight (the page cache survives it), a power cut may lose any
    /// unflushed piece. For tests and benchmarks on throw-away directories.
    None,
}

/// When a batch of written pieces is flushed (with [`Durability::Flush`]): as soon as either
/// bound is reached, and always with the last piece of a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncBatch {
    /// Flush once this many bytes of pieces are waiting.
    pub bytes: u64,
    /// Flush at the next piece written once the oldest waiting piece is this old.
    pub interval: Duration,
}

impl Default for SyncBatch {
    /// 64 MiB or one second: on a disk writing about 400 MB/s in one stream, one flush per
    /// 64 MiB costs a few per cent of the write, where one per 1 MiB piece cost more than half.
    fn default() -> Self {
        Self {
            bytes: 64 << 20,
            interval: Duration::from_secs(1),
        }
    }
}
