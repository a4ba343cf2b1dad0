#!/usr/bin/env bash
# End-to-end test of the DPDK dataplane in network namespaces (root only).
#
# Builds `spray` with the dpdk feature, sets up scripts/testbed.sh (client, Spray, three
# backends), runs Spray in spr-lb with `net_af_packet0,iface=lb0`, starts a counting UDP sink
# in each backend, sends datagrams from the client to an IPv4 and an IPv6 VIP, and checks
# that every datagram arrived and that round robin spread them exactly evenly. The testbed is
# always torn down (trap). Skips with a reason when not root or without libdpdk, unless
# SPRAY_REQUIRE_ALL=1.
#
#   scripts/netns-tests.sh              the test
#   COUNT=30000 RATE=50000 scripts/netns-tests.sh   more, faster
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

COUNT="${COUNT:-3000}"
RATE="${RATE:-20000}"
cargo build -q -p spray --features dpdk
SPRAY="$PWD/target/debug/spray"

work="$(mktemp -d)"
spray_pid=""
sink_pids=()
cleanup() {
    for p in "${sink_pids[@]}" $spray_pid; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/testbed.sh down
    rm -rf "$work"
}
trap cleanup EXIT

scripts/testbed.sh up

cat >"$work/spray.toml" <<TOML
[runtime]
dataplane = "dpdk"
log = "warn"

[dpdk]
no_huge = true
memory_mb = 256
file_prefix = "spray-netns-$$"
vdevs = ["net_af_packet0,iface=lb0,framecnt=4096"]

[[dpdk.ports]]
device = "net_af_packet0"
mac = "02:00:00:00:00:10"
gateway_mac = "02:00:00:00:00:01"

[services.syslog4]
vip = "198.18.0.10:514"
backends = [
  { addr = "198.19.1.1:5514", mac = "02:00:00:00:01:01" },
  { addr = "198.19.1.2:5514", mac = "02:00:00:00:01:02" },
  { addr = "198.19.1.3:5514", mac = "02:00:00:00:01:03" },
]

[services.syslog6]
vip = "[2001:db8::10]:514"
backends = [
  { addr = "[2001:db8::1:1]:5515", mac = "02:00:00:00:01:01" },
  { addr = "[2001:db8::1:2]:5515", mac = "02:00:00:00:01:02" },
  { addr = "[2001:db8::1:3]:5515", mac = "02:00:00:00:01:03" },
]
TOML

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

for i in 1 2 3; do
    ip netns exec "spr-be$i" python3 scripts/netns/sink.py 5514 5515 "$work/be$i.json" &
    sink_pids+=($!)
done
ip netns exec spr-lb "$SPRAY" run -c "$work/spray.toml" --stats-interval 1 >"$work/spray.log" 2>&1 &
spray_pid=$!
wait_for "$work/spray.log" "serving" 60
for i in 1 2 3; do
    for ((t = 0; t < 100; t++)); do [ -e "$work/be$i.json.ready" ] && break; sleep 0.1; done
    [ -e "$work/be$i.json.ready" ] || { echo "error: sink $i did not start" >&2; exit 1; }
done

ip netns exec spr-client python3 scripts/netns/send.py 198.18.0.10 514 "$COUNT" "$RATE"
ip netns exec spr-client python3 scripts/netns/send.py 2001:db8::10 514 "$COUNT" "$RATE"
sleep 1

kill -TERM "${sink_pids[@]}"
wait "${sink_pids[@]}"
sink_pids=()
kill -TERM "$spray_pid"
status=0
wait "$spray_pid" || status=$?
spray_pid=""
cat "$work/spray.log"
[ "$status" = 0 ] || { echo "error: spray exited with $status" >&2; exit 1; }
grep -Eq "mempool ([0-9]+)/\1 mbufs free" "$work/spray.log" \
    || { echo "error: mempool not full after stop" >&2; exit 1; }

python3 - "$COUNT" "$work"/be1.json "$work"/be2.json "$work"/be3.json <<'PY'
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
print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
sys.exit(0 if ok else 1)
PY
# The end-to-end suite with real servers and clients (rsyslog, loggen, dnsmasq, dnsperf), CI mode.
if [ "$(id -u)" = 0 ]; then SPRAY="$SPRAY" scripts/e2e/run.sh --quick; fi
