//! Build script. Without the `dpdk` feature it does nothing (a default build needs no libdpdk).
//!
//! With it: asks pkg-config for `libdpdk >= 22.11`, generates the FFI bindings into
//! `OUT_DIR/dpdk.rs` with bindgen (an allowlist of exactly what Spray calls, sorted; add an
//! entry with its first use), and compiles `src/port/dpdk/shim.c`, the wrappers of DPDK's
//! static-inline functions. Bindings are generated at build time, not checked in, because
//! DPDK's ABI moves between releases.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::path::PathBuf;

    /// Functions Spray calls (bindgen pulls in the types they need). Sorted.
    const FUNCTIONS: &[&str] = &[
        "rte_eal_cleanup",
        "rte_eal_get_runtime_dir",
        "rte_eal_init",
        "rte_eth_dev_adjust_nb_rx_tx_desc",
        "rte_eth_dev_close",
        "rte_eth_dev_configure",
        "rte_eth_dev_count_avail",
        "rte_eth_dev_get_name_by_port",
        "rte_eth_dev_get_port_by_name",
        "rte_eth_dev_info_get",
        "rte_eth_dev_is_valid_port",
        "rte_eth_dev_socket_id",
        "rte_eth_dev_start",
        "rte_eth_dev_stop",
        "rte_eth_link_get_nowait",
        "rte_eth_macaddr_get",
        "rte_eth_promiscuous_enable",
        "rte_eth_rx_queue_setup",
        "rte_eth_stats_get",
        "rte_eth_tx_queue_setup",
        "rte_mempool_avail_count",
        "rte_mempool_free",
        "rte_pktmbuf_clone",
        "rte_pktmbuf_pool_create",
        "rte_socket_id",
        "rte_strerror",
        "rte_thread_register",
        "rte_thread_unregister",
        // The shim's wrappers of static-inline functions (src/port/dpdk/shim.c).
        "spray_errno",
        "spray_eth_rx_burst",
        "spray_eth_tx_burst",
        "spray_lcore_id",
        "spray_mbuf_refcnt_read",
        "spray_mempool_size",
        "spray_pktmbuf_adj",
        "spray_pktmbuf_alloc",
        "spray_pktmbuf_append",
        "spray_pktmbuf_chain",
        "spray_pktmbuf_data_len",
        "spray_pktmbuf_free",
        "spray_pktmbuf_mtod",
        "spray_pktmbuf_pkt_len",
    ];

    /// Constants Spray uses. Sorted.
    const VARS: &[&str] = &[
        "RTE_ETHER_ADDR_LEN",
        "RTE_ETH_FLOW_NONFRAG_IPV4_UDP",
        "RTE_ETH_FLOW_NONFRAG_IPV6_UDP",
        "RTE_ETH_LINK_UP",
        "RTE_MBUF_DEFAULT_BUF_SIZE",
        "RTE_MEMPOOL_CACHE_MAX_SIZE",
        "RTE_MAX_ETHPORTS",
        "SOCKET_ID_ANY",
    ];

    /// Enums Spray uses. Sorted.
    const TYPES: &[&str] = &["rte_eth_rx_mq_mode", "rte_eth_tx_mq_mode"];

    pub fn build() {
        pkg_config::Config::new()
            .atleast_version("22.11")
            .probe("libdpdk")
            .unwrap_or_else(|e| {
                panic!(
                    "the dpdk feature needs libdpdk >= 22.11 found by pkg-config \
                     (Debian: apt-get install libdpdk-dev pkg-config): {e}"
                )
            });
        // The pkg-config crate keeps only -I and -D; DPDK's headers also need the rest
        // (`-include rte_config.h -march=...`), so take the flags as pkg-config prints them.
        let cflags = std::process::Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .expect("running pkg-config --cflags libdpdk");
        let cflags: Vec<String> = String::from_utf8_lossy(&cflags.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let shim = "src/port/dpdk/shim.c";
        println!("cargo::rerun-if-changed={shim}");
        let mut cc = cc::Build::new();
        cc.file(shim).warnings(true);
        for f in &cflags {
            cc.flag(f);
        }
        cc.compile("spray_dpdk_shim");

        let mut b = bindgen::Builder::default()
            .header(shim)
            .clang_args(&cflags)
            .allowlist_recursively(true)
            .derive_default(true)
            .derive_debug(true)
            .layout_tests(false)
            .generate_comments(false)
            .default_enum_style(bindgen::EnumVariation::ModuleConsts)
            .prepend_enum_name(false)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
        for f in FUNCTIONS {
            b = b.allowlist_function(f);
        }
        for v in VARS {
            b = b.allowlist_var(v);
        }
        for t in TYPES {
            b = b.allowlist_type(t);
        }
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        b.generate()
            .unwrap_or_else(|e| panic!("bindgen failed on {shim}: {e}"))
            .write_to_file(out.join("dpdk.rs"))
            .expect("writing OUT_DIR/dpdk.rs");
        // Read by dependents' build scripts as DEP_SPRAY_DPDK_ENABLED and
        // DEP_SPRAY_DPDK_VERSION (see control/build.rs: `spray --version` names it).
        println!("cargo::metadata=enabled=1");
        let version = std::process::Command::new("pkg-config")
            .args(["--modversion", "libdpdk"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if !version.is_empty() {
            println!("cargo::metadata=version={version}");
        }
    }
}
