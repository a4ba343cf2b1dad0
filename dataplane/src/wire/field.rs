//! Named byte ranges of the header fields Spray reads and writes at fixed offsets.
//!
//! The smoltcp views name their fields too, but privately; the fast classifier, the fast NAT
//! rewrite and the encapsulation work on fixed-size arrays of header bytes instead of views
//! (so that every bounds check folds away), and they index those arrays with these names.
//! Each offset is from the start of its own header.

use std::ops::Range;

/// A field's bytes within its header.
pub(crate) type Field = Range<usize>;

/// The first two bytes of `field` in `b`, big-endian (network order).
#[inline(always)]
pub(crate) fn be16(b: &[u8], field: Field) -> u16 {
    u16::from_be_bytes([b[field.start], b[field.start + 1]])
}

/// Ethernet (RFC 894), and the 802.1Q tag that may follow the source address.
pub(crate) mod eth {
    use super::Field;

    /// Destination MAC.
    pub(crate) const DST: Field = 0..6;
    /// Source MAC.
    pub(crate) const SRC: Field = 6..12;
    /// EtherType, or the 802.1Q TPID of a tagged frame.
    pub(crate) const ETHERTYPE: Field = 12..14;
    /// The tag's TCI (priority, DEI, VLAN id), in a tagged frame.
    pub(crate) const TAG_TCI: Field = 14..16;
    /// The EtherType after the tag, in a tagged frame.
    pub(crate) const TAG_ETHERTYPE: Field = 16..18;
}

/// IPv4 (RFC 791).
pub(crate) mod ipv4 {
    use super::Field;

    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub(crate) const VER_IHL: usize = 0;
    /// Version 4 with a 20-byte header: the only first byte the fast path takes.
    pub(crate) const VER_IHL_NO_OPTIONS: u8 = 0x45;
    /// DSCP and ECN.
    pub(crate) const TOS: usize = 1;
    /// Total length: header and payload.
    pub(crate) const TOTAL_LEN: Field = 2..4;
    /// Identification.
    pub(crate) const IDENT: Field = 4..6;
    /// Flags (DF, MF) and the fragment offset.
    pub(crate) const FLAGS_FRAG: Field = 6..8;
    /// Time to live.
    pub(crate) const TTL: usize = 8;
    /// The transport protocol.
    pub(crate) const PROTOCOL: usize = 9;
    /// Header checksum.
    pub(crate) const CHECKSUM: Field = 10..12;
    /// Source address.
    pub(crate) const SRC: Field = 12..16;
    /// Destination address.
    pub(crate) const DST: Field = 16..20;
    /// Length of a header without options.
    pub(crate) const HEADER_LEN: usize = 20;
}

/// IPv6 (RFC 8200).
pub(crate) mod ipv6 {
    use super::Field;

    /// Version, traffic class and flow label.
    pub(crate) const VER_TC_FLOW: Field = 0..4;
    /// Payload length (extension headers included).
    pub(crate) const PAYLOAD_LEN: Field = 4..6;
    /// The next header's type.
    pub(crate) const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub(crate) const HOP_LIMIT: usize = 7;
    /// Source address.
    pub(crate) const SRC: Field = 8..24;
    /// Destination address.
    pub(crate) const DST: Field = 24..40;
    /// Length of the fixed header.
    pub(crate) const HEADER_LEN: usize = 40;
}

/// UDP (RFC 768).
pub(crate) mod udp {
    use super::Field;

    /// Source port.
    pub(crate) const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub(crate) const DST_PORT: Field = 2..4;
    /// Length: header and data.
    pub(crate) const LENGTH: Field = 4..6;
    /// Checksum; 0 over IPv4 means none.
    pub(crate) const CHECKSUM: Field = 6..8;
    /// Length of the header.
    pub(crate) const HEADER_LEN: usize = 8;
}

/// An IPv4 header without options and the UDP header after it: the 28 bytes the fast path
/// views as one array. The IPv4 fields are at their own offsets; the UDP ones follow.
pub(crate) mod ipv4_udp {
    use super::{ipv4, udp, Field};

    const fn after_ip(f: Field) -> Field {
        ipv4::HEADER_LEN + f.start..ipv4::HEADER_LEN + f.end
    }

    /// UDP source port.
    pub(crate) const SRC_PORT: Field = after_ip(udp::SRC_PORT);
    /// UDP destination port.
    pub(crate) const DST_PORT: Field = after_ip(udp::DST_PORT);
    /// UDP length.
    pub(crate) const UDP_LEN: Field = after_ip(udp::LENGTH);
    /// UDP checksum.
    pub(crate) const UDP_CHECKSUM: Field = after_ip(udp::CHECKSUM);
    /// Both headers.
    pub(crate) const LEN: usize = ipv4::HEADER_LEN + udp::HEADER_LEN;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::frames::{udp_frame, FrameSpec};
    use crate::wire::{EthernetFrame, Ipv4Packet, UdpPacket};

    /// The names agree with smoltcp's views on a real frame.
    #[test]
    fn the_fields_are_where_smoltcp_reads_them() {
        let f = udp_frame(
            &FrameSpec::new(
                "198.18.0.1:40000".parse().unwrap(),
                "198.18.0.10:514".parse().unwrap(),
            ),
            b"<13>x",
        );
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(&f[eth::DST], e.dst_addr().as_bytes());
        assert_eq!(&f[eth::SRC], e.src_addr().as_bytes());
        assert_eq!(be16(&f, eth::ETHERTYPE), u16::from(e.ethertype()));
        let h = &f[14..];
        let ip = Ipv4Packet::new_checked(h).unwrap();
        assert_eq!(h[ipv4::VER_IHL], ipv4::VER_IHL_NO_OPTIONS);
        assert_eq!(be16(h, ipv4::TOTAL_LEN), ip.total_len());
        assert_eq!(be16(h, ipv4::IDENT), ip.ident());
        assert_eq!(h[ipv4::TTL], ip.hop_limit());
        assert_eq!(h[ipv4::PROTOCOL], u8::from(ip.next_header()));
        assert_eq!(be16(h, ipv4::CHECKSUM), ip.checksum());
        assert_eq!(&h[ipv4::SRC], &ip.src_addr().octets());
        assert_eq!(&h[ipv4::DST], &ip.dst_addr().octets());
        let u = UdpPacket::new_checked(&h[ipv4::HEADER_LEN..]).unwrap();
        assert_eq!(be16(h, ipv4_udp::SRC_PORT), u.src_port());
        assert_eq!(be16(h, ipv4_udp::DST_PORT), u.dst_port());
        assert_eq!(be16(h, ipv4_udp::UDP_LEN), u.len());
        assert_eq!(be16(h, ipv4_udp::UDP_CHECKSUM), u.checksum());
        assert_eq!(ipv4_udp::LEN, 28);
    }
}
