#!/usr/bin/env python3
"""Many UDP flows for the ECMP test: a sender that spreads numbered datagrams over FLOWS
source ports, sinks that remember which Spray node (source address) delivered each one, and
the report.

  flows.py send HOST PORT RATE SECONDS FLOWS TAG OUT.json
      datagrams 0..N-1 at RATE/s, datagram i from source port number i % FLOWS
  flows.py sink PORT OUT.json
      records (tag, source address, sequence number) until SIGTERM; SIGUSR1 writes a
      snapshot to OUT.json (atomically) and goes on
  flows.py report SENT.json NODES SINK.json... [--after SECS]
      NODES: name=address,... (the nodes' source addresses as the backends see them).
      Lost and duplicated datagrams, datagrams and flows per node and per backend; with
      --after, the same for the datagrams sent SECS or more after the sender started
      (datagram i leaves at start + i/RATE or later: the sender never runs ahead).

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
    wall = time.time()
    start = time.monotonic()
    for i in range(count):
        try:
            socks[i % flows].sendto(struct.pack("!Q", i) + pad, (host, port))
        except OSError:
            errors += 1
        ahead = (i + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    took = time.monotonic() - start
    json.dump({"sent": count, "rate": rate, "flows": flows, "tag": tag, "start_wall": wall,
               "took": took, "send_errors": errors,
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


def report(sent_file, nodes_arg, sink_files, after):
    sent = json.load(open(sent_file))
    n, rate, flows, tag = sent["sent"], sent["rate"], sent["flows"], sent["tag"]
    nodes = dict(kv.split("=", 1) for kv in nodes_arg.split(","))
    by_addr = {addr: name for name, addr in nodes.items()}
    first_after = int(after * rate) if after is not None else None

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
                if first_after is not None and q >= first_after:
                    per_node_after[name] += 1
    missing = [q for q in range(n) if q not in counts]
    received = n - len(missing)
    result = {
        "tag": tag, "sent": n, "received": received, "lost": len(missing),
        "duplicates": sum(c - 1 for c in counts.values()),
        "per_node": per_node,
        "share_pct": {k: round(100.0 * v / max(received, 1), 1) for k, v in per_node.items()},
        "flows_per_node": {k: len(v) for k, v in flows_per_node.items()},
        "per_backend": per_backend,
        "first_lost_ms": round(missing[0] * 1000.0 / rate) if missing else None,
        "last_lost_ms": round(missing[-1] * 1000.0 / rate) if missing else None,
        "sender_late_ms": round((sent["took"] - n / rate) * 1000.0),
        "send_errors": sent["send_errors"],
    }
    if first_after is not None:
        result["after_s"] = after
        result["sent_after"] = max(n - first_after, 0)
        result["lost_after"] = sum(1 for q in missing if q >= first_after)
        result["per_node_after"] = per_node_after
    print(json.dumps(result))


if __name__ == "__main__":
    args = sys.argv[1:]
    cmd = args[0] if args else ""
    if cmd == "send" and len(args) == 8:
        send(args[1], int(args[2]), float(args[3]), float(args[4]), int(args[5]), args[6], args[7])
    elif cmd == "sink" and len(args) == 3:
        sink(int(args[1]), args[2])
    elif cmd == "report" and len(args) >= 4:
        after = None
        if "--after" in args:
            i = args.index("--after")
            after = float(args[i + 1])
            del args[i:i + 2]
        report(args[1], args[2], args[3:], after)
    else:
        sys.exit(__doc__)
