//! Entry points for the fuzz targets in `fuzz/` (see `docs/reliability.md`) to the two
//! decoders of untrusted bytes that are not public API: stream frames and session
//! bindings. Hidden from the docs and not covered by semver. Every other decoder is
//! fuzzed through its public entry point ([`Envelope::decode`](crate::Envelope::decode),
//! [`Envelope::open`](crate::Envelope::open), and the serde types of the ledger and
//! almanac services).

use crate::transport::frame;
use crate::transport::Binding;

/// One decoded stream frame, opaque: compare it, print it, or encode it again.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame(frame::Frame);

impl Frame {
    /// Decodes one frame body (the bytes after the length prefix), as the receiver does.
    /// `Err` carries the refusal's text.
    pub fn decode(body: &[u8]) -> Result<Frame, String> {
        frame::Frame::decode(body).map(Frame).map_err(|e| e.to_string())
    }

    /// Encodes the frame as a sender writes it: length prefix, tag, body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.0.encode(&mut out);
        out
    }
}

/// Reads `stream` as a receiver reads an envelope stream (length prefixes checked against
/// `limit` before buffering): the frames read, and why reading stopped (the end of the
/// bytes, or the first refused frame).
pub fn read_frames(stream: &[u8], limit: usize) -> (Vec<Frame>, String) {
    let mut reader = frame::FrameReader::new(futures::io::Cursor::new(stream), limit);
    let mut frames = Vec::new();
    loop {
        match futures::executor::block_on(reader.next()) {
            Ok(frame) => frames.push(Frame(frame)),
            Err(e) => return (frames, e.to_string()),
        }
    }
}

/// Decodes a session binding from the body of a bind frame (`None`: malformed).
pub fn decode_binding(bytes: &[u8]) -> Option<Binding> {
    Binding::decode(bytes)
}

/// Encodes a session binding as a bind frame's body.
pub fn encode_binding(binding: &Binding) -> Vec<u8> {
    let mut out = Vec::new();
    binding.encode(&mut out);
    out
}
