//! Sets `cfg(spray_dpdk)` when the dataplane is built with its `dpdk` feature (its build
//! script then publishes `DEP_SPRAY_DPDK_ENABLED`), so `--features dataplane/dpdk` and
//! `--features spray/dpdk` both turn on `spray run` with `runtime.dataplane = "dpdk"`; and
//! `SPRAY_BUILD_DESC`, what `spray --version` says of the build.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(spray_dpdk)");
    println!("cargo::rerun-if-env-changed=DEP_SPRAY_DPDK_ENABLED");
    println!("cargo::rerun-if-env-changed=DEP_SPRAY_DPDK_VERSION");
    let desc = if std::env::var_os("DEP_SPRAY_DPDK_ENABLED").is_some() {
        println!("cargo::rustc-cfg=spray_dpdk");
        let version = std::env::var("DEP_SPRAY_DPDK_VERSION").unwrap_or_else(|_| "?".to_owned());
        format!("features: socket, dpdk; DPDK {version}")
    } else {
        "features: socket; no dpdk".to_owned()
    };
    println!("cargo::rustc-env=SPRAY_BUILD_DESC={desc}");
}
