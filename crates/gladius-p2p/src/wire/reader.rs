//! A bounds-checked cursor over received bytes.
//!
//! Every decoder in `wire` reads through this cursor so that no length taken
//! from the network can index out of bounds or overflow: a read past the end
//! is `WireError::Truncated`, never a panic.

use super::WireError;

/// Cursor over a byte slice; reads advance it.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Offset of the next unread byte.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        // `checked_add`: `n` may come straight from a length field.
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// The next `N` bytes as an array.
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.take(N)?.try_into().map_err(|_| WireError::Truncated)
    }

    /// One byte.
    pub(super) fn u8(&mut self) -> Result<u8, WireError> {
        self.array::<1>().map(|[b]| b)
    }

    /// A little-endian `u32`.
    pub(super) fn u32_le(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub(super) fn u64_le(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A `u8` length followed by that many bytes.
    pub(super) fn short_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// Succeeds only if every byte has been read.
    pub(super) fn finish(&self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}
