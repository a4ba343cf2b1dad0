#!/usr/bin/env bash
# Runs every test Spray has: formatting, lints, unit and integration tests, then the tests
# that need more of the machine when it has it:
#   - the DPDK port (cargo feature `dpdk`) when pkg-config finds libdpdk >= 22.11;
#   - tests that need root and network namespaces (scripts/netns-tests.sh, the failover of
#     README's configuration, scripts/failover-tests.sh, and the benchmark harness's smoke
#     run, scripts/bench-smoke.sh; the Debian package, scripts/package-tests.sh, when
#     debootstrap is installed) when run as root;
#   - the cargo-fuzz targets for SPRAY_FUZZ_SECS seconds each, when that is set (CI: 30).
# Set SPRAY_REQUIRE_ALL=1 (CI does) to fail instead of skipping those.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
require_all="${SPRAY_REQUIRE_ALL:-0}"
skip() {
    if [ "$require_all" = 1 ]; then
        echo "error: $* (SPRAY_REQUIRE_ALL=1)" >&2
        exit 1
    fi
    echo "skipped: $*"
}

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (default features)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (default features)"
cargo test --workspace

if pkg-config --exists 'libdpdk >= 22.11' 2>/dev/null; then
    if grep -q '^dpdk *=' dataplane/Cargo.toml 2>/dev/null; then
        step "cargo clippy + test --features dpdk"
        cargo clippy --workspace --all-targets --features dataplane/dpdk -- -D warnings
        cargo test --workspace --features dataplane/dpdk
    fi
else
    skip "libdpdk >= 22.11 not found: DPDK port not built"
fi

if [ "$(id -u)" = 0 ]; then
    if [ -x scripts/netns-tests.sh ]; then
        step "network namespace tests"
        scripts/netns-tests.sh
    fi
    if [ -x scripts/failover-tests.sh ]; then
        # README's config as written, default sysctls: no datagram to a dead backend later
        # than 350 ms after its death (socket, DPDK NAT and DR; receiver killed, link down).
        step "failover of README's configuration (scripts/failover-tests.sh)"
        scripts/failover-tests.sh
    fi
    for t in scripts/ha/test-ha.sh scripts/ha/test-bgp.sh scripts/ha/test-ecmp.sh; do
        if [ -x "$t" ]; then
            step "$t (keepalived VRRP failover / BGP announce and withdraw / ECMP over nodes)"
            "$t"
        fi
    done
    if command -v debootstrap > /dev/null; then
        # The Debian package, built and installed in a clean chroot: check, demo, the
        # unit's ExecStart and ExecReload, systemd-analyze security.
        step "Debian package (scripts/package-tests.sh)"
        scripts/package-tests.sh
    else
        skip "debootstrap not installed: the Debian package is not tested"
    fi
    if [ -x scripts/bench-smoke.sh ]; then
        # The side-by-side runner in --quick mode: asserts that every balancer forwards
        # evenly and that every output is written; no speed target (those live in docs).
        step "benchmark harness smoke run"
        scripts/bench-smoke.sh
    fi
else
    skip "not root: network namespace tests not run"
fi

# The fuzz crate is outside the workspace (cargo-fuzz wants its own lock file and flags):
# check that it still builds against today's API even when not fuzzing.
step "cargo check fuzz/ (the cargo-fuzz targets)"
cargo check --manifest-path fuzz/Cargo.toml --bins

if [ -n "${SPRAY_FUZZ_SECS:-}" ]; then
    step "fuzz each target for ${SPRAY_FUZZ_SECS}s"
    scripts/fuzz.sh "$SPRAY_FUZZ_SECS"
fi

step "all tests passed"
