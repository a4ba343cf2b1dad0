# shellcheck shell=bash
# Shared pieces of the end-to-end suite (sourced by scripts/e2e/run.sh): the testbed, the
# processes the suite starts (tracked by PID), and the real servers' configurations.
#
# The testbed, one Ethernet segment (bridge br0 inside e2e-lb), two IP networks on it
# (e2e- stands for $E2E_NS_PREFIX, e2e-PID- by default):
#
#   e2e-cli   c0  198.18.0.1/24  2001:db8::1/64     02:00:00:00:00:01   client (NAT tests)
#   e2e-cli2  c0  198.18.0.2/24  2001:db8::2/64     02:00:00:00:00:02   client (DR tests)
#   e2e-beN   b0  198.19.1.N/24  2001:db8:1::N/64   02:00:00:00:01:0N   backends, N = 1..3
#   e2e-lb    br0 (the switch) and, per dataplane:
#     socket: br0 has 198.18.0.254/24 + the VIPs, 198.19.1.254/24 (2001:db8::fe, 2001:db8:1::fe);
#             clients and backends route through those addresses;
#     dpdk:   lb0 (veth, peer lb0-br in br0, no address, IPv6 off, arp_ignore=1) is Spray's
#             net_af_packet port, MAC 02:00:00:00:00:10; every neighbour entry that would
#             need ARP to Spray is static (the suite predates Spray's ARP/NDP; static entries
#             still work). br0 has 198.19.1.253/24 only: the kernel of the Spray host, which
#             runs the health checks (as in scripts/testbed.sh), reaches the backends through
#             it; it does not route (ip_forward=0). br0 also holds nginx's VIPs (.12, .54)
#             for the comparison, run while Spray is stopped.
#
# Only 198.18.0.0/15 and 2001:db8::/32; every link is created inside a namespace (the root
# namespace is never touched); TX checksum offload is off on every veth.

# Namespace names: E2E_NS_PREFIX (default e2e-PID-, PID of run.sh), so that two runs of
# the suite (other engineers' worktrees) and the other testbeds (spr-*, ha-*, bgp-*, the
# benchmark's) never share a namespace.
E2E_NS_PREFIX=${E2E_NS_PREFIX:-e2e-$$-}
E2E_NS_LB=${E2E_NS_PREFIX}lb
E2E_NS_CLI=${E2E_NS_PREFIX}cli
E2E_NS_CLI2=${E2E_NS_PREFIX}cli2
E2E_BACKENDS=("${E2E_NS_PREFIX}be1" "${E2E_NS_PREFIX}be2" "${E2E_NS_PREFIX}be3")
E2E_ALL_NS=("$E2E_NS_CLI" "$E2E_NS_CLI2" "${E2E_BACKENDS[@]}" "$E2E_NS_LB")
SPRAY_MAC=02:00:00:00:00:10
CLI_MAC=02:00:00:00:00:01
LB_CLI_IP=198.18.0.254
LB_BE_IP=198.19.1.254
LB_CHECK_IP=198.19.1.253
# VIPs: Spray's syslog pair (the two-VIP scenario), nginx's syslog, Spray's and nginx's DNS,
# and the DPDK DR VIP (held by the backends on lo).
VIP_A=198.18.0.10
VIP_B=198.18.0.11
VIP_NGINX=198.18.0.12
VIP_DNS=198.18.0.53
VIP_DNS_NGINX=198.18.0.54
VIP_DR=198.18.0.20
VIP6_A=2001:db8::10

in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}
be_ip() { echo "198.19.1.$1"; }

# ---- processes: every one the suite starts is recorded as "PID NAME" in $E2E_WORK/pids ----

# bg NAME NS CMD...: runs CMD in namespace NS (NS "-" = here), output to logs/NAME.log.
bg() {
    local name=$1 ns=$2 k=1
    shift 2
    # Keep the log of an earlier process of the same name: NAME.log becomes NAME.K.log.
    if [ -e "$E2E_WORK/logs/$name.log" ]; then
        while [ -e "$E2E_WORK/logs/$name.$k.log" ]; do k=$((k + 1)); done
        mv "$E2E_WORK/logs/$name.log" "$E2E_WORK/logs/$name.$k.log"
    fi
    if [ "$ns" = - ]; then
        "$@" >"$E2E_WORK/logs/$name.log" 2>&1 &
    else
        ip netns exec "$ns" "$@" >"$E2E_WORK/logs/$name.log" 2>&1 &
    fi
    echo "$! $name $(starttime $!)" >>"$E2E_WORK/pids"
    eval "PID_${name//[^A-Za-z0-9]/_}=$!"
}
pid_of() {
    local v="PID_${1//[^A-Za-z0-9]/_}"
    echo "${!v:-}"
}
# starttime PID: when the process started (clock ticks since boot), so that a recorded PID
# that has since been reused by someone else's process is never signalled.
starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }
# alive PID: running (a zombie, dead but not yet reaped, is not).
alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
# stop NAME [SIGNAL]: signals the process started as NAME and waits for it (at most 5 s,
# then SIGKILL).
stop() {
    local name=$1 sig=${2:-TERM} pid
    pid=$(pid_of "$name")
    [ -n "$pid" ] || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.05
    done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
    sed -i "/^$pid /d" "$E2E_WORK/pids"
    eval "PID_${name//[^A-Za-z0-9]/_}="
}
# crash NAME: SIGKILL, quietly (no job-control notice).
crash() { stop "$1" KILL 2>/dev/null; }
# stop_all: every process still recorded, newest first (TERM, then KILL after 5 s).
stop_all() {
    [ -s "$E2E_WORK/pids" ] || return 0
    local pids="" pid name st
    while read -r pid name st; do
        [ -n "$st" ] && [ "$(starttime "$pid")" = "$st" ] && pids="$pids $pid"
    done < <(tac "$E2E_WORK/pids")
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    local i p alive=""
    for ((i = 0; i < 50; i++)); do
        alive=""
        for p in $pids; do alive "$p" && alive="$alive $p"; done
        [ -n "$alive" ] || break
        sleep 0.1
    done
    for p in $alive; do kill -KILL "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    : >"$E2E_WORK/pids"
}

# wait_file FILE PATTERN SECONDS: until FILE has a line matching PATTERN.
wait_file() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: timed out after $3 s waiting for /$2/ in $1" >&2
    tail -20 "$1" >&2 2>/dev/null || true
    return 1
}
# wait_udp NS ADDR PORT SECONDS: until a UDP socket is bound to ADDR:PORT (or *:PORT) in NS.
wait_udp() {
    local ns=$1 addr=$2 port=$3 i
    for ((i = 0; i < $4 * 10; i++)); do
        if in_ns "$ns" ss -Hlun "sport = :$port" | grep -qE "($addr|\*|0\.0\.0\.0|\[::\]):$port"; then
            return 0
        fi
        sleep 0.1
    done
    echo "error: nothing bound to udp $addr:$port in $ns after $4 s" >&2
    return 1
}

# ---- the testbed ----

topo_down() {
    local ns pids i
    # Anything still running inside our namespaces is ours (a process whose PID was not yet
    # recorded when a signal interrupted the suite): TERM, then KILL.
    for i in 1 2 3; do
        pids=""
        for ns in "${E2E_ALL_NS[@]}"; do
            pids="$pids $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
        done
        [ -n "${pids// /}" ] || break
        # shellcheck disable=SC2086
        if [ "$i" -lt 3 ]; then kill -TERM $pids 2>/dev/null; else kill -KILL $pids 2>/dev/null; fi
        sleep 0.5
    done
    for ns in "${E2E_ALL_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}

# veth DEV in NS, its peer PEER in e2e-lb on br0.
topo_link() {
    local ns=$1 dev=$2 peer=$3 mac=$4
    in_ns "$E2E_NS_LB" ip link add "$peer" type veth peer name "$dev" netns "$ns"
    in_ns "$E2E_NS_LB" ip link set "$peer" master br0 up
    in_ns "$E2E_NS_LB" ethtool -K "$peer" tx off >/dev/null
    in_ns "$ns" ip link set "$dev" address "$mac"
    in_ns "$ns" ethtool -K "$dev" tx off >/dev/null
    in_ns "$ns" ip link set "$dev" up
}

# topo_up socket|dpdk
topo_up() {
    local mode=$1 ns i
    topo_down
    for ns in "${E2E_ALL_NS[@]}"; do
        ip netns add "$ns"
        in_ns "$ns" ip link set lo up
        in_ns "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    done
    in_ns "$E2E_NS_LB" ip link add br0 type bridge
    in_ns "$E2E_NS_LB" ip link set br0 up

    topo_link "$E2E_NS_CLI" c0 c1-br "$CLI_MAC"
    in_ns "$E2E_NS_CLI" ip addr add 198.18.0.1/24 dev c0
    in_ns "$E2E_NS_CLI" ip addr add 2001:db8::1/64 dev c0 nodad
    topo_link "$E2E_NS_CLI2" c0 c2-br 02:00:00:00:00:02
    in_ns "$E2E_NS_CLI2" ip addr add 198.18.0.2/24 dev c0
    in_ns "$E2E_NS_CLI2" ip addr add 2001:db8::2/64 dev c0 nodad
    for i in 1 2 3; do
        ns=${E2E_BACKENDS[i - 1]}
        topo_link "$ns" b0 "b$i-br" "02:00:00:00:01:0$i"
        in_ns "$ns" ip addr add "198.19.1.$i/24" dev b0
        in_ns "$ns" ip addr add "2001:db8:1::$i/64" dev b0 nodad
        # Direct routing: the DR VIP on lo, never answered for in ARP.
        in_ns "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
        in_ns "$ns" ip addr add "$VIP_DR/32" dev lo
    done

    if [ "$mode" = socket ]; then
        in_ns "$E2E_NS_LB" ip addr add "$LB_CLI_IP/24" dev br0
        in_ns "$E2E_NS_LB" ip addr add "$LB_BE_IP/24" dev br0
        # The health checker's own source (docs/e2e.md: a dead backend's ICMP errors are
        # rate-limited per destination, and the data path drains that budget).
        in_ns "$E2E_NS_LB" ip addr add "$LB_CHECK_IP/24" dev br0
        in_ns "$E2E_NS_LB" ip addr add 2001:db8::fe/64 dev br0 nodad
        in_ns "$E2E_NS_LB" ip addr add 2001:db8:1::fe/64 dev br0 nodad
        for v in "$VIP_A" "$VIP_B" "$VIP_NGINX" "$VIP_DNS" "$VIP_DNS_NGINX"; do
            in_ns "$E2E_NS_LB" ip addr add "$v/32" dev br0
        done
        in_ns "$E2E_NS_LB" ip addr add "$VIP6_A/128" dev br0 nodad
        # Transparent source (dataplane/src/socket/mod.rs): replies from the backends to client
        # addresses are delivered locally, to the session socket bound to the client's address.
        in_ns "$E2E_NS_LB" ip rule add iif br0 from 198.19.1.0/24 lookup 100
        in_ns "$E2E_NS_LB" ip route add local 0.0.0.0/0 dev lo table 100
        for ns in "$E2E_NS_CLI" "$E2E_NS_CLI2"; do
            in_ns "$ns" ip route add default via "$LB_CLI_IP"
            in_ns "$ns" ip -6 route add default via 2001:db8::fe
        done
        for ns in "${E2E_BACKENDS[@]}"; do
            in_ns "$ns" ip route add default via "$LB_BE_IP"
            in_ns "$ns" ip -6 route add default via 2001:db8:1::fe
        done
    else
        in_ns "$E2E_NS_LB" ip link add lb0 type veth peer name lb0-br
        in_ns "$E2E_NS_LB" ip link set lb0-br master br0 up
        in_ns "$E2E_NS_LB" sysctl -qw net.ipv6.conf.lb0.disable_ipv6=1
        in_ns "$E2E_NS_LB" ethtool -K lb0 tx off >/dev/null
        in_ns "$E2E_NS_LB" ethtool -K lb0-br tx off >/dev/null
        in_ns "$E2E_NS_LB" ip link set lb0 up
        # The health checks' path (Spray's controller checks from the host kernel, not
        # through the DPDK port): an address on br0, used only as the checks' source. lb0
        # has no address; arp_ignore=1 keeps the kernel from answering ARP on it (the port
        # is Spray's), ip_forward=0 from routing anything between the two networks.
        in_ns "$E2E_NS_LB" sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.lb0.arp_ignore=1
        in_ns "$E2E_NS_LB" ip addr add "$LB_CHECK_IP/24" dev br0
        # nginx's VIPs, for the comparison on this testbed (nginx runs on kernel sockets,
        # only while Spray does not: its datagrams to the backends leave from br0 too).
        in_ns "$E2E_NS_LB" ip addr add "$VIP_NGINX/32" dev br0
        in_ns "$E2E_NS_LB" ip addr add "$VIP_DNS_NGINX/32" dev br0
        for ns in "$E2E_NS_CLI" "$E2E_NS_CLI2"; do
            for v in "$VIP_A" "$VIP_B" "$VIP_DNS" "$VIP_DR"; do
                in_ns "$ns" ip neigh replace "$v" lladdr "$SPRAY_MAC" dev c0 nud permanent
            done
        done
        for ns in "${E2E_BACKENDS[@]}"; do
            # NAT: replies to client 1 go back through Spray, which gives them the VIP as
            # source. DR: the backend answers client 2 directly, from the VIP.
            in_ns "$ns" ip neigh replace "$LB_BE_IP" lladdr "$SPRAY_MAC" dev b0 nud permanent
            in_ns "$ns" ip route add 198.18.0.1/32 via "$LB_BE_IP" dev b0
            in_ns "$ns" ip route add 198.18.0.2/32 dev b0 scope link
        done
    fi
}

# ---- servers ----

# rsyslog_start N TAG: an rsyslog in backend N that logs every message (UDP and TCP 514) as
# "FROMHOST-IP MSG" to $E2E_WORK/beN/TAG.log, and nothing else. Restarting it with the same
# TAG appends.
rsyslog_start() {
    local n=$1 tag=$2 dir="$E2E_WORK/be$1"
    mkdir -p "$dir"
    cat >"$dir/rsyslog-$tag.conf" <<EOF
global(workDirectory="$dir" net.enableDNS="off" maxMessageSize="8k")
module(load="imudp")
input(type="imudp" port="514" rcvbufSize="8m" ruleset="e2e")
# TCP too (syslog over TCP, and what a tcp health check connects to).
module(load="imtcp")
input(type="imtcp" port="514" ruleset="e2e")
template(name="e2e" type="string" string="%fromhost-ip% %msg%\n")
ruleset(name="e2e") {
    action(type="omfile" file="$dir/$tag.log" template="e2e")
}
EOF
    bg "rsyslog$n" "${E2E_BACKENDS[n - 1]}" "$RSYSLOGD" -n -iNONE -f "$dir/rsyslog-$tag.conf"
}
rsyslog_wait() {
    local n
    for n in "$@"; do wait_udp "${E2E_BACKENDS[n - 1]}" '\*' 514 10; done
}

# dnsmasq_start N: answers A and TXT for who.e2e.test with the backend's own name/number.
dnsmasq_start() {
    local n=$1 dir="$E2E_WORK/be$1"
    mkdir -p "$dir"
    bg "dnsmasq$n" "${E2E_BACKENDS[n - 1]}" "$DNSMASQ" --keep-in-foreground --no-resolv \
        --no-hosts --no-poll --user=root --group=root --pid-file="$dir/dnsmasq.pid" \
        --port=53 --cache-size=1000 --dns-forward-max=1000 \
        --host-record="who.e2e.test,198.18.200.$n" --txt-record="who.e2e.test,be$n" \
        --address=/e2e.test/198.18.200.$n
    # Last: --address answers any other name in e2e.test (dnsperf's query list).
}
dnsmasq_wait() {
    local n
    for n in "$@"; do wait_udp "${E2E_BACKENDS[n - 1]}" '\*' 53 10; done
}
