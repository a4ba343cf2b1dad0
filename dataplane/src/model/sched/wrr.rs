//! Smooth weighted round robin, precomputed into a table.
//!
//! Contract: [`WeightedRoundRobin::pick`] never panics and never allocates, whatever the
//! cursor; over one table cycle (and so over `sum(weights)` picks, a multiple of it) each
//! backend is picked exactly its weight's share, unless the weights had to be scaled down to
//! fit [`MAX_TABLE_LEN`] (see [`WeightedRoundRobin::new`]).
//!
//! The sequence is nginx's *smooth* weighted round robin (`ngx_http_upstream_get_peer`): each
//! step every backend's `current` grows by its weight, the largest `current` wins (first one on
//! a tie) and loses `total`. Unlike "w copies of each backend in a row", it interleaves: weights
//! 5, 1, 1 give `a a b a c a a`, so a heavy backend does not take a burst of packets while
//! the others idle. Running the algorithm per packet would cost O(backends) and a shared
//! mutable state; instead it runs once per snapshot and the worker walks the result with its
//! own cursor, O(1) per packet. The sequence repeats after `sum(weights / gcd)` steps, so
//! that is the table length.

/// Most entries in a table (one `u16` each, so 128 KiB per VIP at most).
///
/// Weights whose sum (after dividing by their gcd) exceeds this are scaled down, which is the
/// only case where a backend's share is approximate.
pub(crate) const MAX_TABLE_LEN: usize = 1 << 16;

/// Backend indices are stored as `u16`; backends past this many are left out.
const MAX_BACKENDS: usize = 1 << 16;

/// Weighted round robin as an interleaved table of backend indices.
#[derive(Debug, Clone, Default)]
pub(crate) struct WeightedRoundRobin {
    /// One cycle of the smooth sequence; empty when no backend is in rotation.
    table: Box<[u16]>,
}

impl WeightedRoundRobin {
    /// Builds the table from effective weights (0 = never picked).
    ///
    /// Weights are first divided by their gcd, so `[100, 50]` and `[2, 1]` give the same
    /// three-entry table. When the reduced sum still exceeds [`MAX_TABLE_LEN`], each non-zero
    /// weight becomes `max(1, w * budget / sum)` with `budget = MAX_TABLE_LEN - backends`:
    /// the table then fits, every backend in rotation keeps at least one entry, and shares
    /// are proportional only up to rounding. That is the only case where counts are
    /// approximate. Only the first 65536 backends can be indexed; any beyond are left out.
    ///
    /// Cost: O(table length × backends in rotation), once per snapshot.
    pub fn new(weights: &[u32]) -> Self {
        let mut active: Vec<(u16, u64)> = weights
            .iter()
            .take(MAX_BACKENDS)
            .enumerate()
            .filter(|&(_, &w)| w > 0)
            .map(|(i, &w)| (i as u16, u64::from(w)))
            .collect();
        if active.is_empty() {
            return Self::default();
        }
        let mut total = reduce_by_gcd(&mut active);
        if total > MAX_TABLE_LEN as u64 {
            // active.len() <= MAX_BACKENDS == MAX_TABLE_LEN, so no underflow. Each weight
            // rounds down and then gains at most 1, so the new sum stays <= MAX_TABLE_LEN.
            let budget = (MAX_TABLE_LEN - active.len()) as u64;
            for (_, w) in &mut active {
                // w < 2^32 and budget <= 2^16: the product fits in u64.
                *w = (*w * budget / total).max(1);
            }
            total = reduce_by_gcd(&mut active);
        }
        Self {
            table: smooth_sequence(&active, total).into(),
        }
    }

    /// Next backend index (into the weights given to [`new`](Self::new)); advances `cursor`.
    ///
    /// Any cursor value is valid: one left over from a larger snapshot starts over at 0.
    #[inline]
    pub fn pick(&self, cursor: &mut u32) -> Option<usize> {
        // Reset rather than `%`: no division per packet, and a stale cursor is rare (only
        // right after a snapshot swap).
        let i = if (*cursor as usize) < self.table.len() {
            *cursor as usize
        } else {
            0
        };
        let b = *self.table.get(i)?;
        // i + 1 <= MAX_TABLE_LEN fits in u32.
        *cursor = (i + 1) as u32;
        Some(usize::from(b))
    }

    /// Whether no backend is in rotation.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// One cycle: backend indices in the order [`WeightedRoundRobin::pick`] deals them.
    pub fn rotation(&self) -> &[u16] {
        &self.table
    }
}

/// Divides every weight by the gcd of all of them; returns the new sum. `active` holds
/// non-zero weights only, so the gcd is at least 1.
fn reduce_by_gcd(active: &mut [(u16, u64)]) -> u64 {
    let g = active.iter().fold(0, |g, &(_, w)| gcd(g, w));
    let mut total = 0;
    for (_, w) in active.iter_mut() {
        *w /= g;
        total += *w;
    }
    total
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One cycle (`total` steps) of nginx's smooth weighted round robin over `active`
/// (backend index, weight), `total` being the sum of the weights.
fn smooth_sequence(active: &[(u16, u64)], total: u64) -> Vec<u16> {
    // |current| never exceeds `total` <= MAX_TABLE_LEN, so i64 has room to spare.
    let total_i = total as i64;
    let mut current = vec![0i64; active.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (k, &(_, w)) in active.iter().enumerate() {
            current[k] += w as i64;
            // Strictly greater: the first backend wins a tie, as in nginx.
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total_i;
        out.push(active[best].0);
    }
    // After a full cycle every `current` is back to 0, which is why the table repeats.
    debug_assert!(current.iter().all(|&c| c == 0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Counts picks per backend over `n` picks from cursor 0.
    fn counts(wrr: &WeightedRoundRobin, backends: usize, n: u64) -> Vec<u64> {
        let mut cursor = 0;
        let mut counts = vec![0u64; backends];
        for _ in 0..n {
            counts[wrr.pick(&mut cursor).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn sum_of_weights_picks_give_exact_counts() {
        for weights in [
            &[1u32, 1, 1][..],
            &[5, 1, 1],
            &[3, 2],
            &[4, 2, 2],
            &[100, 50, 25, 1],
            &[7],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            &[0, 3, 0, 9],
        ] {
            let wrr = WeightedRoundRobin::new(weights);
            let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let expected: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
            assert_eq!(counts(&wrr, weights.len(), sum), expected, "{weights:?}");
        }
    }

    #[test]
    fn five_one_one_is_nginx_sequence() {
        let wrr = WeightedRoundRobin::new(&[5, 1, 1]);
        let mut cursor = 0;
        let picks: Vec<usize> = (0..14).map(|_| wrr.pick(&mut cursor).unwrap()).collect();
        // a a b a c a a, twice: nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn interleaves_when_no_backend_dominates() {
        // Hand-picked vectors where smooth WRR achieves what some order allows: no two
        // consecutive picks of one backend (not guaranteed in general, see the proptest).
        for weights in [
            &[1u32, 1, 1][..],
            &[2, 1, 1],
            &[3, 2],
            &[3, 3, 2],
            &[4, 3, 2, 1],
        ] {
            let wrr = WeightedRoundRobin::new(weights);
            assert!(
                wrr.table.windows(2).all(|p| p[0] != p[1]),
                "{weights:?}: {:?}",
                wrr.table
            );
        }
    }

    #[test]
    fn gcd_shortens_the_table() {
        assert_eq!(WeightedRoundRobin::new(&[100, 50]).table.len(), 3);
        assert_eq!(WeightedRoundRobin::new(&[0, 6, 4]).table.len(), 5);
    }

    #[test]
    fn weight_zero_is_never_picked() {
        let wrr = WeightedRoundRobin::new(&[0, 3, 0, 1, 0]);
        assert_eq!(counts(&wrr, 5, 400), [0, 300, 0, 100, 0]);
    }

    #[test]
    fn all_zero_or_no_backends_gives_none() {
        let mut cursor = 0;
        for weights in [&[0u32, 0, 0][..], &[]] {
            let wrr = WeightedRoundRobin::new(weights);
            assert!(wrr.is_empty());
            assert_eq!(wrr.pick(&mut cursor), None);
        }
        assert!(!WeightedRoundRobin::new(&[0, 1]).is_empty());
    }

    #[test]
    fn stale_cursor_wraps() {
        let wrr = WeightedRoundRobin::new(&[5, 1, 1]);
        for stale in [7, 8, 1000, u32::MAX] {
            let mut cursor = stale;
            assert_eq!(wrr.pick(&mut cursor), Some(0));
            assert_eq!(cursor, 1);
        }
        // The last entry wraps to the first one.
        let mut cursor = 6;
        assert_eq!(wrr.pick(&mut cursor), Some(0));
        assert_eq!(wrr.pick(&mut cursor), Some(0));
        assert_eq!(wrr.pick(&mut cursor), Some(0));
    }

    #[test]
    fn oversized_weights_are_scaled_to_the_cap() {
        // Coprime, so the gcd does not help: the sum is far above the cap.
        let weights = [1_000_000u32, 1, 500_001, 0];
        let wrr = WeightedRoundRobin::new(&weights);
        let len = wrr.table.len();
        assert!(len <= MAX_TABLE_LEN, "{len}");
        let c = counts(&wrr, weights.len(), len as u64);
        // Every non-zero weight keeps at least one entry; zero stays zero.
        assert!(c[1] >= 1 && c[3] == 0, "{c:?}");
        // The big ones keep their 2:1 ratio up to rounding.
        let ratio = c[0] as f64 / c[2] as f64;
        assert!((ratio - 2.0).abs() < 0.001, "{c:?}");
    }

    #[test]
    fn many_backends_fit_the_cap() {
        // More backends than the budget alone would allow if each kept its full weight.
        let weights: Vec<u32> = (0..5000).map(|i| 1000 + i).collect();
        let wrr = WeightedRoundRobin::new(&weights);
        assert!(wrr.table.len() <= MAX_TABLE_LEN);
        let c = counts(&wrr, weights.len(), wrr.table.len() as u64);
        assert!(c.iter().all(|&n| n >= 1));
    }

    proptest! {
        #[test]
        fn one_cycle_counts_equal_reduced_weights(
            weights in proptest::collection::vec(0u32..50, 1..16),
        ) {
            let wrr = WeightedRoundRobin::new(&weights);
            let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
            if g == 0 {
                prop_assert!(wrr.is_empty());
                return Ok(());
            }
            let expected: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
            let cycle: u64 = expected.iter().sum();
            prop_assert_eq!(wrr.table.len() as u64, cycle);
            prop_assert_eq!(counts(&wrr, weights.len(), cycle), expected);
        }

        #[test]
        fn picks_stay_close_to_the_ideal_share(
            weights in proptest::collection::vec(0u32..50, 1..16),
        ) {
            // The point of "smooth": after any k picks, every backend has had about k * w / sum
            // of them. nginx documents no tight bound and the algorithm does not avoid every
            // avoidable repeat (42, 33, 6 repeats the heaviest backend), but the deviation
            // stays near one pick (about 1.08 at worst over 60k random vectors of this shape);
            // a table dealing each backend's picks in a block would be off by up to w.
            let wrr = WeightedRoundRobin::new(&weights);
            let sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            let mut got = vec![0f64; weights.len()];
            for (k, &b) in wrr.table.iter().enumerate() {
                got[usize::from(b)] += 1.0;
                for (i, &w) in weights.iter().enumerate() {
                    let ideal = (k + 1) as f64 * f64::from(w) / sum;
                    prop_assert!((got[i] - ideal).abs() < 2.0, "{:?}", wrr.table);
                }
            }
        }
    }
}
