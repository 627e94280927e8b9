//! The canonical binary encoding of an envelope (specified in `docs/wire-format.md`).
//!
//! Written by hand because the signature covers these exact bytes: the layout must never
//! depend on a serialisation library's version or options.

use super::{Envelope, EnvelopeError, VERSION};
use crate::identity::{Address, PublicKey};
use crate::message::ProtocolDigest;
use crate::message::SchemaDigest;

/// The first three bytes of every envelope.
pub(crate) const MAGIC: [u8; 3] = *b"AGE";
const FLAG_PROTOCOL: u8 = 0b01;
const FLAG_REPLY: u8 = 0b10;
const FLAG_EXPECTS_REPLY: u8 = 0b100;

/// Length of the fields before the optional ones and the payload.
/// The most an envelope adds to its payload: fixed fields, protocol, reply nonce, signature.
pub(crate) const MAX_OVERHEAD: usize = FIXED_LEN + 32 + 8 + 64;

pub(crate) const FIXED_LEN: usize = 3 + 1 + 32 + 32 + 32 + 16 + 32 + 1 + 16 + 8 + 8 + 8 + 4;

pub(crate) fn write_unsigned(e: &Envelope, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.push(e.version);
    out.extend_from_slice(e.sender.as_bytes());
    out.extend_from_slice(&e.sender_key.0);
    out.extend_from_slice(e.target.as_bytes());
    out.extend_from_slice(&e.session.to_be_bytes());
    out.extend_from_slice(e.schema.as_bytes());
    let mut flags = 0;
    if e.protocol.is_some() {
        flags |= FLAG_PROTOCOL;
    }
    if e.in_reply_to.is_some() {
        flags |= FLAG_REPLY;
    }
    if e.expects_reply {
        flags |= FLAG_EXPECTS_REPLY;
    }
    out.push(flags);
    if let Some(protocol) = &e.protocol {
        out.extend_from_slice(protocol.as_bytes());
    }
    if let Some(nonce) = e.in_reply_to {
        out.extend_from_slice(&nonce.to_be_bytes());
    }
    out.extend_from_slice(&e.trace_id.to_be_bytes());
    out.extend_from_slice(&e.nonce.to_be_bytes());
    out.extend_from_slice(&e.timestamp_ms.to_be_bytes());
    out.extend_from_slice(&e.expires_ms.to_be_bytes());
    // The payload limit (far below 4 GiB) is enforced before sealing is possible remotely;
    // a larger payload would be refused by every receiver anyway.
    out.extend_from_slice(&(e.payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&e.payload);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.bytes.len() < n {
            return Err(EnvelopeError::Truncated { needed: n - self.bytes.len() });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, EnvelopeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn u128(&mut self) -> Result<u128, EnvelopeError> {
        Ok(u128::from_be_bytes(self.array()?))
    }
}

pub(crate) fn decode(bytes: &[u8], max_payload: usize) -> Result<Envelope, EnvelopeError> {
    let mut r = Reader { bytes };
    if r.array::<3>()? != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let sender = Address::from_bytes(r.array()?);
    let sender_key = PublicKey(r.array()?);
    let target = Address::from_bytes(r.array()?);
    let session = r.u128()?;
    let schema = SchemaDigest::from_bytes(r.array()?);
    let flags = r.u8()?;
    if flags & !(FLAG_PROTOCOL | FLAG_REPLY | FLAG_EXPECTS_REPLY) != 0 {
        return Err(EnvelopeError::UnknownFlags(flags));
    }
    let protocol = if flags & FLAG_PROTOCOL != 0 { Some(ProtocolDigest::from_bytes(r.array()?)) } else { None };
    let in_reply_to = if flags & FLAG_REPLY != 0 { Some(r.u64()?) } else { None };
    let trace_id = r.u128()?;
    let nonce = r.u64()?;
    let timestamp_ms = r.u64()?;
    let expires_ms = r.u64()?;
    let size = r.u32()? as usize;
    if size > max_payload {
        return Err(EnvelopeError::PayloadTooLarge { size, limit: max_payload });
    }
    let payload = r.take(size)?.to_vec();
    let signature = r.array::<64>()?;
    if !r.bytes.is_empty() {
        return Err(EnvelopeError::TrailingBytes(r.bytes.len()));
    }
    Ok(Envelope {
        version,
        sender,
        sender_key,
        target,
        session,
        schema,
        protocol,
        in_reply_to,
        expects_reply: flags & FLAG_EXPECTS_REPLY != 0,
        trace_id,
        nonce,
        timestamp_ms,
        expires_ms,
        payload,
        signature,
    })
}
