//! What this binary is: version, the dataplanes built in, the DPDK it was built against.
//! `spray --version`, `spray ctl version` and the `spray_build_info` metric all say it.

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The features built in, and the DPDK version when the DPDK port is one of them.
pub const DESCRIPTION: &str = env!("SPRAY_BUILD_DESC");

/// `VERSION (DESCRIPTION)`, the text of `--version`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SPRAY_BUILD_DESC"),
    ")"
);

/// Whether the DPDK port is built in.
pub const DPDK: bool = cfg!(spray_dpdk);

/// The DPDK version built against, when it is.
pub fn dpdk_version() -> Option<&'static str> {
    DESCRIPTION.split_once("DPDK ").map(|(_, v)| v)
}
