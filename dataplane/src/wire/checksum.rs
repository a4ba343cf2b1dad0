//! Internet checksum arithmetic: incremental updates (RFC 1624) and full sums (RFC 1071).
//!
//! A rewrite changes a few 16-bit words of a header; patching the checksum with those words is
//! O(words changed) instead of O(packet length), which matters for a 1400-byte syslog
//! datagram. `Delta` accumulates `~m + m'` for every replaced word and applies RFC 1624
//! eqn. 3, `HC' = ~(~HC + ~m + m')`, which (unlike eqn. 2) never produces a `-0` result.

/// Accumulated changes to a checksummed region; apply it to each checksum that covers them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    sum: u32,
}

impl Delta {
    /// Records that the 16-bit word `old` became `new`.
    #[inline]
    pub(crate) fn replace16(&mut self, old: u16, new: u16) {
        self.sum += u32::from(!old) + u32::from(new);
    }

    /// Records that the 32-bit field `old` (host order of its big-endian bytes) became `new`.
    #[inline]
    pub(crate) fn replace32(&mut self, old: u32, new: u32) {
        self.replace16((old >> 16) as u16, (new >> 16) as u16);
        self.replace16(old as u16, new as u16);
    }

    /// Records that the 128-bit field `old` became `new` (an IPv6 address).
    #[inline]
    pub(crate) fn replace128(&mut self, old: u128, new: u128) {
        self.replace32((old >> 96) as u32, (new >> 96) as u32);
        self.replace32((old >> 64) as u32, (new >> 64) as u32);
        self.replace32((old >> 32) as u32, (new >> 32) as u32);
        self.replace32(old as u32, new as u32);
    }

    /// Returns checksum `hc` patched for the recorded changes (RFC 1624, eqn. 3).
    #[inline]
    pub fn apply(&self, hc: u16) -> u16 {
        let mut s = u32::from(!hc) + fold32(self.sum);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }

    /// Like [`Delta::apply`], for a UDP checksum: zero means "no checksum" (RFC 768) and stays
    /// zero, and a computed zero is sent as `0xffff`.
    #[inline]
    pub(crate) fn apply_udp(&self, hc: u16) -> u16 {
        if hc == 0 {
            return 0;
        }
        match self.apply(hc) {
            0 => 0xffff,
            c => c,
        }
    }
}

#[inline]
fn fold32(mut s: u32) -> u32 {
    s = (s & 0xffff) + (s >> 16);
    (s & 0xffff) + (s >> 16)
}

/// A wide sum of 16- and 32-bit words folded to 16 bits with end-around carry, as RFC 1624's
/// one's-complement sum: 0 only when the wide sum is 0, else the value in 1..=0xffff
/// congruent to it modulo 0xffff (the same as [`Delta::apply`] folds).
#[inline(always)]
pub(crate) fn fold_to_16(s: u64) -> u16 {
    // Each step adds the high half to the low half and the carry back in (an add with
    // carry): 64 to 32 bits, then 32 to 16. The carry cannot carry again: a sum that
    // wrapped is at most 2^n - 2.
    let (s, c) = (s as u32).overflowing_add((s >> 32) as u32);
    let s = s + u32::from(c);
    let (s, c) = (s as u16).overflowing_add((s >> 16) as u16);
    s + u16::from(c)
}

/// One's-complement sum of `data` as big-endian 16-bit words (odd length padded with zero),
/// not yet complemented (RFC 1071).
pub(crate) fn sum(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u64::from(*last) << 8;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Whether an IPv4 header (exactly `header_len` bytes) has a valid checksum.
///
/// The 20-byte case (no options, nearly every packet) is [`ipv4_header20_valid`]: smoltcp's
/// generic `verify_checksum` is slower there (see docs/benchmarks.md).
#[inline]
pub(crate) fn ipv4_header_valid(header: &[u8]) -> bool {
    match header.first_chunk::<20>() {
        Some(h) if header.len() == 20 => ipv4_header20_valid(h),
        _ => sum(header) == 0xffff,
    }
}

/// Whether a 20-byte IPv4 header (no options) has a valid checksum.
///
/// Sums the header as two 64-bit words and one 32-bit word in native byte order, with
/// end-around carry: the one's-complement sum is byte-order independent (RFC 1071, 2.(B)),
/// the all-ones result it is compared with reads the same both ways, and 2^64 - 1 is a
/// multiple of 0xffff, so a sum modulo 2^64 - 1 folds to the same 16 bits. Three loads and
/// two adds with carry instead of five loads and four adds, and a divisibility test by
/// multiplication instead of a division by a constant (see docs/benchmarks.md).
#[inline]
pub fn ipv4_header20_valid(h: &[u8; 20]) -> bool {
    // Always there (20 bytes); the `else` arms compile away.
    let Some((a, rest)) = h.split_first_chunk::<8>() else {
        return false;
    };
    let Some((b, c)) = rest.split_first_chunk::<8>() else {
        return false;
    };
    let Some(c) = c.first_chunk::<4>() else {
        return false;
    };
    let (s, c1) = u64::from_ne_bytes(*a).overflowing_add(u64::from_ne_bytes(*b));
    let (s, c2) = s.overflowing_add(u64::from(u32::from_ne_bytes(*c)));
    // The carries go back in (end-around). That can carry once more, only from a sum of
    // 2^64 - 1 or 2^64 - 2, which then leaves at most 1: the last add cannot.
    let (s, c3) = s.overflowing_add(u64::from(c1) + u64::from(c2));
    let s = s + u64::from(c3);
    // Folded to 16 bits the sum is all ones exactly when it is a non-zero multiple of
    // 0xffff (2^64 - 1 itself included). `x % 0xffff == 0` as `x * 0xffff^-1 <= (2^64 -
    // 1) / 0xffff` modulo 2^64 (the inverse of 2^16 - 1 is -(1 + 2^16 + 2^32 + 2^48)).
    const INV: u64 = 0xfffe_fffe_fffe_ffff;
    s != 0 && s.wrapping_mul(INV) <= u64::MAX / 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1624_example_gives_correct_result_not_minus_zero() {
        // RFC 1624 section 4: a header sum of 0xcd7a, a word 0x5555 -> 0x3285.
        // Eqn. 3 yields 0x0000 where eqn. 2 would yield 0xffff (-0).
        let hc = 0xdd2f_u16; // = ~(0xcd7a + 0x5555)
        let mut d = Delta::default();
        d.replace16(0x5555, 0x3285);
        assert_eq!(d.apply(hc), 0x0000);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut d = Delta::default();
        d.replace32(0xc612_000a, 0xc613_0001);
        assert_eq!(d.apply_udp(0), 0);
    }

    #[test]
    fn udp_computed_zero_is_sent_as_ffff() {
        // Choose a change that makes the patched checksum exactly 0.
        let mut d = Delta::default();
        d.replace16(0x0000, 0x0001);
        assert_eq!(d.apply(0x0001), 0x0000);
        assert_eq!(d.apply_udp(0x0001), 0xffff);
    }

    proptest::proptest! {
        #[test]
        fn header_fast_path_agrees_with_the_generic_sum(
            h in proptest::collection::vec(proptest::prelude::any::<u8>(), 20..=20),
        ) {
            proptest::prop_assert_eq!(ipv4_header_valid(&h), sum(&h) == 0xffff);
            // And with the checksum filled in, it verifies.
            let mut h = h;
            h[10] = 0;
            h[11] = 0;
            let c = !sum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            proptest::prop_assert!(ipv4_header_valid(&h));
        }
    }

    #[test]
    fn header_sums_of_all_ones_and_all_zeros() {
        // All ones: every word is -0, the sum is -0: valid. All zeros: +0 is not all ones.
        assert!(ipv4_header20_valid(&[0xff; 20]));
        assert!(!ipv4_header20_valid(&[0; 20]));
        // One carry out of each 64-bit add.
        let mut h = [0xff; 20];
        h[10] = 0xfe;
        assert!(!ipv4_header20_valid(&h));
        assert_eq!(sum(&h) == 0xffff, ipv4_header20_valid(&h));
    }

    #[test]
    fn sum_pads_odd_length() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
    }
}
