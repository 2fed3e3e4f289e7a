//! The wire format shared by Shoal's protocols.
//!
//! Every message travels as one frame:
//!
//! ```text
//! +----------------+---------+---------------------------+
//! | length: u32 BE | version | postcard-encoded message  |
//! +----------------+---------+---------------------------+
//!                  '----------- length bytes ------------'
//! ```
//!
//! The length is checked against the receiver's limit before a single byte of the message is
//! buffered or decoded, so a peer cannot make a receiver allocate more than it chose to allow.
//! The version byte lets a future format coexist with this one: a receiver refuses versions it does
//! not know, by name, instead of misreading them.
//!
//! [`encode`] writes a frame; [`FrameDecoder`] takes frames out of a growing buffer, so a driver
//! can feed it whatever the socket delivered. [`piece`] holds the data-plane messages.

mod frame;
pub mod piece;

pub use frame::{FrameDecoder, FrameError, HEADER_BYTES, WIRE_VERSION, encode};
