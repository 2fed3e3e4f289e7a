//! Chaining values of pieces and the BLAKE3 tree above them.

use super::layout::{PieceIndex, PieceLayout};
use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A BLAKE3 root hash: the id of a release, equal to what `b3sum` prints for its payload.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RootHash(#[serde(with = "crate::hexbytes")] pub [u8; 32]);

impl RootHash {
    /// The root as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootHash({})", self.short())
    }
}

impl FromStr for RootHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|_| format!("{s:?} is not a root hash: expected 64 hex digits"))?;
        Ok(Self(out))
    }
}

impl From<blake3::Hash> for RootHash {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

/// The BLAKE3 chaining value of one piece: the interior (non-root) hash of its subtree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainingValue(#[serde(with = "crate::hexbytes")] pub [u8; 32]);

impl fmt::Debug for ChainingValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainingValue({})", hex::encode(&self.0[..6]))
    }
}

/// Hashes one piece incrementally, for callers that read a piece in blocks.
///
/// Feed the piece's bytes in order with [`update`](Self::update), then call
/// [`finish`](Self::finish). The caller must feed exactly the piece's length; `finish` checks it.
pub struct PieceHasher {
    hasher: blake3::Hasher,
    expected_len: u32,
    fed_len: u64,
    is_whole_payload: bool,
}

impl PieceHasher {
    /// Starts hashing piece `index` of `layout`.
    ///
    /// # Panics
    ///
    /// If `index` is not a piece of `layout`.
    pub fn new(layout: &PieceLayout, index: PieceIndex) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(layout.offset(index));
        Self {
            hasher,
            expected_len: layout.piece_len(index),
            fed_len: 0,
            is_whole_payload: layout.piece_count() == 1,
        }
    }

    /// Feeds the next bytes of the piece.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.hasher.update(bytes);
        self.fed_len += bytes.len() as u64;
        self
    }

    /// The piece's listed value: its chaining value, or, when the piece is the whole payload, the
    /// payload's root hash (a lone piece is the root of the tree, and BLAKE3 finalizes a root
    /// differently from an interior node; an empty payload has no interior node at all).
    ///
    /// # Panics
    ///
    /// If the bytes fed were not exactly the piece's length: a programming error in the caller,
    /// which must size its reads from the layout.
    pub fn finish(&self) -> ChainingValue {
        assert_eq!(
            self.fed_len,
            u64::from(self.expected_len),
            "piece hasher fed the wrong number of bytes"
        );
        if self.is_whole_payload {
            ChainingValue(*self.hasher.finalize().as_bytes())
        } else {
            ChainingValue(self.hasher.finalize_non_root())
        }
    }
}

/// Combines the listed values of all pieces, in order, to the payload's root hash; `None` for an
/// empty list. A one-piece payload lists its root itself (see [`PieceHasher::finish`]).
pub fn combine_root(cvs: &[ChainingValue]) -> Option<RootHash> {
    match cvs {
        [] => None,
        [single] => Some(RootHash(single.0)),
        _ => {
            let (left, right) = cvs.split_at(left_len(cvs.len()));
            Some(RootHash::from(merge_subtrees_root(
                &subtree(left),
                &subtree(right),
                Mode::Hash,
            )))
        }
    }
}

/// The number of pieces in the left subtree of `n >= 2` pieces: the largest power of two below `n`.
/// This mirrors BLAKE3's own split, which puts the largest power-of-two number of chunks strictly
/// before the last byte on the left; with power-of-two pieces that is always a whole number of pieces.
fn left_len(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn subtree(cvs: &[ChainingValue]) -> [u8; 32] {
    match cvs {
        [single] => single.0,
        _ => {
            let (left, right) = cvs.split_at(left_len(cvs.len()));
            merge_subtrees_non_root(&subtree(left), &subtree(right), Mode::Hash)
        }
    }
}

/// Why a piece was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The index is not a piece of this payload.
    #[error("piece {index} does not exist: the payload has {pieces} pieces")]
    NoSuchPiece {
        /// The index asked for.
        index: PieceIndex,
        /// The payload's piece count.
        pieces: u32,
    },
    /// The piece has the wrong length.
    #[error("piece {index} is {got} bytes long, expected {expected}")]
    WrongLength {
        /// The piece.
        index: PieceIndex,
        /// Bytes received.
        got: usize,
        /// Bytes the layout says the piece has.
        expected: u32,
    },
    /// The piece's bytes do not hash to its listed chaining value.
    #[error("piece {index} does not match its hash in the manifest")]
    HashMismatch {
        /// The piece.
        index: PieceIndex,
    },
}

/// Checks pieces against a verified piece list.
///
/// Build it only from a piece list already checked against the root (a verified manifest does
/// that); then a piece that passes [`verify`](Self::verify) is a piece of the signed payload.
#[derive(Clone, Debug)]
pub struct PieceVerifier {
    layout: PieceLayout,
    cvs: Vec<ChainingValue>,
}

impl PieceVerifier {
    /// Builds a verifier from a layout, its piece list and its root.
    ///
    /// # Panics
    ///
    /// If the piece list does not have one entry per piece, or does not combine to `root`: the
    /// caller must hand over a list it has already checked.
    pub fn new(layout: PieceLayout, cvs: Vec<ChainingValue>, root: RootHash) -> Self {
        assert_eq!(
            cvs.len(),
            layout.piece_count() as usize,
            "piece list length"
        );
        assert_eq!(
            combine_root(&cvs),
            Some(root),
            "piece list does not combine to the root"
        );
        Self { layout, cvs }
    }

    /// The layout this verifier checks against.
    pub fn layout(&self) -> &PieceLayout {
        &self.layout
    }

    /// The chaining value listed for `index`, if it is a piece of this payload.
    pub fn expected(&self, index: PieceIndex) -> Option<&ChainingValue> {
        self.cvs.get(index.0 as usize)
    }

    /// Checks that `data` is exactly piece `index`.
    ///
    /// # Errors
    ///
    /// An index out of range, a wrong length, or bytes that do not hash to the listed value.
    pub fn verify(&self, index: PieceIndex, data: &[u8]) -> Result<(), VerifyError> {
        let Some(expected) = self.expected(index) else {
            return Err(VerifyError::NoSuchPiece {
                index,
                pieces: self.layout.piece_count(),
            });
        };
        let expected_len = self.layout.piece_len(index);
        if data.len() != expected_len as usize {
            return Err(VerifyError::WrongLength {
                index,
                got: data.len(),
                expected: expected_len,
            });
        }
        let mut hasher = PieceHasher::new(&self.layout, index);
        hasher.update(data);
        if hasher.finish() == *expected {
            Ok(())
        } else {
            Err(VerifyError::HashMismatch { index })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pieces_of(data: &[u8], piece_size: u64) -> (PieceLayout, Vec<ChainingValue>) {
        let layout = PieceLayout::new(data.len() as u64, piece_size).unwrap();
        let cvs = layout
            .indices()
            .map(|i| {
                let start = layout.offset(i) as usize;
                let end = start + layout.piece_len(i) as usize;
                PieceHasher::new(&layout, i)
                    .update(&data[start..end])
                    .finish()
            })
            .collect();
        (layout, cvs)
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 11) as u8)
            .collect()
    }

    #[test]
    fn root_matches_blake3_at_tree_edges() {
        let p = 16384usize;
        for len in [
            0,
            1,
            1024,
            p - 1,
            p,
            p + 1,
            2 * p,
            3 * p,
            3 * p + 7,
            4 * p,
            5 * p,
            8 * p + 1,
            13 * p - 5,
        ] {
            let data = payload(len, 7);
            let (layout, cvs) = pieces_of(&data, p as u64);
            let root = combine_root(&cvs).unwrap();
            assert_eq!(root, RootHash::from(blake3::hash(&data)), "len {len}");
            let verifier = PieceVerifier::new(layout, cvs, root);
            for i in layout.indices() {
                let start = layout.offset(i) as usize;
                let end = start + layout.piece_len(i) as usize;
                assert_eq!(verifier.verify(i, &data[start..end]), Ok(()));
            }
        }
    }

    #[test]
    fn verify_refuses_a_flipped_byte_and_a_wrong_length() {
        let p = 16384usize;
        let data = payload(3 * p + 100, 1);
        let (layout, cvs) = pieces_of(&data, p as u64);
        let root = combine_root(&cvs).unwrap();
        let verifier = PieceVerifier::new(layout, cvs, root);
        let mut piece = data[p..2 * p].to_vec();
        piece[100] ^= 1;
        assert_eq!(
            verifier.verify(PieceIndex(1), &piece),
            Err(VerifyError::HashMismatch {
                index: PieceIndex(1)
            })
        );
        assert!(matches!(
            verifier.verify(PieceIndex(1), &data[p..2 * p - 1]),
            Err(VerifyError::WrongLength { .. })
        ));
        assert!(matches!(
            verifier.verify(PieceIndex(4), &data[..10]),
            Err(VerifyError::NoSuchPiece { .. })
        ));
        // A piece moved to another index does not verify there.
        assert!(verifier.verify(PieceIndex(0), &data[p..2 * p]).is_err());
    }

    #[test]
    fn single_piece_verifies_against_the_root() {
        let data = payload(5000, 3);
        let (layout, cvs) = pieces_of(&data, 16384);
        let root = combine_root(&cvs).unwrap();
        assert_eq!(root, RootHash::from(blake3::hash(&data)));
        let verifier = PieceVerifier::new(layout, cvs, root);
        assert_eq!(verifier.verify(PieceIndex(0), &data), Ok(()));
        let mut other = data.clone();
        other[0] ^= 1;
        assert!(verifier.verify(PieceIndex(0), &other).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn root_equals_blake3_hash(len in 0usize..300_000, shift in 14u32..17, seed: u8) {
            let data = payload(len, seed);
            let (_, cvs) = pieces_of(&data, 1 << shift);
            let root = combine_root(&cvs).unwrap();
            prop_assert_eq!(root, RootHash::from(blake3::hash(&data)));
        }
    }
}
