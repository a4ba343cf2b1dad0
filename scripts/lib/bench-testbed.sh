# The benchmark testbed shared by scripts/bench-peers.sh and scripts/bench-ceiling.sh
# (sourced, not run): the namespaces, the two topologies of the lb namespace, and the
# configurations of the DPDK and nftables peers.
#
#   client ns  198.18.0.1 --veth-- cli ┐                  (routed: 198.18.0.2, the VIP)
#   backend N  198.18.N.2 --veth-- beN ┤ lb ns             (routed: 198.18.N.1)
#                                      └ bridged: bridge brdp -- dp0-br --veth-- dp0 (Spray's DPDK port)
#
# The caller sets C, LB, B (three backend namespaces), VIP (198.18.0.2), PORT, WORK and
# DPDK_PREFIX, and deletes the namespaces on exit.

in_ns() { local n=$1; shift; ip netns exec "$n" "$@"; }

# Creates the namespaces and links, routed (the lb namespace forwards).
testbed_create() {
    local n dev i
    for n in "$C" "$LB" "${B[@]}"; do
        ip netns add "$n"
        ip -n "$n" link set lo up
    done
    # Links are created inside the namespaces: nothing appears in the root namespace.
    ip -n "$LB" link add cli type veth peer name eth0 netns "$C"
    ip -n "$C" addr add 198.18.0.1/24 dev eth0
    for i in 1 2 3; do
        ip -n "$LB" link add "be$i" type veth peer name eth0 netns "${B[$((i - 1))]}"
        ip -n "${B[$((i - 1))]}" addr add "198.18.$i.2/24" dev eth0
    done
    # For the DPDK peers (one-armed): a bridge and Spray's port dp0 (peer dp0-br), idle until
    # topo_bridged puts cli and be1..3 into the bridge.
    ip -n "$LB" link add brdp type bridge mcast_snooping 0
    ip -n "$LB" link add dp0 type veth peer name dp0-br
    ip -n "$LB" link set dp0-br master brdp
    # No kernel IPv6 on Spray's port or the bridge: no router solicitations on the wire.
    in_ns "$LB" sysctl -qw net.ipv6.conf.dp0.disable_ipv6=1 net.ipv6.conf.brdp.disable_ipv6=1
    ip -n "$LB" link set brdp up
    for n in "$C" "$LB" "${B[@]}"; do
        for dev in $(ip -n "$n" -o link show type veth | awk -F'[:@ ]+' '{print $2}'); do
            ip -n "$n" link set "$dev" up
            # veth TX checksum offload leaves partial checksums (LAB-NOTES): off everywhere.
            in_ns "$n" ethtool -K "$dev" tx off >/dev/null 2>&1
        done
    done
    ip -n "$C" route add 198.18.0.0/15 via 198.18.0.2
    for i in 1 2 3; do
        ip -n "${B[$((i - 1))]}" route add default via "198.18.$i.1" dev eth0 onlink
    done
    topo_routed
}

# Spray's DPDK port is one-armed (each worker sends on the port it received from), so for
# the dpdk peers the lb namespace stops routing and becomes a switch: cli and be1..3 lose
# their addresses and join bridge brdp with dp0-br, whose peer dp0 is Spray's port. The
# client, the backends, their addresses and routes, the veths they sit on and the traffic
# stay the same; the path gains the bridge and one veth pair (dp0) in the lb namespace.
# Spray answers ARP for the VIP (198.18.0.2, also its port address) and resolves the
# backends' and the client's MACs itself.
topo_bridged() {
    local dev
    in_ns "$LB" sysctl -qw net.ipv4.ip_forward=0
    for dev in cli be1 be2 be3; do
        ip -n "$LB" addr flush dev "$dev"
        ip -n "$LB" link set "$dev" master brdp
    done
    ip -n "$LB" link set dp0-br up
    ip -n "$LB" link set dp0 up
    flush_neigh
}
topo_routed() {
    local dev i
    ip -n "$LB" link set dp0 down
    ip -n "$LB" link set dp0-br down
    for dev in cli be1 be2 be3; do ip -n "$LB" link set "$dev" nomaster; done
    ip -n "$LB" addr add 198.18.0.2/24 dev cli 2>/dev/null || true
    for i in 1 2 3; do ip -n "$LB" addr add "198.18.$i.1/24" dev "be$i" 2>/dev/null || true; done
    in_ns "$LB" sysctl -qw net.ipv4.ip_forward=1
    flush_neigh
}
flush_neigh() { # the VIP and the backends' gateways change MAC between the two topologies
    local n
    ip -n "$C" neigh flush dev eth0
    for n in "${B[@]}"; do ip -n "$n" neigh flush dev eth0; done
}

# The DPDK peer's configuration on stdout: `dpdk_conf [xdp] [CORES]`. net_af_packet on dp0
# (net_af_xdp with "xdp"), one worker (on CORES, a TOML list, when given), rr NAT to the
# three backends; no hugepages (LAB-NOTES: nr_hugepages is not ours to change), EAL files
# under DPDK_PREFIX, the control socket in WORK.
dpdk_conf() {
    local vdev="net_af_packet0,iface=dp0,framecnt=16384" dev=net_af_packet0 cores=""
    if [ "${1:-}" = xdp ]; then
        vdev="net_af_xdp0,iface=dp0,start_queue=0,queue_count=1"
        dev=net_af_xdp0
    fi
    if [ -n "${2:-}" ]; then cores="cores = $2"; fi
    cat <<EOF
[runtime]
dataplane = "dpdk"
log = "info"

[dpdk]
no_huge = true
memory_mb = 256
file_prefix = "$DPDK_PREFIX"
$cores
vdevs = ["$vdev"]

[[dpdk.ports]]
device = "$dev"
rx_ring = 4096
tx_ring = 4096
addresses = ["$VIP"]
gateways = ["198.18.0.1"]

[control]
socket = "$WORK/spray-dpdk.sock"

EOF
    service_conf
}

# The service every Spray peer balances (socket mode and DPDK): rr NAT from VIP:PORT to the
# three backends.
service_conf() {
    cat <<EOF
[services.bench]
vip = "$VIP:$PORT"
scheduler = "rr"
mode = "nat"
backends = [
  { addr = "198.18.1.2:$PORT" },
  { addr = "198.18.2.2:$PORT" },
  { addr = "198.18.3.2:$PORT" },
]
EOF
}

# Waits until the DPDK peer (PID, writing LOG) serves and has resolved the three backends and
# the client by ARP (10 s at most); on failure prints its log and returns 1.
dpdk_wait_ready() { # pid log
    local i
    for i in $(seq 1 100); do
        if ! kill -0 "$1" 2>/dev/null; then break; fi
        if grep -q "spray: serving" "$2" &&
            [ "$(grep -c 'neighbour resolved' "$2")" -ge 4 ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "the DPDK port did not serve and resolve its neighbours within 10 s" >&2
    sed 's/^/  spray-dpdk: /' "$2" >&2
    return 1
}

# The kernel baseline: stateless round robin of VIP:PORT over the three backends, in the
# routed topology.
nft_start() {
    in_ns "$LB" nft -f - <<EOF
table ip spraybench {
    chain pre {
        type filter hook prerouting priority raw; policy accept;
        ip daddr $VIP udp dport $PORT notrack ip daddr set numgen inc mod 3 map { 0 : 198.18.1.2, 1 : 198.18.2.2, 2 : 198.18.3.2 }
    }
}
EOF
}
nft_stop() { in_ns "$LB" nft delete table ip spraybench 2>/dev/null || true; }
