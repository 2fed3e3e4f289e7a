//! How a payload is cut into pieces.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The smallest piece size allowed: 16 KiB. Smaller pieces would make manifests of large payloads
/// needlessly long (32 bytes per piece) without helping scheduling.
pub const MIN_PIECE_SIZE_BYTES: u32 = 16 * 1024;

/// The largest piece size allowed: 64 MiB. A piece is the unit of verification, so a peer holds a
/// whole piece in memory before it can check it.
pub const MAX_PIECE_SIZE_BYTES: u32 = 64 * 1024 * 1024;

/// The most pieces one payload may have (2^20). With 64 MiB pieces that is 64 TiB; the piece list
/// of a manifest is then at most 32 MiB.
pub const MAX_PIECES: u64 = 1 << 20;

/// The index of a piece within its payload, counting from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PieceIndex(pub u32);

impl fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a size and piece size do not make a valid layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The piece size is not a power of two.
    #[error("piece size {0} bytes is not a power of two (try 1048576 for 1 MiB)")]
    NotPowerOfTwo(u64),
    /// The piece size is outside `MIN_PIECE_SIZE_BYTES..=MAX_PIECE_SIZE_BYTES`.
    #[error(
        "piece size {0} bytes is out of range: it must be between {MIN_PIECE_SIZE_BYTES} (16 KiB) and {MAX_PIECE_SIZE_BYTES} (64 MiB)"
    )]
    OutOfRange(u64),
    /// The payload would have more than `MAX_PIECES` pieces.
    #[error(
        "a payload of {size_bytes} bytes in pieces of {piece_size_bytes} bytes has {pieces} pieces, more than the limit of {MAX_PIECES}: choose a larger piece size"
    )]
    TooManyPieces {
        /// Payload size.
        size_bytes: u64,
        /// Piece size.
        piece_size_bytes: u32,
        /// The piece count that was too high.
        pieces: u64,
    },
}

/// The piece layout of one payload: its size and its piece size.
///
/// A layout always has at least one piece; an empty payload has one empty piece, so that every
/// payload, empty or not, has a root and a piece to verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceLayout {
    size_bytes: u64,
    piece_size_bytes: u32,
    piece_count: u32,
}

impl PieceLayout {
    /// Checks the piece size and the resulting piece count and builds the layout.
    ///
    /// # Errors
    ///
    /// A piece size that is not a power of two or is out of range, or a payload with more than
    /// [`MAX_PIECES`] pieces.
    pub fn new(size_bytes: u64, piece_size_bytes: u64) -> Result<Self, LayoutError> {
        if !piece_size_bytes.is_power_of_two() {
            return Err(LayoutError::NotPowerOfTwo(piece_size_bytes));
        }
        if !(u64::from(MIN_PIECE_SIZE_BYTES)..=u64::from(MAX_PIECE_SIZE_BYTES))
            .contains(&piece_size_bytes)
        {
            return Err(LayoutError::OutOfRange(piece_size_bytes));
        }
        let piece_size_bytes = piece_size_bytes as u32;
        let pieces = size_bytes.div_ceil(u64::from(piece_size_bytes)).max(1);
        if pieces > MAX_PIECES {
            return Err(LayoutError::TooManyPieces {
                size_bytes,
                piece_size_bytes,
                pieces,
            });
        }
        Ok(Self {
            size_bytes,
            piece_size_bytes,
            piece_count: pieces as u32,
        })
    }

    /// The payload size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The size of every piece but the last, in bytes.
    pub fn piece_size_bytes(&self) -> u32 {
        self.piece_size_bytes
    }

    /// The number of pieces, at least one.
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// All piece indices in order.
    pub fn indices(&self) -> impl Iterator<Item = PieceIndex> + use<> {
        (0..self.piece_count).map(PieceIndex)
    }

    /// The byte offset of a piece in the payload.
    ///
    /// # Panics
    ///
    /// If `index` is not a piece of this layout (a programming error: check with
    /// [`contains`](Self::contains) first when the index comes from a peer).
    pub fn offset(&self, index: PieceIndex) -> u64 {
        assert!(self.contains(index), "piece {index} out of range");
        u64::from(index.0) * u64::from(self.piece_size_bytes)
    }

    /// The length of a piece in bytes: the piece size, except for the last piece.
    ///
    /// # Panics
    ///
    /// If `index` is not a piece of this layout.
    pub fn piece_len(&self, index: PieceIndex) -> u32 {
        let offset = self.offset(index);
        (self.size_bytes - offset).min(u64::from(self.piece_size_bytes)) as u32
    }

    /// Whether `index` names a piece of this layout.
    pub fn contains(&self, index: PieceIndex) -> bool {
        index.0 < self.piece_count
    }
}

/// The piece size Shoal picks when the publisher does not choose one: the largest power of two at
/// most `size / 2048`, kept between 1 MiB and 16 MiB: 1 MiB below 4 GiB, then 2048 to 4096 pieces
/// (4 MiB for 10 GiB) up to 32 GiB. That keeps the piece count in the low thousands so scheduling
/// stays cheap and a manifest small, while small payloads still have pieces to spread.
pub fn default_piece_size(size_bytes: u64) -> u32 {
    const MIN: u64 = 1024 * 1024;
    const MAX: u64 = 16 * 1024 * 1024;
    let target = (size_bytes / 2048).clamp(MIN, MAX);
    // Largest power of two <= target; target >= MIN > 0.
    (1u64 << (63 - target.leading_zeros())) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_piece_sizes() {
        assert_eq!(
            PieceLayout::new(10, 3 * 16384),
            Err(LayoutError::NotPowerOfTwo(3 * 16384))
        );
        assert_eq!(
            PieceLayout::new(10, 8192),
            Err(LayoutError::OutOfRange(8192))
        );
        assert_eq!(
            PieceLayout::new(10, 128 << 20),
            Err(LayoutError::OutOfRange(128 << 20))
        );
        assert_eq!(PieceLayout::new(10, 0), Err(LayoutError::NotPowerOfTwo(0)));
        assert!(matches!(
            PieceLayout::new((MAX_PIECES + 1) * 16384, 16384),
            Err(LayoutError::TooManyPieces { .. })
        ));
    }

    #[test]
    fn last_piece_is_short() {
        let layout = PieceLayout::new(40_000, 16384).unwrap();
        assert_eq!(layout.piece_count(), 3);
        assert_eq!(layout.piece_len(PieceIndex(0)), 16384);
        assert_eq!(layout.piece_len(PieceIndex(2)), 40_000 - 2 * 16384);
        assert_eq!(layout.offset(PieceIndex(2)), 2 * 16384);
        assert!(!layout.contains(PieceIndex(3)));
    }

    #[test]
    fn empty_payload_has_one_empty_piece() {
        let layout = PieceLayout::new(0, 16384).unwrap();
        assert_eq!(layout.piece_count(), 1);
        assert_eq!(layout.piece_len(PieceIndex(0)), 0);
    }

    #[test]
    fn default_piece_sizes_follow_the_design() {
        assert_eq!(default_piece_size(0), 1 << 20);
        assert_eq!(default_piece_size(1 << 30), 1 << 20);
        assert_eq!(default_piece_size(10 << 30), 4 << 20);
        assert_eq!(default_piece_size(1 << 40), 16 << 20);
    }
}
