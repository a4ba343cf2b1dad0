#!/usr/bin/env python3
"""Helper of the end-to-end suite (scripts/e2e/run.sh); standard library only.

  pace       print sequence-numbered syslog lines at a steady rate (piped into `logger`)
  syslog     check what the rsyslog backends logged: nothing lost, nothing duplicated,
             the spread over backends, the source address they saw
  failover   classify the messages lost around a backend's death and revival
  dns        query a VIP from one socket: every answer from the VIP, the spread per query
  dnsperf    read dnsperf's report
  summary    print the results table

Every check prints one human line per figure and a last line `RESULT {json}`; exit status
0 means it passed.
"""
import argparse
import bisect
import json
import os
import random
import re
import socket
import struct
import sys
import time

MINE = re.compile(r"e2e stream=(\S+) seq=(\d+) t=([\d.]+)")
LOGGEN = re.compile(r"seq: (\d+), thread: (\d+), runid: (\d+)")


def result(ok, **fig):
    fig["ok"] = bool(ok)
    print("RESULT " + json.dumps(fig, sort_keys=True))
    sys.exit(0 if ok else 1)


# ---------------------------------------------------------------- pace


def cmd_pace(a):
    """Lines `e2e stream=S seq=N t=UNIX` at RATE/s to stdout, until COUNT or STOP exists.

    The schedule (first seq of each write and its time) goes to --schedule, so the send
    time of any sequence number, even one never received, is known to within a write.
    """
    out = sys.stdout
    sched = open(a.schedule, "w") if a.schedule else None
    start = time.time()
    seq = 0
    last_check = 0.0
    while a.count == 0 or seq < a.count:
        now = time.time()
        due = int((now - start) * a.rate) + 1
        if a.count:
            due = min(due, a.count)
        if due > seq:
            lines = "".join(f"e2e stream={a.stream} seq={s} t={now:.6f}\n" for s in range(seq, due))
            if sched:
                sched.write(f"{seq} {now:.6f}\n")
            out.write(lines)
            out.flush()
            seq = due
        if now - last_check > 0.02:
            last_check = now
            if (a.stop and os.path.exists(a.stop)) or now - start > a.max_secs:
                break
        time.sleep(0.001)
    took = time.time() - start
    if sched:
        sched.close()
    if a.sent:
        with open(a.sent, "w") as f:
            json.dump({"sent": seq, "secs": took, "rate": seq / took if took else 0}, f)


# ---------------------------------------------------------------- syslog files


def read_backends(files, stream=None):
    """{backend index: [(fromhost_ip, key)]} where key is (stream, seq) or ('loggen', seq)."""
    got = {}
    for i, path in enumerate(files):
        rows = []
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    ip, _, msg = line.partition(" ")
                    m = MINE.search(msg)
                    if m:
                        if stream is None or m.group(1) in stream:
                            rows.append((ip, (m.group(1), int(m.group(2)))))
                        continue
                    m = LOGGEN.search(msg)
                    if m and (stream is None or "loggen" in stream):
                        rows.append((ip, ("loggen", int(m.group(1)))))
        except FileNotFoundError:
            pass
        got[i] = rows
    return got


def cmd_syslog(a):
    streams = a.stream.split(",")
    got = read_backends(a.files, streams)
    ok = True
    figs = {}
    seen = {}
    dups = 0
    for i, rows in got.items():
        for _, key in rows:
            if key in seen:
                dups += 1
            seen[key] = i
    per = [len(got[i]) for i in range(len(a.files))]
    expected = a.count * len(streams)
    missing = [k for s in streams for k in ((s, n) for n in range(a.count)) if k not in seen]
    extra = [k for k in seen if k[1] >= a.count]
    figs.update(sent=expected, received=sum(per), per_backend=per, lost=len(missing),
                duplicated=dups, unexpected=len(extra))
    print(f"  sent {expected}, logged {sum(per)} by the backends {per}; "
          f"lost {len(missing)}, duplicated {dups}, unexpected {len(extra)}")
    if missing:
        print(f"  error: {len(missing)} message(s) lost, e.g. {missing[:5]}")
        ok = False
    if dups or extra:
        print("  error: duplicated or unexpected messages")
        ok = False
    if a.even:
        for s in streams:
            ps = [sum(1 for _, k in got[i] if k[0] == s) for i in range(len(a.files))]
            if a.count % len(a.files) == 0 and not missing:
                even = all(p == a.count // len(a.files) for p in ps)
            else:
                even = max(ps) - min(ps) <= 1 + len(missing)
            print(f"  {s}: per backend {ps} ({'exact thirds' if even else 'NOT even'})")
            if not even:
                print(f"  error: {s}: not spread evenly: {ps}")
                ok = False
    if a.source:
        srcs = {}
        for i, rows in got.items():
            for ip, _ in rows:
                srcs[ip] = srcs.get(ip, 0) + 1
        figs["sources"] = srcs
        good = set(srcs) == {a.source}
        print(f"  source address seen by the backends (%fromhost-ip%): {srcs} "
              f"({'all ' + a.source if good else 'expected ' + a.source})")
        ok = ok and good
    result(ok, **figs)


# ---------------------------------------------------------------- failover


def load_schedule(path):
    firsts, times = [], []
    with open(path) as f:
        for line in f:
            s, t = line.split()
            firsts.append(int(s))
            times.append(float(t))
    return firsts, times


def send_time(sched, seq):
    firsts, times = sched
    i = bisect.bisect_right(firsts, seq) - 1
    return times[max(i, 0)]


def cmd_failover(a):
    """Lost messages of each stream, by when they were sent relative to death/decision."""
    streams = a.stream.split(",")
    got = read_backends(a.files, streams)
    dead = a.dead - 1
    seen = {}
    dups = 0
    for i, rows in got.items():
        for _, key in rows:
            if key in seen:
                dups += 1
            seen[key] = i
    t_death, t_revive = a.death, a.revive
    t_decision = a.decision if a.decision else None
    t_up = a.up if a.up else None
    win_end = (t_decision + a.margin) if t_decision else t_revive
    lost_window = lost_after = lost_before = lost_late = 0
    sent_total = 0
    window_sent = 0
    after_up_total = after_up_dead = 0
    dead_period_sent = 0
    logged_pre = 0  # logged by the dead backend, sent before its death
    for s in streams:
        with open(a.sent_prefix + s + ".json") as f:
            n = json.load(f)["sent"]
        sent_total += n
        sched = load_schedule(a.sched_prefix + s + ".sched")
        for seq in range(n):
            t = send_time(sched, seq)
            where = seen.get((s, seq))
            if t_death <= t < win_end:
                window_sent += 1
            if t_death <= t < t_revive:
                dead_period_sent += 1
            if where == dead and t < t_death:
                logged_pre += 1
            if where is None:
                if t < t_death - a.margin:
                    lost_before += 1
                elif t < win_end:
                    lost_window += 1
                elif t < t_revive + a.margin:
                    lost_after += 1
                else:
                    lost_late += 1
            if t_up and t > t_up + a.margin:
                after_up_total += 1
                if where == dead:
                    after_up_dead += 1
    share = after_up_dead / after_up_total if after_up_total else 0.0
    figs = dict(sent=sent_total, duplicated=dups, lost_before_death=lost_before,
                lost_in_window=lost_window, lost_after_decision=lost_after,
                lost_after_revival=lost_late, sent_in_window=window_sent,
                sent_while_dead=dead_period_sent, share_after_up=round(share, 3))
    # Messages sent before the death and lost: the backend had received them but not yet
    # written them (rsyslog's socket buffer and queue die with it under SIGKILL; it lags
    # when the machine is loaded). Allowed only up to that backlog: what its kernel
    # delivered before the kill minus what it wrote.
    backlog = None
    if a.dead_accepted is not None:
        backlog = max(0, a.dead_accepted - logged_pre)
        figs["dead_backlog"] = backlog
        print(f"  the dead backend's backlog at the kill (received, not yet written): {backlog}")
    if t_decision:
        figs["death_to_decision_ms"] = round((t_decision - t_death) * 1e3, 1)
        print(f"  death -> decision: {figs['death_to_decision_ms']} ms; lost in that window: "
              f"{lost_window} of {window_sent} sent (+{a.margin * 1e3:.0f} ms margin)")
        print(f"  lost after the decision until revival: {lost_after}")
    else:
        print(f"  no decision: lost while the backend was dead ({(t_revive - t_death):.2f} s): "
              f"{lost_window} of {dead_period_sent} sent")
    if t_up:
        figs["revival_to_up_ms"] = round((t_up - t_revive) * 1e3, 1)
        print(f"  revival -> up: {figs['revival_to_up_ms']} ms; share of the revived backend "
              f"after that: {share * 100:.1f} % of {after_up_total}")
    print(f"  lost before the death: {lost_before}"
          + (" (died in the backend's backlog)"
             if lost_before and backlog is not None and lost_before <= backlog + a.backlog_slack
             else "")
          + f", after revival: {lost_late}; duplicated {dups}")
    errors = []
    if dups:
        errors.append(f"{dups} duplicated")
    if lost_before and (backlog is None or lost_before > backlog + a.backlog_slack):
        errors.append(f"{lost_before} sent before the death lost"
                      + (f", more than the dead backend's backlog ({backlog})" if backlog is not None else ""))
    if lost_late:
        errors.append(f"{lost_late} sent after the revival lost")
    if a.expect_decision:
        if t_decision is None:
            errors.append("no decision")
        if lost_after:
            errors.append(f"{lost_after} sent after the decision missing at the survivors")
        if t_up is None or not 0.2 <= share <= 0.45:
            errors.append(f"revived backend's share {share * 100:.1f} % (expected ~33 %)")
    for e in errors:
        print(f"  error: {e}")
    result(not errors, **figs)


# ---------------------------------------------------------------- dns


def dns_query(qid, name, qtype=16):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)


def skip_name(b, i):
    while True:
        n = b[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def dns_txt(b):
    """(id, first TXT string of the answer) or None."""
    if len(b) < 12:
        return None
    qid, _flags, qd, an = struct.unpack("!HHHH", b[:8])
    i = 12
    for _ in range(qd):
        i = skip_name(b, i) + 4
    if an < 1:
        return qid, None
    i = skip_name(b, i)
    rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", b[i:i + 10])
    i += 10
    if rtype != 16:
        return qid, None
    return qid, b[i + 1:i + 1 + b[i]].decode()


def cmd_dns(a):
    fam = socket.AF_INET6 if ":" in a.vip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)  # not connected: we see every source
    s.bind(("", 0))
    s.settimeout(a.timeout)
    vip = (a.vip, a.port)
    per, wrong, lost = {}, {}, 0
    base = random.randrange(0, 60000)
    for k in range(a.count):
        qid = (base + k) & 0xFFFF
        s.sendto(dns_query(qid, "who.e2e.test"), vip)
        deadline = time.time() + a.timeout
        while True:
            try:
                b, src = s.recvfrom(4096)
            except socket.timeout:
                lost += 1
                break
            src = (src[0], src[1])
            r = dns_txt(b)
            if src != vip:
                wrong[str(src)] = wrong.get(str(src), 0) + 1
            if r and r[0] == qid:
                per[r[1]] = per.get(r[1], 0) + 1
                break
            if time.time() > deadline:
                lost += 1
                break
    ok = not wrong and lost == 0
    counts = [per.get(f"be{i}", 0) for i in (1, 2, 3)]
    even = max(counts) - min(counts) <= (0 if a.count % 3 == 0 else 1)
    ok = ok and even and sum(counts) == a.count
    print(f"  {a.count} queries from one socket to {a.vip}:{a.port}: answers by backend "
          f"{counts} ({'exact thirds' if even else 'NOT even'}), unanswered {lost}, "
          f"answers from another source {sum(wrong.values())} {wrong if wrong else ''}")
    result(ok, queries=a.count, per_backend=counts, lost=lost, wrong_source=sum(wrong.values()))


def cmd_dnsperf(a):
    text = open(a.file).read()

    def num(label):
        m = re.search(label + r":\s+([\d.]+)", text)
        return float(m.group(1)) if m else None

    sent, done, lost = num("Queries sent"), num("Queries completed"), num("Queries lost")
    qps = num("Queries per second")
    ok = sent is not None and done is not None and sent > 0 and (lost or 0) <= a.max_lost
    print(f"  dnsperf: sent {sent and int(sent)}, completed {done and int(done)}, lost "
          f"{lost and int(lost)}, {qps} queries/s")
    result(ok, sent=sent, completed=done, lost=lost, qps=qps)


# ---------------------------------------------------------------- summary


def cmd_summary(a):
    rows = []
    with open(a.file) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) >= 4:
                rows.append(p[:4])
    head = ["test", "dataplane", "result", "figures"]
    w = [max(len(r[i]) for r in rows + [head]) for i in range(3)]
    fmt = f"%-{w[0]}s  %-{w[1]}s  %-{w[2]}s  %s"
    print(fmt % tuple(head))
    print(fmt % tuple("-" * n for n in w + [7]))
    for r in rows:
        print(fmt % tuple(r))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("pace")
    q.add_argument("--stream", required=True)
    q.add_argument("--rate", type=float, required=True)
    q.add_argument("--count", type=int, default=0)
    q.add_argument("--stop", help="stop when this file exists")
    q.add_argument("--max-secs", type=float, default=600, help="stop after this long anyway")
    q.add_argument("--schedule")
    q.add_argument("--sent")
    q.set_defaults(fn=cmd_pace)
    q = sub.add_parser("syslog")
    q.add_argument("--stream", required=True, help="comma-separated streams, or loggen")
    q.add_argument("--count", type=int, required=True, help="messages per stream")
    q.add_argument("--even", action="store_true")
    q.add_argument("--source")
    q.add_argument("files", nargs="+")
    q.set_defaults(fn=cmd_syslog)
    q = sub.add_parser("failover")
    q.add_argument("--stream", required=True)
    q.add_argument("--dead", type=int, required=True, help="1-based backend that died")
    q.add_argument("--death", type=float, required=True)
    q.add_argument("--decision", type=float, default=0)
    q.add_argument("--revive", type=float, required=True)
    q.add_argument("--up", type=float, default=0)
    q.add_argument("--margin", type=float, default=0.02)
    q.add_argument("--sent-prefix", required=True)
    q.add_argument("--sched-prefix", required=True)
    q.add_argument("--expect-decision", action="store_true")
    q.add_argument("--dead-accepted", type=int, default=None,
                   help="datagrams the dead backend's kernel delivered to its sockets between "
                   "the senders' start and the kill (Udp InDatagrams)")
    q.add_argument("--backlog-slack", type=int, default=20)
    q.add_argument("files", nargs="+")
    q.set_defaults(fn=cmd_failover)
    q = sub.add_parser("dns")
    q.add_argument("--vip", required=True)
    q.add_argument("--port", type=int, default=53)
    q.add_argument("--count", type=int, default=300)
    q.add_argument("--timeout", type=float, default=1.0)
    q.set_defaults(fn=cmd_dns)
    q = sub.add_parser("dnsperf")
    q.add_argument("--max-lost", type=float, default=0)
    q.add_argument("file")
    q.set_defaults(fn=cmd_dnsperf)
    q = sub.add_parser("summary")
    q.add_argument("file")
    q.set_defaults(fn=cmd_summary)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
