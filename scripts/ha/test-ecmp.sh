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
#   scripts/ha/test-ecmp.sh [CASE...]    NODES=2 FLOWS=128 RATE=1000 SPRAY=path KEEP=1
set -euo pipefail
cd "$(dirname "$0")/../.."
HA_DIR="$PWD/scripts/ha"
skip() { echo "skipped: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
for t in ip ethtool python3 bird birdc; do
    command -v "$t" >/dev/null || skip "$t not installed (apt-get install -y bird2)"
done
if [ -z "${SPRAY:-}" ]; then
    cargo build -q -p spray
    SPRAY="$PWD/target/debug/spray"
fi
NODES=${NODES:-2}
FLOWS=${FLOWS:-128}
RATE=${RATE:-1000}
SPLIT_SECS=${SPLIT_SECS:-3}
FAIL_SECS=${FAIL_SECS:-8}  # the failover run; node 1 fails FAIL_AT seconds in
FAIL_AT=${FAIL_AT:-2}
BACK_SECS=${BACK_SECS:-6}  # the recovery run; node 1 recovers BACK_AT seconds in
BACK_AT=${BACK_AT:-1}
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
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# bg ROLE NS CMD...: runs CMD in NS in the background, output in $work/ROLE.log.
bg() { local role=$1 ns=$2; shift 2; ip netns exec "$ns" "$@" >>"$work/$role.log" 2>&1 & PID[$role]=$!; }
stop() { # ROLE
    kill -TERM "${PID[$1]}" 2>/dev/null || true
    wait "${PID[$1]}" 2>/dev/null || true
    unset "PID[$1]"
}
wait_for() { # DESCRIPTION SECONDS COMMAND...   (polls every 50 ms)
    local what=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 20; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "error: timed out after ${secs}s waiting for $what" >&2
    KEEP=1
    return 1
}
fail() { echo "FAIL: $*" >&2; KEEP=1; failed=$((failed + 1)); }
now() { echo "$EPOCHREALTIME"; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "${2:-$EPOCHREALTIME}"; }
jget() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@"; }

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
# The router's next hops for the VIP, sorted, on one line ("" when it has no route).
hops() { in_ns ecmp-rtr ip -4 route show "$VIP/32" | grep -o 'via [0-9.]*' | awk '{ print $2 }' | sort | xargs; }
hops_are() { [ "$(hops)" = "$1" ]; }
packets() { ctl "$1" --json list 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["services"][0]["packets"])' || echo 0; }
# send TAG SECONDS: the client's run in the background (SENDER = its pid).
send() {
    rm -f "$work/$1.sent.json"
    ip netns exec ecmp-cli python3 "$HA_DIR/flows.py" send "$VIP" 514 "$RATE" "$2" "$FLOWS" "$1" "$work/$1.sent.json" &
    SENDER=$!
    PID[sender]=$SENDER
}
sent_done() { wait "$SENDER"; unset "PID[sender]"; }
snapshot() {
    local j
    for j in 1 2; do rm -f "$work/be$j.json"; kill -USR1 "${PID[sink-be$j]}"; done
    for j in 1 2; do wait_for "sink $j's snapshot" 10 test -e "$work/be$j.json"; done
}
# collect TAG [--after SECS]: the report in $work/TAG.report.json, once every datagram is in
# or none arrived for 0.5 s.
collect() {
    local tag=$1 prev=-1 got k
    shift
    for ((k = 0; k < 20; k++)); do
        snapshot
        python3 "$HA_DIR/flows.py" report "$work/$tag.sent.json" "$NODE_MAP" "$work/be1.json" "$work/be2.json" "$@" >"$work/$tag.report.json"
        got=$(jget "$work/$tag.report.json" 'd["received"]')
        if [ "$(jget "$work/$tag.report.json" 'd["lost"]')" = 0 ] || [ "$got" = "$prev" ]; then break; fi
        prev=$got
        sleep 0.5
    done
}
r() { jget "$work/$1.report.json" "$2"; } # TAG EXPR
split_line() { # TAG [_after]
    python3 - "$work/$1.report.json" "${2:-}" <<'PY'
import json, sys
d, sfx = json.load(open(sys.argv[1])), sys.argv[2]
per = d["per_node" + sfx]
total = max(sum(per.values()), 1)
print(", ".join(f"{k} {v} ({100.0 * v / total:.1f} %, {d['flows_per_node'][k]} flows)" if not sfx else
                f"{k} {v} ({100.0 * v / total:.1f} %)" for k, v in sorted(per.items())))
PY
}
# fair TAG [_after]: every node got at least half of its 1/NODES share.
fair() {
    python3 - "$work/$1.report.json" "${2:-}" "$NODES" <<'PY'
import json, sys
d, sfx, n = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
per = d["per_node" + sfx]
total = sum(per.values())
sys.exit(0 if total > 0 and len(per) == n and all(v >= total / n / 2 for v in per.values()) else 1)
PY
}
# offset TAG WALLTIME: seconds from the sender's start to WALLTIME.
offset() { python3 -c "import json, sys; print(f'{float(sys.argv[2]) - json.load(open(sys.argv[1]))[\"start_wall\"]:.3f}')" "$work/$1.sent.json" "$2"; }

# --- (a) multipath route, (b) the split ----------------------------------------------------
t=$(now)
wait_for "the router's multipath route via $ALL_HOPS" 60 hops_are "$ALL_HOPS"
echo "multipath: the router has $VIP/32 via $ALL_HOPS after $(since "$t") s (BGP set-up included):"
in_ns ecmp-rtr ip -4 route show "$VIP/32" | sed 's/^/    /'

declare -A before=()
for i in "${NODE_IDS[@]}"; do before[$i]=$(packets "$i"); done
send split "$SPLIT_SECS"
sent_done
collect split
ctr=$(for i in "${NODE_IDS[@]}"; do printf 'n%s +%s ' "$i" $(($(packets "$i") - before[$i])); done)
echo "split: $FLOWS flows, $(r split 'd["sent"]') datagrams at $RATE/s: received $(r split 'd["received"]'), lost $(r split 'd["lost"]'), duplicated $(r split 'd["duplicates"]')"
echo "    per node (backends' view): $(split_line split)"
echo "    per node (spray ctl list, service packets): $ctr"
[ "$(r split 'd["lost"]')" = 0 ] || fail "split: $(r split 'd["lost"]') datagrams lost at steady state"
[ "$(r split 'd["duplicates"]')" = 0 ] || fail "split: duplicated datagrams"
fair split || fail "split: a node carries less than half its share"

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
for c in "${CASES[@]}"; do
    echo "--- $c"
    send "$c-fail" "$FAIL_SECS"
    sleep "$FAIL_AT"
    t_ev=$(now)
    fail_node "$c"
    if wait_for "node 1's withdrawal ($c)" 20 hops_are "$REST_HOPS"; then
        t_wd=$(now)
        sent_done
        # Datagrams sent from 0.2 s after the router's route changed must all go elsewhere.
        after=$(python3 -c "print(round(float('$(offset "$c-fail" "$t_wd")') + 0.2, 3))")
        collect "$c-fail" --after "$after"
        ev=$(offset "$c-fail" "$t_ev")
        echo "withdrawn: the router's route lost node 1 $(since "$t_ev" "$t_wd") s after the failure;" \
            "now via $(hops)"
        echo "    lost during the switch: $(r "$c-fail" 'd["lost"]') of $(r "$c-fail" 'd["sent"]')" \
            "(first $(r "$c-fail" 'd["first_lost_ms"]') ms, last $(r "$c-fail" 'd["last_lost_ms"]') ms into the run; failure at $(python3 -c "print(round($ev * 1000))") ms)"
        echo "    after the withdrawal: $(r "$c-fail" 'd["sent_after"]') sent, $(r "$c-fail" 'd["lost_after"]') lost; $(split_line "$c-fail" _after)"
        [ "$(r "$c-fail" 'd["sent_after"] >= '"$RATE")" = True ] || fail "$c: less than 1 s of traffic after the withdrawal (make FAIL_SECS longer)"
        [ "$(r "$c-fail" 'd["lost_after"]')" = 0 ] || fail "$c: datagrams lost after the withdrawal"
        [ "$(r "$c-fail" 'd["per_node_after"]["n1"]')" = 0 ] || fail "$c: node 1 still got traffic after the withdrawal"
        [ "$(r "$c-fail" 'd["first_lost_ms"] is None or d["first_lost_ms"] >= '"$ev"' * 1000 - 5')" = True ] || fail "$c: datagrams lost before the failure"
    else
        fail "$c: node 1 was not withdrawn"
        sent_done
    fi

    send "$c-back" "$BACK_SECS"
    sleep "$BACK_AT"
    t_ev=$(now)
    recover_node "$c"
    if wait_for "node 1's re-announcement ($c)" 20 hops_are "$ALL_HOPS"; then
        t_an=$(now)
        sent_done
        after=$(python3 -c "print(round(float('$(offset "$c-back" "$t_an")') + 0.2, 3))")
        collect "$c-back" --after "$after"
        echo "re-announced: the router has every node again $(since "$t_ev" "$t_an") s after node 1 recovered"
        echo "    whole run: $(r "$c-back" 'd["sent"]') sent, $(r "$c-back" 'd["lost"]') lost;" \
            "after the re-announcement: $(r "$c-back" 'd["sent_after"]') sent, $(r "$c-back" 'd["lost_after"]') lost; $(split_line "$c-back" _after)"
        [ "$(r "$c-back" 'd["sent_after"] >= '"$RATE")" = True ] || fail "$c: less than 1 s of traffic after the re-announcement (make BACK_SECS longer)"
        [ "$(r "$c-back" 'd["lost_after"]')" = 0 ] || fail "$c: datagrams lost after the re-announcement"
        fair "$c-back" _after || fail "$c: the split did not come back after the re-announcement"
    else
        fail "$c: node 1 was not announced again"
        sent_done
    fi
done
echo "--- announcer logs"
for i in "${NODE_IDS[@]}"; do sed "s/^/    n$i: /" "$work/announce-n$i.log"; done
if [ "$failed" -gt 0 ]; then
    echo "$failed check(s) failed"
    exit 1
fi
echo "$((1 + 2 * ${#CASES[@]})) passed, 0 failed"
