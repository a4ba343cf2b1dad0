#!/usr/bin/env bash
# Reserve and release 2 MiB hugepages for DPDK, putting the old setting back afterwards.
#
#   scripts/hugepages.sh reserve [PAGES]   default 256 (512 MiB); mounts hugetlbfs on
#                                          /dev/hugepages if nothing is mounted there
#   scripts/hugepages.sh release           restores vm.nr_hugepages to its value before
#                                          `reserve` (and unmounts what reserve mounted)
#   scripts/hugepages.sh status
#
# The previous value is kept in /run/spray-hugepages.state between the two calls. Run EAL
# with --huge-unlink (Spray does) so no page files are left behind in the mount.
set -euo pipefail

STATE=/run/spray-hugepages.state
MNT=/dev/hugepages
NR=/proc/sys/vm/nr_hugepages

reserve() {
    local pages=${1:-256}
    if [ ! -e "$STATE" ]; then
        local mounted=0
        if ! mountpoint -q "$MNT"; then
            mkdir -p "$MNT"
            mount -t hugetlbfs nodev "$MNT"
            mounted=1
        fi
        echo "$(cat "$NR") $mounted" >"$STATE"
    fi
    echo "$pages" >"$NR"
    local got
    got=$(cat "$NR")
    echo "hugepages: $got of $pages reserved ($(awk '/Hugepagesize/ {print $2 $3}' /proc/meminfo) each), mount $MNT"
    [ "$got" -ge "$pages" ] || { echo "warning: the kernel reserved fewer pages than asked" >&2; }
}

release() {
    if [ ! -e "$STATE" ]; then
        echo "hugepages: nothing reserved by this script"
        return
    fi
    local old mounted
    read -r old mounted <"$STATE"
    echo "$old" >"$NR"
    if [ "$mounted" = 1 ]; then umount "$MNT" 2>/dev/null || true; fi
    rm -f "$STATE"
    echo "hugepages: vm.nr_hugepages back to $old"
}

case "${1:-}" in
    reserve) reserve "${2:-256}" ;;
    release) release ;;
    status) grep -i hugepages /proc/meminfo; mountpoint "$MNT" || true ;;
    *)
        echo "usage: $0 reserve [PAGES] | release | status" >&2
        exit 2
        ;;
esac
