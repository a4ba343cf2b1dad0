#!/usr/bin/env bash
# End-to-end tests of the DPDK dataplane in network namespaces (root only).
#
# Builds `spray` with the dpdk feature, sets up scripts/testbed.sh (client, Spray, three
# backends on one bridge) and runs Spray in spr-lb with `net_af_packet0,iface=lb0`. Nothing
# is static: Spray's config has no `mac` for its backends and no `gateway_mac`, and the
# client has no neighbour entry for the VIPs.
#
# 1. forwarding: Spray resolves the backends' MACs by ARP/NDP, answers ARP/NDP for its VIPs
#    (the client resolves them to the port's MAC), and every datagram sent from the client
#    to an IPv4 and an IPv6 VIP reaches a backend, in exact round robin; NAT replies from an
#    echo backend reach the client from the VIP through the resolved gateway; `spray ctl
#    list` answers on the control socket.
# 2. failover (issue 4's seed scenario): two VIPs on UDP 514, both rr over the same three
#    backends, a steady stream from the client, ICMP health checks (interval 100 ms, fall
#    3). Backend 1's link goes down (DEATH=link, the default) or its sink is killed
#    (DEATH=kill, with a UDP check); the test asserts that Spray sends it nothing the client
#    sent after the decision (a tap on Spray's wire records what Spray sent to each
#    backend), that backends 2 and 3 receive everything sent after it, reports the loss in
#    the detection window and death -> decision; then backend 1 comes back and gets its
#    third again.
#
# 3. tunnel: three backends behind a router (spr-tb1..3 in 198.19.2.0/24 and 2001:db8:2::/64),
#    reached by IPIP and GUE: an IPv4 VIP over IPIP, one over GUE, an IPv6 VIP over IPv6 (and
#    one IPv4 backend: IPv6 in IPv4). The backends decapsulate with the kernel's own devices
#    when the kernel has them (tunl0/sit0/ip6tnl0 and `ip fou ... gue`), else in user space
#    (scripts/netns/decap.py, which also checks every header); every datagram arrives, in
#    exact round robin, with Spray's port address as outer source; an echo backend's reply
#    goes from the VIP straight to the client through the router; then backend 1 stops
#    answering its ICMP checks: after the decision it gets zero datagrams, and it gets its
#    share again once it answers.
#
# 4. mirror: one syslog VIP whose primary pool is two backends and whose mirror pool
#    ("archive", docs/examples/mirror.toml's shape) is two more, with a UDP check; a steady
#    stream from the client; one mirror backend's sink is killed. The primary pool receives
#    every datagram exactly once throughout; the mirror pool too, but for datagrams sent
#    between the death and the health decision; `spray check` and `spray ctl list` list the
#    pool. `mirror` runs the port as docs/examples/mirror.toml does (full copies),
#    `mirror-share` with `mirror_payload = "share"`: each copy a header mbuf chained to its
#    original's payload, which net_af_packet's transmit gathers.
#
# The testbed is always torn down (trap). Skips with a reason when not root or without
# libdpdk, unless SPRAY_REQUIRE_ALL=1.
#
#   scripts/netns-tests.sh                  every test
#   scripts/netns-tests.sh forwarding       one of them (or: failover, tunnel, mirror,
#                                           mirror-share; several: "mirror mirror-share")
#   COUNT=30000 RATE=50000 scripts/netns-tests.sh forwarding    more, faster
#   FAILOVER_RATE=4000 DEATH=kill scripts/netns-tests.sh failover
set -euo pipefail
cd "$(dirname "$0")/.."

require_all="${SPRAY_REQUIRE_ALL:-0}"
skip() {
    if [ "$require_all" = 1 ]; then
        echo "error: $* (SPRAY_REQUIRE_ALL=1)" >&2
        exit 1
    fi
    echo "skipped: $*"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "netns tests need root"
pkg-config --exists 'libdpdk >= 22.11' 2>/dev/null || skip "libdpdk >= 22.11 not found"
for t in ip ethtool python3; do
    command -v "$t" >/dev/null || skip "$t not installed"
done

TESTS="${1:-forwarding failover tunnel mirror mirror-share}"
COUNT="${COUNT:-3000}"
RATE="${RATE:-20000}"
FAILOVER_RATE="${FAILOVER_RATE:-4000}"
DEATH="${DEATH:-link}"
cargo build -q -p spray --features dpdk
SPRAY="$PWD/target/debug/spray"

work="$(mktemp -d)"
spray_pid=""
pids=()
cleanup() {
    for p in "${pids[@]}" $spray_pid; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/testbed.sh down
    rm -rf "$work" /var/run/dpdk/spray-netns-*-$$   # EAL's run directories of this run
}
trap cleanup EXIT

wait_for() { # FILE PATTERN SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "error: timed out waiting for '$2' in $1" >&2
    cat "$1" >&2 || true
    return 1
}

wait_ready() { # FILE...
    local f t
    for f in "$@"; do
        for ((t = 0; t < 100; t++)); do [ -e "$f.ready" ] && break; sleep 0.1; done
        [ -e "$f.ready" ] || { echo "error: $f did not start" >&2; return 1; }
    done
}

ctl() { "$SPRAY" ctl --socket "$work/spray.sock" "$@"; }

# The parts of the config every test shares: Spray's port with its own addresses and the
# client as the gateway of NAT replies (or ADDRESSES and GATEWAYS, TOML arrays), all resolved.
config_head() { # NAME [ADDRESSES GATEWAYS]
    # Defaults live in variables: quotes inside ${x:-word} in a here-document are removed.
    local addresses='["198.18.0.2", "2001:db8::2"]' gateways='["198.18.0.1", "2001:db8::1"]'
    cat <<TOML
[runtime]
dataplane = "dpdk"
log = "info"

[control]
socket = "$work/spray.sock"

[dpdk]
no_huge = true
memory_mb = 256
file_prefix = "spray-netns-$1-$$"
vdevs = ["net_af_packet0,iface=lb0,framecnt=4096"]

[[dpdk.ports]]
device = "net_af_packet0"
addresses = ${2:-$addresses}
gateways = ${3:-$gateways}
TOML
}

start_spray() { # CONFIG LOG
    ip netns exec spr-lb "$SPRAY" run -c "$1" --stats-interval 1 >"$2" 2>&1 &
    spray_pid=$!
    wait_for "$2" "serving" 60
}

stop_spray() { # LOG
    kill -TERM "$spray_pid"
    local status=0
    wait "$spray_pid" || status=$?
    spray_pid=""
    [ "$status" = 0 ] || { cat "$1"; echo "error: spray exited with $status" >&2; return 1; }
    grep -Eq "mempool ([0-9]+)/\1 mbufs free" "$1" \
        || { cat "$1"; echo "error: mempool not full after stop" >&2; return 1; }
}

stop_pids() {
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

test_forwarding() {
    echo "== forwarding: ARP/NDP resolution, VIP answers, round robin, NAT replies, ctl"
    {
        config_head fwd
        cat <<TOML

[services.syslog4]
vip = "198.18.0.10:514"
backends = [{ addr = "198.19.1.1:5514" }, { addr = "198.19.1.2:5514" }, { addr = "198.19.1.3:5514" }]

[services.syslog6]
vip = "[2001:db8::10]:514"
backends = [
  { addr = "[2001:db8::1:1]:5515" }, { addr = "[2001:db8::1:2]:5515" }, { addr = "[2001:db8::1:3]:5515" },
]

[services.echo4]
vip = "198.18.0.10:7"
backends = [{ addr = "198.19.1.1:5507" }]

[services.echo6]
vip = "[2001:db8::10]:7"
backends = [{ addr = "[2001:db8::1:1]:5507" }]
TOML
    } >"$work/fwd.toml"
    local i
    for i in 1 2 3; do
        ip netns exec "spr-be$i" python3 scripts/netns/sink.py 5514 5515 "$work/be$i.json" &
        pids+=($!)
    done
    ip netns exec spr-be1 python3 - "$work/echo" <<'PY' &
import selectors, signal, socket, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sel = selectors.DefaultSelector()
for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, 5507))
    sel.register(s, selectors.EVENT_READ)
open(sys.argv[1] + ".ready", "w").close()
while True:
    for k, _ in sel.select():
        d, a = k.fileobj.recvfrom(2048)
        k.fileobj.sendto(b"echo " + d, a)
PY
    pids+=($!)
    # NAT replies must come back through Spray: backend 1 reaches the client through Spray's
    # own address (which Spray answers ARP/NDP for), not on-link.
    ip -n spr-be1 route add 198.18.0.1/32 via 198.18.0.2
    ip -n spr-be1 -6 route add 2001:db8::1/128 via 2001:db8::2
    start_spray "$work/fwd.toml" "$work/fwd.log"
    wait_ready "$work/be1.json" "$work/be2.json" "$work/be3.json" "$work/echo"
    local port_mac
    port_mac="$(grep -o 'mac [0-9a-f:]*' "$work/fwd.log" | head -1 | cut -d' ' -f2)"
    # Spray solicits its backends at start; give the answers a moment to come back.
    for ((i = 0; i < 50; i++)); do
        [ "$(grep -c 'neighbour resolved' "$work/fwd.log")" -ge 8 ] && break
        sleep 0.1
    done
    grep "neighbour resolved" "$work/fwd.log" || true

    ip netns exec spr-client python3 scripts/netns/send.py 198.18.0.10 514 "$COUNT" "$RATE"
    ip netns exec spr-client python3 scripts/netns/send.py 2001:db8::10 514 "$COUNT" "$RATE"
    ip netns exec spr-client python3 - <<'PY'
import socket
for fam, vip in ((socket.AF_INET, ("198.18.0.10", 7)), (socket.AF_INET6, ("2001:db8::10", 7))):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(b"ping", vip)
    d, a = s.recvfrom(2048)
    assert d == b"echo ping" and a[:2] == vip, (d, a)
    print(f"nat reply from {a[0]}:{a[1]}: {d!r}")
PY
    sleep 1
    echo "client neighbours:"
    ip -n spr-client neigh show dev c0 | tee "$work/client-neigh"
    ctl list | tee "$work/list"
    local ok=1
    for vip in 198.18.0.10 2001:db8::10; do
        if ! grep -q "^$vip lladdr $port_mac " "$work/client-neigh"; then
            echo "error: the client did not resolve $vip to Spray's port MAC $port_mac" >&2
            ok=0
        fi
        if grep -q "^$vip .*PERMANENT" "$work/client-neigh"; then
            echo "error: $vip has a static entry in the client" >&2
            ok=0
        fi
    done
    grep -q "198.18.0.10:514" "$work/list" || { echo "error: ctl list" >&2; ok=0; }
    stop_pids
    stop_spray "$work/fwd.log"
    cat "$work/fwd.log"
    if grep -qE 'mac = |gateway_mac' "$work/fwd.toml"; then
        echo "error: the config has static MACs" >&2
        ok=0
    fi
    python3 - "$COUNT" "$work"/be1.json "$work"/be2.json "$work"/be3.json <<'PY' || ok=0
import json, sys
count = int(sys.argv[1])
got = [json.load(open(p)) for p in sys.argv[2:]]
ok = True
for fam in ("v4", "v6"):
    per = [g[fam] for g in got]
    print(f"{fam}: backends received {per} of {count}")
    if sum(per) != count:
        print(f"error: {fam}: {count - sum(per)} datagram(s) lost")
        ok = False
    elif max(per) - min(per) > 1:
        print(f"error: {fam}: round robin is not even: {per}")
        ok = False
sys.exit(0 if ok else 1)
PY
    [ "$ok" = 1 ]
}

test_failover() {
    echo "== failover: backend 1 dies ($DEATH) under a steady stream to two VIPs"
    local check i
    if [ "$DEATH" = kill ]; then
        check='type = "udp"'
        # A UDP check without reply fails only on ICMP port unreachable, which the kernel
        # rate-limits per peer (icmp_ratelimit, 1 s after a short burst) and in all
        # (icmp_msgs_per_sec, 1000/s, which the client's datagrams to the dead port use up):
        # with checks every 100 ms a dead port would look alive between two errors.
        for i in 1 2 3; do
            ip netns exec "spr-be$i" sysctl -qw net.ipv4.icmp_ratelimit=0 \
                net.ipv4.icmp_msgs_per_sec=100000 net.ipv4.icmp_msgs_burst=10000
        done
    else
        check='type = "icmp"'
    fi
    {
        config_head fo
        cat <<TOML

[services.vip-a]
vip = "198.18.0.10:514"
backends = [{ addr = "198.19.1.1:5514" }, { addr = "198.19.1.2:5514" }, { addr = "198.19.1.3:5514" }]
[services.vip-a.check]
$check
interval_ms = 100
timeout_ms = 50
fall = 3
rise = 2

[services.vip-b]
vip = "198.18.0.11:514"
backends = [{ addr = "198.19.1.1:5514" }, { addr = "198.19.1.2:5514" }, { addr = "198.19.1.3:5514" }]
[services.vip-b.check]
$check
interval_ms = 100
timeout_ms = 50
fall = 3
rise = 2
TOML
    } >"$work/fo.toml"
    local fo=scripts/netns/failover.py i
    for i in 1 2 3; do
        ip netns exec "spr-be$i" python3 "$fo" sink 5514 "$work/fo-be$i" &
        pids+=($!)
    done
    local sink1=${pids[0]}
    # Bound before the first check, or a check could find a port still closed.
    wait_ready "$work/fo-be1" "$work/fo-be2" "$work/fo-be3"
    start_spray "$work/fo.toml" "$work/fo.log"
    local port_mac
    port_mac="$(grep -o 'mac [0-9a-f:]*' "$work/fo.log" | head -1 | cut -d' ' -f2)"
    ip netns exec spr-lb python3 "$fo" tap lb0-br "$port_mac" 5514 "$work/fo-tap" &
    pids+=($!)
    wait_ready "$work/fo-be1" "$work/fo-be2" "$work/fo-be3" "$work/fo-tap"
    for ((i = 0; i < 50; i++)); do
        [ "$(grep -c 'neighbour resolved' "$work/fo.log")" -ge 4 ] && break
        sleep 0.1
    done
    ip netns exec spr-client python3 "$fo" send "$work/fo-sent" "$FAILOVER_RATE" \
        198.18.0.10:514 198.18.0.11:514 &
    local sender=$!
    pids+=($sender)
    sleep 2
    local death revive stop_at
    if [ "$DEATH" = kill ]; then
        kill -KILL "$sink1"
        death=$(date +%s%N)
    else
        ip -n spr-be1 link set b0 down
        death=$(date +%s%N)
    fi
    for ((i = 0; i < 50; i++)); do
        ctl events | grep -q "198.19.1.1:5514 down" && break
        sleep 0.1
    done
    sleep 1
    if [ "$DEATH" = kill ]; then
        ip netns exec spr-be1 python3 "$fo" sink 5514 "$work/fo-be1b" &
        pids+=($!)
        wait_ready "$work/fo-be1b"
        revive=$(cat "$work/fo-be1b.ready")
    else
        ip -n spr-be1 link set b0 up
        revive=$(date +%s%N)
    fi
    for ((i = 0; i < 100; i++)); do
        ctl events | grep -q "198.19.1.1:5514 up" && break
        sleep 0.1
    done
    sleep 2
    stop_at=$(date +%s%N)
    ctl --json events >"$work/fo-events.json"
    ctl events
    ctl list
    stop_pids
    stop_spray "$work/fo.log"
    grep -E "stats:|neighbour|down|up for" "$work/fo.log" | tail -20 || true
    local be1="$work/fo-be1"
    if [ "$DEATH" = kill ]; then
        cat "$work/fo-be1" "$work/fo-be1b" 2>/dev/null >"$work/fo-be1-all" || true
        be1="$work/fo-be1-all"
    fi
    cat >"$work/fo-facts.json" <<JSON
{"dead_ip": "198.19.1.1", "dead_backend": "198.19.1.1:5514",
 "death_ns": $death, "revive_ns": $revive, "stop_ns": $stop_at,
 "events": "$work/fo-events.json", "sent": "$work/fo-sent", "tap": "$work/fo-tap",
 "sinks": {"be1": "$be1", "be2": "$work/fo-be2", "be3": "$work/fo-be3"}}
JSON
    python3 "$fo" report "$work/fo-facts.json"
}

# What the kernel dropped on Spray's wire, should a count on the tap or at a sink fall short.
wire_stat() { ip netns exec spr-lb cat "/sys/class/net/$1/statistics/$2"; } # DEV COUNTER
wire_drops() {
    echo "wire drops: lb0 tx $(wire_stat lb0 tx_dropped)," \
        "lb0-br rx $(wire_stat lb0-br rx_dropped), tx $(wire_stat lb0-br tx_dropped)"
}

test_mirror() { mirror_case copy; }
test_mirror-share() { mirror_case share; }

mirror_case() { # MIRROR_COPIES: copy or share
    echo "== mirror ($1): a syslog stream to a primary pool and a mirror pool; a mirror backend dies"
    # The killed sink's kernel answers port unreachable, which fails its UDP check: lift the
    # rate limits that would hide most of those answers (see test_failover).
    ip netns exec spr-be3 sysctl -qw net.ipv4.icmp_ratelimit=0 \
        net.ipv4.icmp_msgs_per_sec=100000 net.ipv4.icmp_msgs_burst=10000
    {
        config_head mi
        cat <<TOML
mirror_payload = "$1"

[services.syslog]
vip = "198.18.0.10:514"
backends = [{ addr = "198.19.1.1:5514" }, { addr = "198.19.1.2:5514" }]

[[services.syslog.mirror]]
name = "archive"
backends = [{ addr = "198.19.1.2:5515" }, { addr = "198.19.1.3:5515" }]
[services.syslog.mirror.check]
type = "udp"
interval_ms = 100
timeout_ms = 50
fall = 3
rise = 2
TOML
    } >"$work/mi.toml"
    "$SPRAY" check -c "$work/mi.toml" | tee "$work/mi-check.txt"
    grep -q "COPY.*syslog mirror archive" "$work/mi-check.txt" \
        || { echo "error: spray check does not list the mirror pool" >&2; return 1; }
    local fo=scripts/netns/failover.py
    ip netns exec spr-be1 python3 "$fo" sink 5514 "$work/mi-p1" & pids+=($!)
    ip netns exec spr-be2 python3 "$fo" sink 5514 "$work/mi-p2" & pids+=($!)
    ip netns exec spr-be2 python3 "$fo" sink 5515 "$work/mi-m2" & pids+=($!)
    ip netns exec spr-be3 python3 "$fo" sink 5515 "$work/mi-m3" &
    local dead_sink=$!
    pids+=($dead_sink)
    wait_ready "$work/mi-p1" "$work/mi-p2" "$work/mi-m2" "$work/mi-m3"
    start_spray "$work/mi.toml" "$work/mi.log"
    grep -q "mirror payload $1" "$work/mi.log" \
        || { echo "error: the port does not make its copies by $1" >&2; return 1; }
    # What Spray sends toward the mirror pool (port 5515), seen on its wire: what the killed
    # sink received before it died is lost with it.
    local port_mac
    port_mac="$(grep -o 'mac [0-9a-f:]*' "$work/mi.log" | head -1 | cut -d' ' -f2)"
    ip netns exec spr-lb python3 "$fo" tap lb0-br "$port_mac" 5515 "$work/mi-tap" & pids+=($!)
    wait_ready "$work/mi-tap"
    local i
    for ((i = 0; i < 50; i++)); do
        [ "$(grep -c 'neighbour resolved' "$work/mi.log")" -ge 4 ] && break
        sleep 0.1
    done
    ip netns exec spr-client python3 "$fo" send "$work/mi-sent" "$FAILOVER_RATE" 198.18.0.10:514 &
    local sender=$!
    sleep 2
    kill -KILL "$dead_sink"
    local death
    death=$(date +%s%N)
    for ((i = 0; i < 50; i++)); do
        ctl events | grep -q "198.19.1.3:5515 down" && break
        sleep 0.1
    done
    sleep 1
    kill -TERM "$sender"
    wait "$sender" || true
    local sender_stop
    sender_stop=$(date +%s%N)
    sleep 0.5
    ctl --json events >"$work/mi-events.json"
    ctl list | tee "$work/mi-list.txt"
    grep -q "COPY.*syslog mirror archive" "$work/mi-list.txt" \
        || { echo "error: spray ctl list does not list the mirror pool" >&2; return 1; }
    ctl stats | grep -E "drops by reason|mirror copies" || true
    wire_drops
    stop_pids
    stop_spray "$work/mi.log"
    cat >"$work/mi-facts.json" <<JSON
{"dead_backend": "198.19.1.3:5515", "death_ns": $death, "sender_stop_ns": $sender_stop,
 "events": "$work/mi-events.json", "sent": "$work/mi-sent",
 "tap": "$work/mi-tap", "dead_ip": "198.19.1.3",
 "primary": ["$work/mi-p1", "$work/mi-p2"], "survivor": "$work/mi-m2"}
JSON
    python3 scripts/netns/mirror.py report "$work/mi-facts.json"
}

# Whether this kernel decapsulates IPIP and GUE itself (CONFIG_NET_IPIP, CONFIG_NET_FOU).
kernel_decaps() {
    local ns=spr-probe-$$ ok=0
    ip netns add "$ns"
    if ip -n "$ns" link add probe4 type ipip 2>/dev/null \
        && ip -n "$ns" fou add port 6080 gue 2>/dev/null; then
        ok=1
    fi
    ip netns del "$ns"
    [ "$ok" = 1 ]
}

# Starts the counters of the three routed backends for phase $1 (each writes
# $work/tun-PHASE-beN.json at SIGTERM), and backend 1's echo server.
tunnel_counters() { # PHASE
    local i
    for i in 1 2 3; do
        if [ "$KERNEL_DECAP" = 1 ]; then
            ip netns exec "spr-tb$i" python3 scripts/netns/sink.py 5514 5515 "$work/tun-$1-be$i.json" &
        else
            ip netns exec "spr-tb$i" python3 scripts/netns/decap.py 6080 7 "$work/tun-$1-be$i.json" &
        fi
        pids+=($!)
    done
    if [ "$KERNEL_DECAP" = 1 ]; then
        # decap.py answers port 7 itself; with the kernel's devices a socket on the VIP does.
        ip netns exec spr-tb1 python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.0.10", 7))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(b"echo " + d, a)' &
        pids+=($!)
    fi
    wait_ready "$work/tun-$1-be1.json" "$work/tun-$1-be2.json" "$work/tun-$1-be3.json"
    sleep 0.2
}

test_tunnel() {
    KERNEL_DECAP=0
    if kernel_decaps; then KERNEL_DECAP=1; fi
    echo "== tunnel: IPIP and GUE to backends behind a router (decapsulation by the" \
        "$([ "$KERNEL_DECAP" = 1 ] && echo kernel || echo "user-space decap.py: this kernel has no ipip/fou"))"
    # The backends are behind the router: outside the port's /24, so their next hop is the
    # gateway, resolved by ARP/NDP like everything else.
    {
        config_head tun '["198.18.0.2/24", "2001:db8::2/64"]' '["198.18.0.254", "2001:db8::fe"]'
        cat <<TOML

[services.ipip]
vip = "198.18.0.10:5514"
mode = "tunnel"
backends = [{ addr = "198.19.2.1" }, { addr = "198.19.2.2" }, { addr = "198.19.2.3" }]
[services.ipip.check]
type = "icmp"
interval_ms = 100
timeout_ms = 50
fall = 3
rise = 2

[services.gue]
vip = "198.18.0.11:5514"
mode = "tunnel"
backends = [{ addr = "198.19.2.1" }, { addr = "198.19.2.2" }, { addr = "198.19.2.3" }]
[services.gue.tunnel]
encap = "gue"
port = 6080
[services.gue.check]
type = "icmp"
interval_ms = 100
timeout_ms = 50
fall = 3
rise = 2

[services.ipip6]
vip = "[2001:db8::10]:5515"
mode = "tunnel"
backends = [{ addr = "2001:db8:2::1" }, { addr = "2001:db8:2::2" }, { addr = "198.19.2.3" }]

[services.echo]
vip = "198.18.0.10:7"
mode = "tunnel"
backends = [{ addr = "198.19.2.1" }]
TOML
    } >"$work/tun.toml"
    local i
    for i in 1 2 3; do
        for vip in 198.18.0.10/32 198.18.0.11/32; do ip -n "spr-tb$i" addr add "$vip" dev lo; done
        ip -n "spr-tb$i" addr add 2001:db8::10/128 dev lo
        ip netns exec "spr-tb$i" sysctl -qw net.ipv4.conf.all.rp_filter=0 \
            net.ipv4.conf.default.rp_filter=0
        if [ "$KERNEL_DECAP" = 1 ]; then
            # What docs/network.md tells operators to run.
            ip -n "spr-tb$i" link add tun4 type ipip external
            ip -n "spr-tb$i" link add tun6 type ip6tnl external
            ip -n "spr-tb$i" link add sit4 type sit external
            ip -n "spr-tb$i" fou add port 6080 gue
            local d
            for d in tun4 tun6 sit4; do
                ip -n "spr-tb$i" link set "$d" up
                ip netns exec "spr-tb$i" sysctl -qw "net.ipv4.conf.$d.rp_filter=0"
            done
        fi
    done
    start_spray "$work/tun.toml" "$work/tun.log"
    # The router's two addresses are all Spray has to resolve.
    for ((i = 0; i < 50; i++)); do
        [ "$(grep -c 'neighbour resolved' "$work/tun.log")" -ge 2 ] && break
        sleep 0.1
    done
    grep "neighbour resolved" "$work/tun.log" || true
    # Phase 1: all up.
    tunnel_counters all
    ip netns exec spr-client python3 scripts/netns/send.py 198.18.0.10 5514 "$COUNT" "$RATE"
    ip netns exec spr-client python3 scripts/netns/send.py 198.18.0.11 5514 "$COUNT" "$RATE"
    ip netns exec spr-client python3 scripts/netns/send.py 2001:db8::10 5515 "$COUNT" "$RATE"
    ip netns exec spr-client python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b"ping", ("198.18.0.10", 7))
d, a = s.recvfrom(2048)
assert d == b"echo ping" and a == ("198.18.0.10", 7), (d, a)
print(f"reply from {a[0]}:{a[1]} through the router, not Spray: {d!r}")
PY
    sleep 0.5
    stop_pids
    # Phase 2: backend 1 stops answering its checks (it still receives what it is sent).
    ip netns exec spr-tb1 sysctl -qw net.ipv4.icmp_echo_ignore_all=1
    for ((i = 0; i < 50; i++)); do
        [ "$(ctl events | grep -c '198.19.2.1:.* down')" -ge 2 ] && break
        sleep 0.1
    done
    ctl events | grep "198.19.2.1" || true
    tunnel_counters down
    ip netns exec spr-client python3 scripts/netns/send.py 198.18.0.10 5514 "$COUNT" "$RATE"
    ip netns exec spr-client python3 scripts/netns/send.py 198.18.0.11 5514 "$COUNT" "$RATE"
    sleep 0.5
    stop_pids
    # Phase 3: it answers again and gets its share back.
    ip netns exec spr-tb1 sysctl -qw net.ipv4.icmp_echo_ignore_all=0
    for ((i = 0; i < 50; i++)); do
        [ "$(ctl events | grep -c '198.19.2.1:.* up')" -ge 2 ] && break
        sleep 0.1
    done
    tunnel_counters back
    ip netns exec spr-client python3 scripts/netns/send.py 198.18.0.10 5514 "$COUNT" "$RATE"
    ip netns exec spr-client python3 scripts/netns/send.py 198.18.0.11 5514 "$COUNT" "$RATE"
    sleep 0.5
    stop_pids
    ctl list | tee "$work/tun-list"
    ctl stats | grep -iE "drops by reason" || true
    stop_spray "$work/tun.log"
    python3 - "$COUNT" "$KERNEL_DECAP" "$work" <<'PY'
import json, sys
count, kernel, work = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
ok = True

def load(phase):
    return [json.load(open(f"{work}/tun-{phase}-be{i}.json")) for i in (1, 2, 3)]

def per_service(got):
    """Datagrams per backend for (v4 ipip, v4 gue, v6), by what each backend counted."""
    if kernel:  # sink.py: the kernel's devices do not say which encapsulation it was
        return {"v4 (ipip + gue)": [g["v4"] for g in got], "v6": [g["v6"] for g in got]}
    out = {"ipip": [], "gue": [], "v6": []}
    for g in got:
        c = g["counts"]
        out["ipip"].append(c.get("ipip-ip4 v4 5514", 0))
        out["gue"].append(c.get("gue-ip4 v4 5514", 0))
        out["v6"].append(c.get("ipip-ip6 v6 5515", 0) + c.get("ipip-ip4 v6 5515", 0))
    return out

def expect(phase, want):
    global ok
    got = load(phase)
    if not kernel:
        for i, g in enumerate(got, 1):
            if g["bad"]:
                print(f"error: {phase}: backend {i}: {g['bad']} malformed: {g['bad_examples']}")
                ok = False
            srcs = set(g["outer_sources"]) - {"198.18.0.2", "2001:db8::2"}
            if srcs:
                print(f"error: {phase}: backend {i}: outer sources {sorted(srcs)}")
                ok = False
    for name, per in per_service(got).items():
        w = want[name]
        print(f"{phase}: {name}: backends received {per}, expected {w}")
        if per != w:
            ok = False

third = count // 3
spread = [third, third, third] if count % 3 == 0 else None
assert spread, "COUNT must be a multiple of 3"
if kernel:
    expect("all", {"v4 (ipip + gue)": [2 * third] * 3, "v6": spread})
    expect("down", {"v4 (ipip + gue)": [0, count, count], "v6": [0, 0, 0]})
    expect("back", {"v4 (ipip + gue)": [2 * third] * 3, "v6": [0, 0, 0]})
else:
    expect("all", {"ipip": spread, "gue": spread, "v6": spread})
    expect("down", {"ipip": [0, count // 2, count // 2], "gue": [0, count // 2, count // 2],
                    "v6": [0, 0, 0]})
    expect("back", {"ipip": spread, "gue": spread, "v6": [0, 0, 0]})
sys.exit(0 if ok else 1)
PY
}

# Each test runs in a subshell with errexit on (a function called from `if` would run with
# it off) and its own trap that stops what it started.
end_test() {
    for p in "${pids[@]}" $spray_pid; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

passed=0
failed=0
for t in $TESTS; do
    scripts/testbed.sh up
    set +e
    (
        set -e
        trap end_test EXIT
        # Each test its own files: a ".ready" left by an earlier test's sink or tap would
        # let this one start sending before its own are listening.
        work="$work/$t"
        mkdir "$work"
        "test_$t"
    )
    status=$?
    set -e
    if [ "$status" = 0 ]; then
        echo "-- $t: ok"
        passed=$((passed + 1))
    else
        echo "-- $t: FAILED"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

# The end-to-end suite with real servers and clients (rsyslog, loggen, dnsmasq, dnsperf), in
# its CI mode (about a minute): socket mode (syslog, DNS), then DPDK mode on net_af_packet
# (syslog, DNS, the two-VIP rsyslog failover under load, the client's address at the
# backends). It builds nothing of its own and uses the spray built above (with dpdk).
if [ "$(id -u)" = 0 ]; then SPRAY="$SPRAY" scripts/e2e/run.sh --quick; fi
