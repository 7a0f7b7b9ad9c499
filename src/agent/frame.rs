//! Length-prefixed framing of agent messages, with a size cap and a deadline for the body.
//!
//! Each message is decoded from exactly its own frame, so a pipelined request can never leak into
//! the one before it (a flaw of ssh-agent-lib 0.6's codec, which this replaces).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame accepted, as in OpenSSH's agent (`AGENT_MAX_LEN`).
pub const MAX_FRAME: usize = 256 * 1024;

/// Why a connection's framing broke; each of these ends that connection only.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced length is over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The body did not arrive in time after its header.
    #[error("frame body not received within {0:?}")]
    Timeout(Duration),
    /// The peer closed in the middle of a frame, or another I/O error.
    #[error("reading frame")]
    Io(#[source] io::Error),
}

/// Reads one frame; `Ok(None)` when the peer closed cleanly between frames.
///
/// Waiting for a header has no deadline (clients keep idle agent connections open), but once a
/// header has arrived the body must follow within `body_deadline`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    body_deadline: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let first = reader.read(&mut header).await.map_err(FrameError::Io)?;
    if first == 0 {
        return Ok(None);
    }
    let body = async {
        reader.read_exact(&mut header[first..]).await?;
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME {
            return Ok(Err(FrameError::TooLarge(len)));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).await?;
        Ok::<_, io::Error>(Ok(body))
    };
    match tokio::time::timeout(body_deadline, body).await {
        Ok(Ok(Ok(body))) => Ok(Some(body)),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(FrameError::Io(e)),
        Err(_) => Err(FrameError::Timeout(body_deadline)),
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "reply too large"))?;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    writer.write_all(&out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn reads_exactly_one_frame_at_a_time() {
        let mut input: &[u8] = &[0, 0, 0, 1, 11, 0, 0, 0, 2, 5, 6];
        assert_eq!(read_frame(&mut input, T).await.unwrap(), Some(vec![11]));
        assert_eq!(read_frame(&mut input, T).await.unwrap(), Some(vec![5, 6]));
        assert_eq!(read_frame(&mut input, T).await.unwrap(), None);
    }

    #[tokio::test]
    async fn refuses_oversized_and_truncated_frames() {
        let mut big: &[u8] = &[0, 4, 0, 1];
        assert!(matches!(
            read_frame(&mut big, T).await,
            Err(FrameError::TooLarge(262_145))
        ));
        let mut short: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(matches!(
            read_frame(&mut short, T).await,
            Err(FrameError::Io(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_withheld_body_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 5]).await.unwrap();
        let r = read_frame(&mut server, Duration::from_secs(10)).await;
        assert!(matches!(r, Err(FrameError::Timeout(_))));
    }
}
