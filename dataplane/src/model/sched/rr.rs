//! Plain per-packet round robin.

/// Round robin over the backends whose weight is non-zero.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoundRobin {
    active: Box<[u16]>,
}

impl RoundRobin {
    /// Builds the rotation from effective weights (0 = left out).
    pub fn new(weights: &[u32]) -> Self {
        Self {
            active: (0..weights.len())
                .filter(|&i| weights[i] > 0)
                .map(|i| i as u16)
                .collect(),
        }
    }

    /// Next backend index; advances `cursor`.
    #[inline]
    pub fn pick(&self, cursor: &mut u32) -> Option<usize> {
        // A cursor left over from a larger snapshot wraps instead of indexing out of range.
        let i = if (*cursor as usize) < self.active.len() {
            *cursor as usize
        } else {
            0
        };
        let b = *self.active.get(i)?;
        *cursor = (i + 1) as u32;
        Some(usize::from(b))
    }

    /// Whether no backend is in rotation.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// The rotation: backend indices in the order [`RoundRobin::pick`] deals them.
    pub fn rotation(&self) -> &[u16] {
        &self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deals_exact_thirds() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let mut cursor = 0;
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[rr.pick(&mut cursor).unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 1000, 1000]);
    }

    #[test]
    fn skips_weight_zero_and_survives_a_stale_cursor() {
        let rr = RoundRobin::new(&[1, 0, 5]);
        let mut cursor = 17;
        let picks: Vec<usize> = (0..4).map(|_| rr.pick(&mut cursor).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        assert!(RoundRobin::new(&[0, 0]).pick(&mut cursor).is_none());
    }
}
