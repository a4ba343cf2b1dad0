#!/bin/sh
# keepalived track script: succeeds while Spray answers on its control socket.
#
#   vrrp_script chk_spray {
#       script "/usr/local/lib/spray/check-spray.sh --socket /run/spray/spray.sock"
#       interval 1      # seconds between runs
#       timeout 1       # a hung spray counts as dead
#       fall 2          # 2 failures: the instance goes to FAULT and gives the VIP away
#       rise 2
#   }
#   vrrp_instance VI_SYSLOG { ... track_script { chk_spray } }
#
# `spray ctl version` answers from Spray's control thread, the one that also publishes
# snapshots to the workers, so a hung controller fails the check too.
# Options: --spray PATH, --socket PATH (as for notify.sh; also from /etc/spray/ha.conf).
set -u
conf=${SPRAY_HA_CONF:-/etc/spray/ha.conf}
# shellcheck disable=SC1090
[ -r "$conf" ] && . "$conf"
spray=${SPRAY:-}
socket=${SPRAY_SOCKET:-}
while [ $# -gt 0 ]; do
    case $1 in
        --spray) spray=$2; shift 2 ;;
        --socket) socket=$2; shift 2 ;;
        *) break ;;
    esac
done
if [ -z "$spray" ]; then
    spray=$(command -v spray 2>/dev/null || echo /usr/local/bin/spray)
fi
if [ -n "$socket" ]; then
    exec "$spray" ctl --socket "$socket" version >/dev/null 2>&1
fi
exec "$spray" ctl version >/dev/null 2>&1
