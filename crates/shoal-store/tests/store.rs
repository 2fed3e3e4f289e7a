//! Behaviour of the piece store through its public API, on real directories.

#![allow(clippy::unwrap_used)]

mod common;

use common::{PIECE, manifest, payload, piece};
use shoal_core::content::{PieceIndex, RootHash};
use shoal_store::{Config, Durability, GcReason, PieceWritten, Store, StoreError, SyncBatch};
use std::os::unix::fs::FileExt;
use std::time::Duration;

fn config() -> Config {
    Config {
        durability: Durability::Flush,
        ..Config::default()
    }
}

#[test]
fn only_verified_pieces_are_written_and_the_last_one_completes_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(5 * PIECE + 123, 1);
    let m = manifest(&data, "api", 1);
    let mut store = Store::open(dir.path(), config()).unwrap();
    let release = store.add(&m).unwrap();
    assert_eq!(release.have_count(), 0);

    // A corrupted piece is refused and nothing of it reaches the disk.
    let mut bad = piece(&data, 2).to_vec();
    bad[7] ^= 0x40;
    assert!(matches!(
        release.write_piece(PieceIndex(2), &bad),
        Err(StoreError::BadPiece { .. })
    ));
    assert!(!release.have().contains(2));
    let mut on_disk = vec![0u8; PIECE];
    std::fs::File::open(release.payload_path())
        .unwrap()
        .read_exact_at(&mut on_disk, 2 * PIECE as u64)
        .unwrap();
    assert!(
        on_disk.iter().all(|&b| b == 0),
        "refused bytes reached the disk"
    );
    assert!(matches!(
        release.read_piece(PieceIndex(2)),
        Err(StoreError::NotHave { .. })
    ));

    for i in [5, 0, 3, 1, 4] {
        assert_eq!(
            release.write_piece(PieceIndex(i), piece(&data, i)).unwrap(),
            PieceWritten::Stored
        );
    }
    assert!(!release.is_complete());
    assert_eq!(
        release.write_piece(PieceIndex(0), piece(&data, 0)).unwrap(),
        PieceWritten::AlreadyHad
    );
    assert_eq!(
        release.write_piece(PieceIndex(2), piece(&data, 2)).unwrap(),
        PieceWritten::Completed
    );
    assert!(release.is_complete());
    assert_eq!(std::fs::read(release.payload_path()).unwrap(), data);
    assert_eq!(release.read_piece(PieceIndex(5)).unwrap(), piece(&data, 5));
}

#[test]
fn verified_pieces_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(4 * PIECE, 2);
    let m = manifest(&data, "api", 1);
    {
        let mut store = Store::open(dir.path(), config()).unwrap();
        let release = store.add(&m).unwrap();
        release.write_piece(PieceIndex(1), piece(&data, 1)).unwrap();
        release.write_piece(PieceIndex(3), piece(&data, 3)).unwrap();
    }
    let mut store = Store::open(dir.path(), config()).unwrap();
    let release = store.get(&m.root()).unwrap();
    assert_eq!(release.have().iter().collect::<Vec<_>>(), vec![1, 3]);
    // Adding it again resumes the same release instead of starting over.
    let again = store.add(&m).unwrap();
    assert_eq!(again.have_count(), 2);
}

#[test]
fn a_release_found_without_its_marker_is_hashed_again_and_a_changed_piece_is_refetched() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(3 * PIECE, 3);
    let m = manifest(&data, "api", 1);
    {
        let mut store = Store::open(dir.path(), config()).unwrap();
        let release = store.add(&m).unwrap();
        for i in 0..3 {
            release.write_piece(PieceIndex(i), piece(&data, i)).unwrap();
        }
        assert!(release.is_complete());
        // A crash between the last flush and the marker, and the disk flips a bit in piece 1.
        std::fs::remove_file(release.dir().join("complete")).unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(release.payload_path())
            .unwrap();
        file.write_all_at(&[data[PIECE + 5] ^ 1], PIECE as u64 + 5)
            .unwrap();
    }
    let store = Store::open(dir.path(), config()).unwrap();
    let release = store.get(&m.root()).unwrap();
    assert!(!release.is_complete());
    assert_eq!(release.have().iter().collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(
        release.write_piece(PieceIndex(1), piece(&data, 1)).unwrap(),
        PieceWritten::Completed
    );
    assert_eq!(std::fs::read(release.payload_path()).unwrap(), data);
}

#[test]
fn bits_reach_the_bitmap_file_only_with_their_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(10 * PIECE, 4);
    let m = manifest(&data, "api", 1);
    let config = Config {
        sync_batch: SyncBatch {
            bytes: 4 * PIECE as u64,
            interval: Duration::from_secs(3600),
        },
        ..config()
    };
    let on_disk = || -> Vec<u32> {
        let store = Store::open_read_only(dir.path()).unwrap();
        store.get(&m.root()).unwrap().have().iter().collect()
    };
    let mut store = Store::open(dir.path(), config.clone()).unwrap();
    let release = store.add(&m).unwrap();
    for i in [7, 2, 9] {
        release.write_piece(PieceIndex(i), piece(&data, i)).unwrap();
    }
    // Stored and served at once, but not yet claimed on disk.
    assert_eq!(release.have_count(), 3);
    assert_eq!(release.read_piece(PieceIndex(2)).unwrap(), piece(&data, 2));
    assert_eq!(on_disk(), Vec::<u32>::new());
    release.write_piece(PieceIndex(0), piece(&data, 0)).unwrap();
    assert_eq!(on_disk(), vec![0, 2, 7, 9]);
    release.write_piece(PieceIndex(5), piece(&data, 5)).unwrap();
    assert_eq!(on_disk(), vec![0, 2, 7, 9]);
    assert!(!release.flush().unwrap());
    assert_eq!(on_disk(), vec![0, 2, 5, 7, 9]);
    release.write_piece(PieceIndex(1), piece(&data, 1)).unwrap();
    // Letting go of the release (an orderly stop) flushes what is waiting.
    drop(release);
    drop(store);
    assert_eq!(on_disk(), vec![0, 1, 2, 5, 7, 9]);
    // The last piece flushes whatever is waiting, and completes the release.
    let mut store = Store::open(dir.path(), config).unwrap();
    let release = store.add(&m).unwrap();
    for i in [3, 4, 6] {
        assert_eq!(
            release.write_piece(PieceIndex(i), piece(&data, i)).unwrap(),
            PieceWritten::Stored
        );
    }
    assert_eq!(
        release.write_piece(PieceIndex(8), piece(&data, 8)).unwrap(),
        PieceWritten::Completed
    );
    assert_eq!(on_disk().len(), 10);
    assert!(release.is_complete());
}

#[test]
fn import_fills_from_a_file_and_refuses_a_different_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(7 * PIECE + 9, 4);
    let m = manifest(&data, "api", 1);
    let src = dir.path().join("src.bin");
    let mut store = Store::open(dir.path().join("store"), config()).unwrap();

    let mut altered = data.clone();
    altered[3 * PIECE + 1] ^= 1;
    std::fs::write(&src, &altered).unwrap();
    let file = std::fs::File::open(&src).unwrap();
    let err = store.import(&m, &file, &src, &|_| {}).unwrap_err();
    assert!(matches!(err, StoreError::SourceMismatch { .. }), "{err}");
    assert!(!store.get(&m.root()).unwrap().is_complete());

    std::fs::write(&src, &data).unwrap();
    let file = std::fs::File::open(&src).unwrap();
    let seen = std::sync::atomic::AtomicU64::new(0);
    let release = store
        .import(&m, &file, &src, &|n| {
            seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    assert!(release.is_complete());
    assert_eq!(seen.into_inner(), data.len() as u64);

    let short = dir.path().join("short.bin");
    std::fs::write(&short, &data[..100]).unwrap();
    let file = std::fs::File::open(&short).unwrap();
    let other = manifest(&payload(2 * PIECE, 9), "api", 2);
    assert!(matches!(
        store.import(&other, &file, &short, &|_| {}),
        Err(StoreError::SourceLength { len_bytes: 100, .. })
    ));
    assert!(
        store.get(&other.root()).is_none(),
        "a refused import left a release behind"
    );
}

#[test]
fn a_second_writer_is_refused_and_readers_still_see_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path(), config()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), config()),
        Err(StoreError::Locked(_))
    ));
    assert!(Store::open_read_only(dir.path()).is_ok());
}

#[test]
fn a_data_dir_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file, config()).unwrap_err();
    assert!(matches!(err, StoreError::DataDir { .. }));
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn broken_release_dirs_are_listed_and_collected_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(2 * PIECE, 5);
    let m = manifest(&data, "api", 1);
    {
        let mut store = Store::open(dir.path(), config()).unwrap();
        store.add(&m).unwrap();
    }
    let release_dir = dir.path().join("releases").join(m.root().to_hex());
    std::fs::write(release_dir.join("manifest"), b"SHOALMF\0\x01garbage").unwrap();
    let mut store = Store::open(dir.path(), config()).unwrap();
    assert!(store.get(&m.root()).is_none());
    assert_eq!(store.broken().len(), 1);
    let plan = store.gc().unwrap();
    assert!(matches!(plan.remove[0].reason, GcReason::Broken(_)));
    assert!(!release_dir.exists());
}

#[test]
fn gc_keeps_the_newest_and_previous_and_pinned_releases() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(
        dir.path(),
        Config {
            keep_previous: 1,
            ..config()
        },
    )
    .unwrap();
    let mut roots: Vec<RootHash> = Vec::new();
    for counter in 1..=5u64 {
        let data = payload(2 * PIECE, counter as u8);
        let m = manifest(&data, "api", counter);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &data).unwrap();
        store
            .import(&m, file.as_file(), file.path(), &|_| {})
            .unwrap();
        roots.push(m.root());
    }
    let other = manifest(&payload(PIECE, 77), "web", 1);
    store.add(&other).unwrap();
    store.set_pinned(&roots[0], true).unwrap();

    let plan = store.gc().unwrap();
    let removed: Vec<RootHash> = plan.remove.iter().filter_map(|a| a.root).collect();
    // Newest (5) and one previous (4) kept, 1 pinned, 2 and 3 collected, "web" untouched.
    assert_eq!(removed, vec![roots[2], roots[1]]);
    for kept in [roots[0], roots[3], roots[4], other.root()] {
        assert!(store.get(&kept).is_some());
    }
    assert!(matches!(
        store.remove(&roots[0]),
        Err(StoreError::Pinned(_))
    ));
}

#[test]
fn the_budget_collects_oldest_first_and_refuses_what_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let release_bytes = 64 * PIECE;
    // Room for about three releases of this service (plus metadata).
    let budget = (3 * release_bytes + 64 * 1024) as u64;
    let mut store = Store::open(
        dir.path(),
        Config {
            keep_previous: 10,
            budget_bytes: Some(budget),
            ..config()
        },
    )
    .unwrap();
    let mut roots = Vec::new();
    for counter in 1..=5u64 {
        let m = manifest(&payload(release_bytes, counter as u8), "api", counter);
        store.add(&m).unwrap();
        roots.push(m.root());
        assert!(store.used_bytes() <= budget, "store above its budget");
    }
    // The oldest went to make room for the newer ones.
    assert!(store.get(&roots[0]).is_none());
    assert!(store.get(&roots[4]).is_some());
    assert!(store.get(&roots[3]).is_some());

    // A release bigger than the whole budget is refused, and nothing of it is left.
    let huge = manifest(&payload(4 * release_bytes, 99), "big", 1);
    assert!(matches!(
        store.add(&huge),
        Err(StoreError::OverBudget { .. })
    ));
    assert!(store.get(&huge.root()).is_none());
    assert!(
        !dir.path()
            .join("staging")
            .join(huge.root().to_hex())
            .exists()
    );
}

#[test]
fn a_read_only_store_changes_nothing_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(2 * PIECE, 6);
    let m = manifest(&data, "api", 1);
    {
        let mut store = Store::open(dir.path(), config()).unwrap();
        store.add(&m).unwrap();
    }
    let bitmap = dir
        .path()
        .join("releases")
        .join(m.root().to_hex())
        .join("pieces");
    std::fs::write(&bitmap, b"not a bitmap").unwrap();

    let mut store = Store::open_read_only(dir.path()).unwrap();
    let release = store.get(&m.root()).unwrap();
    assert_eq!(release.have_count(), 0);
    assert!(matches!(
        release.write_piece(PieceIndex(0), piece(&data, 0)),
        Err(StoreError::ReadOnly(_))
    ));
    assert!(matches!(store.gc(), Err(StoreError::ReadOnly(_))));
    assert!(matches!(
        store.remove(&m.root()),
        Err(StoreError::ReadOnly(_))
    ));
    assert_eq!(
        std::fs::read(&bitmap).unwrap(),
        b"not a bitmap",
        "read-only open repaired a file"
    );
}
