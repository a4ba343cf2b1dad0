#!/usr/bin/env bash
# BGP test (root): a Spray node announces its VIP to a BIRD router only while the VIP has a
# healthy backend. Namespaces (created and removed here), 198.18.0.0/15 only:
#
#   bgp-rtr  eth0 198.18.2.1/24  -- BIRD, AS 65000
#   bgp-lb   eth0 198.18.2.2/24  -- BIRD, AS 65001 + spray (socket mode) + bgp-announce.sh
#            eth1 198.18.3.2/24
#   bgp-be   eth0 198.18.3.11/24 -- UDP sink :514 (the backend)
#
# Asserts: the router learns 198.18.0.100/32 from the node; it is withdrawn when the only
# backend dies (its UDP check gets ICMP port unreachable); it is announced again when the
# backend comes back.
set -euo pipefail
cd "$(dirname "$0")/../.."
HA_DIR="$PWD/scripts/ha"
. "$HA_DIR/lib.sh" # skip, in_ns, wait_for
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
for t in ip python3 bird birdc; do
    command -v "$t" >/dev/null || skip "$t not installed (apt-get install -y bird2)"
done
if [ -z "${SPRAY:-}" ]; then
    cargo build -q -p spray
    SPRAY="$PWD/target/debug/spray"
fi
VIP=198.18.0.100
NSS=(bgp-rtr bgp-lb bgp-be)
work=$(mktemp -d /tmp/spray-bgp.XXXXXX)
pids=()
sink_pid=""
cleanup() {
    local p
    for p in "${pids[@]}" $sink_pid; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}" $sink_pid; do wait "$p" 2>/dev/null || true; done
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then echo "logs in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
in_ns bgp-rtr ip link add eth0 type veth peer name eth0 netns bgp-lb
in_ns bgp-lb ip link add eth1 type veth peer name eth0 netns bgp-be
in_ns bgp-rtr ip addr add 198.18.2.1/24 dev eth0
in_ns bgp-lb ip addr add 198.18.2.2/24 dev eth0
in_ns bgp-lb ip addr add 198.18.3.2/24 dev eth1
in_ns bgp-be ip addr add 198.18.3.11/24 dev eth0
for pair in bgp-rtr:eth0 bgp-lb:eth0 bgp-lb:eth1 bgp-be:eth0; do
    in_ns "${pair%%:*}" ethtool -K "${pair#*:}" tx off >/dev/null 2>&1 || true
    in_ns "${pair%%:*}" ip link set "${pair#*:}" up
done
in_ns bgp-lb sysctl -qw net.ipv4.ip_nonlocal_bind=1

cat >"$work/rtr.conf" <<CONF
router id 198.18.2.1;
log "$work/rtr.log" all;
protocol device { }
protocol bgp spray1 {
    local 198.18.2.1 as 65000;
    neighbor 198.18.2.2 as 65001;
    hold time 6;
    ipv4 { import all; export none; };
}
CONF
cat >"$work/lb.conf" <<CONF
router id 198.18.2.2;
log "$work/lb-bird.log" all;
protocol device { }
protocol static vip_syslog { disabled; ipv4; route $VIP/32 blackhole; }
protocol bgp uplink {
    local 198.18.2.2 as 65001;
    neighbor 198.18.2.1 as 65000;
    hold time 6;
    ipv4 { import none; export where source = RTS_STATIC; };
}
CONF
cat >"$work/spray.toml" <<TOML
[runtime]
log = "info"
[control]
socket = "$work/spray.sock"
[services.syslog]
vip = "$VIP:514"
backends = [ { addr = "198.18.3.11:514" } ]
[services.syslog.check]
type = "udp"
interval_ms = 200
timeout_ms = 100
rise = 2
fall = 2
TOML

ip netns exec bgp-rtr bird -f -c "$work/rtr.conf" -s "$work/rtr.ctl" -P "$work/rtr.pid" &
pids+=($!)
ip netns exec bgp-lb bird -f -c "$work/lb.conf" -s "$work/lb.ctl" -P "$work/lb.pid" &
pids+=($!)
start_sink() {
    rm -f "$work/be.json.ready"
    ip netns exec bgp-be python3 "$HA_DIR/traffic.py" sink 514 "$work/be.json" &
    sink_pid=$!
    wait_for "the sink" 10 test -e "$work/be.json.ready"
}
start_sink
ip netns exec bgp-lb "$SPRAY" run -c "$work/spray.toml" --stats-interval 0 >"$work/spray.log" 2>&1 &
pids+=($!)
wait_for "spray" 20 "$SPRAY" ctl --socket "$work/spray.sock" version
ip netns exec bgp-lb "$HA_DIR/bgp-announce.sh" --spray "$SPRAY" --socket "$work/spray.sock" \
    --birdc-socket "$work/lb.ctl" --interval 0.5 >"$work/announce.log" 2>&1 &
pids+=($!)

announced() { in_ns bgp-rtr birdc -s "$work/rtr.ctl" show route "$VIP/32" | grep -q "^$VIP/32"; }
withdrawn() { ! announced; }
elapsed() { python3 -c "import time; print(round(time.monotonic() - $1, 1))"; }
now() { python3 -c "import time; print(time.monotonic())"; }

t=$(now)
wait_for "the router to learn $VIP/32" 60 announced
echo "announced: the router has $VIP/32 from the Spray node after $(elapsed "$t") s"
in_ns bgp-rtr birdc -s "$work/rtr.ctl" show route "$VIP/32" | sed -n '2,3p'

kill -TERM "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; sink_pid=""
t=$(now)
wait_for "the withdrawal after the backend died" 30 withdrawn
echo "withdrawn: $(elapsed "$t") s after the only backend died"

start_sink
t=$(now)
wait_for "the re-announcement" 30 announced
echo "re-announced: $(elapsed "$t") s after the backend came back"
cat "$work/announce.log"
echo "1 passed, 0 failed"
