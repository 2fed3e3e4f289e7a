//! Helpers shared by the store's tests: payloads, keys, trust and verified manifests.
#![allow(dead_code, missing_docs)]
#![allow(clippy::unwrap_used)]

use shoal_core::content::{PieceHasher, PieceLayout, RootHash};
use shoal_core::keys::{Role, SecretKey};
use shoal_core::manifest::{Manifest, SignedManifest, VerifiedManifest};
use shoal_core::trust::Trust;

pub const PIECE: usize = 16384;

pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed ^ (i >> 10) as u8)
        .collect()
}

pub fn trust() -> (SecretKey, Trust) {
    let root = SecretKey::from_seed(Role::Root, [1; 32]);
    let publisher = SecretKey::from_seed(Role::Publisher, [2; 32]);
    let coordinator = SecretKey::from_seed(Role::Coordinator, [3; 32]);
    let trust = Trust::sign(
        &root,
        vec![publisher.public()],
        vec![coordinator.public()],
        0,
    )
    .unwrap();
    (publisher, trust)
}

pub fn manifest(data: &[u8], service: &str, counter: u64) -> VerifiedManifest {
    let (publisher, trust) = trust();
    let layout = PieceLayout::new(data.len() as u64, PIECE as u64).unwrap();
    let pieces = layout
        .indices()
        .map(|i| {
            let start = layout.offset(i) as usize;
            PieceHasher::new(&layout, i)
                .update(&data[start..start + layout.piece_len(i) as usize])
                .finish()
        })
        .collect();
    let m = Manifest {
        service: service.into(),
        version: format!("1.0.{counter}"),
        release_counter: counter,
        size_bytes: data.len() as u64,
        piece_size_bytes: PIECE as u32,
        created_at_unix_secs: 1_700_000_000 + counter,
        root: RootHash::from(blake3::hash(data)),
        pieces,
        publisher: publisher.public(),
    };
    SignedManifest::sign(m, &publisher)
        .unwrap()
        .verify(&trust)
        .unwrap()
}

pub fn piece(data: &[u8], i: u32) -> &[u8] {
    let start = i as usize * PIECE;
    &data[start..(start + PIECE).min(data.len())]
}
