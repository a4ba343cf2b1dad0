#!/bin/sh
# keepalived notify script: makes Spray serve a VIP only on the VRRP master.
#
# MASTER          -> `spray ctl enable SERVICE` for each service of the VIP
# BACKUP | FAULT | STOP -> `spray ctl disable SERVICE` (the VIP's sockets close; datagrams
#                    that still reach this node are not forwarded)
#
# keepalived.conf (generic notify: keepalived appends TYPE NAME STATE PRIORITY):
#
#   vrrp_instance VI_SYSLOG {
#       ...
#       notify "/usr/local/lib/spray/notify.sh --services syslog-a,syslog-b"
#   }
#
# or per state: notify_master "/usr/local/lib/spray/notify.sh MASTER" (likewise BACKUP, FAULT).
#
# Options (before keepalived's arguments), or the same settings in /etc/spray/ha.conf
# (shell syntax: SPRAY=..., SPRAY_SOCKET=..., SPRAY_SERVICES=...; SPRAY_HA_CONF names
# another file):
#   --spray PATH       the spray binary (default: spray on PATH, else /usr/local/bin/spray)
#   --socket PATH      Spray's control socket (default: spray ctl's own default)
#   --services A,B     services (names or VIP address:port) to switch; default: every
#                      service that `spray ctl list` shows
#
# Socket mode binds VIP sockets when a service is enabled: on a backup the VIP address is
# not on any interface, so set net.ipv4.ip_nonlocal_bind=1 (and net.ipv6.ip_nonlocal_bind=1)
# or `spray run` cannot start there. On the DPDK dataplane Spray answers ARP/ND for enabled
# VIPs and announces them with gratuitous ARP itself (keepalived's virtual_ipaddress then
# belongs on a kernel interface or is left out; see docs/operations.md).
#
# Exit status: 0 when every service was switched (or was already so), 1 otherwise.
# Every action is logged to syslog (tag spray-ha) and standard error.
set -u

conf=${SPRAY_HA_CONF:-/etc/spray/ha.conf}
# shellcheck disable=SC1090
[ -r "$conf" ] && . "$conf"
spray=${SPRAY:-}
socket=${SPRAY_SOCKET:-}
services=${SPRAY_SERVICES:-}

while [ $# -gt 0 ]; do
    case $1 in
        --spray) spray=$2; shift 2 ;;
        --socket) socket=$2; shift 2 ;;
        --services) services=$2; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
# keepalived's generic form is TYPE NAME STATE PRIORITY; notify_master & co. give STATE only.
if [ $# -ge 3 ]; then
    state=$3 name="$1 $2"
else
    state=${1:-} name=""
fi

log() {
    echo "spray-ha: $*" >&2
    command -v logger >/dev/null 2>&1 && logger -t spray-ha -- "$*" 2>/dev/null
    return 0
}

if [ -z "$spray" ]; then
    spray=$(command -v spray 2>/dev/null || echo /usr/local/bin/spray)
fi
ctl() {
    if [ -n "$socket" ]; then
        "$spray" ctl --socket "$socket" "$@"
    else
        "$spray" ctl "$@"
    fi
}

case $state in
    MASTER) action=enable ;;
    BACKUP | FAULT | STOP) action=disable ;;
    *)
        log "unknown state '$state' ${name:+($name)}: nothing done"
        exit 1
        ;;
esac

# Spray may be starting (keepalived and spray started together): retry a little.
list=""
i=0
while :; do
    if [ -n "$services" ]; then
        list=$(echo "$services" | tr ',' ' ')
        break
    fi
    if out=$(ctl list 2>/dev/null); then
        list=$(echo "$out" | awk '$1 == "UDP" { print $NF }')
        break
    fi
    i=$((i + 1))
    if [ $i -ge 10 ]; then
        log "$state${name:+ ($name)}: cannot list services: spray is not reachable"
        exit 1
    fi
    sleep 0.2
done

status=0
for svc in $list; do
    i=0
    while :; do
        if msg=$(ctl "$action" "$svc" 2>&1); then
            log "$state${name:+ ($name)}: $action $svc: $msg"
            break
        fi
        i=$((i + 1))
        if [ $i -ge 10 ]; then
            log "$state${name:+ ($name)}: $action $svc failed: $msg"
            status=1
            break
        fi
        sleep 0.2
    done
done
exit $status
