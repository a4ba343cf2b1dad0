//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4).
//!
//! Contract: [`Maglev::pick`] is one table load, never panics and never allocates. The same
//! backends (by key) with the same weights give the same table on every worker, every run and
//! whatever their order in the config, so a flow reaches the same backend whichever core
//! receives it and across snapshot swaps that leave its backend in place.
//!
//! Design. The lookup table has a prime number of slots, [`TABLE_SIZE`]. Each backend gets a
//! permutation of the slots from two hashes of its key (`SocketAddr`): `offset = h1 % M`,
//! `skip = h2 % (M - 1) + 1`, slot `j` being `(offset + j * skip) % M`; since M is prime every
//! skip visits every slot. Backends then take turns, each claiming the next still-free slot
//! of its own permutation, until the table is full. Because a backend's preferences depend
//! only on its own key, removing one backend mostly hands its slots to the others and moves
//! few slots between survivors (the paper's "minimal disruption", best effort), and equal
//! weights give shares that differ by at most one slot.
//!
//! Weights follow Katran's `MaglevHashV2`: every round each backend adds its weight to a
//! credit, and takes a turn whenever the credit reaches the largest weight (which then is
//! subtracted). The heaviest backend takes one turn per round and the others
//! `weight / max_weight` on average, so slot counts are proportional to weights, and a round
//! has at most one turn per backend however large the weights are. Weight 0 (down, drained,
//! removed) means no turns: the backend is not in the table at all. A non-zero weight below
//! `max_weight / TABLE_SIZE` may end up with no slot.
//!
//! Backends take turns in key order, not config order: when two permutations want the same
//! slot, the one that goes first wins, so the order has to depend on the backends only.

use std::net::{IpAddr, SocketAddr};

use crate::model::flow::mix64;

/// Slots in the lookup table: prime (so every skip generates a full permutation) and much
/// larger than the backend count, as the paper advises (M >> 100 × N keeps shares within
/// about 1%). 65537 slots of `u16` is 128 KiB per VIP.
pub(crate) const TABLE_SIZE: usize = 65537;

/// Marks a free slot while building. Backend indices are therefore below `u16::MAX`.
const EMPTY: u16 = u16::MAX;

/// Seeds of the two key hashes; any two different constants do, as long as they never change
/// (a change would move every flow).
const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031; // "maglev01"
const SEED_SKIP: u64 = 0x6d61_676c_6576_3032; // "maglev02"

/// Maglev lookup table: slot -> backend index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Maglev {
    /// [`TABLE_SIZE`] entries, or none when no backend is in rotation.
    table: Box<[u16]>,
}

/// A backend while the table is being filled.
struct Filler {
    index: u16,
    key: SocketAddr,
    weight: u64,
    /// Turn credit (see the module docs); below `max_weight` between rounds.
    credit: u64,
    /// Next slot of this backend's permutation to try.
    next: u32,
    skip: u32,
}

impl Maglev {
    /// Builds the lookup table from effective weights (0 = left out) and backend keys.
    ///
    /// `keys[i]` identifies backend `i` and decides its slots, so a backend keeps its slots
    /// when others come and go or the config is reordered. `keys` must be as long as
    /// `weights`; a backend without a key, or with an index of `u16::MAX` or more, is left
    /// out.
    ///
    /// Cost: about `M ln M` slot probes for equal weights (the paper's estimate), more when
    /// weights are skewed; once per snapshot.
    pub fn new(weights: &[u32], keys: &[SocketAddr]) -> Self {
        debug_assert_eq!(weights.len(), keys.len(), "one key per backend");
        let m = TABLE_SIZE as u64;
        let mut fillers: Vec<Filler> = weights
            .iter()
            .zip(keys)
            .take(usize::from(EMPTY))
            .enumerate()
            .filter(|&(_, (&w, _))| w > 0)
            .map(|(i, (&w, key))| Filler {
                index: i as u16,
                key: *key,
                weight: u64::from(w),
                credit: 0,
                // Both below M < 2^32.
                next: (key_hash(key, SEED_OFFSET) % m) as u32,
                skip: (key_hash(key, SEED_SKIP) % (m - 1) + 1) as u32,
            })
            .collect();
        if fillers.is_empty() {
            return Self::default();
        }
        // Index breaks ties between duplicate keys, so the order is total; such duplicates
        // share one permutation and split its slots.
        fillers.sort_by_key(|f| (f.key, f.index));
        let max_weight = fillers.iter().map(|f| f.weight).max().unwrap_or(1);

        let mut table = vec![EMPTY; TABLE_SIZE];
        let mut filled = 0;
        // Terminates: the heaviest backend takes a turn every round, and a turn always finds
        // a free slot because each permutation visits every slot.
        'fill: loop {
            for f in &mut fillers {
                f.credit += f.weight;
                if f.credit < max_weight {
                    continue;
                }
                f.credit -= max_weight;
                while table[f.next as usize] != EMPTY {
                    f.next = advance(f.next, f.skip);
                }
                table[f.next as usize] = f.index;
                f.next = advance(f.next, f.skip);
                filled += 1;
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Self {
            table: table.into(),
        }
    }

    /// Backend index (into the weights given to [`new`](Self::new)) for a flow, or `None`
    /// when no backend is in rotation.
    ///
    /// `flow_hash` should be [`crate::model::flow::flow_hash`], the same on every worker.
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<usize> {
        // `% TABLE_SIZE` by a constant compiles to a multiply; `get` covers the empty table.
        let slot = (flow_hash % TABLE_SIZE as u64) as usize;
        self.table.get(slot).map(|&b| usize::from(b))
    }

    /// Whether no backend is in rotation.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Next slot of a permutation: `(slot + skip) % M`; both are below M, so no overflow.
#[inline]
fn advance(slot: u32, skip: u32) -> u32 {
    let s = slot + skip;
    if s >= TABLE_SIZE as u32 {
        s - TABLE_SIZE as u32
    } else {
        s
    }
}

/// Deterministic hash of a backend key (not `RandomState`: every worker, every process and
/// every restart must build the same table). All 128 bits of an IPv6 address count, and the
/// family is mixed in so an IPv4 address never collides with its IPv4-mapped twin.
fn key_hash(key: &SocketAddr, seed: u64) -> u64 {
    let (family, hi, lo) = match key.ip() {
        IpAddr::V4(a) => (4u64, 0, u64::from(a.to_bits())),
        IpAddr::V6(a) => {
            let b = a.to_bits();
            (6, (b >> 64) as u64, b as u64)
        }
    };
    let h = mix64(seed ^ hi);
    let h = mix64(h ^ lo);
    mix64(h ^ (family << 16 | u64::from(key.port())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backend `i` at 198.18.0.i:5140 (RFC 2544 test range).
    fn keys(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([198, 18, 0, i], 5140)))
            .collect()
    }

    /// Slots per backend index.
    fn shares(m: &Maglev, backends: usize) -> Vec<usize> {
        let mut counts = vec![0; backends];
        for &b in m.table.iter() {
            counts[usize::from(b)] += 1;
        }
        counts
    }

    /// The key owning each slot, so tables built from differently indexed backends compare.
    fn owners(m: &Maglev, keys: &[SocketAddr]) -> Vec<SocketAddr> {
        m.table.iter().map(|&b| keys[usize::from(b)]).collect()
    }

    #[test]
    // `is_multiple_of` is newer (1.87) than the workspace's rust-version (1.80).
    #[allow(clippy::manual_is_multiple_of)]
    fn table_is_full_and_prime_sized() {
        let k = keys(4);
        let m = Maglev::new(&[1, 1, 1, 1], &k);
        assert_eq!(m.table.len(), TABLE_SIZE);
        assert!(m.table.iter().all(|&b| b < 4));
        let prime = (2..)
            .take_while(|d| d * d <= TABLE_SIZE)
            .all(|d| TABLE_SIZE % d != 0);
        assert!(prime, "TABLE_SIZE must be prime");
    }

    #[test]
    fn equal_weights_spread_within_one_percent() {
        for n in [3u8, 5, 10] {
            let k = keys(n);
            let m = Maglev::new(&vec![1; n.into()], &k);
            let mean = TABLE_SIZE as f64 / f64::from(n);
            for (i, &c) in shares(&m, n.into()).iter().enumerate() {
                let dev = (c as f64 - mean).abs() / mean;
                assert!(dev < 0.01, "n={n} backend {i}: {c} slots, mean {mean}");
            }
        }
    }

    /// Fraction of slots whose owner changes when backend `gone` leaves `n` backends, and
    /// the fraction of the survivors' slots among them.
    fn disruption(n: u8, gone: usize) -> (f64, f64) {
        let k = keys(n);
        let before = owners(&Maglev::new(&vec![1; n.into()], &k), &k);
        let mut k2 = k.clone();
        k2.remove(gone);
        let after = owners(&Maglev::new(&vec![1; k2.len()], &k2), &k2);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let survivors_moved = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| **a != k[gone] && a != b)
            .count();
        let m = TABLE_SIZE as f64;
        (moved as f64 / m, survivors_moved as f64 / m)
    }

    #[test]
    fn removing_one_backend_moves_about_its_share() {
        for n in [3u8, 5, 10] {
            for gone in [0, usize::from(n) / 2, usize::from(n) - 1] {
                let (moved, survivors_moved) = disruption(n, gone);
                let share = 1.0 / f64::from(n);
                assert!(moved >= share * 0.99, "n={n} gone={gone}: moved {moved}");
                assert!(moved < share + 0.02, "n={n} gone={gone}: moved {moved}");
                assert!(
                    survivors_moved < 0.01,
                    "n={n} gone={gone}: survivors' slots moved {survivors_moved}"
                );
            }
        }
    }

    #[test]
    fn weight_zero_equals_removal() {
        let k = keys(5);
        let zeroed = Maglev::new(&[1, 1, 0, 1, 1], &k);
        assert_eq!(shares(&zeroed, 5)[2], 0);
        let mut k2 = k.clone();
        k2.remove(2);
        let removed = Maglev::new(&[1, 1, 1, 1], &k2);
        assert_eq!(owners(&zeroed, &k), owners(&removed, &k2));
    }

    #[test]
    fn weight_two_gets_twice_the_slots() {
        let k = keys(3);
        let c = shares(&Maglev::new(&[2, 1, 1], &k), 3);
        for light in [c[1], c[2]] {
            let ratio = c[0] as f64 / light as f64;
            assert!((ratio - 2.0).abs() < 0.04, "{c:?}");
        }
        // Scaling every weight changes nothing.
        let k = keys(3);
        assert_eq!(
            Maglev::new(&[2, 1, 1], &k).table,
            Maglev::new(&[200, 100, 100], &k).table
        );
    }

    #[test]
    fn uneven_weights_are_proportional() {
        let k = keys(4);
        let weights = [10u32, 3, 7, 1];
        let c = shares(&Maglev::new(&weights, &k), 4);
        let sum: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let expect = TABLE_SIZE as f64 * f64::from(w) / f64::from(sum);
            assert!((c[i] as f64 - expect).abs() / expect < 0.02, "{c:?}");
        }
    }

    #[test]
    fn empty_table_picks_none() {
        for m in [
            Maglev::new(&[], &[]),
            Maglev::new(&[0, 0], &keys(2)),
            Maglev::default(),
        ] {
            assert!(m.is_empty());
            assert_eq!(m.pick(0), None);
            assert_eq!(m.pick(u64::MAX), None);
        }
    }

    #[test]
    fn pick_is_table_lookup_for_any_hash() {
        let k = keys(3);
        let m = Maglev::new(&[1, 1, 1], &k);
        assert!(!m.is_empty());
        for h in [0, 1, TABLE_SIZE as u64, u64::MAX, 0x1234_5678_9abc_def0] {
            let slot = (h % TABLE_SIZE as u64) as usize;
            assert_eq!(m.pick(h), Some(usize::from(m.table[slot])));
        }
    }

    #[test]
    fn config_order_does_not_matter() {
        let k = keys(6);
        let weights = [1u32, 2, 1, 3, 1, 1];
        let a = Maglev::new(&weights, &k);
        // Reverse the backends, and their weights with them.
        let rk: Vec<SocketAddr> = k.iter().rev().copied().collect();
        let rw: Vec<u32> = weights.iter().rev().copied().collect();
        let b = Maglev::new(&rw, &rk);
        for h in (0..TABLE_SIZE as u64 * 2).step_by(7) {
            assert_eq!(
                k[a.pick(h).unwrap()],
                rk[b.pick(h).unwrap()],
                "flow hash {h}"
            );
        }
    }

    #[test]
    fn ipv6_keys_and_ports_differ() {
        let v4: SocketAddr = "198.18.0.1:5140".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:198.18.0.1]:5140".parse().unwrap();
        let other_port: SocketAddr = "198.18.0.1:5141".parse().unwrap();
        let a: SocketAddr = "[2001:db8::1]:5140".parse().unwrap();
        let b: SocketAddr = "[2001:db8:0:1::1]:5140".parse().unwrap();
        let hashes: Vec<u64> = [v4, mapped, other_port, a, b]
            .iter()
            .map(|k| key_hash(k, SEED_OFFSET))
            .collect();
        for (i, x) in hashes.iter().enumerate() {
            assert!(!hashes[i + 1..].contains(x), "{hashes:x?}");
        }
        assert_ne!(key_hash(&a, SEED_OFFSET), key_hash(&a, SEED_SKIP));
        // An IPv6 pool spreads as well as an IPv4 one.
        let k6: Vec<SocketAddr> = (1..=5u16)
            .map(|i| SocketAddr::new(format!("2001:db8::{i}").parse().unwrap(), 5140))
            .collect();
        let mean = TABLE_SIZE as f64 / 5.0;
        for c in shares(&Maglev::new(&[1; 5], &k6), 5) {
            assert!((c as f64 - mean).abs() / mean < 0.01);
        }
    }
}
