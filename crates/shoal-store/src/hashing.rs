//! Hashing payload files into piece lists, on every core.
//!
//! Pieces are independent subtrees of the BLAKE3 tree, so each worker thread takes the next
//! unhashed piece, reads it in blocks with positioned reads and hashes it; no piece is read twice
//! and no thread waits for another. The piece values then combine to the root in microseconds.

use shoal_core::content::{
    ChainingValue, PieceHasher, PieceIndex, PieceLayout, RootHash, combine_root,
};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The size of each positioned read. Large enough that BLAKE3 hashes many chunks per call with its
/// widest SIMD, small enough to stay in the core's cache between the read and the hash.
const READ_BLOCK_BYTES: usize = 512 * 1024;

/// The piece list and root of a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedPayload {
    /// The listed value of every piece, in order.
    pub pieces: Vec<ChainingValue>,
    /// The BLAKE3 root of the whole payload.
    pub root: RootHash,
}

/// The number of hashing threads to use: one per available core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Hashes every piece of `file`, laid out as `layout`, on `threads` threads, calling `progress`
/// with the number of bytes hashed after each block (from any thread).
///
/// # Errors
///
/// Any read error, and [`io::ErrorKind::UnexpectedEof`] if the file is shorter than the layout
/// (it shrank while being hashed).
pub fn hash_file(
    file: &File,
    layout: &PieceLayout,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<HashedPayload> {
    let count = layout.piece_count() as usize;
    let results: Mutex<Vec<(u32, ChainingValue)>> = Mutex::new(Vec::with_capacity(count));
    let block = READ_BLOCK_BYTES.min(layout.piece_size_bytes() as usize);
    for_each_index(
        count,
        threads,
        || vec![0u8; block],
        |buf, i| {
            let cv = hash_piece(file, layout, PieceIndex(i as u32), buf, progress)?;
            results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((i as u32, cv));
            Ok::<(), io::Error>(())
        },
    )?;
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_unstable_by_key(|&(i, _)| i);
    assert_eq!(results.len(), count, "every piece hashed exactly once");
    let pieces: Vec<ChainingValue> = results.into_iter().map(|(_, cv)| cv).collect();
    let root = combine_root(&pieces).expect("a layout has at least one piece");
    Ok(HashedPayload { pieces, root })
}

/// Runs `work` for every index in `0..count` on up to `threads` threads. Each thread makes its
/// own scratch state with `init` and takes the next unclaimed index until none are left, so no
/// index runs twice and no thread waits for another. Stops handing out indices at the first
/// error and returns it.
///
/// # Errors
///
/// The first error `work` returned.
pub(crate) fn for_each_index<S, E: Send>(
    count: usize,
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, count.max(1)) {
            scope.spawn(|| {
                let mut state = init();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    if let Err(e) = work(&mut state, i) {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reads piece `index` of `file` through `buf` and returns its listed value.
///
/// # Errors
///
/// Read errors, or [`io::ErrorKind::UnexpectedEof`] if the file ends inside the piece.
pub fn hash_piece(
    file: &File,
    layout: &PieceLayout,
    index: PieceIndex,
    buf: &mut [u8],
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<ChainingValue> {
    assert!(
        !buf.is_empty() || layout.piece_len(index) == 0,
        "hash_piece needs a buffer"
    );
    let mut hasher = PieceHasher::new(layout, index);
    let mut offset = layout.offset(index);
    let mut remaining = layout.piece_len(index) as usize;
    while remaining > 0 {
        let n = remaining.min(buf.len());
        file.read_exact_at(&mut buf[..n], offset)?;
        hasher.update(&buf[..n]);
        offset += n as u64;
        remaining -= n;
        progress(n as u64);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hashing_a_file_matches_blake3_on_any_thread_count() {
        let data: Vec<u8> = (0..1_000_003u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let layout = PieceLayout::new(data.len() as u64, 65536).unwrap();
        let expected = RootHash::from(blake3::hash(&data));
        for threads in [1, 2, 3, 8] {
            let seen = std::sync::atomic::AtomicU64::new(0);
            let hashed = hash_file(&file, &layout, threads, &|n| {
                seen.fetch_add(n, Ordering::Relaxed);
            })
            .unwrap();
            assert_eq!(hashed.root, expected, "{threads} threads");
            assert_eq!(hashed.pieces.len(), layout.piece_count() as usize);
            assert_eq!(seen.load(Ordering::Relaxed), data.len() as u64);
        }
    }

    #[test]
    fn a_short_file_is_an_error() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[1; 70_000]).unwrap();
        let layout = PieceLayout::new(100_000, 16384).unwrap();
        let err = hash_file(&file, &layout, 2, &|_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
