#!/usr/bin/env python3
"""Many UDP flows for the ECMP test: a sender that spreads numbered datagrams over FLOWS
source ports, sinks that remember which Spray node (source address) delivered each one, and
the report.

  flows.py send HOST PORT RATE SECONDS FLOWS TAG OUT.json
      datagrams 0..N-1 at RATE/s, datagram i from source port number i % FLOWS; stops
      early on SIGTERM (OUT.json then counts what was sent); OUT.json.started once running
  flows.py sink PORT OUT.json
      records (tag, source address, sequence number) until SIGTERM; SIGUSR1 writes a
      snapshot to OUT.json (atomically) and goes on
  flows.py report SENT.json NODES SINK.json... [--before SECS] [--after SECS]
      NODES: name=address,... (the nodes' source addresses as the backends see them).
      Lost and duplicated datagrams, datagrams and flows per node and per backend; with
      --after, the same for the datagrams sent SECS or more after the sender started (the
      sender records when each one left); with --before too, the flows whose node before
      that time differs from the one after.
  flows.py summary split|fail|back REPORT.json NODES RATE [EVENT_SECS]
      prints a report for people and checks it: split, every datagram in and every node
      with at least half its share; fail/back (node 1 withdrawn at EVENT_SECS into the run,
      or back), nothing lost before the event nor after the route change, then node 1
      without traffic (fail) or every node with its share again (back). Exit status: the
      number of failed checks.

Each datagram is an 8-byte big-endian sequence number, then "<13>spray ecmp TAG ": a syslog
line, so that anything else reaching the sinks (health checks) is told apart.
"""
import json
import os
import signal
import socket
import struct
import sys
import time

MAGIC = b"<13>spray ecmp "


def send(host, port, rate, seconds, flows, tag, out):
    socks = []
    for _ in range(flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))  # one ephemeral source port per flow
        socks.append(s)
    count = int(rate * seconds)
    pad = MAGIC + tag.encode() + b" " + b"x" * 80
    errors = 0
    stop = []
    times = []  # when each datagram left, ms after start
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    wall = time.time()
    start = time.monotonic()
    open(out + ".started", "w").close()
    for i in range(count):
        if stop:
            count = i
            break
        times.append(round((time.monotonic() - start) * 1000, 1))
        try:
            socks[i % flows].sendto(struct.pack("!Q", i) + pad, (host, port))
        except OSError:
            errors += 1
        ahead = (i + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    took = time.monotonic() - start
    json.dump({"sent": count, "rate": rate, "flows": flows, "tag": tag, "start_wall": wall,
               "took": took, "send_errors": errors, "times_ms": times,
               "ports": [s.getsockname()[1] for s in socks]}, open(out, "w"))


def sink(port, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.1)
    seen = {}  # tag -> source address -> [seq]
    other = [0]
    flags = []
    signal.signal(signal.SIGTERM, lambda *_: flags.append("stop"))
    signal.signal(signal.SIGUSR1, lambda *_: flags.append("snap"))

    def snapshot():
        tmp = out + ".tmp"
        json.dump({"tags": seen, "other": other[0]}, open(tmp, "w"))
        os.replace(tmp, out)

    open(out + ".ready", "w").close()
    while True:
        if flags:
            snapshot()
            if "stop" in flags:
                return
            flags.clear()
        try:
            data, src = s.recvfrom(2048)
        except (socket.timeout, InterruptedError):
            continue
        if len(data) > 8 + len(MAGIC) and data[8:8 + len(MAGIC)] == MAGIC:
            tag = data[8 + len(MAGIC):].split(b" ", 1)[0].decode(errors="replace")
            seq = struct.unpack("!Q", data[:8])[0]
            seen.setdefault(tag, {}).setdefault(src[0], []).append(seq)
        else:
            other[0] += 1


def summary(kind, report_file, nodes, rate, event):
    """Human lines for one run's report, then FAIL lines; the exit status is the failures."""
    d = json.load(open(report_file))
    fails = []

    def split(per, flows=None):
        total = max(sum(per.values()), 1)
        return ", ".join(f"{k} {v} ({100.0 * v / total:.1f} %" + (f", {flows[k]} flows)" if flows else ")")
                         for k, v in sorted(per.items()))

    def fair(per):
        total = sum(per.values())
        return total > 0 and len(per) == nodes and all(v >= total / nodes / 2 for v in per.values())

    if kind == "split":
        print(f"    {d['sent']} datagrams: received {d['received']}, lost {d['lost']}, duplicated {d['duplicates']}")
        print(f"    per node (backends' view): {split(d['per_node'], d['flows_per_node'])}")
        if d["lost"]:
            fails.append(f"{d['lost']} datagrams lost at steady state")
        if not fair(d["per_node"]):
            fails.append("a node carries less than half its share")
    else:
        ev_ms = round(event * 1000)
        lost = d["lost"]
        window = "" if not lost else f" (first {d['first_lost_ms'] - ev_ms} ms, last {d['last_lost_ms'] - ev_ms} ms after the event)"
        print(f"    whole run: {d['sent']} sent, {lost} lost{window}, duplicated {d['duplicates']}")
        print(f"    from 0.2 s after the route change: {d['sent_after']} sent, {d['lost_after']} lost; {split(d['per_node_after'])}")
        if "flows_moved" in d:
            moved = ", ".join(f"{k.replace('>', ' to ')} {v}" for k, v in sorted(d["flows_moved"].items()))
            print(f"    flows that changed node: {moved or 'none'}")
        if d["sent_after"] < rate:
            fails.append("less than 1 s of traffic after the route change")
        if d["lost_after"]:
            fails.append(f"{d['lost_after']} datagrams lost after the route change")
        # 0.1 s of slack: datagrams still in flight or queued in the failing node's socket.
        if lost and d["first_lost_ms"] < ev_ms - 100:
            fails.append("datagrams lost before the event")
        if kind == "fail" and d["per_node_after"].get("n1", 0):
            fails.append("node 1 still got traffic after its withdrawal")
        if kind == "back" and not fair(d["per_node_after"]):
            fails.append("the split did not come back after the re-announcement")
    if d["duplicates"]:
        fails.append(f"{d['duplicates']} datagrams duplicated")
    for f in fails:
        print(f"FAIL: {d['tag']}: {f}")
    sys.exit(len(fails))


def report(sent_file, nodes_arg, sink_files, before, after):
    sent = json.load(open(sent_file))
    n, rate, flows, tag = sent["sent"], sent["rate"], sent["flows"], sent["tag"]
    nodes = dict(kv.split("=", 1) for kv in nodes_arg.split(","))
    by_addr = {addr: name for name, addr in nodes.items()}
    times = sent["times_ms"]
    after_ms = after * 1000 if after is not None else None
    before_ms = before * 1000 if before is not None else None
    flow_before = {}  # flow -> nodes that carried it before the event
    flow_after = {}  # flow -> nodes that carried it from `after` on

    counts = {}  # seq -> times received
    per_node = {name: 0 for name in nodes}
    per_node_after = {name: 0 for name in nodes}
    flows_per_node = {name: set() for name in nodes}
    per_backend = []
    for f in sink_files:
        got = json.load(open(f))["tags"].get(tag, {})
        per_backend.append(sum(len(v) for v in got.values()))
        for addr, seqs in got.items():
            name = by_addr.get(addr, addr)
            per_node.setdefault(name, 0)
            per_node_after.setdefault(name, 0)
            flows_per_node.setdefault(name, set())
            for q in seqs:
                if q >= n:
                    continue
                counts[q] = counts.get(q, 0) + 1
                per_node[name] += 1
                flows_per_node[name].add(q % flows)
                if after_ms is not None and times[q] >= after_ms:
                    per_node_after[name] += 1
                    flow_after.setdefault(q % flows, set()).add(name)
                if before_ms is not None and times[q] < before_ms:
                    flow_before.setdefault(q % flows, set()).add(name)
    missing = [q for q in range(n) if q not in counts]
    received = n - len(missing)
    result = {
        "tag": tag, "sent": n, "received": received, "lost": len(missing),
        "duplicates": sum(c - 1 for c in counts.values()),
        "per_node": per_node,
        "share_pct": {k: round(100.0 * v / max(received, 1), 1) for k, v in per_node.items()},
        "flows_per_node": {k: len(v) for k, v in flows_per_node.items()},
        "per_backend": per_backend,
        "first_lost_ms": round(times[missing[0]]) if missing else None,
        "last_lost_ms": round(times[missing[-1]]) if missing else None,
        "sender_late_ms": round((sent["took"] - n / rate) * 1000.0),
        "send_errors": sent["send_errors"],
    }
    if after_ms is not None:
        result["after_s"] = after
        result["sent_after"] = sum(1 for t in times if t >= after_ms)
        result["lost_after"] = sum(1 for q in missing if times[q] >= after_ms)
        result["per_node_after"] = per_node_after
    if after_ms is not None and before_ms is not None:
        moved = {}
        for f in range(flows):
            b, a = flow_before.get(f, set()), flow_after.get(f, set())
            if b and a and b != a:
                key = "+".join(sorted(b)) + ">" + "+".join(sorted(a))
                moved[key] = moved.get(key, 0) + 1
        result["flows_moved"] = moved
    print(json.dumps(result))


if __name__ == "__main__":
    args = sys.argv[1:]
    cmd = args[0] if args else ""
    if cmd == "send" and len(args) == 8:
        send(args[1], int(args[2]), float(args[3]), float(args[4]), int(args[5]), args[6], args[7])
    elif cmd == "sink" and len(args) == 3:
        sink(int(args[1]), args[2])
    elif cmd == "summary" and len(args) in (5, 6):
        summary(args[1], args[2], int(args[3]), float(args[4]), float(args[5]) if len(args) == 6 else 0.0)
    elif cmd == "report" and len(args) >= 4:
        opt = {}
        for name in ("--before", "--after"):
            if name in args:
                i = args.index(name)
                opt[name] = float(args[i + 1])
                del args[i:i + 2]
        report(args[1], args[2], args[3:], opt.get("--before"), opt.get("--after"))
    else:
        sys.exit(__doc__)
