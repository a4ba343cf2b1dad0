//! Smooth weighted round robin (placeholder: being rewritten).

/// Weighted round robin as an interleaved table.
#[derive(Debug, Clone, Default)]
pub struct WeightedRoundRobin {
    table: Box<[u16]>,
}

impl WeightedRoundRobin {
    /// Builds the table.
    pub fn new(weights: &[u32]) -> Self {
        let mut t = Vec::new();
        for (i, &w) in weights.iter().enumerate() {
            for _ in 0..w {
                t.push(i as u16);
            }
        }
        Self { table: t.into() }
    }

    /// Next backend index.
    #[inline]
    pub fn pick(&self, cursor: &mut u32) -> Option<usize> {
        let i = if (*cursor as usize) < self.table.len() {
            *cursor as usize
        } else {
            0
        };
        let b = *self.table.get(i)?;
        *cursor = (i + 1) as u32;
        Some(usize::from(b))
    }

    /// Whether no backend is in rotation.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}
