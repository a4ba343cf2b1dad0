//! The DPDK port: Spray's own thin binding to the system's DPDK (22.11 or newer).
//!
//! Layers, bottom up:
//! - [`ffi`]: bindgen's output for the functions Spray calls, plus `shim.c`'s `spray_*`
//!   wrappers of DPDK's static-inline fast-path functions (the only `#![allow]`s);
//! - [`mbuf`]: [`Mbuf`], the owning handle of one packet buffer (`!Send`, frees on drop);
//! - [`eal`]: EAL set-up and tear-down, lcore registration, errors that quote
//!   `rte_strerror(rte_errno)`;
//! - [`ethdev`]: port configuration (queues, RSS, mempool, start, link) and [`DpdkPort`],
//!   one queue pair of one port, the [`crate::port::Port`] a worker drives.
//!
//! All of Spray's unsafe code for DPDK is in this module; each `unsafe` block says why it is
//! sound where it stands. We do not use the `capsule` crate: it targets DPDK 19.11 and does
//! not build against the DPDK that distributions ship (docs/dpdk.md).
#![allow(unsafe_code)]

pub mod eal;
pub mod ethdev;
pub mod ffi;
pub mod mbuf;

pub use super::PortSettings;
pub use eal::{Eal, EalError};
pub use ethdev::{DpdkPort, EthPort};
pub use mbuf::Mbuf;
