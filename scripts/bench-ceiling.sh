#!/usr/bin/env bash
# The forwarding ceiling of Spray's DPDK port and of stateless nftables on the namespace
# testbed of scripts/bench-peers.sh, with N raw-frame generators at once (`spray-traffic
# send --raw`, each its own stream), flat out: what each forwards when the generator is not
# one process on one core. Not a loss-free search: one saturation trial per repetition,
# interleaved (dpdk, nft, dpdk, ...), sent vs received by the three sinks.
#
#   client ns --veth-- lb ns --veth-- backend ns 1..3, addresses as in bench-peers.sh;
#   dpdk: the lb namespace bridges the veths to Spray's port dp0 (net_af_packet, 1 worker);
#   dpdk-xdp: the same with net_af_xdp (native XDP on dp0), as `start_dpdk xdp` in bench-peers;
#   nft:  the lb namespace routes, with the prerouting `numgen inc mod 3` rule of bench-peers.
#
# Usage: scripts/bench-ceiling.sh [--senders N] [--seconds S] [--reps R]
#                                 [--peers dpdk,dpdk-xdp,nft] [--pin] [--rate R] [--stall-ms MS]
# --rate R: each generator sends R datagrams/s instead of flat out (0, the default).
# --stall-ms MS: 1 s into each trial, stop the DPDK peer (SIGSTOP) for MS ms, then let it go
# on (SIGCONT): what the port's receive buffer absorbs while the worker does not run (the
# nft peer is not stopped).
# --pin: generators and sinks on CPU 0 only (taskset), Spray's DPDK worker on CPU 1
# (`[dpdk] cores = [1]`): the balancer gets a core the test traffic does not use (nftables
# then runs in the generators' softirq on CPU 0).
# Needs root, a release build with the dpdk feature (cargo build --release -p spray -p
# spray-bench --features spray/dpdk) and nft. Creates its own namespaces (bc<PID>-*) and
# always removes them; stops only what it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SENDERS=2
SECS=3
REPS=3
PEERS=dpdk,nft
PIN=0
RATE=0
STALL_MS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --senders) SENDERS="$2"; shift ;;
        --seconds) SECS="$2"; shift ;;
        --reps) REPS="$2"; shift ;;
        --peers) PEERS="$2"; shift ;;
        --pin) PIN=1 ;;
        --rate) RATE="$2"; shift ;;
        --stall-ms) STALL_MS="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench-ceiling: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "bench-ceiling: needs root" >&2; exit 2; }
SPRAY=$ROOT/target/release/spray
TRAFFIC=$ROOT/target/release/spray-traffic
for t in "$SPRAY" "$TRAFFIC"; do [ -x "$t" ] || { echo "bench-ceiling: $t missing (build first)" >&2; exit 2; }; done
TS=()
if [ "$PIN" = 1 ]; then TS=(taskset -c 0); fi
command -v jq >/dev/null || { echo "bench-ceiling: needs jq" >&2; exit 2; }

P="bc$$"
C="$P-c"; LB="$P-lb"; B=("$P-b1" "$P-b2" "$P-b3")
DPDK_PREFIX="spray-bench-ceiling-$$"
VIP=198.18.0.2
PORT=514
WORK=$(mktemp -d /tmp/bench-ceiling.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    for n in "$C" "$LB" "${B[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$WORK" "/var/run/dpdk/$DPDK_PREFIX"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/lib/bench-testbed.sh
. "$ROOT/scripts/lib/bench-testbed.sh"
testbed_create

start_dpdk() { # [xdp]
    topo_bridged
    dpdk_conf "${1:-}" "$([ "$PIN" = 1 ] && echo "[1]")" > "$WORK/spray-dpdk.toml"
    ip netns exec "$LB" "$SPRAY" run -c "$WORK/spray-dpdk.toml" --stats-interval 0 \
        < /dev/null > "$WORK/spray-dpdk.log" 2>&1 &
    PEER=$!
    PIDS+=("$PEER")
    dpdk_wait_ready "$PEER" "$WORK/spray-dpdk.log"
}
stop_dpdk() {
    kill -TERM "$PEER" 2>/dev/null && wait "$PEER" 2>/dev/null || true
    grep -E "^spray ran|missed on rx" "$WORK/spray-dpdk.log" | sed 's/^/  /' >&2
    topo_routed
}
# Where net_af_xdp loses: frames dp0's XDP program could not redirect to Spray's socket (no
# free buffer in its fill ring: the port's "missed on rx") count as dp0's rx_queue_0_drops.
xdp_drops() { ip netns exec "$LB" ethtool -S dp0 2>/dev/null | awk '/rx_queue_0_drops:/ { d = $2 } END { print d + 0 }'; }
start_dpdk-xdp() { XDP_DROPS0=$(xdp_drops); start_dpdk xdp; }
stop_dpdk-xdp() {
    echo "  dp0 XDP drops (rx_queue_0_drops) in this trial: $(( $(xdp_drops) - XDP_DROPS0 ))" >&2
    stop_dpdk
}
start_nft() { nft_start; }
stop_nft() { nft_stop; }

trial() { # peer rep
    local peer=$1 i k sinks=() senders=() sent=0 got=0 s g
    "start_$peer"
    for i in 1 2 3; do
        ip netns exec "${B[$((i - 1))]}" "${TS[@]}" "$TRAFFIC" sink --quiet --bind "198.18.$i.2:514" \
            --out "$WORK/sink$i.json" < /dev/null > /dev/null 2>&1 &
        sinks+=($!)
    done
    PIDS+=("${sinks[@]}")
    sleep 0.5
    for k in $(seq 1 "$SENDERS"); do
        ip netns exec "$C" "${TS[@]}" "$TRAFFIC" send --quiet --json --raw eth0 --target 198.18.0.2:514 \
            --rate "$RATE" --seconds "$SECS" --stream $((1000 + k)) < /dev/null > "$WORK/send$k.json" &
        senders+=($!)
    done
    if [ "$STALL_MS" != 0 ] && [ -n "$PEER" ]; then
        sleep 1
        kill -STOP "$PEER"
        sleep "$(awk -v m="$STALL_MS" 'BEGIN { printf "%.3f", m / 1000 }')"
        kill -CONT "$PEER"
    fi
    for k in "${senders[@]}"; do wait "$k"; done
    sleep 0.3
    for k in "${sinks[@]}"; do kill -TERM "$k"; wait "$k" 2>/dev/null || true; done
    "stop_$peer"
    PEER=""
    PIDS=()
    for k in $(seq 1 "$SENDERS"); do s=$(jq .sent "$WORK/send$k.json"); sent=$((sent + s)); done
    for i in 1 2 3; do
        g=$(jq '[.streams[].unique] | add // 0' "$WORK/sink$i.json")
        got=$((got + g))
    done
    awk -v p="$peer" -v r="$2" -v s="$sent" -v g="$got" -v t="$SECS" -v n="$SENDERS" 'BEGIN {
        printf "%s rep %d, %d sender(s): offered %.0f/s, forwarded %.0f/s, lost %.3f %%\n",
            p, r, n, s / t, g / t, s ? 100 * (s - g) / s : 0 }' | tee -a "$WORK/results.txt"
}

PEER=""
IFS=, read -r -a LIST <<< "$PEERS"
for r in $(seq 1 "$REPS"); do
    for p in "${LIST[@]}"; do trial "$p" "$r"; done
done
echo "medians of forwarded/s over $REPS repetition(s), $SENDERS raw sender(s), $SECS s each$([ "$PIN" = 1 ] && echo ", pinned")$([ "$RATE" != 0 ] && echo ", $RATE/s each")$([ "$STALL_MS" != 0 ] && echo ", DPDK peer stopped for $STALL_MS ms"):"
for p in "${LIST[@]}"; do
    grep "^$p rep" "$WORK/results.txt" | sed 's/.*forwarded \([0-9]*\).*/\1/' | sort -n |
        awk -v p="$p" '{ v[NR] = $1 } END { printf "  %s: %s/s\n", p, (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
done
