//! Spray's benchmarks and traffic tools. Uses only the `dataplane` crate's public API.
//!
//! [`micro`] measures the per-packet work of the dataplane over the in-memory port (on one
//! or more pinned worker cores), beside an io-forward baseline measured by the same binary in
//! the same run. [`socket`] runs socket mode on loopback in one process. [`traffic`] is the
//! generator, sink and driver behind `spray-traffic` and `scripts/bench-peers.sh`; [`plot`]
//! draws their results as SVG (`spray-plots`).

pub mod micro;
pub mod plot;
pub mod socket;

#[cfg(spray_dpdk)]
pub mod dpdk_micro;
pub mod traffic;
