//! Fragment steering: every fragment of a datagram goes where its first fragment went.
//!
//! Only the first fragment (offset 0) carries the UDP header, so only it can be matched to a
//! VIP and scheduled. The worker schedules it like any datagram and records the decision in a
//! [`FragTable`] under the datagram's `FragKey` (source, destination, protocol, IP ID);
//! each later fragment looks the key up and gets the same `FragAction`, whatever the
//! scheduler (per-packet round robin would otherwise deal the pieces to different backends).
//! Spray does not reassemble: the backend does, as it would without a balancer.
//!
//! Policy (docs/network.md has the operator's version):
//!
//! * Out of order: a non-first fragment that arrives before its first fragment is dropped
//!   and counted ([`DropReason::FragmentNoFirst`]); it is not held. Senders emit fragments in
//!   order and a single link does not reorder, so this costs little and keeps NIC buffers
//!   from being parked in a queue.
//! * Exhaustion: the table is set-associative (4 ways) and fixed at start. A first fragment
//!   whose set holds 4 live entries is dropped and counted
//!   ([`DropReason::FragmentTableFull`]): the datagram could not be steered whole anyway,
//!   and datagrams already in flight keep their entries.
//! * Lifetime: an entry lives `DEFAULT_LIFETIME` after its last fragment, and is freed as
//!   soon as every byte from 0 to the last fragment's end has been seen.
//! * Overlap: a fragment that overlaps bytes already forwarded is dropped, and so is every
//!   later fragment of that datagram (RFC 5722; the backend's reassembly then times out).
//!   A first fragment for a key that is still live starts a new datagram (IP ID reuse).
//! * Holes: an entry tracks up to `MAX_RANGES` disjoint byte ranges; a fragment that would
//!   need more is counted as [`DropReason::FragmentTableFull`].
//!
//! A table belongs to one worker: NIC RSS hashes fragments on addresses only (the UDP ports
//! are absent from non-first fragments), so all fragments of a datagram reach one queue.
//! Nothing here allocates after [`FragTable::new`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::counters::DropReason;
use crate::model::flow::mix64;
use crate::model::{BackendId, MacAddr, Tunnel, VipId};
use crate::wire::{FragInfo, FragKey};

/// Entries of a worker's table unless configured otherwise.
pub(crate) const DEFAULT_ENTRIES: usize = 1024;
/// How long an entry outlives its most recent fragment.
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(2);
/// Disjoint byte ranges an entry tracks (for overlap detection).
pub(crate) const MAX_RANGES: usize = 8;
const WAYS: usize = 4;

/// What to do with the fragments of a datagram, decided by its first fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FragAction {
    /// Toward a backend of a VIP.
    Backend {
        /// The VIP the datagram was sent to.
        vip: VipId,
        /// The backend that got the first fragment.
        backend: BackendId,
        /// The backend's MAC.
        mac: MacAddr,
        /// NAT: the backend's address (the new destination); `None` in DR mode.
        nat_to: Option<IpAddr>,
        /// Tunnel: the backend's tunnel, its address (the outer destination) and the flow
        /// hash the first fragment was encapsulated with, which the later ones (without
        /// ports) reuse so that the whole datagram is one outer flow.
        tunnel: Option<(Tunnel, IpAddr, u64)>,
    },
    /// A NAT reply from a backend toward a client: the source becomes the VIP's address.
    Reply {
        /// The VIP's address.
        vip: IpAddr,
        /// Next hop toward the client.
        mac: MacAddr,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FragKey,
    /// `None`: the slot is free.
    expires: Option<Instant>,
    action: FragAction,
    ranges: [(u32, u32); MAX_RANGES],
    nranges: u8,
    /// End of the datagram, once its last fragment was seen.
    total: Option<u32>,
    /// An overlap was seen: drop the rest.
    poisoned: bool,
}

impl Entry {
    const EMPTY: Entry = Entry {
        key: FragKey {
            src: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            id: 0,
            proto: 0,
        },
        expires: None,
        action: FragAction::Reply {
            vip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            mac: MacAddr([0; 6]),
        },
        ranges: [(0, 0); MAX_RANGES],
        nranges: 0,
        total: None,
        poisoned: false,
    };

    #[inline]
    fn live(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e > now)
    }
}

/// A worker's fragment table; see the module docs.
#[derive(Debug)]
pub struct FragTable {
    entries: Box<[Entry]>,
    set_mask: usize,
    lifetime: Duration,
}

impl Default for FragTable {
    fn default() -> Self {
        Self::new(DEFAULT_ENTRIES, DEFAULT_LIFETIME)
    }
}

#[inline]
fn ip_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

#[inline]
fn hash(k: &FragKey) -> u64 {
    let s = ip_bits(k.src);
    let d = ip_bits(k.dst);
    let mut h = mix64(s as u64 ^ (u64::from(k.id) << 8) ^ u64::from(k.proto));
    h = mix64(h ^ (s >> 64) as u64);
    h = mix64(h ^ d as u64);
    mix64(h ^ (d >> 64) as u64)
}

impl FragTable {
    /// A table of `entries` slots (rounded up to a power of two, at least 4) whose entries
    /// live `lifetime` after their latest fragment.
    pub fn new(entries: usize, lifetime: Duration) -> Self {
        let n = entries.max(WAYS).next_power_of_two();
        Self {
            entries: vec![Entry::EMPTY; n].into_boxed_slice(),
            set_mask: n / WAYS - 1,
            lifetime,
        }
    }

    /// Entries in use at `now` (for tests and statistics; O(table)).
    pub fn live(&self, now: Instant) -> usize {
        self.entries.iter().filter(|e| e.live(now)).count()
    }

    #[inline]
    fn set(&mut self, key: &FragKey) -> &mut [Entry] {
        let s = (hash(key) as usize) & self.set_mask;
        let start = s * WAYS;
        // In range: set_mask * WAYS + WAYS == entries.len().
        &mut self.entries[start..start + WAYS]
    }

    /// Records the decision for the datagram whose first fragment is `info`.
    ///
    /// # Errors
    /// [`DropReason::FragmentTableFull`] when the key's set has no free or expired slot.
    pub(crate) fn insert_first(
        &mut self,
        now: Instant,
        info: &FragInfo,
        action: FragAction,
    ) -> Result<(), DropReason> {
        let expires = now + self.lifetime;
        let set = self.set(&info.key);
        // A live entry with the same key: the ID was reused (or the first fragment repeated);
        // the new first fragment starts a new datagram.
        let slot = match set
            .iter()
            .position(|e| e.live(now) && e.key == info.key)
            .or_else(|| set.iter().position(|e| !e.live(now)))
        {
            Some(i) => &mut set[i],
            None => return Err(DropReason::FragmentTableFull),
        };
        *slot = Entry {
            key: info.key,
            expires: Some(expires),
            action,
            nranges: 1,
            total: None,
            poisoned: false,
            ..Entry::EMPTY
        };
        slot.ranges[0] = (0, info.len);
        Ok(())
    }

    /// The decision for non-first fragment `info`, recording the bytes it covers.
    ///
    /// # Errors
    /// [`DropReason::FragmentNoFirst`] when no live entry exists for its datagram,
    /// [`DropReason::FragmentOverlap`] when it overlaps bytes seen before (or the datagram
    /// already had an overlap), [`DropReason::FragmentTableFull`] when the entry cannot track
    /// another hole.
    pub(crate) fn lookup(
        &mut self,
        now: Instant,
        info: &FragInfo,
    ) -> Result<FragAction, DropReason> {
        let lifetime = self.lifetime;
        let set = self.set(&info.key);
        let e = set
            .iter_mut()
            .find(|e| e.live(now) && e.key == info.key)
            .ok_or(DropReason::FragmentNoFirst)?;
        if e.poisoned {
            return Err(DropReason::FragmentOverlap);
        }
        let (start, end) = (info.offset, info.offset + info.len);
        let overlaps = e.ranges[..usize::from(e.nranges)]
            .iter()
            .any(|&(s, t)| start < t && s < end);
        let bad_end = match (e.total, info.more) {
            // Data beyond the end, or a second "last" fragment with another end.
            (Some(total), _) if end > total => true,
            (Some(total), false) => end != total,
            (None, false) => e.ranges[..usize::from(e.nranges)]
                .iter()
                .any(|&(_, t)| t > end),
            (Some(_), true) | (None, true) => false,
        };
        if overlaps || bad_end {
            e.poisoned = true;
            return Err(DropReason::FragmentOverlap);
        }
        // Merge with adjacent ranges, then store.
        let (mut s, mut t) = (start, end);
        let mut i = 0;
        while i < usize::from(e.nranges) {
            let (rs, rt) = e.ranges[i];
            if rt == s || rs == t {
                s = s.min(rs);
                t = t.max(rt);
                e.nranges -= 1;
                e.ranges[i] = e.ranges[usize::from(e.nranges)];
            } else {
                i += 1;
            }
        }
        let n = usize::from(e.nranges);
        if n == MAX_RANGES {
            return Err(DropReason::FragmentTableFull);
        }
        e.ranges[n] = (s, t);
        e.nranges += 1;
        if !info.more {
            e.total = Some(end);
        }
        let action = e.action;
        if e.total
            .is_some_and(|total| e.nranges == 1 && e.ranges[0] == (0, total))
        {
            e.expires = None; // complete: free the slot now
        } else {
            e.expires = Some(now + lifetime);
        }
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> FragKey {
        FragKey {
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.10".parse().unwrap(),
            id,
            proto: 17,
        }
    }

    fn info(id: u32, offset: u32, len: u32, more: bool) -> FragInfo {
        FragInfo {
            key: key(id),
            offset,
            len,
            more,
        }
    }

    const ACT: FragAction = FragAction::Backend {
        vip: VipId(0),
        backend: BackendId(1),
        mac: MacAddr([2, 0, 0, 0, 0, 1]),
        nat_to: None,
        tunnel: None,
    };

    #[test]
    fn later_fragments_follow_the_first_and_the_entry_frees_itself() {
        let now = Instant::now();
        let mut t = FragTable::new(16, Duration::from_secs(1));
        t.insert_first(now, &info(7, 0, 1480, true), ACT).unwrap();
        assert_eq!(t.lookup(now, &info(7, 1480, 1480, true)), Ok(ACT));
        assert_eq!(t.live(now), 1);
        assert_eq!(t.lookup(now, &info(7, 2960, 100, false)), Ok(ACT));
        assert_eq!(t.live(now), 0, "complete datagram frees its entry");
        assert_eq!(
            t.lookup(now, &info(7, 2960, 100, false)),
            Err(DropReason::FragmentNoFirst)
        );
    }

    #[test]
    fn out_of_order_last_fragments_are_fine_once_the_first_was_seen() {
        let now = Instant::now();
        let mut t = FragTable::new(16, Duration::from_secs(1));
        t.insert_first(now, &info(1, 0, 16, true), ACT).unwrap();
        assert_eq!(t.lookup(now, &info(1, 32, 8, false)), Ok(ACT));
        assert_eq!(t.live(now), 1, "hole at 16..32");
        assert_eq!(t.lookup(now, &info(1, 16, 16, true)), Ok(ACT));
        assert_eq!(t.live(now), 0);
    }

    #[test]
    fn non_first_without_first_is_refused() {
        let mut t = FragTable::default();
        assert_eq!(
            t.lookup(Instant::now(), &info(9, 8, 8, true)),
            Err(DropReason::FragmentNoFirst)
        );
    }

    #[test]
    fn overlap_poisons_the_datagram() {
        let now = Instant::now();
        let mut t = FragTable::new(16, Duration::from_secs(1));
        t.insert_first(now, &info(2, 0, 16, true), ACT).unwrap();
        assert_eq!(
            t.lookup(now, &info(2, 8, 16, true)),
            Err(DropReason::FragmentOverlap)
        );
        // Even a clean fragment of that datagram is refused afterwards.
        assert_eq!(
            t.lookup(now, &info(2, 16, 8, false)),
            Err(DropReason::FragmentOverlap)
        );
    }

    #[test]
    fn data_beyond_the_last_fragment_is_an_overlap() {
        let now = Instant::now();
        let mut t = FragTable::new(16, Duration::from_secs(1));
        t.insert_first(now, &info(3, 0, 16, true), ACT).unwrap();
        t.lookup(now, &info(3, 32, 8, false)).unwrap();
        assert_eq!(
            t.lookup(now, &info(3, 40, 8, true)),
            Err(DropReason::FragmentOverlap)
        );
    }

    #[test]
    fn a_full_set_refuses_new_datagrams_until_entries_expire() {
        let now = Instant::now();
        // 4 slots = one set: every key lands in it.
        let mut t = FragTable::new(4, Duration::from_secs(1));
        for id in 0..4 {
            t.insert_first(now, &info(id, 0, 8, true), ACT).unwrap();
        }
        assert_eq!(
            t.insert_first(now, &info(99, 0, 8, true), ACT),
            Err(DropReason::FragmentTableFull)
        );
        let later = now + Duration::from_secs(2);
        t.insert_first(later, &info(99, 0, 8, true), ACT).unwrap();
        assert_eq!(
            t.lookup(later, &info(0, 8, 8, false)),
            Err(DropReason::FragmentNoFirst),
            "expired"
        );
    }

    #[test]
    fn too_many_holes_are_counted_as_exhaustion() {
        let now = Instant::now();
        let mut t = FragTable::new(16, Duration::from_secs(1));
        t.insert_first(now, &info(5, 0, 8, true), ACT).unwrap();
        for i in 1..MAX_RANGES as u32 {
            t.lookup(now, &info(5, i * 16, 8, true)).unwrap();
        }
        assert_eq!(
            t.lookup(now, &info(5, 500 * 8, 8, true)),
            Err(DropReason::FragmentTableFull)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(ops in proptest::collection::vec((0u32..4, 0u32..64, 0u32..64, proptest::prelude::any::<bool>()), 0..200)) {
            let now = Instant::now();
            let mut t = FragTable::new(8, Duration::from_secs(1));
            for (id, off, len, more) in ops {
                let i = info(id, off * 8, len * 8, more);
                if off == 0 {
                    let _ = t.insert_first(now, &i, ACT);
                } else {
                    let _ = t.lookup(now, &i);
                }
            }
        }
    }
}
