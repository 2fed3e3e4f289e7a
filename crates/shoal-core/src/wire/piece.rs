//! Data-plane messages: who has which pieces, requests for them, and the pieces themselves.
//!
//! A peer opens with a [`PieceMessage::Have`] bitfield per release it serves, then sends
//! [`PieceMessage::HaveDelta`] as it verifies more. A requester asks with
//! [`PieceMessage::Request`], may withdraw with [`PieceMessage::Cancel`], and gets back either
//! [`PieceMessage::Piece`] or [`PieceMessage::Reject`].

use crate::bitfield::Bitfield;
use crate::content::{MAX_PIECE_SIZE_BYTES, PieceIndex, RootHash};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The frame limit for data-plane streams: the largest piece plus room for its header.
pub const MAX_PIECE_FRAME_BYTES: usize = MAX_PIECE_SIZE_BYTES as usize + 4096;

/// The most piece indices one [`PieceMessage::HaveDelta`] carries; a sender batches beyond it.
pub const MAX_DELTA_PIECES: usize = 4096;

/// One data-plane message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PieceMessage {
    /// Every piece of `root` the sender has verified.
    Have {
        /// The release.
        root: RootHash,
        /// The verified pieces.
        pieces: Bitfield,
    },
    /// Pieces of `root` the sender has verified since its last `Have` or `HaveDelta`.
    HaveDelta {
        /// The release.
        root: RootHash,
        /// Newly verified pieces, at most [`MAX_DELTA_PIECES`].
        pieces: Vec<PieceIndex>,
    },
    /// Asks for one piece.
    Request {
        /// The release.
        root: RootHash,
        /// The piece.
        piece: PieceIndex,
    },
    /// Withdraws an earlier request.
    Cancel {
        /// The release.
        root: RootHash,
        /// The piece.
        piece: PieceIndex,
    },
    /// One whole piece. The receiver verifies it before it counts.
    Piece {
        /// The release.
        root: RootHash,
        /// The piece.
        piece: PieceIndex,
        /// The piece's bytes.
        data: Bytes,
    },
    /// Declines a request.
    Reject {
        /// The release.
        root: RootHash,
        /// The piece.
        piece: PieceIndex,
        /// Why.
        reason: RejectReason,
    },
}

/// Why a request was declined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The sender does not have the piece verified.
    NotHave,
    /// The sender does not serve this release.
    UnknownRelease,
    /// All upload slots are taken; ask again later or elsewhere.
    Busy,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FrameDecoder, encode};
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn root() -> impl Strategy<Value = RootHash> {
        any::<[u8; 32]>().prop_map(RootHash)
    }

    fn bitfield() -> impl Strategy<Value = Bitfield> {
        (0u32..2000, any::<u64>()).prop_map(|(len, seed)| {
            let mut f = Bitfield::new(len);
            for i in 0..len {
                if (seed.rotate_left(i % 64) ^ u64::from(i)) & 1 == 1 {
                    f.insert(i);
                }
            }
            f
        })
    }

    fn message() -> impl Strategy<Value = PieceMessage> {
        let piece = any::<u32>().prop_map(PieceIndex);
        let reason = prop_oneof![
            Just(RejectReason::NotHave),
            Just(RejectReason::UnknownRelease),
            Just(RejectReason::Busy)
        ];
        prop_oneof![
            (root(), bitfield()).prop_map(|(root, pieces)| PieceMessage::Have { root, pieces }),
            (
                root(),
                proptest::collection::vec(piece.clone(), 0..MAX_DELTA_PIECES)
            )
                .prop_map(|(root, pieces)| PieceMessage::HaveDelta { root, pieces }),
            (root(), piece.clone()).prop_map(|(root, piece)| PieceMessage::Request { root, piece }),
            (root(), piece.clone()).prop_map(|(root, piece)| PieceMessage::Cancel { root, piece }),
            (
                root(),
                piece.clone(),
                proptest::collection::vec(any::<u8>(), 0..70_000)
            )
                .prop_map(|(root, piece, data)| PieceMessage::Piece {
                    root,
                    piece,
                    data: data.into()
                }),
            (root(), piece, reason).prop_map(|(root, piece, reason)| PieceMessage::Reject {
                root,
                piece,
                reason
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_message_round_trips_through_a_frame(msgs in proptest::collection::vec(message(), 1..4)) {
            let mut buf = BytesMut::new();
            for m in &msgs {
                encode(m, MAX_PIECE_FRAME_BYTES, &mut buf).unwrap();
            }
            let decoder = FrameDecoder::new(MAX_PIECE_FRAME_BYTES);
            for m in &msgs {
                let got: PieceMessage = decoder.decode(&mut buf).unwrap().unwrap();
                prop_assert_eq!(&got, m);
            }
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn a_frame_cut_short_is_incomplete_never_wrong(m in message(), cut in any::<prop::sample::Index>()) {
            let mut full = BytesMut::new();
            encode(&m, MAX_PIECE_FRAME_BYTES, &mut full).unwrap();
            let cut = cut.index(full.len());
            let mut partial = BytesMut::from(&full[..cut]);
            let decoder = FrameDecoder::new(MAX_PIECE_FRAME_BYTES);
            prop_assert_eq!(decoder.decode::<PieceMessage>(&mut partial), Ok(None));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let decoder = FrameDecoder::new(1024);
            let mut buf = BytesMut::from(&bytes[..]);
            // Decode until the stream ends or breaks; any result but a panic is acceptable.
            while let Ok(Some(_)) = decoder.decode::<PieceMessage>(&mut buf) {}
        }
    }
}
