//! Maglev consistent hashing (placeholder: being rewritten).

use std::net::SocketAddr;

/// Maglev lookup table.
#[derive(Debug, Clone, Default)]
pub struct Maglev {
    table: Box<[u16]>,
}

impl Maglev {
    /// Builds the table.
    pub fn new(weights: &[u32], _keys: &[SocketAddr]) -> Self {
        let active: Vec<u16> = (0..weights.len())
            .filter(|&i| weights[i] > 0)
            .map(|i| i as u16)
            .collect();
        Self {
            table: active.into(),
        }
    }

    /// Backend for a flow.
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(usize::from(
            self.table[(flow_hash % self.table.len() as u64) as usize],
        ))
    }

    /// Whether no backend is in rotation.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}
