//! The framing on every overlay stream: a `u32` big-endian length, then that many bytes.
//!
//! The length is checked against the reader's limit before anything is allocated, so a peer
//! cannot make us buffer more than one frame of at most `max_frame_bytes`.

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use std::io;

/// Bytes in the length prefix.
pub(crate) const HEADER_BYTES: usize = 4;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The length prefix announced more than the reader accepts; nothing of the body was read.
    #[error("frame of {len} bytes exceeds the limit of {max_bytes} bytes")]
    Oversize {
        /// The announced length.
        len: u64,
        /// The reader's limit.
        max_bytes: usize,
    },
    /// The peer finished the stream in the middle of a frame.
    #[error("stream ended {got} bytes into a {expected}-byte frame")]
    Truncated {
        /// Bytes the frame (prefix included) should have had.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The stream failed underneath (reset, connection lost).
    #[error("stream failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame of at most `max_bytes`; `Ok(None)` if the peer finished the stream cleanly
/// between frames.
///
/// # Errors
///
/// [`FrameError::Oversize`] before reading the body of a frame that is too large,
/// [`FrameError::Truncated`] if the stream ends inside a frame, [`FrameError::Io`] if it fails.
///
/// # Cancel safety
///
/// Not cancel safe: a cancelled read may have consumed part of a frame.
pub(crate) async fn read_frame<R>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<Bytes>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; HEADER_BYTES];
    let mut filled = 0;
    while filled < HEADER_BYTES {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated {
                expected: HEADER_BYTES,
                got: filled,
            });
        }
        filled += n;
    }
    let announced = u32::from_be_bytes(header);
    let len = match usize::try_from(announced) {
        Ok(len) if len <= max_bytes => len,
        _ => {
            return Err(FrameError::Oversize {
                len: u64::from(announced),
                max_bytes,
            });
        }
    };
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = reader.read(&mut body[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                expected: HEADER_BYTES + len,
                got: HEADER_BYTES + got,
            });
        }
        got += n;
    }
    Ok(Some(Bytes::from(body)))
}

/// Writes one frame.
///
/// # Errors
///
/// If the stream fails, or `frame` is longer than a `u32` can announce (callers check their
/// limit first, so that is a programmer error reported as [`io::ErrorKind::InvalidInput`]).
pub(crate) async fn write_frame<W>(writer: &mut W, frame: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let len = u32::try_from(frame.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes cannot be framed", frame.len()),
        )
    })?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use proptest::prelude::*;

    fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        for frame in frames {
            block_on(write_frame(&mut out, frame)).expect("writing to memory");
        }
        out.into_inner()
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let wire = encode(&frames);
            let mut reader = Cursor::new(wire);
            for frame in &frames {
                let read = block_on(read_frame(&mut reader, 300)).expect("valid frame");
                prop_assert_eq!(read.as_deref(), Some(frame.as_slice()));
            }
            prop_assert!(block_on(read_frame(&mut reader, 300)).expect("clean end").is_none());
        }

        #[test]
        fn any_cut_inside_a_frame_is_truncated(body in proptest::collection::vec(any::<u8>(), 1..100), cut in 1usize..104) {
            let wire = encode(&[body]);
            prop_assume!(cut < wire.len());
            let mut reader = Cursor::new(wire[..cut].to_vec());
            let result = block_on(read_frame(&mut reader, 1000));
            let truncated = matches!(result, Err(FrameError::Truncated { got, .. }) if got == cut);
            prop_assert!(truncated, "cut at {}: {:?}", cut, result);
        }
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        // Only the prefix is there: a reader that tried to read the body would report truncation.
        let mut reader = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        let result = block_on(read_frame(&mut reader, 1024));
        assert!(
            matches!(result, Err(FrameError::Oversize { len, max_bytes: 1024 }) if len == u64::from(u32::MAX)),
            "{result:?}"
        );
    }

    #[test]
    fn a_frame_at_the_limit_is_accepted() {
        let wire = encode(&[vec![7u8; 64]]);
        let read = block_on(read_frame(&mut Cursor::new(wire.clone()), 64)).expect("at the limit");
        assert_eq!(read.as_deref(), Some(&[7u8; 64][..]));
        let over = block_on(read_frame(&mut Cursor::new(wire), 63));
        assert!(
            matches!(over, Err(FrameError::Oversize { len: 64, .. })),
            "{over:?}"
        );
    }
}
