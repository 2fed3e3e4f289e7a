//! Data-plane messages: who has which pieces, requests for them, and the pieces themselves.
//!
//! Two peers share one QUIC connection. The side that dialled opens one bidirectional *control
//! stream*; both sides send [`PieceMessage`] frames on it:
//!
//! 1. [`PieceMessage::Hello`] first, with the sender's labels;
//! 2. [`PieceMessage::Have`] per release the sender holds or wants, then
//!    [`PieceMessage::HaveDelta`] as it verifies more;
//! 3. [`PieceMessage::Request`], [`PieceMessage::Cancel`] and [`PieceMessage::Reject`];
//! 4. [`PieceMessage::Peers`], other swarm members the receiver may dial (peer exchange).
//!
//! Each piece travels on its own unidirectional stream, opened by the sender: one
//! [`PieceHeader`] frame, then exactly `len` raw bytes, then the end of the stream. Pieces never
//! wait behind each other or behind control messages, and a cancelled piece is stopped without
//! touching the rest. The receiver verifies every piece before it counts.

use crate::bitfield::Bitfield;
use crate::content::{PieceIndex, RootHash};
use crate::labels::Labels;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The frame limit for control streams. The largest message is a have-bitfield of
/// [`MAX_PIECES`](crate::content::MAX_PIECES) bits (128 KiB).
pub const MAX_CONTROL_FRAME_BYTES: usize = 256 * 1024;

/// The frame limit for the header that opens a piece stream.
pub const MAX_HEADER_FRAME_BYTES: usize = 256;

/// The most piece indices one [`PieceMessage::HaveDelta`] carries; a sender batches beyond it.
pub const MAX_DELTA_PIECES: usize = 4096;

/// The most peers one [`PieceMessage::Peers`] names.
pub const MAX_EXCHANGED_PEERS: usize = 64;

/// One control-stream message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PieceMessage {
    /// The first message each way.
    Hello {
        /// The sender's labels (locality: `region`, `fd`, `rack`).
        labels: Labels,
        /// The sender's encoded admission certificate; empty outside a mesh. A node that
        /// requires admission closes the connection unless it is valid for the sender.
        certificate: Vec<u8>,
    },
    /// Every piece of `root` the sender has verified; also says the sender takes part in `root`.
    Have {
        /// The release.
        root: RootHash,
        /// The verified pieces.
        pieces: Bitfield,
        /// Whether the sender is the release's origin (peers spare it; see the swarm docs).
        origin: bool,
    },
    /// Pieces of `root` the sender has verified since its last `Have` or `HaveDelta`.
    HaveDelta {
        /// The release.
        root: RootHash,
        /// Newly verified pieces, at most [`MAX_DELTA_PIECES`].
        pieces: Vec<PieceIndex>,
    },
    /// Asks for one piece. The answer is a piece stream or a [`PieceMessage::Reject`].
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
    /// Declines a request.
    Reject {
        /// The release.
        root: RootHash,
        /// The piece.
        piece: PieceIndex,
        /// Why.
        reason: RejectReason,
    },
    /// Other members of the swarm of `root`, with the addresses they listen on.
    Peers {
        /// The release.
        root: RootHash,
        /// At most [`MAX_EXCHANGED_PEERS`] peers.
        peers: Vec<PeerAddr>,
    },
}

/// A peer's listening address and labels, for peer exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddr {
    /// Where it listens (QUIC on UDP).
    pub addr: SocketAddr,
    /// Its labels.
    pub labels: Labels,
}

/// The first frame of a piece stream; exactly `len` raw bytes follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceHeader {
    /// The release.
    pub root: RootHash,
    /// The piece.
    pub piece: PieceIndex,
    /// The piece's length, which must equal the layout's length for it.
    pub len: u32,
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
    /// The sender (an origin) is sending this piece to another peer that does not have it yet:
    /// ask that peer once it announces the piece, or this sender again later.
    SentElsewhere,
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
            Just(RejectReason::Busy),
            Just(RejectReason::SentElsewhere)
        ];
        prop_oneof![
            (
                root(),
                proptest::collection::vec(piece.clone(), 0..MAX_DELTA_PIECES)
            )
                .prop_map(|(root, pieces)| PieceMessage::HaveDelta { root, pieces }),
            (root(), piece.clone()).prop_map(|(root, piece)| PieceMessage::Request { root, piece }),
            (root(), piece.clone()).prop_map(|(root, piece)| PieceMessage::Cancel { root, piece }),
            (root(), bitfield(), any::<bool>()).prop_map(|(root, pieces, origin)| {
                PieceMessage::Have {
                    root,
                    pieces,
                    origin,
                }
            }),
            proptest::collection::vec(any::<u8>(), 0..512).prop_map(|certificate| {
                PieceMessage::Hello {
                    labels: "region=r1,fd=2,rack=7".parse().unwrap(),
                    certificate,
                }
            }),
            (
                root(),
                proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..MAX_EXCHANGED_PEERS)
            )
                .prop_map(|(root, addrs)| PieceMessage::Peers {
                    root,
                    peers: addrs
                        .into_iter()
                        .map(|(ip, port)| PeerAddr {
                            addr: (ip, port).into(),
                            labels: Labels::default()
                        })
                        .collect(),
                }),
            (root(), piece, reason).prop_map(|(root, piece, reason)| PieceMessage::Reject {
                root,
                piece,
                reason
            }),
        ]
    }

    #[test]
    fn largest_have_fits_a_control_frame() {
        let count = u32::try_from(crate::content::MAX_PIECES).unwrap();
        let msg = PieceMessage::Have {
            root: RootHash([7; 32]),
            pieces: Bitfield::full(count),
            origin: true,
        };
        let mut buf = BytesMut::new();
        encode(&msg, MAX_CONTROL_FRAME_BYTES, &mut buf).unwrap();
        let delta = PieceMessage::HaveDelta {
            root: RootHash([7; 32]),
            pieces: vec![PieceIndex(u32::MAX); MAX_DELTA_PIECES],
        };
        encode(&delta, MAX_CONTROL_FRAME_BYTES, &mut buf).unwrap();
        let header = PieceHeader {
            root: RootHash([7; 32]),
            piece: PieceIndex(u32::MAX),
            len: u32::MAX,
        };
        encode(&header, MAX_HEADER_FRAME_BYTES, &mut buf).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_message_round_trips_through_a_frame(msgs in proptest::collection::vec(message(), 1..4)) {
            let mut buf = BytesMut::new();
            for m in &msgs {
                encode(m, MAX_CONTROL_FRAME_BYTES, &mut buf).unwrap();
            }
            let decoder = FrameDecoder::new(MAX_CONTROL_FRAME_BYTES);
            for m in &msgs {
                let got: PieceMessage = decoder.decode(&mut buf).unwrap().unwrap();
                prop_assert_eq!(&got, m);
            }
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn a_frame_cut_short_is_incomplete_never_wrong(m in message(), cut in any::<prop::sample::Index>()) {
            let mut full = BytesMut::new();
            encode(&m, MAX_CONTROL_FRAME_BYTES, &mut full).unwrap();
            let cut = cut.index(full.len());
            let mut partial = BytesMut::from(&full[..cut]);
            let decoder = FrameDecoder::new(MAX_CONTROL_FRAME_BYTES);
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
