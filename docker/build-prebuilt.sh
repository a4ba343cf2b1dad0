#!/bin/sh
# Packages a spray built on this (Debian bookworm) host into the appliance image, without a
# Rust toolchain in the build: the final stage of docker/Dockerfile, via Dockerfile.prebuilt.
#
#   cargo build --release -p spray --features dpdk
#   docker/build-prebuilt.sh [BINARY] [TAG]      (BUILDER=podman|docker, BASE=image)
set -eu
cd "$(dirname "$0")/.."
bin=${1:-target/release/spray}
tag=${2:-localhost/spray:latest}
builder=${BUILDER:-podman}
base=${BASE:-docker.io/library/debian:bookworm-slim}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/spray"
docker/runtime-packages.sh "$bin" > "$ctx/runtime-packages"
cp docker/spray.toml docker/Dockerfile.prebuilt "$ctx/"
echo "runtime packages: $(tr '\n' ' ' < "$ctx/runtime-packages")"
# shellcheck disable=SC2086
"$builder" build --format docker ${BUILD_FLAGS:-} --build-arg BASE="$base" -f "$ctx/Dockerfile.prebuilt" -t "$tag" "$ctx"
