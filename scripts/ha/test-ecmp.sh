#!/usr/bin/env bash
# ECMP scale-out test (root): NODES Spray nodes (socket mode) behind one BIRD router, each
# announcing the same VIP by BGP through its own BIRD and scripts/ha/bgp-announce.sh, shared
# backends, and a client sending FLOWS flows (one source port each) through the router.
# Namespaces (created and removed here), 198.18.0.0/15 only:
#
#   ecmp-cli  eth0 198.18.10.1/24 ── eth0 198.18.10.254  ecmp-rtr  (BIRD AS 65000, kernel
#                                    eth1 198.18.11.1 ─┐            protocol `merge paths yes`,
#                                    eth2 198.18.12.1 ─┼─┐          fib_multipath_hash_policy=1)
#   ecmp-n1   eth0 198.18.11.2/24 ───────────────────────┘ │  BIRD AS 65001 + spray + announcer,
#             eth1 198.18.20.2/24 ─┐                       │  VIP 198.18.0.100/32 on lo
#   ecmp-n2   eth0 198.18.12.2/24 ─┼───────────────────────┘  BIRD AS 65002 + ...
#             eth1 198.18.20.3/24 ─┤
#   ecmp-be1  eth0 198.18.20.11/24 ┼─ bridge br0 in ecmp-sw (UDP sinks :514, which record
#   ecmp-be2  eth0 198.18.20.12/24 ┘  the node each datagram came from: its source address)
#   (NODES=3 adds ecmp-n3: eth0 198.18.13.2/24 to router eth3, eth1 198.18.20.4/24)
#
# Asserts:
#   split     the router has one multipath route to the VIP with every node as next hop;
#             every node forwards a fair share of the flows (at least half its 1/NODES) and
#             every datagram arrives (0 lost, 0 duplicated).
#   per CASE, while traffic runs: node 1 fails; its route is withdrawn (time from the failure
#             to the router's route without node 1 is reported, with the datagrams lost
#             meanwhile); once withdrawn, everything goes through the other nodes, none lost.
#             Then node 1 recovers; the router has every node again (time reported) and the
#             datagrams sent from then on are split again, none lost.
# Cases: backends-down (node 1's link to the backends goes down: its UDP checks fail, no
# backend is healthy, bgp-announce.sh disables vip_syslog), spray-stop (node 1's Spray gets
# SIGTERM: bgp-announce.sh sees no answer on the control socket and withdraws; recovery
# starts Spray again).
#
#   scripts/ha/test-ecmp.sh [CASE...]
#   NODES=2|3 FLOWS=128 RATE=1000 SPLIT_SECS=3 EVENT_AT=1.5 AFTER_SECS=2 SPRAY=path KEEP=1
set -euo pipefail
cd "$(dirname "$0")/../.."
HA_DIR="$PWD/scripts/ha"
. "$HA_DIR/lib.sh" # skip, in_ns, wait_for
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
for t in ip ethtool python3 jq bird birdc; do
    command -v "$t" >/dev/null || skip "$t not installed (apt-get install -y bird2 jq)"
done
if [ -z "${SPRAY:-}" ]; then
    cargo build -q -p spray
    SPRAY="$PWD/target/debug/spray"
fi
NODES=${NODES:-2}
FLOWS=${FLOWS:-128}
RATE=${RATE:-1000}
SPLIT_SECS=${SPLIT_SECS:-3} # the steady run
EVENT_AT=${EVENT_AT:-1.5}   # failure and recovery runs: node 1 fails or recovers this far in,
AFTER_SECS=${AFTER_SECS:-2} # and traffic goes on this long after the router's route changed
case $NODES in 2 | 3) ;; *) echo "NODES must be 2 or 3" >&2; exit 2 ;; esac
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(backends-down spray-stop)
for c in "${CASES[@]}"; do
    case $c in backends-down | spray-stop) ;; *) echo "unknown case $c" >&2; exit 2 ;; esac
done

VIP=198.18.0.100
BACKENDS=(198.18.20.11 198.18.20.12)
NODE_IDS=($(seq 1 "$NODES"))
NSS=(ecmp-rtr ecmp-cli ecmp-sw ecmp-be1 ecmp-be2)
for i in "${NODE_IDS[@]}"; do NSS+=("ecmp-n$i"); done
uplink() { echo "198.18.1$1.2"; }       # node i's address toward the router (its next hop)
lan() { echo "198.18.20.$(($1 + 1))"; } # node i's address toward the backends (what they see)
NODE_MAP=$(for i in "${NODE_IDS[@]}"; do printf 'n%s=%s,' "$i" "$(lan "$i")"; done)
NODE_MAP=${NODE_MAP%,}
ALL_HOPS=$(for i in "${NODE_IDS[@]}"; do uplink "$i"; done | sort | xargs)
REST_HOPS=$(for i in "${NODE_IDS[@]:1}"; do uplink "$i"; done | sort | xargs)

work=$(mktemp -d /tmp/spray-ecmp.XXXXXX)
declare -A PID=()
failed=0
cleanup() {
    local r p
    for r in "${!PID[@]}"; do kill -TERM "${PID[$r]}" 2>/dev/null || true; done
    for r in "${!PID[@]}"; do wait "${PID[$r]}" 2>/dev/null || true; done
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then echo "logs in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
# bg ROLE NS CMD...: runs CMD in NS in the background, output in $work/ROLE.log.
bg() { local role=$1 ns=$2; shift 2; ip netns exec "$ns" "$@" >>"$work/$role.log" 2>&1 & PID[$role]=$!; }
stop() { # ROLE
    kill -TERM "${PID[$1]}" 2>/dev/null || true
    wait "${PID[$1]}" 2>/dev/null || true
    unset "PID[$1]"
}
fail() { echo "FAIL: $*" >&2; KEEP=1; failed=$((failed + 1)); }
now() { echo "$EPOCHREALTIME"; }

# --- the testbed -----------------------------------------------------------------------
veth() { # NS_A DEV_A NS_B DEV_B
    in_ns "$1" ip link add "$2" type veth peer name "$4" netns "$3"
    in_ns "$1" ethtool -K "$2" tx off >/dev/null 2>&1 || true
    in_ns "$3" ethtool -K "$4" tx off >/dev/null 2>&1 || true
    in_ns "$1" ip link set "$2" up
    in_ns "$3" ip link set "$4" up
}
for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
in_ns ecmp-sw ip link add br0 type bridge mcast_snooping 0
in_ns ecmp-sw ip link set br0 up
veth ecmp-cli eth0 ecmp-rtr eth0
in_ns ecmp-cli ip addr add 198.18.10.1/24 dev eth0
in_ns ecmp-cli ip route add default via 198.18.10.254
in_ns ecmp-rtr ip addr add 198.18.10.254/24 dev eth0
# L4 hash (addresses, protocol, ports) for multipath routes: each client port is its own flow.
in_ns ecmp-rtr sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
for i in "${NODE_IDS[@]}"; do
    veth ecmp-rtr "eth$i" "ecmp-n$i" eth0
    in_ns ecmp-rtr ip addr add "198.18.1$i.1/24" dev "eth$i"
    in_ns "ecmp-n$i" ip addr add "$(uplink "$i")/24" dev eth0
    # No default route: syslog is one-way, and when the node's link to the backends goes
    # down its checks fail at once (ENETUNREACH) instead of leaving through a gateway that
    # may drop them silently (a UDP check without replies counts silence as healthy).
    veth ecmp-sw "n$i" "ecmp-n$i" eth1
    in_ns ecmp-sw ip link set "n$i" master br0
    in_ns "ecmp-n$i" ip addr add "$(lan "$i")/24" dev eth1
    # The router sends VIP traffic to the node's address; the node takes it as local.
    in_ns "ecmp-n$i" ip addr add "$VIP/32" dev lo
done
for j in 1 2; do
    veth ecmp-sw "be$j" "ecmp-be$j" eth0
    in_ns ecmp-sw ip link set "be$j" master br0
    in_ns "ecmp-be$j" ip addr add "${BACKENDS[$((j - 1))]}/24" dev eth0
done

# --- BIRD: the router and one speaker per node --------------------------------------------
{
    echo "router id 198.18.10.254;"
    echo "log \"$work/bird-rtr.bird.log\" all;"
    echo "protocol device { scan time 10; }"
    echo "protocol kernel { ipv4 { import none; export all; }; merge paths yes; }"
    for i in "${NODE_IDS[@]}"; do
        cat <<CONF
protocol bgp node$i {
    local 198.18.1$i.1 as 65000;
    neighbor $(uplink "$i") as 6500$i;
    hold time 6; connect delay time 1; connect retry time 2; error wait time 1, 5;
    ipv4 { import all; export none; };
}
CONF
    done
} >"$work/rtr.conf"
bg bird-rtr ecmp-rtr bird -f -c "$work/rtr.conf" -s "$work/rtr.ctl" -P "$work/rtr.pid"
for i in "${NODE_IDS[@]}"; do
    cat >"$work/n$i.conf" <<CONF
router id $(uplink "$i");
log "$work/bird-n$i.bird.log" all;
protocol device { }
protocol static vip_syslog { disabled; ipv4; route $VIP/32 blackhole; }
protocol bgp uplink {
    local $(uplink "$i") as 6500$i;
    neighbor 198.18.1$i.1 as 65000;
    hold time 6; connect delay time 1; connect retry time 2; error wait time 1, 5;
    ipv4 { import none; export where source = RTS_STATIC; };
}
CONF
    bg "bird-n$i" "ecmp-n$i" bird -f -c "$work/n$i.conf" -s "$work/n$i.ctl" -P "$work/n$i.pid"
    backends=$(for b in "${BACKENDS[@]}"; do printf '{ addr = "%s:514" }, ' "$b"; done)
    cat >"$work/spray-n$i.toml" <<TOML
[runtime]
log = "info"
[control]
socket = "$work/spray-n$i.sock"
[services.syslog]
vip = "$VIP:514"
backends = [ ${backends%, } ]
[services.syslog.check]
type = "udp"
interval_ms = 200
timeout_ms = 100
rise = 2
fall = 2
TOML
done

# --- backends, Spray, announcers ---------------------------------------------------------
for j in 1 2; do
    bg "sink-be$j" "ecmp-be$j" python3 "$HA_DIR/flows.py" sink 514 "$work/be$j.json"
    wait_for "sink $j" 10 test -e "$work/be$j.json.ready"
done
ctl() { local i=$1; shift; "$SPRAY" ctl --socket "$work/spray-n$i.sock" "$@"; }
start_spray() { # NODE
    bg "spray-n$1" "ecmp-n$1" "$SPRAY" run -c "$work/spray-n$1.toml" --stats-interval 0
    wait_for "spray on node $1" 20 ctl "$1" version
}
for i in "${NODE_IDS[@]}"; do
    start_spray "$i"
    bg "announce-n$i" "ecmp-n$i" "$HA_DIR/bgp-announce.sh" --spray "$SPRAY" \
        --socket "$work/spray-n$i.sock" --birdc-socket "$work/n$i.ctl" --interval 0.5
done

# --- helpers for the checks --------------------------------------------------------------
# (Few python3 starts: each costs 0.2-1 s on a loaded 2-core VM.)
# The router's next hops for the VIP, sorted, on one line ("" when it has no route).
hops() { in_ns ecmp-rtr ip -4 route show "$VIP/32" | grep -o 'via [0-9.]*' | awk '{ print $2 }' | sort | xargs; }
hops_are() { [ "$(hops)" = "$1" ]; }
# The service's packet counter on node I.
packets() { ctl "$1" --json list | jq '.services[0].packets'; }
# send TAG SECONDS: the client's run in the background, until SECONDS or stop_sender.
send() {
    rm -f "$work/$1.sent.json" "$work/$1.sent.json.started"
    ip netns exec ecmp-cli python3 "$HA_DIR/flows.py" send "$VIP" 514 "$RATE" "$2" "$FLOWS" "$1" "$work/$1.sent.json" &
    PID[sender]=$!
    wait_for "the sender" 20 test -e "$work/$1.sent.json.started"
}
sender_done() { wait "${PID[sender]}"; unset "PID[sender]"; }
stop_sender() { kill -TERM "${PID[sender]}"; sender_done; }
snapshot() {
    local j
    for j in 1 2; do rm -f "$work/be$j.json"; kill -USR1 "${PID[sink-be$j]}"; done
    for j in 1 2; do wait_for "sink $j's snapshot" 10 test -e "$work/be$j.json"; done
}
# collect TAG [flows.py report options]: the report in $work/TAG.report.json, once every
# datagram is in or none arrived for 1 s (two snapshots 0.5 s apart with the same count).
collect() {
    local tag=$1 prev=-1 same=0 got lost k
    shift
    for ((k = 0; k < 30; k++)); do
        snapshot
        python3 "$HA_DIR/flows.py" report "$work/$tag.sent.json" "$NODE_MAP" "$work/be1.json" "$work/be2.json" "$@" >"$work/$tag.report.json"
        got=$(grep -o '"received": [0-9]*' "$work/$tag.report.json" | cut -d' ' -f2)
        lost=$(grep -o '"lost": [0-9]*' "$work/$tag.report.json" | cut -d' ' -f2)
        [ "$lost" != 0 ] || break
        if [ "$got" = "$prev" ]; then same=$((same + 1)); else same=0; fi
        [ "$same" -lt 2 ] || break
        prev=$got
        sleep 0.5
    done
}
summary() { # KIND TAG [EVENT_SECS]
    python3 "$HA_DIR/flows.py" summary "$1" "$work/$2.report.json" "$NODES" "$RATE" ${3:+"$3"} || failed=$((failed + $?))
}
# sub A B: A - B with two decimals (times as $EPOCHREALTIME or seconds).
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
started() { grep -o '"start_wall": [0-9.]*' "$work/$1.sent.json" | cut -d' ' -f2; } # TAG

# --- (a) multipath route, (b) the split ----------------------------------------------------
t=$(now)
wait_for "the router's multipath route via $ALL_HOPS" 60 hops_are "$ALL_HOPS"
echo "multipath: the router has $VIP/32 via $ALL_HOPS $(sub "$(now)" "$t") s after the last announcer started:"
in_ns ecmp-rtr ip -4 route show "$VIP/32" | sed 's/^/    /'

declare -A before=()
for i in "${NODE_IDS[@]}"; do before[$i]=$(packets "$i"); done
send split "$SPLIT_SECS"
sender_done
collect split
echo "split: $FLOWS flows (client source ports), $SPLIT_SECS s at $RATE datagrams/s"
summary split split
echo "    per node (spray ctl list, service packets):" \
    "$(for i in "${NODE_IDS[@]}"; do printf 'n%s +%s ' "$i" $(($(packets "$i") - before[$i])); done)"

# --- (c) failure of node 1 and (d) its recovery ------------------------------------------------
fail_node() {
    case $1 in
        backends-down) in_ns ecmp-n1 ip link set eth1 down ;;
        spray-stop) stop spray-n1 ;;
    esac
}
recover_node() {
    case $1 in
        backends-down) in_ns ecmp-n1 ip link set eth1 up ;;
        spray-stop) start_spray 1 ;;
    esac
}
# phase KIND CASE: traffic runs; EVENT_AT s in, node 1 fails (fail) or recovers (back); the
# route change is awaited, traffic goes on AFTER_SECS more, and the run is checked.
phase() {
    local kind=$1 c=$2 tag="$2-$1" want desc t_ev t_rc after
    if [ "$kind" = fail ]; then want=$REST_HOPS; desc="withdrawal"; else want=$ALL_HOPS; desc="re-announcement"; fi
    send "$tag" 120
    sleep "$EVENT_AT"
    t_ev=$(now)
    if [ "$kind" = fail ]; then fail_node "$c"; else recover_node "$c"; fi
    if ! wait_for "node 1's $desc ($c)" 30 hops_are "$want"; then
        fail "$c: no $desc of node 1 (the router has: $(hops))"
        stop_sender
        return
    fi
    t_rc=$(now)
    sleep "$AFTER_SECS"
    stop_sender
    after=$(sub "$(sub "$t_rc" "$(started "$tag")")" -0.2)
    collect "$tag" --before "$(sub "$t_ev" "$(started "$tag")")" --after "$after"
    if [ "$kind" = fail ]; then
        echo "withdrawn: the router's route lost node 1 $(sub "$t_rc" "$t_ev") s after the failure; now via $(hops)"
    else
        echo "re-announced: the router's route has every node again $(sub "$t_rc" "$t_ev") s after node 1 recovered"
    fi
    summary "$kind" "$tag" "$(sub "$t_ev" "$(started "$tag")")"
}
for c in "${CASES[@]}"; do
    echo "--- $c"
    phase fail "$c"
    phase back "$c"
done
echo "--- announcer logs"
for i in "${NODE_IDS[@]}"; do sed "s/^/    n$i: /" "$work/announce-n$i.log"; done
if [ "$failed" -gt 0 ]; then
    echo "$failed check(s) failed"
    exit 1
fi
echo "$((1 + 2 * ${#CASES[@]})) passed, 0 failed"
