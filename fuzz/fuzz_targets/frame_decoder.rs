//! Fuzzes the frame decoder with data-plane messages.
//!
//! Checks, for any bytes a peer could send:
//! - decoding never panics and never buffers past the decoder's limit;
//! - feeding the bytes in two parts, split anywhere, yields the same messages and the same
//!   outcome as feeding them at once (a driver may see any split from the socket);
//! - every message that decodes re-encodes to a frame that decodes to the same message;
//! - `bytes_needed` agrees with `decode`: the same error, and "more bytes" exactly when `decode`
//!   waits for them.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_core::wire::piece::PieceMessage;
use shoal_core::wire::{FrameDecoder, FrameError, encode};

const LIMIT: usize = 64 * 1024;

/// Decodes everything it can from `parts`, fed one after another; returns the messages and the
/// error that stopped decoding, if any.
fn decode_all(parts: &[&[u8]]) -> (Vec<PieceMessage>, Option<FrameError>) {
    let decoder = FrameDecoder::new(LIMIT);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            let needed = decoder.bytes_needed(&buf);
            let decoded = decoder.decode::<PieceMessage>(&mut buf);
            match (&needed, &decoded) {
                (Err(a), Err(b)) => assert_eq!(a, b, "bytes_needed and decode disagree"),
                (Err(e), _) => panic!("bytes_needed failed ({e}) but decode did not"),
                (Ok(0), Ok(None)) => panic!("bytes_needed says complete, decode wants more"),
                (Ok(n), Ok(Some(_)) | Err(_)) if *n > 0 => {
                    panic!("bytes_needed wants {n} more bytes, decode did not wait")
                }
                _ => {}
            }
            match decoded {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => return (messages, Some(e)),
            }
        }
        assert!(buf.len() <= LIMIT + 4 + part.len(), "buffer grew past the limit");
    }
    (messages, None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let split = usize::from(split) * data.len() / 256;
    let whole = decode_all(&[data]);
    let parts = decode_all(&[&data[..split], &data[split..]]);
    assert_eq!(whole, parts, "splitting the input changed the result");

    for message in &whole.0 {
        let mut frame = BytesMut::new();
        encode(message, LIMIT, &mut frame).expect("a decoded message fits the limit again");
        let again: PieceMessage = FrameDecoder::new(LIMIT)
            .decode(&mut frame)
            .expect("a re-encoded message decodes")
            .expect("a re-encoded frame is complete");
        assert_eq!(&again, message);
        assert!(frame.is_empty());
    }
});
