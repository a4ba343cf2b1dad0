#!/usr/bin/env bash
# HA pair test (root): two Spray nodes in socket mode, two keepalived VRRP instances, and a
# client sending a steady stream to the VIP, all in network namespaces this script creates
# and removes. For each failure case the master's part is killed; the test asserts that
# traffic resumes through the backup, and reports the datagrams lost during the switch.
#
#   ha-client  eth0 198.18.0.1/24  ─┐
#   ha-lb1     eth0 198.18.0.2/24  ─┤ (keepalived prio 150 + spray)   VIP 198.18.0.100
#   ha-lb2     eth0 198.18.0.3/24  ─┼─ bridge br0 in ha-sw
#   ha-be1     eth0 198.18.0.11/24 ─┤ (UDP sink :514)
#   ha-be2     eth0 198.18.0.12/24 ─┘ (UDP sink :514)
#
# Cases: keepalived-stop (SIGTERM: priority-0 advert), keepalived-kill (SIGKILL of the
# VRRP process: the backup waits out the master-down interval), spray-kill (SIGKILL of the
# master's spray: keepalived's track script check-spray.sh sees it and goes FAULT).
#
#   scripts/ha/test-ha.sh [CASE...]      RATE=1000 DURATION=12 KILL_AT=3 SPRAY=path
set -euo pipefail
cd "$(dirname "$0")/../.."
HA_DIR="$PWD/scripts/ha"
. "$HA_DIR/lib.sh" # skip, in_ns, wait_for
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
for t in ip ethtool python3 keepalived; do
    command -v "$t" >/dev/null || skip "$t not installed (apt-get install -y keepalived)"
done

RATE=${RATE:-1000}
DURATION=${DURATION:-12}
KILL_AT=${KILL_AT:-3}
if [ -z "${SPRAY:-}" ]; then
    cargo build -q -p spray
    SPRAY="$PWD/target/debug/spray"
fi
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(keepalived-stop keepalived-kill spray-kill)

VIP=198.18.0.100
NSS=(ha-sw ha-client ha-lb1 ha-lb2 ha-be1 ha-be2)
work=$(mktemp -d /tmp/spray-ha.XXXXXX)
pids=()


stop_all() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    # keepalived's VRRP children, by their pid files
    for f in "$work"/*/vrrp.pid "$work"/*/keepalived.pid; do
        [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
    rm -f "$work"/*/*.pid
}
down() {
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
cleanup() {
    stop_all
    down
    if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

up() {
    down
    for ns in "${NSS[@]}"; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
    in_ns ha-sw ip link add br0 type bridge mcast_snooping 0
    in_ns ha-sw ip link set br0 up
    local ns addr i=0
    for ns in ha-client ha-lb1 ha-lb2 ha-be1 ha-be2; do
        addr=$(case $ns in ha-client) echo 1;; ha-lb1) echo 2;; ha-lb2) echo 3;; ha-be1) echo 11;; ha-be2) echo 12;; esac)
        i=$((i + 1))
        in_ns ha-sw ip link add "p$i" type veth peer name eth0 netns "$ns"
        in_ns ha-sw ip link set "p$i" master br0 up
        in_ns ha-sw ethtool -K "p$i" tx off >/dev/null
        in_ns "$ns" ethtool -K eth0 tx off >/dev/null
        in_ns "$ns" ip addr add "198.18.0.$addr/24" dev eth0
        in_ns "$ns" ip link set eth0 up
    done
    # Spray binds the VIP on both nodes; only the master holds the address.
    for ns in ha-lb1 ha-lb2; do in_ns "$ns" sysctl -qw net.ipv4.ip_nonlocal_bind=1; done
}

has_vip() { in_ns "$1" ip -4 addr show dev eth0 | grep -q "inet $VIP/"; }
svc_state() { "$SPRAY" ctl --socket "$work/$1/spray.sock" list | awk '$1 == "UDP" { print $4 }'; }
svc_is() { [ "$(svc_state "$1")" = "$2" ]; }

start_node() { # lb1|lb2 PRIORITY
    local n=$1 prio=$2 d="$work/$1"
    mkdir -p "$d"
    cat >"$d/spray.toml" <<TOML
[runtime]
log = "info"
[control]
socket = "$d/spray.sock"
[services.syslog]
vip = "$VIP:514"
backends = [ { addr = "198.18.0.11:514" }, { addr = "198.18.0.12:514" } ]
TOML
    ip netns exec "ha-$n" "$SPRAY" run -c "$d/spray.toml" --stats-interval 0 >"$d/spray.log" 2>&1 &
    pids+=($!)
    echo $! >"$d/spray.pid"
    wait_for "spray on $n" 20 "$SPRAY" ctl --socket "$d/spray.sock" version
    cat >"$d/keepalived.conf" <<CONF
global_defs {
    router_id spray-$n
    enable_script_security
    script_user root
    vrrp_garp_master_repeat 3
}
vrrp_script chk_spray {
    script "$HA_DIR/check-spray.sh --spray $SPRAY --socket $d/spray.sock"
    interval 1
    timeout 1
    fall 2
    rise 2
}
vrrp_instance VI_SPRAY {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority $prio
    advert_int 1
    virtual_ipaddress {
        $VIP/24 dev eth0
    }
    track_script {
        chk_spray
    }
    notify "$HA_DIR/notify.sh --spray $SPRAY --socket $d/spray.sock --services syslog"
}
CONF
    ip netns exec "ha-$n" keepalived -n -l -D -P -f "$d/keepalived.conf" -p "$d/keepalived.pid" \
        -r "$d/vrrp.pid" >"$d/keepalived.log" 2>&1 &
    pids+=($!)
}

run_case() {
    local case=$1
    echo "==> case $case"
    rm -f "$work"/*.json "$work"/*.ready
    up
    ip netns exec ha-be1 python3 "$HA_DIR/traffic.py" sink 514 "$work/be1.json" &
    pids+=($!)
    ip netns exec ha-be2 python3 "$HA_DIR/traffic.py" sink 514 "$work/be2.json" &
    pids+=($!)
    wait_for "sinks" 10 test -e "$work/be1.json.ready" -a -e "$work/be2.json.ready"
    start_node lb1 150
    start_node lb2 100
    wait_for "lb1 to become master" 20 has_vip ha-lb1
    wait_for "lb1's service enabled" 10 svc_is lb1 enabled
    wait_for "lb2's service disabled (backup)" 10 svc_is lb2 disabled
    has_vip ha-lb2 && { echo "error: both nodes hold the VIP" >&2; return 1; }
    echo "lb1 master (VIP, syslog enabled), lb2 backup (syslog disabled)"

    ip netns exec ha-client python3 "$HA_DIR/traffic.py" send "$VIP" 514 "$RATE" "$DURATION" "$work/sent.json" &
    local sender=$!
    sleep "$KILL_AT"
    local t0
    t0=$(date +%s.%N)
    case $case in
        keepalived-stop) kill -TERM "$(cat "$work/lb1/keepalived.pid")" ;;
        keepalived-kill) kill -KILL "$(cat "$work/lb1/vrrp.pid")" "$(cat "$work/lb1/keepalived.pid")" ;;
        spray-kill) kill -KILL "$(cat "$work/lb1/spray.pid")" ;;
        *) echo "error: unknown case $case" >&2; return 1 ;;
    esac
    wait_for "lb2 to take the VIP" 20 has_vip ha-lb2
    local t1
    t1=$(date +%s.%N)
    wait_for "lb2's service enabled" 10 svc_is lb2 enabled
    echo "lb2 holds the VIP $(python3 -c "print(round($t1 - $t0, 2))") s after the kill; syslog enabled on lb2"
    wait "$sender"
    sleep 0.5
    local lb2_rx
    lb2_rx=$("$SPRAY" ctl --socket "$work/lb2/spray.sock" list | awk '$1 == "UDP" { print $5 }')
    stop_all
    local r
    r=$(python3 "$HA_DIR/traffic.py" report "$work/sent.json" "$work/be1.json" "$work/be2.json")
    echo "result $case: $r lb2_forwarded=$lb2_rx"
    echo "$case $r" >>"$work/results"
    # Traffic must have resumed: the last second of the stream arrived in full, via lb2.
    python3 - "$r" "$RATE" "$lb2_rx" <<'PY'
import json, sys
r, rate, lb2 = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3] or 0)
ok = True
if r["lost"] > 0 and r["first_lost_at_ms"] is not None and r["received"] < r["sent"] - r["longest_gap"] - int(rate * 0.05):
    print(f"error: losses outside the switch: {r}"); ok = False
if r["outage_ms"] > 15000:
    print(f"error: outage of {r['outage_ms']} ms"); ok = False
if lb2 < rate:  # at least one second of traffic went through the new master
    print(f"error: lb2 forwarded only {lb2} datagrams"); ok = False
sys.exit(0 if ok else 1)
PY
}

failed=0
for c in "${CASES[@]}"; do
    if ! run_case "$c"; then
        echo "FAILED: $c (logs: $work)" >&2
        KEEP=1
        failed=$((failed + 1))
        stop_all
    fi
done
echo
echo "summary (RATE=$RATE/s, kill at ${KILL_AT}s of ${DURATION}s):"
cat "$work/results" 2>/dev/null || true
echo "$(( ${#CASES[@]} - failed )) passed, $failed failed"
[ $failed = 0 ]
