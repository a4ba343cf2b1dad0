#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets) for SECONDS (default 60) and fails on the
# first crash. Usage: scripts/fuzz.sh [SECONDS]
#
# - Installs cargo-fuzz if missing (`cargo install cargo-fuzz --locked`).
# - cargo fuzz needs nightly-only rustc flags: it uses the `nightly` toolchain when rustup
#   has one, else the default (stable) toolchain with RUSTC_BOOTSTRAP=1, which works too.
# - `--sanitizer none`: the fuzzed code has no `unsafe` (the dataplane crate denies it), so
#   AddressSanitizer adds cost and finds nothing; `-a` keeps debug assertions (integer
#   overflow panics) on.
# - The committed corpus (fuzz/corpus/TARGET) is read, never written: new inputs go to a
#   scratch folder. A crash is saved under fuzz/artifacts/TARGET/ for `cargo fuzz run
#   TARGET ARTIFACT` to reproduce.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"

if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain=()
if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in packet config; do
    echo "==> fuzz $target for ${secs}s"
    mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
    cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz --sanitizer none -a "$target" \
        "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -max_len=20000 -timeout=10 \
        -artifact_prefix="fuzz/artifacts/$target/" -print_final_stats=1
done
echo "==> fuzzing found nothing"
