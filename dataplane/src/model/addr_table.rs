//! An immutable map from socket address to a small value, built for the packet path.
//!
//! IPv4 keys (address and port folded into 48 bits of a `u64`) live in an open-addressing
//! table with linear probing, at most half full, hashed with one multiplication (Fibonacci
//! hashing): a lookup is a multiply, a shift and usually one comparison. Key and value sit
//! side by side in one slot, so a hit reads one cache line. IPv6 keys go to an `FxHashMap`.
//!
//! Why hand-written: the lookup runs for every packet, and a general hash map does more than
//! it needs (over `SocketAddr` keys the derived `Hash` stalls on store forwarding; with
//! integer keys hashbrown's probe remains), where this table is a multiply, a shift and a
//! compare (see docs/benchmarks.md).

use std::net::SocketAddr;

use rustc_hash::FxHashMap;

/// No IPv4 key can be all ones: a folded key uses only the low 48 bits.
const EMPTY: u64 = u64::MAX;

/// An IPv4 address and port folded into the low 48 bits of a key (never all ones).
#[inline]
pub(crate) fn fold_v4(ip: u32, port: u16) -> u64 {
    (u64::from(ip) << 16) | u64::from(port)
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct AddrTable<V: Copy> {
    /// (folded key, value); the key is [`EMPTY`] in a free slot.
    slots: Box<[(u64, V)]>,
    shift: u32,
    mask: usize,
    v6: FxHashMap<(u128, u16), V>,
}

impl<V: Copy + Default> Default for AddrTable<V> {
    fn default() -> Self {
        Self::build(std::iter::empty())
    }
}

impl<V: Copy + Default> AddrTable<V> {
    /// Builds the table; a later duplicate key replaces an earlier one.
    pub fn build(entries: impl IntoIterator<Item = (SocketAddr, V)>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = FxHashMap::default();
        for (a, v) in entries {
            match a {
                SocketAddr::V4(a) => v4.push((fold_v4(a.ip().to_bits(), a.port()), v)),
                SocketAddr::V6(a) => {
                    v6.insert((a.ip().to_bits(), a.port()), v);
                }
            }
        }
        let slots = (v4.len() * 2).max(8).next_power_of_two();
        let mut t = Self {
            slots: vec![(EMPTY, V::default()); slots].into(),
            shift: 64 - slots.trailing_zeros(),
            mask: slots - 1,
            v6,
        };
        for (k, v) in v4 {
            let mut i = t.slot(k);
            while t.slots[i].0 != EMPTY && t.slots[i].0 != k {
                i = (i + 1) & t.mask;
            }
            t.slots[i] = (k, v);
        }
        t
    }

    #[inline]
    fn slot(&self, k: u64) -> usize {
        (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// The value stored for `a`.
    #[inline]
    pub fn get(&self, a: &SocketAddr) -> Option<V> {
        match a {
            SocketAddr::V4(a) => self.get_v4(a.ip().to_bits(), a.port()),
            SocketAddr::V6(a) => self.v6.get(&(a.ip().to_bits(), a.port())).copied(),
        }
    }

    /// The value stored for IPv4 address `ip` (host order of its big-endian bytes) and
    /// `port`: [`AddrTable::get`] without a `SocketAddr`, for the packet path's fast case.
    #[inline]
    pub(crate) fn get_v4(&self, ip: u32, port: u16) -> Option<V> {
        let k = fold_v4(ip, port);
        let mut i = self.slot(k);
        // Terminates: the table is at most half full, so an EMPTY slot exists.
        loop {
            let &(key, v) = self.slots.get(i)?;
            if key == k {
                return Some(v);
            }
            if key == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_v4_and_v6_and_misses_the_rest() {
        let a: SocketAddr = "198.18.0.10:514".parse().unwrap();
        let b: SocketAddr = "[2001:db8::10]:514".parse().unwrap();
        let t = AddrTable::build([(a, 1u16), (b, 2)]);
        assert_eq!(t.get(&a), Some(1));
        assert_eq!(t.get(&b), Some(2));
        assert_eq!(t.get(&"198.18.0.10:515".parse().unwrap()), None);
        assert_eq!(t.get(&"[2001:db8::10]:515".parse().unwrap()), None);
        assert_eq!(AddrTable::<u16>::default().get(&a), None);
    }

    proptest! {
        #[test]
        fn agrees_with_a_hash_map(
            keys in proptest::collection::vec((any::<u32>(), any::<u16>()), 0..300),
            probes in proptest::collection::vec((any::<u32>(), any::<u16>()), 0..100),
        ) {
            let addr = |(ip, port): (u32, u16)| SocketAddr::new(std::net::Ipv4Addr::from(ip).into(), port);
            let mut model = std::collections::HashMap::new();
            for (i, k) in keys.iter().enumerate() {
                model.insert(addr(*k), i as u32);
            }
            let t = AddrTable::build(keys.iter().enumerate().map(|(i, k)| (addr(*k), i as u32)));
            for k in keys.iter().chain(probes.iter()) {
                prop_assert_eq!(t.get(&addr(*k)), model.get(&addr(*k)).copied());
                prop_assert_eq!(t.get_v4(k.0, k.1), model.get(&addr(*k)).copied());
            }
        }
    }
}
