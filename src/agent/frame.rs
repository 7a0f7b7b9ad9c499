//! Length-prefixed framing of agent messages, with a size cap and a deadline for the body.
//!
//! Each message is decoded from exactly its own frame, so a pipelined request can never leak into
//! the one before it (a flaw of ssh-agent-lib 0.6's codec, which this replaces).
//!
//! A body is read into memory that grows with the bytes that arrive, never sized by the header
//! alone: a thousand connections that each announce 256 KiB and send nothing hold a few KiB each.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// The largest frame accepted, as in OpenSSH's agent (`AGENT_MAX_LEN`).
pub const MAX_FRAME: usize = 256 * 1024;

/// The body buffer starts at this size (or the announced length, if smaller) and doubles as bytes
/// arrive.
const FIRST_READ: usize = 4 * 1024;

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
        Ok::<_, io::Error>(Ok(read_body(reader, len).await?))
    };
    match tokio::time::timeout(body_deadline, body).await {
        Ok(Ok(Ok(body))) => Ok(Some(body)),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(FrameError::Io(e)),
        Err(_) => Err(FrameError::Timeout(body_deadline)),
    }
}

/// Reads a body of `len` bytes into a buffer that grows as they arrive. A grown-out-of buffer is
/// wiped before it is freed: frames can carry private keys.
async fn read_body<R: AsyncRead + Unpin>(reader: &mut R, len: usize) -> io::Result<Vec<u8>> {
    let mut body = Zeroizing::new(Vec::with_capacity(len.min(FIRST_READ)));
    while body.len() < len {
        if body.len() == body.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(len.min(2 * body.capacity())));
            bigger.extend_from_slice(&body);
            body = bigger;
        }
        let start = body.len();
        let end = body.capacity().min(len);
        body.resize(end, 0);
        let n = reader.read(&mut body[start..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        body.truncate(start + n);
    }
    Ok(std::mem::take(&mut *body))
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

    #[tokio::test]
    async fn a_body_larger_than_the_first_read_arrives_whole_in_small_pieces() {
        let payload: Vec<u8> = (0..MAX_FRAME)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let (mut client, mut server) = tokio::io::duplex(1000);
        let mut framed = u32::try_from(MAX_FRAME).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&payload);
        let writer = tokio::spawn(async move { client.write_all(&framed).await });
        let read = read_frame(&mut server, T).await.unwrap();
        assert_eq!(read.as_deref(), Some(&payload[..]));
        writer.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_withheld_body_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 5]).await.unwrap();
        let r = read_frame(&mut server, Duration::from_secs(10)).await;
        assert!(matches!(r, Err(FrameError::Timeout(_))));
    }
}
