//! Byte-level reading and writing for the message codec: a bounds-checked reader whose every failure is
//! a precise [`SecAggError`], and the common header.
//!
//! Responsibility: lengths and framing only; it never interprets a field's meaning.

use hearth_crypto::suite::{DIGEST_LEN, SIGNATURE_LEN};

use super::{Limits, MessageKind, SecAggError};

/// The wire version this build speaks (2: the graph seed is committed in phase 0 and revealed in
/// phase 1).
pub const VERSION: u8 = 2;
/// Version, type, context hash.
pub const HEADER_LEN: usize = 2 + DIGEST_LEN;

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    kind: MessageKind,
}

impl<'a> Reader<'a> {
    /// Checks version, type, overall length against `max_len` and the context hash; returns a reader
    /// positioned after the header.
    pub(crate) fn open(
        bytes: &'a [u8],
        expected: MessageKind,
        limits: &Limits,
        max_len: usize,
    ) -> Result<Self, SecAggError> {
        let (&version, rest) = bytes.split_first().ok_or(SecAggError::Truncated {
            what: "version byte",
            needed: 1,
            available: 0,
        })?;
        if version != VERSION {
            return Err(SecAggError::UnsupportedVersion { got: version, supported: VERSION });
        }
        let (&kind, _) = rest.split_first().ok_or(SecAggError::Truncated {
            what: "type byte",
            needed: 1,
            available: 0,
        })?;
        let got = MessageKind::from_byte(kind).ok_or(SecAggError::UnknownMessageType(kind))?;
        if got != expected {
            return Err(SecAggError::UnexpectedMessage { expected, got });
        }
        if bytes.len() > max_len {
            return Err(SecAggError::TooLong { what: expected.as_str(), len: bytes.len(), max: max_len });
        }
        let mut r = Reader { buf: &bytes[2..], kind: expected };
        let context = r.take(DIGEST_LEN, "context hash")?;
        if context != limits.context.as_slice() {
            return Err(SecAggError::ContextMismatch);
        }
        Ok(r)
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SecAggError> {
        if self.buf.len() < n {
            return Err(SecAggError::Truncated { what, needed: n, available: self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SecAggError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, SecAggError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, SecAggError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, SecAggError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A client index, checked against the roster size.
    pub(crate) fn client(&mut self, what: &'static str, limits: &Limits) -> Result<u32, SecAggError> {
        let index = self.u32(what)?;
        if index >= limits.n {
            return Err(SecAggError::UnknownClient { index, n: limits.n });
        }
        Ok(index)
    }

    /// A list count, refused if above `max` or if the bytes left cannot hold `count` entries of at least
    /// `entry_len` bytes, so nothing is allocated for a length the message cannot back.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        max: usize,
        entry_len: usize,
    ) -> Result<usize, SecAggError> {
        let count = self.u32(what)? as usize;
        if count > max {
            return Err(SecAggError::TooLong { what, len: count, max });
        }
        let needed = count.saturating_mul(entry_len);
        if needed > self.buf.len() {
            return Err(SecAggError::Truncated { what, needed, available: self.buf.len() });
        }
        Ok(count)
    }

    /// A u16-length-prefixed field that must have exactly `expected` bytes.
    pub(crate) fn exact_field(
        &mut self,
        what: &'static str,
        expected: usize,
    ) -> Result<&'a [u8], SecAggError> {
        let len = usize::from(self.u16(what)?);
        if len != expected {
            return Err(SecAggError::WrongLength { what, expected, got: len });
        }
        self.take(len, what)
    }

    pub(crate) fn signature(&mut self) -> Result<[u8; SIGNATURE_LEN], SecAggError> {
        self.array("signature")
    }

    /// Fails if bytes are left over.
    pub(crate) fn finish(self) -> Result<(), SecAggError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(SecAggError::TrailingBytes { what: self.kind.as_str(), extra: self.buf.len() })
        }
    }
}

/// Checks that client indices arrive in strictly increasing order, naming a duplicate precisely.
pub(crate) struct Ascending {
    what: &'static str,
    last: Option<u32>,
}

impl Ascending {
    pub(crate) fn new(what: &'static str) -> Self {
        Self { what, last: None }
    }

    pub(crate) fn check(&mut self, index: u32) -> Result<(), SecAggError> {
        match self.last {
            Some(last) if last == index => {
                return Err(SecAggError::DuplicateEntry { what: self.what, index })
            }
            Some(last) if last > index => return Err(SecAggError::NotCanonical { what: self.what }),
            _ => {}
        }
        self.last = Some(index);
        Ok(())
    }
}

/// Starts a message: version, type, context.
pub(crate) fn header(kind: MessageKind, context: &[u8; DIGEST_LEN], capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(context);
    out
}

/// Splits a decoded client message into the signed part and its trailing signature.
pub(crate) fn signed_part(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    raw.len().checked_sub(SIGNATURE_LEN).map(|at| raw.split_at(at))
}
