//! Frames over QUIC streams: the control stream and piece streams of
//! [`shoal_core::wire::piece`].

use anyhow::{Result, anyhow, bail};
use bytes::{Buf, Bytes, BytesMut};
use quinn::{RecvStream, SendStream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_core::wire::{FrameDecoder, encode};
use std::time::Duration;

/// Bytes asked of a stream per read.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// A stream that has gone this long without delivering a byte is abandoned.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// The slowest a piece body may arrive, on average, once [`SLOW_PIECE_GRACE`] has passed: a peer
/// trickling bytes to hold a stream open is dropped, however often it sends.
pub const MIN_PIECE_BYTES_PER_SEC: u64 = 1024;
/// How long a piece body may take before [`MIN_PIECE_BYTES_PER_SEC`] applies.
pub const SLOW_PIECE_GRACE: Duration = Duration::from_secs(10);

/// Reads frames of type `T` from a QUIC receive stream.
#[derive(Debug)]
pub struct FrameReader {
    recv: RecvStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    idle_timeout: Option<Duration>,
}

impl FrameReader {
    /// A reader whose frames may be at most `max_frame_bytes`, giving up after
    /// [`STREAM_IDLE_TIMEOUT`] without data.
    pub fn new(recv: RecvStream, max_frame_bytes: usize) -> Self {
        Self {
            recv,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(max_frame_bytes),
            idle_timeout: Some(STREAM_IDLE_TIMEOUT),
        }
    }

    /// A reader for a long-lived stream that may stay quiet (the control stream): the
    /// connection's own keep-alive and idle timeout notice a dead peer.
    pub fn without_idle_timeout(recv: RecvStream, max_frame_bytes: usize) -> Self {
        Self {
            idle_timeout: None,
            ..Self::new(recv, max_frame_bytes)
        }
    }

    /// The next frame, or `None` at a clean end of stream.
    ///
    /// # Errors
    ///
    /// A malformed or oversize frame, a stream that ends inside a frame, a reset, or
    /// [`STREAM_IDLE_TIMEOUT`] without data.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        loop {
            if let Some(msg) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(msg));
            }
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!(
                    "stream ended inside a frame ({} bytes left over)",
                    self.buf.len()
                );
            }
        }
    }

    /// Reads more bytes into the buffer; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool> {
        match self.next_chunk().await? {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The next chunk the stream received, as quinn holds it; `None` at the end of the stream.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let read = self.recv.read_chunk(READ_CHUNK_BYTES, true);
        let chunk = match self.idle_timeout {
            Some(limit) => tokio::time::timeout(limit, read)
                .await
                .map_err(|_| anyhow!("no data for {limit:?}"))??,
            None => read.await?,
        };
        Ok(chunk.map(|c| c.bytes))
    }

    /// Reads exactly `len` raw bytes after the frames read so far, calling `pace` with the size of
    /// each chunk before taking it (the download rate limit), then checks that the stream ends
    /// there.
    ///
    /// # Errors
    ///
    /// [`BodyError::Short`] if the stream ends early, [`BodyError::Long`] if more bytes follow,
    /// [`BodyError::Stream`] for a reset or timeout.
    pub async fn read_body<F, Fut>(&mut self, len: usize, mut pace: F) -> Result<Vec<u8>, BodyError>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut body = Vec::with_capacity(len);
        let take = self.buf.len().min(len);
        if take > 0 {
            pace(take).await;
            body.extend_from_slice(&self.buf[..take]);
            self.buf.advance(take);
        }
        // The buffer is empty now (or the body full): later chunks go straight into the body,
        // one copy from quinn's receive buffer.
        let started = tokio::time::Instant::now();
        while body.len() < len {
            // The time by which the bytes so far would have come at the slowest allowed rate.
            let due = started
                + SLOW_PIECE_GRACE
                + Duration::from_secs_f64(body.len() as f64 / MIN_PIECE_BYTES_PER_SEC as f64);
            let Ok(next) = tokio::time::timeout_at(due, self.next_chunk()).await else {
                return Err(BodyError::TooSlow {
                    got: body.len(),
                    secs: started.elapsed().as_secs(),
                });
            };
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    return Err(BodyError::Short {
                        got: body.len(),
                        len,
                    });
                }
                Err(e) => return Err(BodyError::Stream(e.to_string())),
            };
            let take = chunk.len().min(len - body.len());
            pace(take).await;
            body.extend_from_slice(&chunk[..take]);
            if take < chunk.len() {
                return Err(BodyError::Long { len });
            }
        }
        if !self.buf.is_empty() {
            return Err(BodyError::Long { len });
        }
        match self.fill().await {
            Ok(false) => Ok(body),
            Ok(true) => Err(BodyError::Long { len }),
            Err(e) => Err(BodyError::Stream(e.to_string())),
        }
    }
}

/// Why a piece body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The stream ended before the piece did.
    #[error("piece stream ended after {got} of {len} bytes")]
    Short {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        len: usize,
    },
    /// Bytes followed the piece.
    #[error("piece stream carried more than the {len} bytes announced")]
    Long {
        /// Bytes announced.
        len: usize,
    },
    /// The stream failed.
    #[error("piece stream failed: {0}")]
    Stream(String),
    /// The body came slower than [`MIN_PIECE_BYTES_PER_SEC`].
    #[error(
        "piece stream delivered {got} bytes in {secs} s, slower than {MIN_PIECE_BYTES_PER_SEC} bytes a second"
    )]
    TooSlow {
        /// Bytes received.
        got: usize,
        /// Seconds it took.
        secs: u64,
    },
}

/// Writes one frame to a QUIC send stream.
///
/// # Errors
///
/// If the message is larger than `max_frame_bytes` or the stream fails.
pub async fn write_frame<T: Serialize>(
    send: &mut SendStream,
    msg: &T,
    max_frame_bytes: usize,
) -> Result<()> {
    let mut buf = BytesMut::new();
    encode(msg, max_frame_bytes, &mut buf)?;
    send.write_all(&buf).await?;
    Ok(())
}
