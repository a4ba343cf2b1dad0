#!/bin/sh
# Prints the Debian packages the final image needs for BINARY: those owning the shared
# libraries it links (ldd), minus libc6/libgcc-s1 (in every base), plus the DPDK poll-mode
# drivers, which EAL dlopens from /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0 at start and ldd
# therefore cannot see. Used by docker/Dockerfile (in its builder stage) and by
# docker/build-prebuilt.sh (on the host that built the binary).
#
#   docker/runtime-packages.sh target/release/spray
set -eu
bin=${1:?usage: runtime-packages.sh BINARY}
# PMDs for the NICs Spray is run on (Intel, Mellanox, cloud) and the vdevs of the tests.
PMDS="librte-bus-pci23 librte-bus-vdev23 librte-mempool-ring23
librte-net-ixgbe23 librte-net-i40e23 librte-net-iavf23 librte-net-ice23 librte-net-e1000-23
librte-net-mlx5-23 librte-net-bnxt23 librte-net-ena23 librte-net-virtio23 librte-net-vmxnet3-23
librte-net-af-packet23 librte-net-af-xdp23 librte-net-tap23 librte-net-null23
librte-net-ring23 librte-net-pcap23"
{
    ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
        real=$(readlink -f "$lib")
        # merged /usr: dpkg knows a file under one of /lib or /usr/lib.
        for p in "$lib" "$real" "/usr$real" "${real#/usr}"; do
            if pkg=$(dpkg -S "$p" 2>/dev/null); then
                echo "${pkg%%:*}"
                break
            fi
        done
    done
    if ldd "$bin" | grep -q librte_; then
        for p in $PMDS; do echo "$p"; done
    fi
} | grep -v -x -e libc6 -e libgcc-s1 | sort -u
