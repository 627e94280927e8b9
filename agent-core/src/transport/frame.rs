//! Frames on the envelope stream: one long-lived stream per peer and direction, each
//! frame a big-endian u32 length followed by a tag byte and its body.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::binding::Binding;
use crate::error::{Cause, Rejection};

const BIND: u8 = 1;
const ENVELOPE: u8 = 2;
const ACK: u8 = 3;
const PING: u8 = 4;
const PONG: u8 = 5;

/// How an envelope is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Per-envelope ed25519 signature.
    Signed,
    /// Covered by a session binding of the sender on this stream.
    Bound,
}

/// The receiver's verdict on one envelope. A resend is answered with the verdict its
/// first copy got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered,
    Rejected(Rejection),
}

impl Verdict {
    pub(crate) fn rejected(cause: Cause, detail: impl Into<String>) -> Verdict {
        Verdict::Rejected(Rejection::new(cause, detail))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Bind(Binding),
    Envelope { seq: u64, auth: Auth, bytes: Vec<u8> },
    Ack { seq: u64, verdict: Verdict },
    Ping(u64),
    Pong(u64),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("stream closed: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

impl Frame {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Bind(binding) => {
                out.push(BIND);
                binding.encode(out);
            }
            Frame::Envelope { seq, auth, bytes } => {
                out.push(ENVELOPE);
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(match auth {
                    Auth::Signed => 0,
                    Auth::Bound => 1,
                });
                out.extend_from_slice(bytes);
            }
            Frame::Ack { seq, verdict } => {
                out.push(ACK);
                out.extend_from_slice(&seq.to_be_bytes());
                match verdict {
                    Verdict::Delivered => out.push(0),
                    Verdict::Rejected(rejection) => {
                        out.push(1);
                        out.push(rejection.cause.code());
                        out.extend_from_slice(rejection.detail.as_bytes());
                    }
                }
            }
            Frame::Ping(n) => {
                out.push(PING);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Frame::Pong(n) => {
                out.push(PONG);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Decodes one frame body (the bytes after the length prefix).
    pub(crate) fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        let (&tag, rest) = body.split_first().ok_or(FrameError::Malformed("empty frame"))?;
        let u64_at = |bytes: &[u8]| -> Result<u64, FrameError> {
            bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(FrameError::Malformed("short frame"))
        };
        match tag {
            BIND => Ok(Frame::Bind(Binding::decode(rest).ok_or(FrameError::Malformed("bad binding"))?)),
            ENVELOPE => {
                let seq = u64_at(rest)?;
                let auth = match rest.get(8) {
                    Some(0) => Auth::Signed,
                    Some(1) => Auth::Bound,
                    _ => return Err(FrameError::Malformed("bad auth mode")),
                };
                Ok(Frame::Envelope { seq, auth, bytes: rest[9..].to_vec() })
            }
            ACK => {
                let seq = u64_at(rest)?;
                let verdict = match rest.get(8) {
                    Some(0) => Verdict::Delivered,
                    Some(1) => {
                        let code = *rest.get(9).ok_or(FrameError::Malformed("rejection without a cause"))?;
                        let detail = String::from_utf8_lossy(&rest[10..]).into_owned();
                        Verdict::Rejected(Rejection::new(Cause::from_code(code), detail))
                    }
                    _ => return Err(FrameError::Malformed("bad verdict")),
                };
                Ok(Frame::Ack { seq, verdict })
            }
            PING => Ok(Frame::Ping(u64_at(rest)?)),
            PONG => Ok(Frame::Pong(u64_at(rest)?)),
            _ => Err(FrameError::Malformed("unknown frame tag")),
        }
    }
}

/// Reads frames from a stream. Cancel-safe: every byte received is kept in the reader's
/// buffer, so a `next()` dropped in a `select!` loses nothing. Also tells, without waiting,
/// whether a whole frame has already arrived, which is how the receiver batches.
pub(crate) struct FrameReader<R> {
    inner: R,
    /// Bytes received are `buf[start..end]`; the rest is room to read into.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R, limit: usize) -> Self {
        FrameReader { inner, buf: vec![0; 64 * 1024], start: 0, end: 0, limit }
    }

    /// The next frame if it has fully arrived; refuses (before buffering it) a frame
    /// larger than the limit.
    pub(crate) fn try_next(&mut self) -> Result<Option<Frame>, FrameError> {
        let available = &self.buf[self.start..self.end];
        let Some(len) = available.get(..4) else { return Ok(None) };
        let size = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if size > self.limit {
            return Err(FrameError::TooLarge { size, limit: self.limit });
        }
        if available.len() < 4 + size {
            return Ok(None);
        }
        let frame = Frame::decode(&available[4..4 + size]);
        self.start += 4 + size;
        frame.map(Some)
    }

    /// Waits for the next frame.
    pub(crate) async fn next(&mut self) -> Result<Frame, FrameError> {
        loop {
            if let Some(frame) = self.try_next()? {
                return Ok(frame);
            }
            // Make room: move what is left of a partial frame to the front, and grow the
            // buffer if that frame (within the limit) is larger than it.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).min(self.limit + 4).max(self.end + 1);
                self.buf.resize(grown, 0);
            }
            // Cancel-safe: `read` either copies bytes in and returns, or consumes nothing.
            let n = self.inner.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            self.end += n;
        }
    }
}

/// Writes pre-encoded frames and flushes, giving up at `deadline`: a peer that stops
/// reading must not hold the writer, and everything waiting on it, forever. A write cut
/// short leaves a partial frame, so the stream must be dropped after an error.
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    deadline: tokio::time::Instant,
) -> std::io::Result<()> {
    // The timer is registered only if the write has to wait: not on the fast path.
    let written = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    match tokio::time::timeout_at(deadline, written).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer stopped reading")),
    }
}
