//! Spray's dataplane: everything a packet touches between receive and transmit.
//!
//! The crate is sans-I/O at its core (as quinn-proto and smoltcp are): the wire views, the
//! checksum arithmetic, the service snapshot, the schedulers and the rewrite functions know
//! nothing about where packets come from. The [`worker`] loop is generic over a [`port::Port`],
//! and the ports are the only modules that talk to the operating system.
//!
//! Contract for the per-packet path: no allocation, no lock, no system call per packet, and no
//! panic on any input; a packet that cannot be forwarded is dropped and counted under a
//! [`counters::DropReason`].
//!
//! The public surface is what the control plane, the benchmarks and the fuzz targets use:
//! the service snapshot and its ids ([`service`], [`sched`], [`flow`]), the [`worker`] and
//! its [`port`]s, socket mode ([`socket`]), the neighbour logic ([`neigh`]), the counters,
//! and the few wire and rewrite helpers the benchmarks call. The classifiers, the per-frame
//! policy (`decide`), the rewrite functions and the model's internals are `pub(crate)`;
//! the test builders are behind the `testkit` feature.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod counters;
mod decide;
mod encap;
pub mod frag;
pub mod icmp;
mod model;
pub mod neigh;
pub mod port;
pub mod rewrite;
pub mod socket;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod wire;
pub mod worker;

// The model's modules under the names other crates use.
pub use model::{flow, sched, service};
