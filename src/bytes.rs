//! Byte-level helpers at the bottom of the crate, used by every layer above: zero detection
//! (holes, zero blocks, pages not worth sending).

/// `true` when every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; align_to only reinterprets the aligned middle.
    let (head, body, tail) = unsafe { buf.align_to::<u128>() };
    head.iter().all(|&b| b == 0)
        && body.chunks(8).all(|c| c.iter().fold(0, |a, &x| a | x) == 0)
        && tail.iter().all(|&b| b == 0)
}
