#!/usr/bin/env bash
# The network-namespace testbed: a client, Spray and three backends on one Ethernet segment.
#
#   scripts/testbed.sh up      create it (removes a stale one first)
#   scripts/testbed.sh down    remove it (safe to run twice)
#
#   spr-client  c0  198.18.0.1/15   2001:db8::1/64         \
#   spr-be1     b0  198.19.1.1/15   2001:db8::1:1/64        |-- bridge br0 in spr-lb
#   spr-be2     b0  198.19.1.2/15   2001:db8::1:2/64        |
#   spr-be3     b0  198.19.1.3/15   2001:db8::1:3/64        |
#   spr-lb      lb0 (no kernel address: Spray's DPDK port, net_af_packet0,iface=lb0;
#               Spray's own addresses on it are 198.18.0.2 and 2001:db8::2, in its config)
#               br0 198.18.0.3/15 2001:db8::3/64: the Spray host's kernel, which runs the
#               health checks (a management path to the backends, as on an appliance)
#
# and behind a router, three backends in another subnet (for tunnel mode):
#
#   spr-rt      r0  198.18.0.254/24 2001:db8::fe/64   on br0
#               r1  198.19.2.254/24 2001:db8:2::fe/64 bridge rbr0 in spr-rt, forwarding on
#   spr-tb1     t0  198.19.2.1/24   2001:db8:2::1/64  \
#   spr-tb2     t0  198.19.2.2/24   2001:db8:2::2/64   |-- rbr0; default routes via spr-rt
#   spr-tb3     t0  198.19.2.3/24   2001:db8:2::3/64  /
#
# The client and the Spray host's kernel reach 198.19.2.0/24 and 2001:db8:2::/64 through the
# router (more specific than their on-link /15 and /64).
#
# Spray answers ARP and neighbour solicitations for its VIPs and resolves the backends'
# MACs itself, so nothing is static. SPRAY_STATIC_NEIGH=1 adds the old static entries for
# VIPs 198.18.0.10 and 2001:db8::10 (MAC 02:00:00:00:00:10) in the client. Backend b0 MACs
# are 02:00:00:00:01:0N. Multicast snooping is off on br0, so neighbour solicitations reach
# every host.
# Addresses come from 198.18.0.0/15 and 2001:db8::/32 only; the root namespace is never
# touched (every link is created inside a namespace). TX checksum offload is off on every
# veth, or the receivers would see partial checksums.
set -euo pipefail

NS_LB=spr-lb
NS_CLIENT=spr-client
BACKENDS=(spr-be1 spr-be2 spr-be3)
NS_ROUTER=spr-rt
ROUTED=(spr-tb1 spr-tb2 spr-tb3)
SPRAY_MAC=02:00:00:00:00:10

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

down() {
    for ns in "$NS_CLIENT" "${BACKENDS[@]}" "${ROUTED[@]}" "$NS_ROUTER" "$NS_LB"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

# veth NAME in NS, peer PEER in spr-lb enslaved to br0.
link() {
    local ns=$1 dev=$2 peer=$3 mac=${4:-}
    in_ns "$NS_LB" ip link add "$peer" type veth peer name "$dev" netns "$ns"
    in_ns "$NS_LB" ip link set "$peer" master br0 up
    in_ns "$NS_LB" ethtool -K "$peer" tx off >/dev/null
    if [ -n "$mac" ]; then in_ns "$ns" ip link set "$dev" address "$mac"; fi
    in_ns "$ns" ethtool -K "$dev" tx off >/dev/null
    in_ns "$ns" ip link set "$dev" up
    in_ns "$ns" ip link set lo up
}

up() {
    down
    for ns in "$NS_LB" "$NS_CLIENT" "${BACKENDS[@]}"; do
        ip netns add "$ns"
    done
    # The Spray host's kernel must not route: namespaces inherit IPv4 forwarding from the
    # root namespace, and with an address on br0 it would pass NAT replies on un-NATed.
    in_ns "$NS_LB" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
    in_ns "$NS_LB" ip link add br0 type bridge mcast_snooping 0
    in_ns "$NS_LB" ip link set br0 up
    in_ns "$NS_LB" ip addr add 198.18.0.3/15 dev br0
    in_ns "$NS_LB" ip addr add 2001:db8::3/64 dev br0 nodad
    in_ns "$NS_LB" ip link set lo up
    # Spray's port: lb0, with its bridge end lb0-br.
    in_ns "$NS_LB" ip link add lb0 type veth peer name lb0-br
    in_ns "$NS_LB" ip link set lb0-br master br0 up
    for d in lb0 lb0-br; do in_ns "$NS_LB" ethtool -K "$d" tx off >/dev/null; done
    in_ns "$NS_LB" ip link set lb0 up
    # No kernel IPv6 on the DPDK port: it would send its own router solicitations.
    in_ns "$NS_LB" sysctl -qw net.ipv6.conf.lb0.disable_ipv6=1

    link "$NS_CLIENT" c0 c0-br
    in_ns "$NS_CLIENT" ip addr add 198.18.0.1/15 dev c0
    in_ns "$NS_CLIENT" ip addr add 2001:db8::1/64 dev c0 nodad
    if [ "${SPRAY_STATIC_NEIGH:-0}" = 1 ]; then
        in_ns "$NS_CLIENT" ip neigh replace 198.18.0.10 lladdr "$SPRAY_MAC" dev c0 nud permanent
        in_ns "$NS_CLIENT" ip neigh replace 2001:db8::10 lladdr "$SPRAY_MAC" dev c0 nud permanent
    fi
    local i=1
    for ns in "${BACKENDS[@]}"; do
        link "$ns" b0 "b$i-br" "02:00:00:00:01:0$i"
        in_ns "$ns" ip addr add "198.19.1.$i/15" dev b0
        in_ns "$ns" ip addr add "2001:db8::1:$i/64" dev b0 nodad
        i=$((i + 1))
    done
    routed
}

# The router and the backends behind it.
routed() {
    ip netns add "$NS_ROUTER"
    # No duplicate address detection on the routed side: with a link-local address still
    # tentative, the router cannot resolve a backend and drops what it should forward.
    in_ns "$NS_ROUTER" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    link "$NS_ROUTER" r0 r0-br
    in_ns "$NS_ROUTER" ip addr add 198.18.0.254/24 dev r0
    in_ns "$NS_ROUTER" ip addr add 2001:db8::fe/64 dev r0 nodad
    in_ns "$NS_ROUTER" ip link add rbr0 type bridge mcast_snooping 0
    in_ns "$NS_ROUTER" ip link set rbr0 up
    in_ns "$NS_ROUTER" ip addr add 198.19.2.254/24 dev rbr0
    in_ns "$NS_ROUTER" ip addr add 2001:db8:2::fe/64 dev rbr0 nodad
    # Replies from the VIP arrive on rbr0 but the VIP's route is r0: loose source checks.
    in_ns "$NS_ROUTER" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    local i=1 ns
    for ns in "${ROUTED[@]}"; do
        ip netns add "$ns"
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
        in_ns "$NS_ROUTER" ip link add "t$i-br" type veth peer name t0 netns "$ns"
        in_ns "$NS_ROUTER" ip link set "t$i-br" master rbr0 up
        in_ns "$NS_ROUTER" ethtool -K "t$i-br" tx off >/dev/null
        in_ns "$ns" ethtool -K t0 tx off >/dev/null
        in_ns "$ns" ip link set t0 up
        in_ns "$ns" ip link set lo up
        in_ns "$ns" ip addr add "198.19.2.$i/24" dev t0
        in_ns "$ns" ip addr add "2001:db8:2::$i/64" dev t0 nodad
        in_ns "$ns" ip route add default via 198.19.2.254
        in_ns "$ns" ip -6 route add default via 2001:db8:2::fe
        i=$((i + 1))
    done
    for ns in "$NS_CLIENT" "$NS_LB"; do
        in_ns "$ns" ip route add 198.19.2.0/24 via 198.18.0.254
        in_ns "$ns" ip -6 route add 2001:db8:2::/64 via 2001:db8::fe
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *)
        echo "usage: $0 up|down" >&2
        exit 2
        ;;
esac
