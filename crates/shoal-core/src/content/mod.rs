//! The content model: payloads, pieces and the BLAKE3 tree that ties them to one root hash.
//!
//! A payload of `size` bytes is cut into pieces of `piece_size` bytes, a power of two; only the
//! last piece may be shorter. Because BLAKE3 is itself a binary tree over 1 KiB chunks, and a
//! power-of-two piece of at least one chunk is always a complete subtree of that tree, each piece has
//! a *chaining value* (the interior hash of its subtree) that can be computed from the piece alone.
//! [`combine_root`] merges those chaining values exactly as BLAKE3 does, so the result equals
//! `blake3::hash(payload)`, the value `b3sum` prints.
//!
//! That gives two checks a receiver makes before trusting anything:
//! 1. the piece list in a manifest combines to the signed root ([`combine_root`]);
//! 2. each piece it receives hashes to its listed chaining value ([`PieceVerifier::verify`]).

mod layout;
mod tree;

pub use layout::{
    LayoutError, MAX_PIECE_SIZE_BYTES, MAX_PIECES, MIN_PIECE_SIZE_BYTES, PieceIndex, PieceLayout,
    default_piece_size,
};
pub use tree::{ChainingValue, PieceHasher, PieceVerifier, RootHash, VerifyError, combine_root};
