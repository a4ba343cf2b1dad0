#!/usr/bin/env bash
# Spray end to end with the programs users already run (issue 7): rsyslog, logger, loggen,
# dnsmasq, dnsperf and nginx, in network namespaces this script creates and always removes.
#
#   scripts/e2e/run.sh [--quick] [--dataplane socket|dpdk|both] [--keep] [--only LIST]
#
#   --quick       CI mode (~1 min): lower rates, no nginx comparison, no pitfalls. Socket
#                 mode: syslog spread + nothing lost, the DNS check (every answer from the
#                 VIP, spread per query, dnsperf at a moderate rate). DPDK mode (when
#                 libdpdk is there): the same, plus the two-VIP failover under load (TCP
#                 checks, passive detection) and the client's address at the backends.
#   --dataplane   which of Spray's dataplanes to test (default: both when libdpdk is there);
#                 dpdk uses net_af_packet on a veth, with static MACs (static entries; Spray
#                 can also resolve them); its health checks leave from the kernel of the
#                 Spray namespace, through an address of its own (198.19.1.253).
#   --keep        keep the work directory (logs, configs, what the backends logged).
#   --only LIST   comma-separated test names (syslog, failover, dns, transparent).
#
# Needs root. Installs the Debian packages it lacks (rsyslog, bsdutils, dnsmasq-base,
# dnsperf, nginx-light, libnginx-mod-stream) and extracts loggen from syslog-ng-core into
# target/e2e-tools (syslog-ng-core conflicts with rsyslog, so it is never installed).
# Prints a summary table; exit status 0 when every test that ran passed. Environment:
#   SPRAY=PATH    use this spray binary instead of building one
#   RATE_SCALE=F  multiply every send rate by F (default 1)
#   RUNS=N        dnsperf runs per peer in the full suite (default 3; the median is reported)
#   DPDK_FRAMES=N net_af_packet ring frames (default 65536)
#   E2E_NS_PREFIX namespace name prefix (default e2e-PID-)
# What each test proves and the figures measured: docs/e2e.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/scripts/e2e
# shellcheck source=lib.sh
source "$HERE/lib.sh"

QUICK=0
KEEP=0
DATAPLANE=""
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --dataplane)
            DATAPLANE=${2:-}
            shift
            ;;
        --dataplane=*) DATAPLANE=${1#*=} ;;
        --only)
            ONLY=${2:-}
            shift
            ;;
        --only=*) ONLY=${1#*=} ;;
        -h | --help)
            sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "usage: $0 [--quick] [--dataplane socket|dpdk|both] [--keep] [--only LIST]" >&2
            exit 2
            ;;
    esac
    shift
done
if [ "$(id -u)" != 0 ]; then
    echo "error: the end-to-end suite needs root (network namespaces)" >&2
    exit 2
fi
HAVE_DPDK=0
pkg-config --exists 'libdpdk >= 22.11' 2>/dev/null && HAVE_DPDK=1
if [ -z "$DATAPLANE" ]; then
    if [ "$HAVE_DPDK" = 0 ]; then DATAPLANE=socket; else DATAPLANE=both; fi
fi
case "$DATAPLANE" in
    socket | dpdk | both) ;;
    *)
        echo "error: --dataplane socket|dpdk|both" >&2
        exit 2
        ;;
esac
want_dp() { [ "$DATAPLANE" = both ] || [ "$DATAPLANE" = "$1" ]; }
want_test() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
RATE_SCALE=${RATE_SCALE:-1}
RUNS=${RUNS:-3}
scale() { awk -v r="$1" -v s="$RATE_SCALE" 'BEGIN { printf "%d", r * s }'; }

E2E_WORK=$(mktemp -d /tmp/spray-e2e.XXXXXX)
export E2E_WORK
mkdir -p "$E2E_WORK/logs"
: >"$E2E_WORK/pids"
RESULTS=$E2E_WORK/results.tsv
: >"$RESULTS"
FAILED=0
DPDK_PREFIX="spray-e2e-$$"
STARTED_BY_INSTALL=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    topo_down
    rm -rf "/var/run/dpdk/$DPDK_PREFIX"
    if [ -s "$RESULTS" ]; then
        echo
        echo "==> summary ($(if [ "$QUICK" = 1 ]; then echo quick; else echo full; fi) suite, dataplane: $DATAPLANE)"
        python3 "$HERE/e2e.py" summary "$RESULTS"
    fi
    [ -z "$STARTED_BY_INSTALL" ] || echo "note: stopped what the package install started: $STARTED_BY_INSTALL"
    if [ "$KEEP" = 1 ] || [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
        echo "work directory kept: $E2E_WORK"
    else
        rm -rf "$E2E_WORK"
    fi
    if [ "$rc" = 0 ] && [ "$FAILED" != 0 ]; then rc=1; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- dependencies

# Daemons the packages may start in the root namespace on install (no policy-rc.d, or a
# real init): whatever appears there during our apt-get is stopped again, by PID. Only the
# root network namespace's: others' nginx in their own testbeds is none of our business.
daemons() {
    local p root
    root=$(readlink /proc/1/ns/net)
    for p in $(pgrep -x 'rsyslogd|dnsmasq|nginx' 2>/dev/null); do
        [ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" = "$root" ] && echo "$p"
    done | sort -n
}

install_deps() {
    local need=() before after p
    command -v rsyslogd >/dev/null || need+=(rsyslog)
    command -v logger >/dev/null || need+=(bsdutils)
    command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
    command -v dnsperf >/dev/null || need+=(dnsperf)
    if [ "$QUICK" = 0 ]; then
        command -v nginx >/dev/null || need+=(nginx-light)
        [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
    fi
    command -v ss >/dev/null || need+=(iproute2)
    command -v ethtool >/dev/null || need+=(ethtool)
    # What loggen links to, besides its own libraries. (Not `ldconfig -p | grep -q`: with
    # pipefail, grep's early exit fails the pipe with SIGPIPE and the package is reinstalled.)
    local libs
    libs=$(ldconfig -p)
    grep -q 'libglib-2.0.so.0 ' <<<"$libs" || need+=(libglib2.0-0)
    grep -q 'libssl.so.3 ' <<<"$libs" || need+=(libssl3)
    if [ ${#need[@]} -gt 0 ]; then
        echo "==> installing ${need[*]}"
        before=$(daemons)
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
            >"$E2E_WORK/logs/apt.log" 2>&1 || {
            apt-get update -q >>"$E2E_WORK/logs/apt.log" 2>&1
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                "${need[@]}" >>"$E2E_WORK/logs/apt.log" 2>&1
        } || {
            echo "error: apt-get install ${need[*]} failed (see $E2E_WORK/logs/apt.log)" >&2
            return 1
        }
        after=$(daemons)
        for p in $(comm -13 <(echo "$before") <(echo "$after")); do
            STARTED_BY_INSTALL="$STARTED_BY_INSTALL $(ps -o comm= -p "$p")($p)"
            kill -TERM "$p" 2>/dev/null || true
        done
    fi
    # loggen: from syslog-ng-core, extracted (never installed: it conflicts with rsyslog).
    TOOLS=$ROOT/target/e2e-tools
    LOGGEN_ROOT=$TOOLS/syslog-ng-core
    if [ ! -x "$LOGGEN_ROOT/usr/bin/loggen" ]; then
        echo "==> extracting loggen from syslog-ng-core"
        mkdir -p "$TOOLS/deb"
        (cd "$TOOLS/deb" && rm -f syslog-ng-core_*.deb &&
            apt-get download syslog-ng-core >>"$E2E_WORK/logs/apt.log" 2>&1 ||
            { apt-get update -q >>"$E2E_WORK/logs/apt.log" 2>&1 &&
                apt-get download syslog-ng-core >>"$E2E_WORK/logs/apt.log" 2>&1; }) || {
            echo "error: apt-get download syslog-ng-core failed" >&2
            return 1
        }
        rm -rf "$LOGGEN_ROOT"
        dpkg -x "$TOOLS"/deb/syslog-ng-core_*.deb "$LOGGEN_ROOT"
    fi
    LOGGEN=(env "LD_LIBRARY_PATH=$LOGGEN_ROOT/usr/lib/syslog-ng" "SYSLOGNG_PREFIX=$LOGGEN_ROOT/usr"
        "$LOGGEN_ROOT/usr/bin/loggen")
    if "${LOGGEN[@]}" --help 2>&1 | grep -q 'not found\|error while loading'; then
        local libs
        libs=$(LD_LIBRARY_PATH="$LOGGEN_ROOT/usr/lib/syslog-ng" ldd "$LOGGEN_ROOT/usr/bin/loggen" |
            awk '/not found/ {print $1}')
        echo "error: loggen lacks libraries: $libs" >&2
        return 1
    fi
    RSYSLOGD=$(command -v rsyslogd)
    DNSMASQ=$(command -v dnsmasq)
    DNSPERF=$(command -v dnsperf)
    NGINX=$(command -v nginx || true)
}

build_spray() {
    if [ -n "${SPRAY:-}" ]; then
        echo "==> using $SPRAY"
        return 0
    fi
    local args=(-p spray) profile=debug
    [ "$HAVE_DPDK" = 1 ] && args+=(--features dpdk)
    if [ "$QUICK" = 0 ]; then
        args+=(--release)
        profile=release
    fi
    echo "==> cargo build ${args[*]}"
    cargo build -q "${args[@]}" || return 1
    SPRAY=$ROOT/target/$profile/spray
}

# ---------------------------------------------------------------- test harness

# fig TEXT: one figure of the running test, shown in the summary.
fig() { echo "$*" >>"$E2E_WORK/fig"; }
# skip REASON: the running test did not apply (exit status 77).
skip_test() {
    fig "$*"
    exit 77
}

# run_test NAME DATAPLANE FUNCTION: runs FUNCTION in a subshell with `set -e`; whatever it
# started is stopped afterwards, pass or fail.
run_test() {
    local name=$1 dp=$2 fn=$3 rc status figs
    want_test "$name" || return 0
    : >"$E2E_WORK/fig"
    echo
    echo "==> $name ($dp)"
    # In the background, so that a signal to this script is handled at once (bash runs
    # traps only between commands, and `wait` is interruptible); the subshell is recorded
    # like every other process, so the cleanup stops it too.
    (
        set -euo pipefail
        "$fn"
    ) > >(tee "$E2E_WORK/logs/test-$name-$dp.log") 2>&1 &
    local tpid=$!
    echo "$tpid test-$name $(starttime "$tpid")" >>"$E2E_WORK/pids"
    rc=0
    wait "$tpid" || rc=$?
    sed -i "/^$tpid /d" "$E2E_WORK/pids"
    stop_all
    case $rc in
        0) status=PASS ;;
        77) status=SKIP ;;
        *)
            status=FAIL
            FAILED=$((FAILED + 1))
            ;;
    esac
    if [ "$status" = FAIL ]; then # the first error, for the summary
        grep -m1 'error' "$E2E_WORK/logs/test-$name-$dp.log" | sed 's/^ *//' | cut -c1-160 >>"$E2E_WORK/fig" || true
    fi
    figs=$(paste -sd '|' "$E2E_WORK/fig" | sed 's/|/ | /g')
    printf '%s\t%s\t%s\t%s\n' "$name" "$dp" "$status" "$figs" >>"$RESULTS"
    echo "--> $name ($dp): $status"
}
# check LABEL ARGS...: runs `e2e.py ARGS`, keeps its output; fails the test if it fails.
# check_in NS LABEL ARGS...: the same inside namespace NS (the DNS client).
check() { check_in - "$@"; }
check_in() {
    local ns=$1 label=$2 pre=()
    shift 2
    [ "$ns" = - ] || pre=(ip netns exec "$ns")
    echo "  [$label]"
    local rc=0
    "${pre[@]}" python3 "$HERE/e2e.py" "$@" >"$E2E_WORK/check.out" || rc=$?
    cat "$E2E_WORK/check.out"
    grep '^RESULT ' "$E2E_WORK/check.out" | sed 's/^RESULT //' >"$E2E_WORK/check.json"
    [ "$rc" = 0 ] || diag
    return "$rc"
}
# jget KEY: a figure of the last check.
jget() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$E2E_WORK/check.json" "$1"; }

now() { date +%s.%N; }

# ---------------------------------------------------------------- Spray and nginx

SPRAY_SOCK=$E2E_WORK/spray.sock
spray_start() { # CONF
    rm -f "$SPRAY_SOCK"
    bg spray "$E2E_NS_LB" "$SPRAY" run -c "$1" --log-level info
    local i
    for ((i = 0; i < 600; i++)); do
        grep -q "serving" "$E2E_WORK/logs/spray.log" && return 0
        kill -0 "$(pid_of spray)" 2>/dev/null || break
        sleep 0.1
    done
    echo "error: spray did not start:" >&2
    cat "$E2E_WORK/logs/spray.log" >&2
    return 1
}
spray_stop() { stop spray; }
sctl() { "$SPRAY" ctl --socket "$SPRAY_SOCK" "$@"; }

# The socket-mode config header; $1: extra [socket] keys.
spray_socket_conf() {
    cat <<EOF
[runtime]
dataplane = "socket"
workers = 2
log = "info"

[socket]
rcvbuf = 8388608
$1

[control]
socket = "$SPRAY_SOCK"
EOF
}
# net_af_packet's ring (frames of 2 KiB, as many again for tx): loggen's one-second burst
# and the worker being descheduled on a busy 2-vCPU machine must fit (docs/e2e.md).
DPDK_FRAMES=${DPDK_FRAMES:-65536}
spray_dpdk_conf() {
    cat <<EOF
[runtime]
dataplane = "dpdk"
log = "info"

[dpdk]
no_huge = true
memory_mb = 256
file_prefix = "$DPDK_PREFIX"
vdevs = ["net_af_packet0,iface=lb0,framecnt=$DPDK_FRAMES"]

[[dpdk.ports]]
device = "net_af_packet0"
mac = "$SPRAY_MAC"
gateway_mac = "$CLI_MAC"

[control]
socket = "$SPRAY_SOCK"
EOF
}
# backends_toml PORT [MAC] [6]: the three backends as a TOML array (IPv6 with 6).
backends_toml() {
    local port=$1 mac=${2:-} v6=${3:-} i sep="" out="[" a
    for i in 1 2 3; do
        a=198.19.1.$i${port:+:$port}
        [ -z "$v6" ] || a="[2001:db8:1::$i]${port:+:$port}"
        out+="$sep{ addr = \"$a\"${mac:+, mac = \"02:00:00:00:01:0$i\"} }"
        sep=", "
    done
    echo "$out]"
}

nginx_start() {
    mkdir -p "$E2E_WORK/nginx"
    cat >"$E2E_WORK/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 1;
pid $E2E_WORK/nginx/nginx.pid;
error_log $E2E_WORK/nginx/error.log warn;
events { worker_connections 16384; }
stream {
    # Per-datagram round robin (LAB-NOTES): one "session" per datagram.
    upstream syslog { $(for i in 1 2 3; do printf 'server 198.19.1.%s:514; ' "$i"; done)}
    server {
        listen $VIP_NGINX:514 udp reuseport rcvbuf=4m;
        proxy_pass syslog;
        proxy_requests 1;
        proxy_responses 0;
    }
    upstream dns { $(for i in 1 2 3; do printf 'server 198.19.1.%s:53; ' "$i"; done)}
    server {
        listen $VIP_DNS_NGINX:53 udp reuseport rcvbuf=4m;
        proxy_pass dns;
        proxy_requests 1;
        proxy_responses 1;
        proxy_timeout 2s;
    }
}
EOF
    bg nginx "$E2E_NS_LB" "$NGINX" -e "$E2E_WORK/nginx/error.log" -p "$E2E_WORK/nginx" -c "$E2E_WORK/nginx/nginx.conf"
    wait_udp "$E2E_NS_LB" "$VIP_NGINX" 514 10
}

# ---------------------------------------------------------------- senders

# logger_send NS VIP PORT STREAM COUNT RATE: COUNT numbered lines through one `logger`
# (one socket, so one flow); the achieved rate goes to $E2E_WORK/sent-STREAM.json.
logger_send() {
    local ns=$1 vip=$2 port=$3 stream=$4 count=$5 rate=$6
    python3 "$HERE/e2e.py" pace --stream "$stream" --rate "$rate" --count "$count" \
        --sent "$E2E_WORK/sent-$stream.json" --schedule "$E2E_WORK/sched-$stream.sched" |
        in_ns "$ns" logger -n "$vip" -P "$port" -d --rfc3164 -t e2e
}
sent_rate() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['rate']))" "$E2E_WORK/sent-$1.json"; }

# wait_logged N FILES...: until the backends have logged N numbered lines in all (or the
# count has not moved for 3 s).
wait_logged() {
    local n=$1 last=-1 same=0 c
    shift
    while :; do
        c=$(cat "$@" 2>/dev/null | grep -c 'seq' || true)
        [ "$c" -ge "$n" ] && return 0
        if [ "$c" = "$last" ]; then
            same=$((same + 1))
            [ $same -ge 30 ] && return 0
        else
            same=0
        fi
        last=$c
        sleep 0.1
    done
}

be_files() { # TAG: the three backends' log files of a test
    local i
    for i in 1 2 3; do echo "$E2E_WORK/be$i/$1.log"; done
}
# rsyslog_all TAG: three rsyslogs writing to beN/TAG.log.
rsyslog_all() {
    local i
    for i in 1 2 3; do rsyslog_start "$i" "$1"; done
    rsyslog_wait 1 2 3
}

# diag: where datagrams may have been dropped (printed when a check fails).
diag() {
    local ns d
    echo "  -- diagnostics"
    echo "  softnet backlog drops (machine-wide): $(python3 -c '
import sys; print(sum(int(l.split()[1], 16) for l in open("/proc/net/softnet_stat")))')"
    for ns in "${E2E_ALL_NS[@]}"; do
        ip netns list | grep -qw "$ns" || continue
        printf '  %s: udp RcvbufErrors %s; link rx/tx dropped:' "$ns" "$(udp_drops "$ns")"
        for d in $(in_ns "$ns" ls /sys/class/net); do
            [ "$d" = lo ] && continue
            printf ' %s %s/%s' "$d" "$(in_ns "$ns" cat "/sys/class/net/$d/statistics/rx_dropped")" \
                "$(in_ns "$ns" cat "/sys/class/net/$d/statistics/tx_dropped")"
        done
        echo
    done
    echo "  packet sockets in $E2E_NS_LB (d = drops, e.g. a full net_af_packet ring): $(packet_drops)"
    [ -z "$(pid_of spray)" ] || sctl stats 2>/dev/null | grep -v ' 0$' | head -30 | sed 's/^/  /'
}
# packet_drops: the drop counts of the packet sockets in e2e-lb (DPDK's net_af_packet).
# Their skmem "d" (sk_drops) counts only what the socket itself refused: a full rx *ring*
# (tpacket_rcv) is not counted there, nor in the 22.11 PMD's imissed; see ring_snap.
packet_drops() {
    in_ns "$E2E_NS_LB" ss -0 -a -m 2>/dev/null | grep -o 'd[0-9]*)' | tr -d 'd)' | paste -sd' '
}
# ring_snap: "FRAMES_IN READ_BY_SPRAY": what the kernel received on lb0 (rx_packets, counted
# before the packet socket's ring) and what Spray read from the ring (its rx_packets). The
# difference between two snapshots, Spray running in between, is what the net_af_packet
# ring dropped: lost before Spray. Taken when no traffic flows: consistent once lb0's count
# has not moved while Spray had 0.2 s to empty its ring (at most 20 tries).
ring_snap() {
    local l1 l2 spray_rx i
    for ((i = 0; i < 20; i++)); do
        l1=$(in_ns "$E2E_NS_LB" cat /sys/class/net/lb0/statistics/rx_packets)
        sleep 0.2
        spray_rx=$(sctl --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["rx_packets"])')
        l2=$(in_ns "$E2E_NS_LB" cat /sys/class/net/lb0/statistics/rx_packets)
        [ "$l1" != "$l2" ] || break
    done
    echo "$l2 $spray_rx"
}
# before_spray SNAP: frames lost before Spray since ring_snap printed SNAP (prints it, and
# a line saying so).
before_spray() {
    local a b c d
    read -r a b <<<"$1"
    read -r c d <<<"$(ring_snap)"
    echo "  lb0 received $((c - a)) frames, Spray read $((d - b)) of them from the net_af_packet ring: lost before Spray $((c - a - d + b))" >&2
    echo $((c - a - d + b))
}
# udp_in NS: "InDatagrams" of the namespace: UDP datagrams delivered to its sockets.
udp_in() {
    in_ns "$1" awk '/^Udp:/ { if (h) { print $2; exit } h = 1 }' /proc/net/snmp
}
# udp_drops NS: "RcvbufErrors" of the namespace (/proc/net/snmp, not nstat: see LAB-NOTES).
udp_drops() {
    in_ns "$1" awk '/^Udp:/ { if (h) { print $6; exit } h = 1 }' /proc/net/snmp
}

# shellcheck source=tests.sh
source "$HERE/tests.sh"

# ---------------------------------------------------------------- main

install_deps || exit 1
build_spray || exit 1
START=$(date +%s)
if want_dp socket; then
    echo
    echo "==> socket mode: testbed up"
    topo_up socket
    DP=socket
    run_test syslog socket t_syslog
    run_test dns socket t_dns
    if [ "$QUICK" = 0 ]; then
        run_test failover socket t_failover
        run_test transparent socket t_transparent
    fi
    stop_all
    topo_down
fi
if want_dp dpdk; then
    echo
    DP=dpdk
    if [ "$HAVE_DPDK" = 0 ]; then
        printf 'all\tdpdk\tSKIP\tlibdpdk >= 22.11 not found\n' >>"$RESULTS"
    else
        echo "==> dpdk mode (net_af_packet on veth lb0): testbed up"
        topo_up dpdk
        run_test syslog dpdk t_syslog
        run_test dns dpdk t_dns
        run_test failover dpdk t_failover
        run_test transparent dpdk t_transparent
        stop_all
        topo_down
    fi
fi
echo
echo "==> done in $(($(date +%s) - START)) s"
