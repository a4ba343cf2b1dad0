//! What a packet is decided against: the service snapshot the control thread publishes,
//! its ids, the schedulers that pick a backend, the flow hash and the passive-failure
//! reports that flow back. Nothing here does I/O.

pub(crate) mod addr_table;
pub mod flow;
pub mod ids;
pub mod mirror;
pub mod passive;
pub mod sched;
pub mod service;
pub mod tunnel;

pub use ids::*;
pub use passive::{PassiveReport, PassiveSink};
pub use service::*;
