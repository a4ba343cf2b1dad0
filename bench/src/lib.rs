//! Spray's benchmarks and traffic tools. Uses only the `dataplane` crate's public API.
//!
//! [`micro`] measures the per-packet work of the dataplane over the in-memory port, beside an
//! io-forward baseline measured by the same binary in the same run.

pub mod micro;
pub mod plot;
pub mod socket;
pub mod traffic;
