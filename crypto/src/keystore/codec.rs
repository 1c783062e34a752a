//! Bounded big-endian reading and writing for the keystore blob and the envelope header. Every length read
//! from input is checked against both a caller-given maximum and the bytes actually left, so a hostile
//! length can neither allocate nor index out of range.

/// Why decoding stopped: the field and what was wrong. Callers turn it into their own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodecError(pub(crate) String);

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn bytes(&mut self, what: &str, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError(format!("truncated {what}: needs {n} bytes, {} left", self.buf.len())));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(what, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A byte string prefixed by a one-byte length, at most `max` long.
    pub(crate) fn short_bytes(&mut self, what: &str, max: usize) -> Result<&'a [u8], CodecError> {
        let n = usize::from(self.u8(what)?);
        self.bounded(what, n, max)
    }

    /// A byte string prefixed by a four-byte length, at most `max` long.
    pub(crate) fn long_bytes(&mut self, what: &str, max: usize) -> Result<&'a [u8], CodecError> {
        let n = usize::try_from(self.u32(what)?).unwrap_or(usize::MAX);
        self.bounded(what, n, max)
    }

    fn bounded(&mut self, what: &str, n: usize, max: usize) -> Result<&'a [u8], CodecError> {
        if n > max {
            return Err(CodecError(format!("{what} is {n} bytes, at most {max} allowed")));
        }
        self.bytes(what, n)
    }

    /// How many bytes are not yet read.
    pub(crate) fn rest_len(&self) -> usize {
        self.buf.len()
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fails if input remains: trailing bytes are a sign of splicing.
    pub(crate) fn finish(&self, what: &str) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError(format!("{} unexpected bytes after {what}", self.buf.len())))
        }
    }
}

/// Appends big-endian fields. Lengths are checked by the caller against the same maxima the reader uses;
/// a too-long field is a bug in this crate, so the writer saturates rather than panics and the reader then
/// refuses the result.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    pub(crate) fn short_bytes(&mut self, b: &[u8]) {
        self.u8(u8::try_from(b.len()).unwrap_or(u8::MAX));
        self.raw(b);
    }

    pub(crate) fn long_bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.raw(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_and_refuses_hostile_lengths() {
        let mut buf = Vec::new();
        let mut w = Writer(&mut buf);
        w.u16(7);
        w.short_bytes(b"abc");
        w.long_bytes(b"defg");
        let mut r = Reader::new(&buf);
        assert_eq!(r.u16("v").unwrap(), 7);
        assert_eq!(r.short_bytes("s", 3).unwrap(), b"abc");
        assert_eq!(r.long_bytes("l", 10).unwrap(), b"defg");
        r.finish("all").unwrap();

        let mut r = Reader::new(&buf[2..]);
        assert!(r.short_bytes("s", 2).unwrap_err().0.contains("at most 2"));
        let hostile = [0xff, 0xff, 0xff, 0xff, 1];
        assert!(Reader::new(&hostile).long_bytes("l", usize::MAX).unwrap_err().0.contains("truncated"));
        assert!(Reader::new(&[1, 2]).finish("x").is_err());
    }
}
