//! Test support shared by the unit tests, the integration tests, the fuzz targets and the
//! traffic generators of `spray bench`: frame builders and a worker over the memory port.
//! It allocates and panics on bad arguments, so nothing on the packet path uses it; it is
//! built for this crate's tests and behind the `testkit` feature for the other crates.

pub mod frames;
pub mod rig;
