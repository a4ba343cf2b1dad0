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
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod counters;
mod decide;
pub mod frag;
pub mod icmp;
pub mod model;
pub mod neigh;
pub mod port;
pub mod rewrite;
pub mod socket;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod wire;
pub mod worker;

// The model's modules under the names other crates use.
pub use model::{addr_table, flow, sched, service};
