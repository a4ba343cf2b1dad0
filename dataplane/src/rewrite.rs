//! Header rewriting (being written).
