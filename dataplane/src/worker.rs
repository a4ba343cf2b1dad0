//! The worker loop (being written).
