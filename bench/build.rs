//! Sets `cfg(spray_dpdk)` when the dataplane is built with its `dpdk` feature (its build
//! script then publishes `DEP_SPRAY_DPDK_ENABLED`), so `--features dataplane/dpdk` and
//! `--features spray/dpdk` both turn on `spray run` with `runtime.dataplane = "dpdk"`.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(spray_dpdk)");
    println!("cargo::rerun-if-env-changed=DEP_SPRAY_DPDK_ENABLED");
    if std::env::var_os("DEP_SPRAY_DPDK_ENABLED").is_some() {
        println!("cargo::rustc-cfg=spray_dpdk");
    }
}
