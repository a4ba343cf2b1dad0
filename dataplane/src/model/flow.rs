//! Flow hashing and the NAT reply table.
//!
//! `flow_hash` feeds consistent-hash schedulers; every worker computes the same value for
//! the same flow, so a flow stays on one backend whichever core receives it.
//!
//! [`NatFlows`] answers one question for NAT replies when several VIPs share one backend
//! address:port (the design's two-VIP syslog case): which VIP did this client talk to? On the
//! way in, the worker records `(client, backend) -> VIP`; on the way back it looks the pair up.
//! The table is a fixed array of atomics shared by all workers: no allocation, no lock. A
//! colliding flow overwrites the slot; a reply whose entry was overwritten falls back to the
//! first VIP of the backend and is counted, never sent to a wrong client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ids::VipId;

/// Mixes a 64-bit value (the finaliser of MurmurHash3: good avalanche from two multiplications).
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[inline]
fn addr_bits(a: &SocketAddr) -> u64 {
    let ip = match a {
        SocketAddr::V4(v4) => u64::from(v4.ip().to_bits()),
        SocketAddr::V6(v6) => {
            let b = v6.ip().to_bits();
            mix64((b >> 64) as u64) ^ (b as u64)
        }
    };
    (ip << 16) ^ u64::from(a.port())
}

/// Hash of a flow (source, destination), the same on every worker and every run.
#[inline]
pub(crate) fn flow_hash(src: &SocketAddr, dst: &SocketAddr) -> u64 {
    mix64(addr_bits(src) ^ mix64(addr_bits(dst)))
}

/// Shared `(client, backend) -> VIP` table for NAT replies of shared backends.
#[derive(Debug)]
pub struct NatFlows {
    slots: Box<[AtomicU64]>,
    mask: usize,
}

const TAG_SHIFT: u32 = 16;

impl NatFlows {
    /// A table with `slots` entries, rounded up to a power of two (at least 64).
    pub fn new(slots: usize) -> Self {
        let n = slots.max(64).next_power_of_two();
        Self {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
        }
    }

    #[inline]
    fn slot_and_tag(client: &SocketAddr, backend: &SocketAddr) -> (usize, u64) {
        let h = flow_hash(client, backend);
        // The tag keeps 48 bits of the hash; the +1 makes it non-zero so an empty slot
        // never matches.
        (h as usize, ((h >> 16) | 1) << TAG_SHIFT)
    }

    /// Records that `client` talked to `vip` through `backend`.
    #[inline]
    pub fn record(&self, client: &SocketAddr, backend: &SocketAddr, vip: VipId) {
        let (h, tag) = Self::slot_and_tag(client, backend);
        let slot = &self.slots[h & self.mask];
        let v = tag | u64::from(vip.0);
        // Read first: a steady flow finds its entry already there, and the cache line
        // stays shared between cores instead of bouncing.
        if slot.load(Ordering::Relaxed) != v {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The VIP `client` talked to through `backend`, if still recorded.
    #[inline]
    pub fn lookup(&self, client: &SocketAddr, backend: &SocketAddr) -> Option<VipId> {
        let (h, tag) = Self::slot_and_tag(client, backend);
        let v = self.slots[h & self.mask].load(Ordering::Relaxed);
        (v & !0xffff == tag).then_some(VipId(v as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_finds_the_vip_of_a_flow() {
        let t = NatFlows::new(1024);
        let c: SocketAddr = "198.18.0.1:40000".parse().unwrap();
        let b: SocketAddr = "198.19.0.1:514".parse().unwrap();
        assert_eq!(t.lookup(&c, &b), None);
        t.record(&c, &b, VipId(2));
        assert_eq!(t.lookup(&c, &b), Some(VipId(2)));
        t.record(&c, &b, VipId(0));
        assert_eq!(t.lookup(&c, &b), Some(VipId(0)));
        let other: SocketAddr = "198.18.0.1:40001".parse().unwrap();
        assert_eq!(t.lookup(&other, &b), None);
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let a: SocketAddr = "198.18.0.1:1000".parse().unwrap();
        let b: SocketAddr = "198.18.0.2:514".parse().unwrap();
        let h = flow_hash(&a, &b);
        assert_ne!(h, flow_hash(&"198.18.0.1:1001".parse().unwrap(), &b));
        assert_ne!(h, flow_hash(&"198.18.0.3:1000".parse().unwrap(), &b));
        assert_ne!(h, flow_hash(&a, &"198.18.0.2:515".parse().unwrap()));
        assert_ne!(h, flow_hash(&b, &a));
        let v6: SocketAddr = "[2001:db8::1]:1000".parse().unwrap();
        assert_ne!(
            flow_hash(&v6, &b),
            flow_hash(&"[2001:db8::2]:1000".parse().unwrap(), &b)
        );
    }
}
