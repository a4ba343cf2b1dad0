//! Socket mode (being written).
