//! The 802.1Q tag, the one header smoltcp's wire module does not have.
//!
//! Frame layout with a tag: `dst(6) src(6) 0x8100(2) TCI(2) inner-ethertype(2) payload`.
//! A view is four bytes of TCI and inner type, starting right after the outer ethertype.

/// EtherType of an 802.1Q tag (TPID).
pub(crate) const TPID_8021Q: u16 = 0x8100;
/// Bytes a tag adds to the Ethernet header.
pub(crate) const TAG_LEN: usize = 4;

mod field {
    use core::ops::Range;
    pub const TCI: Range<usize> = 0..2;
    pub(crate) const INNER_TYPE: Range<usize> = 2..4;
}

/// A view over the four bytes of an 802.1Q tag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps `buffer` after checking it holds a whole tag; no accessor panics afterwards.
    pub(crate) fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= TAG_LEN).then_some(Self { buffer })
    }

    /// Tag control information: PCP(3) DEI(1) VID(12).
    pub(crate) fn tci(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::TCI.start], b[field::TCI.start + 1]])
    }

    /// The VLAN identifier (low 12 bits of the TCI).
    #[cfg(test)]
    pub(crate) fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType of the encapsulated payload.
    pub(crate) fn inner_type(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::INNER_TYPE.start], b[field::INNER_TYPE.start + 1]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tci_and_inner_type() {
        let tag = VlanTag::new_checked([0xa0, 0x2a, 0x08, 0x00]).unwrap();
        assert_eq!(tag.tci(), 0xa02a);
        assert_eq!(tag.vid(), 42);
        assert_eq!(tag.inner_type(), 0x0800);
        assert!(VlanTag::new_checked([0u8; 3]).is_none());
    }
}
