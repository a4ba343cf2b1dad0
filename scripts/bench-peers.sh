#!/usr/bin/env bash
# Spray against its peers, side by side, on a network-namespace testbed this script creates
# and always removes:
#
#   client ns --veth-- lb ns --veth-- backend ns 1..3
#   198.18.0.1         198.18.0.2 (VIP :514)
#                      198.18.N.1 ----- 198.18.N.2 (sink :514)
#
# Balancers, one at a time in the lb namespace, each measured `--reps` times, interleaved:
#   spray    Spray socket mode (`spray run`, 1 worker, rr, NAT proxy)
#   nginx    nginx stream UDP proxy, per-datagram round robin (proxy_requests 1)
#   haproxy  HAProxy log-forward, `log BE sample N:3` per backend
#   nft      stateless nftables DNAT, `numgen inc mod 3`, notrack (the kernel baseline)
#   dpdk     Spray's DPDK port (net_af_packet on a veth, 1 worker, rr, NAT); skipped without
#            libdpdk. DPDK mode is one-armed, so for this peer the lb namespace bridges the
#            same client and backend veths to Spray's port (see topo_bridged)
#   dpdk-xdp the same with net_af_xdp instead of net_af_packet (not in the default list)
# For each: highest loss-free datagrams/s (loss < 0.01 %), latency at a fixed moderate rate,
# balancer CPU, evenness (most/fewest per backend). Then the failover timeline (one backend's
# sink stopped mid-run, Spray socket mode), plots and a summary table.
#
# Usage: scripts/bench-peers.sh [--quick] [--reps N] [--peers spray,nginx,haproxy,nft,dpdk]
#                               [--out DIR] [--no-build] [--no-failover] [--no-plots]
#                               [--sender udp|raw]
# --sender raw: the generator writes the same datagrams as raw frames to the client's veth
# (AF_PACKET, `spray-traffic send --raw`), skipping its own UDP/IP output path, so it can
# offer more; udp (the default) sends through a UDP socket.
# Needs root (namespaces). Installs nginx-light, libnginx-mod-stream, haproxy and nftables
# when missing, without starting their system services. Touches nothing in the root
# namespace except package installs; stops only the processes it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
REPS=3
PEERS="spray,nginx,haproxy,nft,dpdk"
OUT="$ROOT/target/bench-peers"
BUILD=1
FAILOVER=1
PLOTS=1
SENDER=udp
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --reps) REPS="$2"; shift ;;
        --peers) PEERS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --no-failover) FAILOVER=0 ;;
        --no-plots) PLOTS=0 ;;
        --sender) SENDER="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench-peers: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
case "$SENDER" in
    udp) SENDER_ARGS=() ;;
    raw) SENDER_ARGS=(--raw eth0) ;;
    *) echo "bench-peers: --sender udp|raw" >&2; exit 2 ;;
esac

# Trial lengths: the full run stays under ~10 minutes on a 2-core VM, --quick under 3.
if [ "$QUICK" = 1 ]; then
    REPS=1; SECONDS_PER_TRIAL=1; STEPS=3; LAT_SECONDS=1; FO_SECONDS=3; FO_KILL=1.2
else
    SECONDS_PER_TRIAL=1.5; STEPS=5; LAT_SECONDS=3; FO_SECONDS=6; FO_KILL=2.5
fi
LAT_RATE=20000
SIZE=200
THRESHOLD=0.01

if [ "$(id -u)" != 0 ]; then
    echo "bench-peers: needs root (network namespaces)" >&2
    exit 2
fi

log() { printf '\n==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------- packages
install_peers() {
    local need=()
    command -v nginx >/dev/null || need+=(nginx-light)
    [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
    command -v haproxy >/dev/null || need+=(haproxy)
    command -v nft >/dev/null || need+=(nftables)
    command -v ethtool >/dev/null || need+=(ethtool)
    [ ${#need[@]} = 0 ] && return 0
    log "installing ${need[*]} (system services are not started)"
    # A policy-rc.d that answers 101 keeps the packages from starting nginx/haproxy
    # services; put one in place only if there is none, and remove only ours.
    local ours=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        ours=1
    fi
    local was_running=""
    pgrep -x nginx >/dev/null && was_running+=" nginx"
    pgrep -x haproxy >/dev/null && was_running+=" haproxy"
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    [ "$ours" = 1 ] && rm -f /usr/sbin/policy-rc.d
    # If an install started a service anyway, stop the one it started (not one that was
    # already running before).
    for svc in nginx haproxy; do
        case "$was_running" in *"$svc"*) continue ;; esac
        if pgrep -x "$svc" >/dev/null && command -v systemctl >/dev/null; then
            systemctl stop "$svc" 2>/dev/null || true
        fi
    done
}

# ---------------------------------------------------------------- testbed
NS="sb$$"
DPDK_PREFIX="spray-bench-peers-$$"
C="$NS-c"; LB="$NS-lb"; B=("$NS-b1" "$NS-b2" "$NS-b3")
VIP=198.18.0.2
PORT=514
PIDS=()
WORK=""

cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    for n in "$C" "$LB" "${B[@]}"; do
        ip netns del "$n" 2>/dev/null
    done
    [ -n "$WORK" ] && rm -rf "$WORK"
    rm -rf "/var/run/dpdk/$DPDK_PREFIX"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/lib/bench-testbed.sh
. "$ROOT/scripts/lib/bench-testbed.sh"

make_testbed() {
    log "testbed: namespaces $C, $LB, ${B[*]}"
    testbed_create
    # A source address for health checks that carries no data traffic: the kernel rate-limits
    # ICMP errors per peer (~1/s under load), and a UDP check that expects no reply learns of
    # a dead backend only from its port-unreachable answer (docs/config.md, `source`).
    ip -n "$LB" addr add 198.18.254.1/32 dev lo
    if command -v ping >/dev/null; then in_ns "$C" ping -c1 -W1 -q "$VIP" >/dev/null; fi
}

TRAFFIC="$ROOT/target/release/spray-traffic"
SPRAY="$ROOT/target/release/spray"
PLOTTER="$ROOT/target/release/spray-plots"

sinks_args() {
    local a=()
    for i in 1 2 3; do a+=(--sink "${B[$((i - 1))]}=198.18.$i.2:$PORT"); done
    echo "${a[@]}"
}

wait_bound() { # wait until something in the lb namespace listens on VIP:PORT/udp
    for _ in $(seq 1 50); do
        in_ns "$LB" ss -Hlun "src $VIP:$PORT" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    echo "bench-peers: nothing listens on $VIP:$PORT in $LB" >&2
    return 1
}

stop_pid() { # stop one process we started and forget it
    local p=$1
    kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    local keep=()
    for q in "${PIDS[@]}"; do [ "$q" != "$p" ] && keep+=("$q"); done
    PIDS=("${keep[@]}")
}

# Each start_* sets PEER_PID (empty for nft) and leaves the balancer serving the VIP.
# start_spray [checked]: "checked" adds a UDP health check (interval 100 ms, fall 3; a closed
# sink port answers ICMP port unreachable, which fails the check), as for the failover run.
start_spray() {
    local check=""
    if [ "${1:-}" = checked ]; then
        check=$'[services.bench.check]\ntype = "udp"\ninterval_ms = 100\ntimeout_ms = 50\nrise = 2\nfall = 3\nsource = "198.18.254.1"'
    fi
    cat > "$WORK/spray.toml" <<EOF
[runtime]
dataplane = "socket"
workers = 1
log = "warn"

[socket]
batch = 32
rcvbuf = 4194304

[control]
socket = "$WORK/spray.sock"

$(service_conf)
$check
EOF
    # `ip netns exec` execs the program, so $! is the balancer itself (never background a
    # shell function here: $! would be a subshell and the balancer would outlive a kill).
    ip netns exec "$LB" "$SPRAY" run --config "$WORK/spray.toml" --stats-interval 0 \
        < /dev/null > "$WORK/spray.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    wait_bound
}

start_nginx() {
    mkdir -p "$WORK/nginx"
    cat > "$WORK/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
stream {
    upstream backends {
        server 198.18.1.2:$PORT;
        server 198.18.2.2:$PORT;
        server 198.18.3.2:$PORT;
    }
    server {
        listen $VIP:$PORT udp reuseport rcvbuf=4m;
        proxy_pass backends;
        proxy_requests 1;
        proxy_responses 0;
        proxy_timeout 5s;
    }
}
EOF
    ip netns exec "$LB" nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" \
        -c "$WORK/nginx/nginx.conf" < /dev/null > "$WORK/nginx/stdout.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    wait_bound
}

start_haproxy() {
    cat > "$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
log-forward bench
    dgram-bind $VIP:$PORT
    maxconn 4096
    timeout client 10s
    log 198.18.1.2:$PORT sample 1:3 local0
    log 198.18.2.2:$PORT sample 2:3 local0
    log 198.18.3.2:$PORT sample 3:3 local0
EOF
    ip netns exec "$LB" haproxy -db -f "$WORK/haproxy.cfg" < /dev/null > "$WORK/haproxy.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    wait_bound
}

start_nft() {
    nft_start
    PEER_PID=""
}

stop_peer() { # $1 = peer
    if [ "$1" = dpdk ] || [ "$1" = dpdk-xdp ]; then
        [ -n "${PEER_PID:-}" ] && stop_pid "$PEER_PID"
        # Its counters (per backend, drops by reason) and the port's: kept with the results.
        cat "$WORK/spray-dpdk.log" >> "$OUT/runs/$1.log" 2>/dev/null || true
        topo_routed
    elif [ "$1" = nft ]; then
        nft_stop
    elif [ -n "${PEER_PID:-}" ]; then
        stop_pid "$PEER_PID"
    fi
    PEER_PID=""
}

# topo_bridged / topo_routed / flush_neigh: scripts/lib/bench-testbed.sh.

# Whether this spray accepts `dataplane = "dpdk"` (built with the dpdk feature).
dpdk_available() {
    cat > "$WORK/dpdk-probe.toml" <<EOF
[runtime]
dataplane = "dpdk"
[dpdk]
vdevs = ["net_null0"]
[[dpdk.ports]]
device = "net_null0"
gateway_mac = "02:00:00:00:00:01"
[services.probe]
vip = "198.18.0.2:514"
backends = [{ addr = "198.18.1.2:514", mac = "02:00:00:00:00:02" }]
EOF
    "$SPRAY" check --config "$WORK/dpdk-probe.toml" > /dev/null 2>&1
}

# start_dpdk [xdp]: Spray's DPDK port on dp0 (net_af_packet, or net_af_xdp with "xdp"),
# one worker, the same service as start_spray (dpdk_conf in scripts/lib/bench-testbed.sh).
start_dpdk() {
    topo_bridged
    dpdk_conf "${1:-}" > "$WORK/spray-dpdk.toml"
    : > "$WORK/spray-dpdk.log"
    ip netns exec "$LB" "$SPRAY" run --config "$WORK/spray-dpdk.toml" --stats-interval 0 \
        < /dev/null > "$WORK/spray-dpdk.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    dpdk_wait_ready "$PEER_PID" "$WORK/spray-dpdk.log"
}
start_dpdk-xdp() { start_dpdk xdp; }

measure_peer() { # $1 = peer, $2 = rep
    local peer=$1 rep=$2
    log "$peer (repetition $rep of $REPS)"
    if ! "start_$peer"; then
        echo "bench-peers: $peer did not start; skipped" >&2
        stop_peer "$peer"
        return 0
    fi
    sleep 0.3
    local cpu=()
    if [ -n "${PEER_PID:-}" ]; then cpu=(--cpu-pid "$PEER_PID"); fi
    # shellcheck disable=SC2046
    "$TRAFFIC" measure --name "$peer" --client-ns "$C" --target "$VIP:$PORT" $(sinks_args) \
        --work "$WORK" --size "$SIZE" "${cpu[@]}" "${SENDER_ARGS[@]}" \
        --seconds "$SECONDS_PER_TRIAL" --steps "$STEPS" --loss-threshold "$THRESHOLD" \
        --latency-rate "$LAT_RATE" --latency-seconds "$LAT_SECONDS" \
        --out "$OUT/runs/$peer-$rep.json" &&
        RUN_FILES+=("$OUT/runs/$peer-$rep.json") ||
        echo "bench-peers: $peer measurement failed" >&2
    stop_peer "$peer"
}

# ---------------------------------------------------------------- main
install_peers
if [ "$BUILD" = 1 ]; then
    # With libdpdk, spray gets the dpdk feature (for the dpdk peers); socket mode is the same
    # code either way.
    if pkg-config --exists 'libdpdk >= 22.11' 2>/dev/null; then
        log "cargo build --release --features dpdk"
        cargo build --release -q -p spray -p spray-bench --features spray/dpdk
    else
        log "cargo build --release (no libdpdk: the dpdk peers will be skipped)"
        cargo build --release -q -p spray -p spray-bench
    fi
fi
WORK=$(mktemp -d /tmp/bench-peers.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$OUT/runs"
rm -f "$OUT"/runs/*.json "$OUT"/runs/*.log
make_testbed

IFS=, read -r -a PEER_LIST <<< "$PEERS"
RUN_PEERS=()
for p in "${PEER_LIST[@]}"; do
    case "$p" in
        dpdk|dpdk-xdp)
            if dpdk_available; then RUN_PEERS+=("$p"); else
                echo "bench-peers: skipped $p: this spray is built without the dpdk feature (needs libdpdk >= 22.11)" >&2
            fi ;;
        spray|nginx|haproxy|nft) RUN_PEERS+=("$p") ;;
        *) echo "bench-peers: unknown peer $p" >&2; exit 2 ;;
    esac
done

RUN_FILES=()
START=$(date +%s)
for rep in $(seq 1 "$REPS"); do
    for p in "${RUN_PEERS[@]}"; do measure_peer "$p" "$rep"; done
done

if [ "$FAILOVER" = 1 ]; then
    log "failover: Spray socket mode with a UDP health check, backend 2's sink stopped after $FO_KILL s"
    start_spray checked
    sleep 0.3
    # shellcheck disable=SC2046
    "$TRAFFIC" failover --name spray --client-ns "$C" --target "$VIP:$PORT" $(sinks_args) \
        --work "$WORK" --size "$SIZE" "${SENDER_ARGS[@]}" --rate "$LAT_RATE" --seconds "$FO_SECONDS" \
        --kill-after "$FO_KILL" --kill-index 1 --settle 2.5 --bucket-ms 100 --out "$OUT/failover.json" ||
        echo "bench-peers: failover run failed" >&2
    stop_peer spray
    # Spray's own per-backend counters: whether it kept sending to the dead backend.
    cp "$WORK/spray.log" "$OUT/failover-spray.log"
    sed 's/^/  spray: /' "$WORK/spray.log" >&2
fi

PLOT_ARGS=()
if [ ${#RUN_FILES[@]} -gt 0 ]; then
    log "summary ($(( $(date +%s) - START )) s of measuring)"
    SETTINGS="$SIZE-byte datagrams; $SENDER sender; trials of $SECONDS_PER_TRIAL s; loss-free = loss < $THRESHOLD %; latency at $LAT_RATE/s for $LAT_SECONDS s, one datagram per sendmmsg; $REPS repetition(s), interleaved"
    "$TRAFFIC" summary --settings "$SETTINGS" --out "$OUT/results.json" "${RUN_FILES[@]}" |
        tee "$OUT/summary.md"
    PLOT_ARGS+=(--results "$OUT/results.json")
else
    echo "bench-peers: no balancer was measured" >&2
fi
if [ "$PLOTS" = 1 ] && [ -x "$PLOTTER" ]; then
    "$PLOTTER" "${PLOT_ARGS[@]}" --failover "$OUT/failover.json" --out "$OUT" || true
fi
echo "results in $OUT"
