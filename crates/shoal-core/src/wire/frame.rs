//! Length-prefixed, versioned frames.

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The frame format version this build writes and reads.
pub const WIRE_VERSION: u8 = 1;

/// Bytes before the message: the 4-byte length and the version byte.
pub const HEADER_BYTES: usize = 5;

/// Why a frame could not be written or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is longer than the limit. Raised from the length prefix alone.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced (or, when encoding, actual) frame length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The length prefix is zero: not even a version byte follows.
    #[error("frame has length zero")]
    Empty,
    /// The frame carries a version this build does not read.
    #[error("frame version {0} is not supported (this build speaks version {WIRE_VERSION})")]
    UnsupportedVersion(u8),
    /// The message inside the frame does not decode, or leaves bytes unread.
    #[error("frame content is malformed: {0}")]
    Malformed(String),
}

/// Appends `message` to `out` as one frame.
///
/// # Errors
///
/// [`FrameError::TooLarge`] if the frame would exceed `max_frame_bytes` (the limit the receiver
/// will apply); nothing is appended then.
pub fn encode<T: Serialize>(
    message: &T,
    max_frame_bytes: usize,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let body = postcard::to_stdvec(message).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = body.len() + 1;
    if len > max_frame_bytes || u32::try_from(len).is_err() {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: max_frame_bytes,
        });
    }
    out.reserve(4 + len);
    out.put_u32(len as u32);
    out.put_u8(WIRE_VERSION);
    out.put_slice(&body);
    Ok(())
}

/// Takes frames out of a receive buffer.
///
/// Sans-IO: the driver appends whatever bytes arrived to a `BytesMut` and calls
/// [`decode`](Self::decode) until it returns `Ok(None)` (more bytes needed). An `Err` means the
/// peer broke the protocol; the stream cannot be resynchronised and should be closed.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame_bytes` (length prefix excluded).
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// The limit this decoder enforces.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// How many more bytes `buf` needs before the next frame is complete, once its length prefix
    /// has arrived and passed the limit. Lets a driver read exactly one frame's worth.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] or [`FrameError::Empty`] from the length prefix.
    pub fn bytes_needed(&self, buf: &[u8]) -> Result<usize, FrameError> {
        let Some(len) = self.frame_len(buf)? else {
            return Ok(4 - buf.len());
        };
        Ok((4 + len).saturating_sub(buf.len()))
    }

    /// Decodes the next frame from the front of `buf`, removing its bytes; `Ok(None)` if the frame
    /// is not complete yet (nothing is removed then).
    ///
    /// # Errors
    ///
    /// An oversize or empty frame (from the length prefix alone), an unknown version, or content
    /// that does not decode as exactly one `T`.
    pub fn decode<T: DeserializeOwned>(&self, buf: &mut BytesMut) -> Result<Option<T>, FrameError> {
        let Some(len) = self.frame_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let frame = buf.split_to(len);
        let (&version, body) = frame.split_first().ok_or(FrameError::Empty)?;
        if version != WIRE_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let (message, rest) =
            postcard::take_from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(FrameError::Malformed(format!(
                "{} bytes left over after the message",
                rest.len()
            )));
        }
        Ok(Some(message))
    }

    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if u64::from(len) > self.max_frame_bytes as u64 {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max: self.max_frame_bytes,
            });
        }
        Ok(Some(len as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_one_at_a_time_as_bytes_arrive() {
        let mut wire = BytesMut::new();
        encode(&(1u32, "first".to_string()), 1024, &mut wire).unwrap();
        encode(&(2u32, "second".to_string()), 1024, &mut wire).unwrap();
        let decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            if let Some(msg) = decoder.decode::<(u32, String)>(&mut buf).unwrap() {
                got.push(msg);
            }
        }
        assert_eq!(got, vec![(1, "first".into()), (2, "second".into())]);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_length_is_refused_from_the_prefix_alone() {
        let decoder = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 101][..]);
        assert_eq!(
            decoder.decode::<u32>(&mut buf),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(
            decoder.bytes_needed(&buf),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        let mut out = BytesMut::new();
        assert!(matches!(
            encode(&vec![0u8; 200], 100, &mut out),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn bad_version_empty_frame_and_leftovers_are_refused() {
        let decoder = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 2, 9, 0][..]);
        assert_eq!(
            decoder.decode::<u8>(&mut buf),
            Err(FrameError::UnsupportedVersion(9))
        );
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(decoder.decode::<u8>(&mut buf), Err(FrameError::Empty));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, WIRE_VERSION, 1, 2][..]);
        assert!(matches!(
            decoder.decode::<u8>(&mut buf),
            Err(FrameError::Malformed(_))
        ));
    }
}
