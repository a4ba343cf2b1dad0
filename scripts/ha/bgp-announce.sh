#!/bin/sh
# Announce a VIP by BGP only while Spray can serve it: a BIRD static-route toggle.
#
# Every INTERVAL seconds, reads `spray ctl --json list` and, for each service, enables the
# BIRD protocol `vip_<service>` (a static /32 or /128 that the BGP session exports) when the
# service is enabled and has a backend with effective_weight > 0, and disables it otherwise.
# When Spray does not answer, every known `vip_*` protocol is disabled (withdrawn). Several
# nodes announcing the same VIP behind one router share the traffic by ECMP
# (scripts/ha/test-ecmp.sh; router set-up in docs/operations.md). In socket mode the VIP must
# also be a local address of the node (`ip addr add VIP/32 dev lo`), or the kernel does not
# deliver the router's traffic to Spray.
#
# bird.conf on the Spray node (one static protocol per service, names: vip_ + the service
# name with anything but letters and digits as _):
#
#   protocol static vip_syslog { disabled; ipv4; route 198.18.0.100/32 blackhole; }
#   protocol bgp uplink {
#       local 198.18.0.2 as 65001; neighbor 198.18.0.1 as 65000;
#       ipv4 { import none; export where source = RTS_STATIC; };
#   }
#
# Run it as a service beside BIRD (systemd: Restart=always), or once per cron tick (--once).
#
# Options: --spray PATH, --socket PATH (Spray's control socket), --birdc-socket PATH,
# --interval SECS (default 1), --once. Needs python3 (to read the JSON) and birdc.
set -u
spray=${SPRAY:-spray}
socket=""
bsock=""
interval=1
once=0
while [ $# -gt 0 ]; do
    case $1 in
        --spray) spray=$2; shift 2 ;;
        --socket) socket=$2; shift 2 ;;
        --birdc-socket) bsock=$2; shift 2 ;;
        --interval) interval=$2; shift 2 ;;
        --once) once=1; shift ;;
        *) echo "bgp-announce: unknown option $1" >&2; exit 2 ;;
    esac
done

birdc_() { if [ -n "$bsock" ]; then birdc -s "$bsock" "$@"; else birdc "$@"; fi; }
log() {
    echo "bgp-announce: $*" >&2
    command -v logger >/dev/null 2>&1 && logger -t spray-bgp -- "$*" 2>/dev/null
    return 0
}
# "proto up|down" lines, one per service.
wanted() {
    if [ -n "$socket" ]; then
        json=$("$spray" ctl --socket "$socket" --json list 2>/dev/null) || return 1
    else
        json=$("$spray" ctl --json list 2>/dev/null) || return 1
    fi
    printf '%s' "$json" | python3 -c '
import json, re, sys
for s in json.load(sys.stdin)["services"]:
    up = s.get("admin") == "enabled" and any(b.get("effective_weight", 0) > 0 for b in s["backends"])
    print("vip_" + re.sub(r"[^A-Za-z0-9]", "_", s["name"]), "up" if up else "down")
'
}
# Current state of a BIRD protocol: up (enabled) or down (disabled); empty if unknown.
state() { birdc_ show protocols "$1" 2>/dev/null | awk -v p="$1" '$1 == p { print ($4 == "down" ? "down" : "up") }'; }

while :; do
    if lines=$(wanted); then
        echo "$lines" | while read -r proto want; do
            [ -n "$proto" ] || continue
            have=$(state "$proto")
            if [ -z "$have" ]; then
                continue # no such protocol in bird.conf: not announced by this node
            fi
            if [ "$want" = up ] && [ "$have" = down ]; then
                birdc_ enable "$proto" >/dev/null && log "announce $proto (healthy backend)"
            elif [ "$want" = down ] && [ "$have" = up ]; then
                birdc_ disable "$proto" >/dev/null && log "withdraw $proto (no healthy backend)"
            fi
        done
    else
        for proto in $(birdc_ show protocols 2>/dev/null | awk '$1 ~ /^vip_/ { print $1 }'); do
            if [ "$(state "$proto")" = up ]; then
                birdc_ disable "$proto" >/dev/null && log "withdraw $proto (spray not answering)"
            fi
        done
    fi
    [ "$once" = 1 ] && exit 0
    sleep "$interval"
done
