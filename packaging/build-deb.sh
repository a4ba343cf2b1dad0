#!/usr/bin/env bash
# Builds the Debian package of spray: the release binary (with the
# DPDK dataplane when libdpdk >= 22.11 is installed), its man pages and shell completions,
# then `cargo deb` (cargo install cargo-deb) into target/package/. Prints the path of the
# .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version > /dev/null 2>&1; then
    echo "cargo-deb not found: cargo install cargo-deb --locked" >&2
    cargo install cargo-deb --locked
fi

features=()
if pkg-config --exists 'libdpdk >= 22.11' 2>/dev/null; then
    features=(--features dpdk)
fi
cargo build --release -p spray "${features[@]}"

# The package's assets name these paths (control/Cargo.toml, [package.metadata.deb]).
assets=target/release/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions" target/package
target/release/spray man --out "$assets/man"
gzip -9n "$assets"/man/*.1
target/release/spray completions bash > "$assets/completions/spray"
target/release/spray completions zsh > "$assets/completions/_spray"
target/release/spray completions fish > "$assets/completions/spray.fish"

cargo deb -p spray --no-build --strip "${features[@]}" --output target/package/ | tail -1
