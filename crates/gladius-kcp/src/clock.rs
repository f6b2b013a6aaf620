//! Wrapping millisecond clock arithmetic, as ikcp's `_itimediff`.
//!
//! The caller's clock is a `u32` that wraps every ~49.7 days from an arbitrary
//! epoch, and sequence numbers wrap the same way. Comparing two such values is
//! only meaningful as a signed distance: `diff(a, b) > 0` means "a is after b"
//! as long as they are less than 2^31 apart.

/// `later - earlier` as a signed distance (ikcp `_itimediff`). Never overflows.
pub(crate) fn diff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diff_wraps() {
        assert_eq!(diff(5, 3), 2);
        assert_eq!(diff(3, 5), -2);
        assert_eq!(diff(2, u32::MAX - 1), 4);
        assert_eq!(diff(u32::MAX - 1, 2), -4);
        assert_eq!(diff(0x8000_0000, 0), i32::MIN);
    }
}
