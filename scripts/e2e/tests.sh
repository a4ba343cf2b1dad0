# shellcheck shell=bash
# The tests of the end-to-end suite, sourced by scripts/e2e/run.sh (which has the harness:
# run_test, check, fig, the senders, Spray and nginx). Each runs in a subshell with `set -e`;
# $DP is the dataplane (socket or dpdk).

# Rates (datagrams/s) and durations: moderate, the machine has 2 cores shared with others.
if [ "$QUICK" = 1 ]; then
    LOGGER_RATE=$(scale 3000) LOGGER_SECS=3 LOGGEN_RATE=$(scale 6000) LOGGEN_SECS=3
    DNS_RATE=$(scale 2000) DNS_SECS=3
else
    LOGGER_RATE=$(scale 8000) LOGGER_SECS=5 LOGGEN_RATE=$(scale 15000) LOGGEN_SECS=10
    DNS_RATE=$(scale 5000) DNS_SECS=5
fi
FO_RATE=$(scale 4000) # the two-VIP failover: in all, over both VIPs
FO_DEAD_SECS=2        # how long the backend stays dead after the decision
thirds() { if [ "$1" -ge 30000 ]; then echo $(($1 / 3000 * 3000)); else echo $(($1 / 3 * 3)); fi; }

service_toml() { # NAME VIP PORT [MODE] [EXTRA]: one service over the three backends
    local name=$1 vip=$2 port=$3 mode=${4:-nat} extra=${5:-} bport=$3 mac="" v6=""
    [ "$DP" = dpdk ] && mac=1
    [[ "$vip" != *:* ]] || v6=6
    [ "$mode" = dr ] && bport=""
    printf '\n[services.%s]\nvip = "%s:%s"\nmode = "%s"\nbackends = %s\n%s\n' \
        "$name" "$vip" "$port" "$mode" "$(backends_toml "$bport" "$mac" "$v6")" "$extra"
}
base_conf() { # [socket extra keys]
    if [ "$DP" = socket ]; then spray_socket_conf "${1:-}"; else spray_dpdk_conf; fi
}
# The source address backends see for client 1 through a NAT VIP: Spray's own in socket
# mode (without transparent), the client's with DPDK.
client_src() { if [ "$DP" = socket ]; then echo "$LB_BE_IP"; else echo 198.18.0.1; fi; }

# lost_start / lost_where [WHAT]: in DPDK mode, where the messages of a check went missing.
# net_af_packet's ring can overflow before Spray reads it, and neither the PMD (no imissed
# in 22.11) nor the packet socket's drop counter says so: ring_snap compares lb0's kernel
# rx counter with Spray's. Without WHAT (the check passed): ", before Spray 0" for the
# figures. With WHAT (it failed): a figure splitting the loss into before Spray and after.
lost_start() { if [ "$DP" = dpdk ]; then LOST_SNAP=$(ring_snap); fi; }
lost_where() {
    [ "$DP" = dpdk ] || return 0
    local before lost
    before=$(before_spray "$LOST_SNAP")
    if [ $# = 0 ]; then
        echo ", before Spray $before"
        return 0
    fi
    lost=$(jget lost)
    fig "$1: LOST $lost: $before lost before Spray (net_af_packet ring full; lb0 rx - Spray rx), $((lost - before)) at or after Spray"
    echo "  error: $1: $lost lost, $before of them before Spray (net_af_packet ring full), $((lost - before)) at or after Spray"
}

# ---------------------------------------------------------------- 1. syslog spread
# One heavy sender (logger, then loggen), one flow, spread in exact thirds, every sequence
# number logged exactly once.
t_syslog() {
    rsyslog_all "$DP-syslog"
    local conf=$E2E_WORK/spray-syslog-$DP.toml n m k files src lrate
    {
        base_conf
        service_toml syslog "$VIP_A" 514
        if [ "$DP" = socket ] && [ "$QUICK" = 0 ]; then service_toml syslog6 "[$VIP6_A]" 514; fi
    } >"$conf"
    spray_start "$conf"
    mapfile -t files < <(be_files "$DP-syslog")
    src=$(client_src)

    n=$(thirds $((LOGGER_RATE * LOGGER_SECS)))
    echo "  logger: $n messages at $LOGGER_RATE/s through one logger (one socket) to $VIP_A:514"
    lost_start
    logger_send "$E2E_NS_CLI" "$VIP_A" 514 logger "$n" "$LOGGER_RATE"
    wait_logged "$n" "${files[@]}"
    check "logger: nothing lost or duplicated, exact thirds" syslog --stream logger --count "$n" \
        --even --source "$src" "${files[@]}" || { lost_where "logger $n msgs"; return 1; }
    fig "logger $n msgs at $(sent_rate logger)/s: lost 0 dup 0, thirds $(jget per_backend | tr -d ' ')$(lost_where)"

    # loggen front-loads one second's worth of messages (~100k/s for the first 0.15 s, then
    # steady): through DPDK's net_af_packet that burst must fit the ring (DPDK_FRAMES, 65536:
    # 16384 lost blocks in some runs at 15 000/s, then counted as "lost before Spray").
    local lg_rate=$LOGGEN_RATE
    m=$(thirds $((lg_rate * LOGGEN_SECS)))
    echo "  loggen: $m messages of 300 bytes at $lg_rate/s, one connection, to $VIP_A:514"
    lost_start
    in_ns "$E2E_NS_CLI" "${LOGGEN[@]}" -i -D -r "$lg_rate" -n "$m" -s 300 "$VIP_A" 514 \
        >"$E2E_WORK/logs/loggen-$DP.log" 2>&1 || {
        cat "$E2E_WORK/logs/loggen-$DP.log"
        return 1
    }
    lrate=$(sed -n 's/.*average rate = \([0-9.]*\).*/\1/p' "$E2E_WORK/logs/loggen-$DP.log" | tail -1)
    echo "  loggen: $(tail -1 "$E2E_WORK/logs/loggen-$DP.log")"
    wait_logged $((n + m)) "${files[@]}"
    check "loggen: nothing lost or duplicated, exact thirds" syslog --stream loggen --count "$m" \
        --even --source "$src" "${files[@]}" || { lost_where "loggen $m msgs at ${lrate%.*}/s"; return 1; }
    fig "loggen $m msgs at ${lrate%.*}/s (its own figure): lost 0 dup 0, thirds $(jget per_backend | tr -d ' ')$(lost_where)"

    if [ "$DP" = socket ] && [ "$QUICK" = 0 ]; then
        k=$(thirds $((LOGGER_RATE * 2)))
        echo "  logger over IPv6: $k messages at $LOGGER_RATE/s to [$VIP6_A]:514"
        logger_send "$E2E_NS_CLI" "$VIP6_A" 514 logger6 "$k" "$LOGGER_RATE"
        wait_logged $((n + m + k)) "${files[@]}"
        check "logger over IPv6: nothing lost, exact thirds" syslog --stream logger6 --count "$k" \
            --even --source 2001:db8:1::fe "${files[@]}"
        fig "IPv6 logger $k msgs: lost 0, thirds"
    fi
    echo "  UDP receive-buffer drops: lb $(udp_drops "$E2E_NS_LB"), backends" \
        "$(for b in "${E2E_BACKENDS[@]}"; do udp_drops "$b"; done | paste -sd/)"
    [ "$DP" = socket ] || echo "  net_af_packet socket drops: $(packet_drops)"
}

# ---------------------------------------------------------------- 2. failover
# The two-VIP scenario under load: two VIPs on port 514 over the same three rsyslogs, one
# logger per VIP; rsyslog 1 is killed (SIGKILL), comes back FO_DEAD_SECS after the decision.
# Tags (file names, stream names) start with the dataplane: both runs share the work directory.

# fo_senders TAG VIP_FOR_A VIP_FOR_B: one paced logger per stream (a, b), until $E2E_WORK/stop.
# The pacer and its logger are two recorded processes joined by a FIFO (`exec`: the PIDs are
# theirs), so that a test that fails half-way stops both: a `bash -c "pace | logger"` would
# leave the pipeline sending into the next test when only bash is signalled.
fo_senders() {
    local tag=$1 s vip fifo
    rm -f "$E2E_WORK/stop"
    for s in a b; do
        if [ "$s" = a ]; then vip=$2; else vip=$3; fi
        fifo=$E2E_WORK/fifo-$tag$s
        rm -f "$fifo"
        mkfifo "$fifo"
        bg "logger-$s" - bash -c "exec ip netns exec $E2E_NS_CLI logger -n $vip -P 514 -d --rfc3164 -t e2e <'$fifo'"
        bg "send-$s" - bash -c "exec python3 '$HERE/e2e.py' pace --stream $tag$s --rate $((FO_RATE / 2)) \
            --stop '$E2E_WORK/stop' --max-secs 120 --sent '$E2E_WORK/sent-$tag$s.json' \
            --schedule '$E2E_WORK/sched-$tag$s.sched' >'$fifo'"
    done
}
fo_senders_stop() {
    touch "$E2E_WORK/stop"
    local s i
    for s in a b; do
        for ((i = 0; i < 50; i++)); do [ -e "$E2E_WORK/sent-$1$s.json" ] && break; sleep 0.1; done
        stop "send-$s"
        # The logger ends by itself once it has read the FIFO to its end (then nothing the
        # pacer counted as sent is cut off); TERM only if it has not after 5 s.
        for ((i = 0; i < 50; i++)); do alive "$(pid_of "logger-$s")" || break; sleep 0.1; done
        stop "logger-$s"
    done
}
# ctl_event KIND BACKEND AFTER_UNIX_S: unix time (s) of the first health event for
# BACKEND after AFTER whose message says KIND (down/up), polled for TIMEOUT s (10).
ctl_event() {
    local t end=$(($(date +%s) + ${4:-10}))
    while [ "$(date +%s)" -lt "$end" ]; do
        t=$(sctl --json events | python3 -c '
import json, sys
kind, backend, after = sys.argv[1], sys.argv[2], float(sys.argv[3])
for e in json.load(sys.stdin)["events"]:
    if e["kind"] == "health" and e.get("backend") == backend and e["unix_ms"] / 1e3 >= after \
            and f" {kind} " in e["message"]:
        print("%.3f" % (e["unix_ms"] / 1e3))
        break
' "$1" "$2" "$3" 2>/dev/null) && [ -n "$t" ] && {
            echo "$t"
            return 0
        }
        sleep 0.02
    done
    echo "error: no '$1' event for $2 within ${4:-10} s" >&2
    sctl events >&2 || true
    return 1
}
# packets_to BACKEND: what Spray has sent to BACKEND over every service (its counters).
packets_to() {
    sctl --json list | python3 -c '
import json, sys
print(sum(b["packets"] for s in json.load(sys.stdin)["services"] for b in s["backends"]
          if b["addr"] == sys.argv[1]))' "$1"
}

# health_events BACKEND AFTER: "KIND UNIX_S" of every health event for BACKEND since AFTER.
health_events() {
    sctl --json events | python3 -c '
import json, sys
for e in json.load(sys.stdin)["events"]:
    if e["kind"] == "health" and e.get("backend") == sys.argv[1] and e["unix_ms"] / 1e3 >= float(sys.argv[2]):
        kind = "down" if " down " in e["message"] else "up" if " up " in e["message"] else "other"
        print(kind, "%.3f" % (e["unix_ms"] / 1e3))' "$1" "$2"
}

# fo_spray TAG PASSIVE CHECK_TOML ASSERT: the scenario under Spray. CHECK_TOML is the body of
# each service's check table. ASSERT=1: the decision must come, nothing may go to the dead
# backend after it, and the revived backend must get its share again. ASSERT=0 (a known
# pitfall): whatever happens is reported.
fo_spray() {
    local tag=$1 passive=$2 checkbody=$3 assert=$4 conf death decision="" c1 c2 revive up="" files
    local ev falseup in0 in1 restart
    rsyslog_all "$tag"
    mapfile -t files < <(be_files "$tag")
    conf=$E2E_WORK/spray-$tag.toml
    {
        base_conf
        for v in a b; do
            service_toml "syslog-$v" "$(if [ $v = a ]; then echo "$VIP_A"; else echo "$VIP_B"; fi)" 514 nat \
                "passive = $passive
[services.syslog-$v.check]
$checkbody"
        done
    } >"$conf"
    spray_start "$conf"
    sleep 1.5 # first checks
    lost_start
    in0=$(udp_in "${E2E_BACKENDS[0]}")
    fo_senders "$tag" "$VIP_A" "$VIP_B"
    sleep 2
    in1=$(udp_in "${E2E_BACKENDS[0]}")
    death=$(now)
    crash rsyslog1
    echo "  rsyslog 1 killed (SIGKILL) at $death under $FO_RATE msg/s over two VIPs"
    if decision=$(ctl_event down 198.19.1.1:514 "$death" "$([ "$assert" = 1 ] && echo 10 || echo 3)"); then
        c1=$(packets_to 198.19.1.1:514)
        echo "  decision (spray ctl events): $decision, $(ms_between "$death" "$decision") ms after the death"
    else
        decision=""
        [ "$assert" = 0 ] || return 1
        c1=$(packets_to 198.19.1.1:514)
    fi
    sleep "$FO_DEAD_SECS"
    c2=$(packets_to 198.19.1.1:514)
    ev=$(health_events 198.19.1.1:514 "$death" | paste -sd' ')
    falseup=$(health_events 198.19.1.1:514 "$death" | grep -c '^up' || true)
    echo "  health events while dead: ${ev:-none}"
    echo "  Spray's counter for backend 1: $c1 just after the decision, $c2 ${FO_DEAD_SECS} s later"
    stop rsyslog1
    restart=$(now)
    rsyslog_start 1 "$tag"
    rsyslog_wait 1
    revive=$(now) # listening again (UDP; its TCP port may open first: the up is searched
    # from the restart on, and revival -> up may then be negative)
    if [ "$assert" = 1 ]; then
        up=$(ctl_event up 198.19.1.1:514 "$restart")
        sleep 2
    else
        sleep 1
    fi
    fo_senders_stop "$tag"
    sleep 0.5
    local bs
    bs=$(lost_where)
    stop rsyslog1 && stop rsyslog2 && stop rsyslog3 # flush their files
    spray_stop
    local st=0 args=()
    [ -z "$decision" ] || args+=(--decision "$decision")
    [ -z "$up" ] || args+=(--up "$up")
    [ "$assert" = 0 ] || args+=(--expect-decision)
    check "failover ($tag)" failover --stream "${tag}a,${tag}b" --dead 1 --death "$death" \
        --revive "$revive" --margin 0.02 "${args[@]}" --dead-accepted $((in1 - in0)) \
        --sent-prefix "$E2E_WORK/sent-" --sched-prefix "$E2E_WORK/sched-" "${files[@]}" || st=1
    if [ "$assert" = 1 ]; then
        if [ "$st" != 0 ]; then
            [ -z "$bs" ] || fig "$tag: lost${bs#,}"
            return 1
        fi
        if [ "$c1" != "$c2" ] || [ "$falseup" != 0 ]; then
            echo "  error: Spray sent $((c2 - c1)) datagram(s) to the dead backend after the decision"
            return 1
        fi
        FO_LAST="death->decision $(jget death_to_decision_ms) ms, lost $(jget lost_in_window) of $(jget sent_in_window) in it, 0 after (counter $c1=$c2), back up $(jget revival_to_up_ms) ms after restart, share $(pct "$(jget share_after_up)")$bs$(backlog_fig)"
    elif [ -z "$decision" ]; then
        FO_LAST="NO decision in $(ms_between "$death" "$revive" | sed 's/...$//') s; lost $(jget lost_in_window) of $(jget sent_while_dead) sent while dead$bs"
    else
        FO_LAST="down after $(jget death_to_decision_ms) ms, then $falseup false up(s) while still dead; lost $(( $(jget lost_in_window) + $(jget lost_after_decision) )) of $(jget sent_while_dead) sent while dead$bs"
    fi
}
# backlog_fig: after a failover check, the messages sent before the death that died in the
# killed rsyslog's unwritten backlog, if any (the machine was loaded and rsyslog lagged).
backlog_fig() {
    local n
    n=$(jget lost_before_death)
    [ "$n" = 0 ] || echo ", $n sent before the death died unwritten in rsyslog 1 (backlog $(jget dead_backlog))"
}
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
pct() { python3 -c "import sys; print(f'{float(sys.argv[1]) * 100:.1f} %')" "$1"; }

UDP_CHECK='type = "udp"
timeout_ms = 50
rise = 2
fall = 3'

# Both dataplanes: in DPDK mode the data goes through Spray's port (lb0) and the checks
# leave from the Spray host's kernel, through br0's 198.19.1.253 (lib.sh), as in
# scripts/netns-tests.sh failover; the TCP checks' source is that address too (the only one
# the kernel has on the backends' network).
t_failover() {
    echo "  -- Spray, TCP checks on rsyslog's imtcp port (interval 100 ms, fall 3, rise 2)"
    fo_spray "$DP-fotcp" false 'type = "tcp"
interval_ms = 100
timeout_ms = 50
rise = 2
fall = 3' 1
    fig "spray, tcp check 100 ms: $FO_LAST"
    echo "  -- Spray, passive detection + UDP checks from $LB_CHECK_IP every 1 s"
    fo_spray "$DP-fopas" true "$UDP_CHECK
interval_ms = 1000
source = \"$LB_CHECK_IP\"" 1
    fig "spray, passive + udp check 1 s: $FO_LAST"
    [ "$QUICK" = 0 ] || return 0
    fo_nginx
    echo "  -- pitfall 1: UDP checks every 100 ms (faster than the backend's ICMP rate limit, 1/s)"
    fo_spray "$DP-fopit1" false "$UDP_CHECK
interval_ms = 100
source = \"$LB_CHECK_IP\"" 0
    fig "pitfall, udp check 100 ms: $FO_LAST"
    if [ "$DP" = socket ]; then
        echo "  -- pitfall 2: UDP checks from the data path's own address ($LB_BE_IP), every 1 s"
        fo_spray "$DP-fopit2" false "$UDP_CHECK
interval_ms = 1000" 0
        fig "pitfall, udp check from the data address: $FO_LAST"
    else
        # The data path keeps the client's address: no check can share its ICMP budget.
        fig "pitfall 2 (udp check from the data address): n/a, DPDK NAT keeps the client's source"
    fi
}

# The same kill under nginx's per-datagram round robin: the backend is dead for as long as
# it was under Spray (detection + FO_DEAD_SECS).
fo_nginx() {
    local tag=$DP-fongx death revive files in0 in1
    [ -n "$NGINX" ] || {
        fig "nginx: not installed"
        return 0
    }
    echo "  -- nginx $(nginx -v 2>&1 | sed 's/.*\///'), proxy_requests 1, proxy_responses 0, same testbed"
    rsyslog_all "$tag"
    mapfile -t files < <(be_files "$tag")
    nginx_start
    in0=$(udp_in "${E2E_BACKENDS[0]}")
    fo_senders "$tag" "$VIP_NGINX" "$VIP_NGINX"
    sleep 2
    in1=$(udp_in "${E2E_BACKENDS[0]}")
    death=$(now)
    crash rsyslog1
    sleep "$FO_DEAD_SECS"
    sleep 0.3
    stop rsyslog1
    rsyslog_start 1 "$tag"
    rsyslog_wait 1
    revive=$(now) # listening again
    sleep 2
    fo_senders_stop "$tag"
    sleep 0.5
    stop rsyslog1 && stop rsyslog2 && stop rsyslog3
    stop nginx
    check "nginx: messages lost to the dead backend" failover --stream "${tag}a,${tag}b" --dead 1 \
        --dead-accepted $((in1 - in0)) \
        --death "$death" --revive "$revive" --up "$(awk -v r="$revive" 'BEGIN { printf "%.3f", r + 0.2 }')" \
        --sent-prefix "$E2E_WORK/sent-" --sched-prefix "$E2E_WORK/sched-" "${files[@]}"
    fig "nginx$(backlog_fig): lost $(jget lost_in_window) of $(jget sent_while_dead) sent during $(awk -v a="$revive" -v b="$death" 'BEGIN{printf "%.1f", a-b}') s dead (never stops sending to it), share back $(python3 -c "print(round($(jget share_after_up)*100,1))") %"
}

# ---------------------------------------------------------------- 3. DNS
dnsmasq_all() {
    local i
    for i in 1 2 3; do dnsmasq_start "$i"; done
    dnsmasq_wait 1 2 3
}
dns_queries() {
    local f=$E2E_WORK/dnsperf.queries i
    [ -e "$f" ] && return 0
    {
        echo "who.e2e.test TXT"
        for i in $(seq 1 50); do echo "host$i.e2e.test A"; done
    } >"$f"
}
# dnsperf_run NAME VIP SECS [MAXQPS]: one dnsperf run from client 1, report in logs/NAME.log.
dnsperf_run() {
    dns_queries
    local q=()
    [ -n "${4:-}" ] && q=(-Q "$4")
    in_ns "$E2E_NS_CLI" "$DNSPERF" -s "$2" -p 53 -d "$E2E_WORK/dnsperf.queries" -l "$3" -c 1 \
        -t 2 "${q[@]}" >"$E2E_WORK/logs/$1.log" 2>&1
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

t_dns() {
    dnsmasq_all
    local conf=$E2E_WORK/spray-dns-$DP.toml
    {
        base_conf
        service_toml dns "$VIP_DNS" 53
        [ "$DP" = dpdk ] && service_toml dns-dr "$VIP_DR" 53 dr
    } >"$conf"
    spray_start "$conf"
    in_ns "$E2E_NS_CLI" python3 "$HERE/e2e.py" dns --vip "$VIP_DNS" --count 30 >/dev/null || true # warm up
    check_in "$E2E_NS_CLI" "NAT: every answer from the VIP, spread per query" \
        dns --vip "$VIP_DNS" --count 300 </dev/null
    fig "NAT: 300 queries from one socket, answers $(jget per_backend | tr -d ' '), all from the VIP"
    if [ "$DP" = dpdk ]; then
        echo "  (DR: client 2 -> $VIP_DR:53; the backends answer it directly, from the VIP)"
        check_in "$E2E_NS_CLI2" "DR: every answer from the VIP, spread per query" \
            dns --vip "$VIP_DR" --count 300 </dev/null
        fig "DR: 300 queries, answers $(jget per_backend | tr -d ' '), all from the VIP"
    fi

    echo "  dnsperf at $DNS_RATE queries/s for $DNS_SECS s through $VIP_DNS:53"
    dnsperf_run "dnsperf-steady-$DP" "$VIP_DNS" "$DNS_SECS" "$DNS_RATE"
    check "dnsperf: every query answered" dnsperf "$E2E_WORK/logs/dnsperf-steady-$DP.log"
    fig "dnsperf $(jget completed | cut -d. -f1) queries at $DNS_RATE/s: lost $(jget lost | cut -d. -f1)"

    [ "$QUICK" = 0 ] || return 0
    local peers=(spray) r p s=() x=() qps
    if [ "$DP" = socket ] && [ -n "$NGINX" ]; then
        nginx_start
        peers+=(nginx)
        check_in "$E2E_NS_CLI" "nginx: every answer from its VIP, spread per query" \
            dns --vip "$VIP_DNS_NGINX" --count 300 </dev/null
    fi
    echo "  dnsperf, as fast as it goes (100 queries in flight), 4 s, $RUNS run(s) per peer, alternating"
    for ((r = 1; r <= RUNS; r++)); do
        for p in "${peers[@]}"; do
            if [ "$p" = spray ]; then vip=$VIP_DNS; else vip=$VIP_DNS_NGINX; fi
            dnsperf_run "dnsperf-$p-$DP-$r" "$vip" 4
            python3 "$HERE/e2e.py" dnsperf --max-lost 1e9 "$E2E_WORK/logs/dnsperf-$p-$DP-$r.log" \
                | sed "s/^  dnsperf/  $p run $r/" | grep -v '^RESULT'
            qps=$(sed -n 's/.*Queries per second: *\([0-9.]*\).*/\1/p' "$E2E_WORK/logs/dnsperf-$p-$DP-$r.log")
            if [ "$p" = spray ]; then s+=("$qps"); else x+=("$qps"); fi
        done
    done
    fig "dnsperf max: spray $(echo "${s[*]}" | median | cut -d. -f1) q/s (median of $RUNS)"
    [ ${#x[@]} -eq 0 ] || fig "nginx $(echo "${x[*]}" | median | cut -d. -f1) q/s (same testbed)"
}

# ---------------------------------------------------------------- 4. transparent source
t_transparent() {
    rsyslog_all "$DP-tp"
    local conf=$E2E_WORK/spray-tp-$DP.toml files n=3000
    mapfile -t files < <(be_files "$DP-tp")
    if [ "$DP" = socket ]; then
        {
            base_conf "transparent = true"
            service_toml syslog "$VIP_A" 514
            service_toml dns "$VIP_DNS" 53
        } >"$conf"
        dnsmasq_all
    else
        {
            base_conf
            service_toml syslog "$VIP_A" 514
            service_toml syslog-dr "$VIP_DR" 514 dr
        } >"$conf"
    fi
    spray_start "$conf"
    lost_start
    logger_send "$E2E_NS_CLI" "$VIP_A" 514 tp1 "$n" 2000
    wait_logged "$n" "${files[@]}"
    check "NAT, client 1: backends see 198.18.0.1" syslog --stream tp1 --count "$n" --even \
        --source 198.18.0.1 "${files[@]}" || { lost_where "NAT, client 1"; return 1; }
    if [ "$DP" = socket ]; then
        fig "socket transparent=true: backends see 198.18.0.1 (logger, $n msgs, thirds)"
        logger_send "$E2E_NS_CLI2" "$VIP_A" 514 tp2 "$n" 2000
        wait_logged $((2 * n)) "${files[@]}"
        check "NAT, client 2: backends see 198.18.0.2" syslog --stream tp2 --count "$n" --even \
            --source 198.18.0.2 "${files[@]}"
        fig "and 198.18.0.2 from client 2"
        check_in "$E2E_NS_CLI" "DNS through the transparent proxy: replies back, from the VIP" \
            dns --vip "$VIP_DNS" --count 300 </dev/null
        fig "DNS replies return via policy routing, from the VIP"
    else
        fig "dpdk NAT: backends see 198.18.0.1$(lost_where)"
        lost_start
        logger_send "$E2E_NS_CLI2" "$VIP_DR" 514 tp2 "$n" 2000
        wait_logged $((2 * n)) "${files[@]}"
        check "DR, client 2: backends see 198.18.0.2" syslog --stream tp2 --count "$n" --even \
            --source 198.18.0.2 "${files[@]}" || { lost_where "DR, client 2"; return 1; }
        fig "dpdk DR: backends see 198.18.0.2 (thirds, lost 0)$(lost_where)"
    fi
}
