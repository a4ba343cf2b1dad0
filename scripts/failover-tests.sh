#!/usr/bin/env bash
# Failover in the configuration operators write (issue 19), in network namespaces (root).
#
# The config is docs/examples/syslog.toml, the one README.md shows: two VIPs on UDP 514,
# rr over the same three receivers, `type = "udp"` check every 100 ms, fall 3, rise 2, no
# source, no payload, no timeout. No sysctl that touches ICMP or health is changed anywhere.
# A client sends RATE datagrams/s of 200 bytes from 8 source ports over both VIPs for 12 s;
# at +4 s backend 1 dies, its receiver SIGKILLed (DEATH=kill: its kernel answers port
# unreachable, rate-limited) or its link set down (DEATH=link: nothing answers); at +8 s it
# comes back. A tap on Spray's side of the wire records what Spray sent toward each
# backend. The run fails if a single datagram went toward the dead backend later than
# BOUND_MS (350) after its death, if anything sent before the death or later than BOUND_MS
# after it was lost, or if backend 1 is not up within UP_BOUND_MS of its return.
#
#   sfd-client c0  198.18.0.1/15                      \
#   sfd-beN    b0  198.18.2.1N/15 (N = 1..3)           |-- bridge br0 in sfd-lb
#   sfd-lb     socket: br0 198.18.0.2/15 + the VIPs /32: Spray's kernel sockets, the
#                      backends one bridge away; the checks and the data share 198.18.0.2
#              dpdk:   lb0 (veth into br0) is Spray's net_af_packet port, 198.18.0.2 in
#                      Spray's config; br0 198.18.2.1/15 is the host's kernel, which runs
#                      the checks. NAT: backends route the client via 198.18.0.2. DR: they
#                      hold the VIPs on lo (arp_ignore=1, arp_announce=2, as for LVS-DR).
#
#   scripts/failover-tests.sh                       every case
#   scripts/failover-tests.sh socket:kill dpdk-dr:link   some of them
#   RATE=50000 scripts/failover-tests.sh socket:kill     another rate
#   SPRAY=/path/to/spray scripts/failover-tests.sh socket:kill   another build (no cargo)
set -euo pipefail
cd "$(dirname "$0")/.."

require_all="${SPRAY_REQUIRE_ALL:-0}"
skip() {
    if [ "$require_all" = 1 ]; then
        echo "error: $* (SPRAY_REQUIRE_ALL=1)" >&2
        exit 1
    fi
    echo "skipped: $*"
}
if [ "$(id -u)" != 0 ]; then skip "failover tests need root"; exit 0; fi
for t in ip ethtool python3; do
    command -v "$t" >/dev/null || { skip "$t not installed"; exit 0; }
done

RATE="${RATE:-20000}"
BOUND_MS="${BOUND_MS:-350}"
# A backend that returns is up after the quiet period (1.5 s) plus rise checks: see
# docs/config.md, "Health checks".
UP_BOUND_MS="${UP_BOUND_MS:-2500}"
CASES="$*"
features=()
if pkg-config --exists 'libdpdk >= 22.11' 2>/dev/null; then
    features=(--features dataplane/dpdk)
    CASES="${CASES:-socket:kill socket:link dpdk-nat:kill dpdk-nat:link dpdk-dr:kill dpdk-dr:link}"
else
    skip "libdpdk >= 22.11 not found: DPDK cases not run"
    CASES="${CASES:-socket:kill socket:link}"
fi
if [ -z "${SPRAY:-}" ]; then
    cargo build -q --release -p spray "${features[@]}"
    SPRAY="$PWD/target/release/spray"
fi
TOOL=scripts/netns/deadline.py
NS=(sfd-client sfd-be1 sfd-be2 sfd-be3 sfd-lb)
SPRAY_MAC=02:00:00:00:00:10
VIPS=(198.18.0.10 198.18.0.11)

work="$(mktemp -d)"
pids=()
spray_pid=""
teardown() {
    for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
stop_all() {
    for p in "${pids[@]}" $spray_pid; do kill -TERM "$p" 2>/dev/null || true; done
    wait "${pids[@]}" $spray_pid 2>/dev/null || true
    pids=()
    spray_pid=""
}
cleanup() {
    stop_all
    teardown
    rm -rf "$work" /var/run/dpdk/spray-sfd-*-$$
}
trap cleanup EXIT

# Background processes are started with `ip netns exec` itself (it execs the command), so
# that $! is the process to signal, not a subshell.
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# veth DEV in NS, peer PEER in sfd-lb's bridge; TX checksum offload off on both ends.
link() { # NS DEV PEER MAC
    in_ns sfd-lb ip link add "$3" type veth peer name "$2" netns "$1"
    in_ns sfd-lb ip link set "$3" master br0 up
    in_ns "$1" ip link set "$2" address "$4"
    for end in "sfd-lb $3" "$1 $2"; do
        # shellcheck disable=SC2086
        in_ns ${end% *} ethtool -K ${end#* } tx off >/dev/null
    done
    in_ns "$1" ip link set "$2" up
    in_ns "$1" ip link set lo up
}

testbed() { # DATAPLANE (socket | dpdk-nat | dpdk-dr)
    teardown
    for ns in "${NS[@]}"; do ip netns add "$ns"; done
    # Namespaces inherit forwarding from the root namespace; the Spray host must not route.
    in_ns sfd-lb sysctl -qw net.ipv4.ip_forward=0
    in_ns sfd-lb ip link add br0 type bridge
    in_ns sfd-lb ip link set br0 up
    in_ns sfd-lb ip link set lo up
    link sfd-client c0 c0-br 02:00:00:00:00:01
    in_ns sfd-client ip addr add 198.18.0.1/15 dev c0
    local i
    for i in 1 2 3; do
        link "sfd-be$i" b0 "b$i-br" "02:00:00:00:01:0$i"
        in_ns "sfd-be$i" ip addr add "198.18.2.1$i/15" dev b0
    done
    case $1 in
        socket)
            in_ns sfd-lb ip addr add 198.18.0.2/15 dev br0
            for v in "${VIPS[@]}"; do in_ns sfd-lb ip addr add "$v/32" dev br0; done
            ;;
        dpdk-*)
            in_ns sfd-lb ip addr add 198.18.2.1/15 dev br0
            in_ns sfd-lb ip link add lb0 type veth peer name lb0-br
            in_ns sfd-lb ip link set lb0-br master br0 up
            for dev in lb0 lb0-br; do in_ns sfd-lb ethtool -K "$dev" tx off >/dev/null; done
            in_ns sfd-lb sysctl -qw net.ipv6.conf.lb0.disable_ipv6=1 net.ipv4.conf.lb0.arp_ignore=8
            in_ns sfd-lb ip link set lb0 up
            for i in 1 2 3; do
                if [ "$1" = dpdk-nat ]; then
                    # NAT replies and ICMP errors about the client's datagrams go back
                    # through Spray.
                    in_ns "sfd-be$i" ip route add 198.18.0.1/32 via 198.18.0.2
                else
                    for v in "${VIPS[@]}"; do in_ns "sfd-be$i" ip addr add "$v/32" dev lo; done
                    in_ns "sfd-be$i" sysctl -qw net.ipv4.conf.all.arp_ignore=1 \
                        net.ipv4.conf.all.arp_announce=2
                fi
            done
            ;;
    esac
}

config() { # DATAPLANE CASE_NAME
    {
        printf '[control]\nsocket = "%s/spray.sock"\n\n' "$work"
        if [ "$1" != socket ]; then
            cat <<TOML
[runtime]
dataplane = "dpdk"

[dpdk]
no_huge = true
memory_mb = 256
file_prefix = "spray-sfd-$2-$$"
vdevs = ["net_af_packet0,iface=lb0,framecnt=8192"]

[[dpdk.ports]]
device = "net_af_packet0"
mac = "$SPRAY_MAC"
addresses = ["198.18.0.2"]
gateways = ["198.18.0.1"]

TOML
        fi
        if [ "$1" = dpdk-dr ]; then
            sed 's/^scheduler = "rr"$/scheduler = "rr"\nmode = "dr"/' docs/examples/syslog.toml
        else
            cat docs/examples/syslog.toml
        fi
    }
}

wait_file() { # FILE SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do [ -e "$1" ] && return 0; sleep 0.1; done
    echo "error: $1 did not appear" >&2
    return 1
}

run_case() { # DATAPLANE DEATH
    local dp=$1 death_kind=$2 name="$1-$2" d="$work/$1-$2"
    mkdir -p "$d"
    echo "== $name: backend 1 dies ($death_kind) under $RATE datagrams/s to two VIPs"
    testbed "$dp"
    config "$dp" "$name" >"$d/spray.toml"
    local i
    for i in 1 2 3; do
        ip netns exec "sfd-be$i" python3 "$TOOL" sink 514 "$d/be$i" &
        pids+=($!)
    done
    local sink1=${pids[0]}
    for i in 1 2 3; do wait_file "$d/be$i.ready" 10; done
    ip netns exec sfd-lb "$SPRAY" run -c "$d/spray.toml" --stats-interval 1 >"$d/spray.log" 2>&1 &
    spray_pid=$!
    for ((i = 0; i < 600; i++)); do
        grep -q serving "$d/spray.log" && break
        kill -0 "$spray_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q serving "$d/spray.log" || { cat "$d/spray.log"; return 1; }
    local iface=br0 mac
    if [ "$dp" = socket ]; then
        mac=$(in_ns sfd-lb cat /sys/class/net/br0/address)
    else
        iface=lb0-br mac=$SPRAY_MAC
        # Spray resolves its backends at start.
        for ((i = 0; i < 50; i++)); do
            [ "$(grep -c 'neighbour resolved' "$d/spray.log")" -ge 3 ] && break
            sleep 0.1
        done
    fi
    ip netns exec sfd-lb python3 "$TOOL" tap "$iface" "$mac" 514 "$d/tap" &
    pids+=($!)
    local tap=$!
    wait_file "$d/tap.ready" 10
    sleep 0.5
    ip netns exec sfd-client python3 "$TOOL" send "$d/sent" "$RATE" 12 8 \
        "${VIPS[0]}:514" "${VIPS[1]}:514" &
    local sender=$!
    sleep 4
    local death revive
    death=$(date +%s%N)
    if [ "$death_kind" = kill ]; then
        kill -KILL "$sink1"
    else
        in_ns sfd-be1 ip link set b0 down
    fi
    sleep 4
    if [ "$death_kind" = kill ]; then
        ip netns exec sfd-be1 python3 "$TOOL" sink 514 "$d/be1b" &
        pids+=($!)
        wait_file "$d/be1b.ready" 10
        revive=$(cat "$d/be1b.ready")
    else
        revive=$(date +%s%N)
        in_ns sfd-be1 ip link set b0 up
    fi
    wait "$sender"
    sleep 0.5
    local stop_at
    stop_at=$(date +%s%N)
    "$SPRAY" ctl --socket "$work/spray.sock" --json events >"$d/events.json"
    "$SPRAY" ctl --socket "$work/spray.sock" events | grep -E "down|up for" || true
    stop_all
    grep -E "stats:|drops" "$d/spray.log" | tail -3 || true
    cat >"$d/facts.json" <<JSON
{"dead_ip": "198.18.2.11", "dead_mac": "02:00:00:00:01:01", "dead_backend": "198.18.2.11:514",
 "death_kind": "$death_kind", "death_ns": $death, "revive_ns": $revive, "stop_ns": $stop_at,
 "bound_ms": $BOUND_MS, "up_bound_ms": $UP_BOUND_MS,
 "events": "$d/events.json", "sent": "$d/sent", "tap": "$d/tap",
 "sinks": {"be1": "$d/be1", "be1b": "$d/be1b", "be2": "$d/be2", "be3": "$d/be3"}}
JSON
    python3 "$TOOL" verdict "$d/facts.json"
}

passed=0
failed=0
for c in $CASES; do
    set +e
    (
        set -e
        trap stop_all EXIT
        run_case "${c%:*}" "${c#*:}"
    )
    status=$?
    set -e
    if [ "$status" = 0 ]; then
        echo "-- $c: ok"
        passed=$((passed + 1))
    else
        echo "-- $c: FAILED"
        failed=$((failed + 1))
    fi
done
echo "failover: $passed passed, $failed failed"
[ "$failed" = 0 ]
