//! Our side of an admission exchange: connect, send one request frame, read one answer frame.

use super::behaviour::ADMISSION_PROTOCOL;
use super::error::RequestError;
use super::frame::{read_frame, write_frame};
use super::outbound::{OpenError, open_stream};
use super::swarm_task::Command;
use bytes::Bytes;
use futures::AsyncWriteExt as _;
use libp2p_identity::PeerId;
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// Sends `body` to `peer` (or whoever answers) at `addr` on the admission protocol and reads
/// the answer, at most `max_frame_bytes` long. Not bounded in time: the caller is.
///
/// # Errors
///
/// See [`RequestError`].
pub(crate) async fn exchange(
    commands: &mpsc::Sender<Command>,
    control: &mut libp2p_stream::Control,
    peer: Option<PeerId>,
    addr: SocketAddr,
    body: &[u8],
    max_frame_bytes: usize,
) -> Result<(PeerId, Bytes), RequestError> {
    let (peer, mut stream) = open_stream(commands, control, peer, addr, ADMISSION_PROTOCOL)
        .await
        .map_err(|error| match error {
            OpenError::Closed => RequestError::Closed,
            OpenError::Connect(reason) => RequestError::Connect { addr, reason },
            OpenError::Open { peer, reason } => RequestError::Open { peer, addr, reason },
        })?;
    let failed = |reason: String| RequestError::Stream { peer, reason };
    write_frame(&mut stream, body)
        .await
        .map_err(|error| failed(error.to_string()))?;
    // Finishing our side tells the peer the request is complete.
    stream
        .close()
        .await
        .map_err(|error| failed(error.to_string()))?;
    match read_frame(&mut stream, max_frame_bytes).await {
        Ok(Some(answer)) => Ok((peer, answer)),
        Ok(None) => Err(RequestError::NoAnswer { peer }),
        Err(error) => Err(failed(error.to_string())),
    }
}
