#!/usr/bin/env python3
"""Numbered UDP datagrams for the HA tests: a steady sender, counting sinks, and the loss report.

  traffic.py send HOST PORT RATE SECONDS OUT.json   sends datagrams 0..N-1 at RATE/s
  traffic.py sink PORT OUT.json                     records sequence numbers until SIGTERM
  traffic.py report SENT.json SINK.json...          lost datagrams and the longest gap

Each datagram starts with an 8-byte big-endian sequence number.
"""
import json
import signal
import socket
import struct
import sys
import time


def send(host, port, rate, seconds, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    count = int(rate * seconds)
    pad = b"<13>spray ha test " + b"x" * 100
    start = time.monotonic()
    errors = 0
    for i in range(count):
        try:
            s.sendto(struct.pack("!Q", i) + pad, (host, port))
        except OSError:
            errors += 1  # e.g. ECONNREFUSED from an ICMP error of an earlier datagram
        ahead = (i + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    json.dump({"sent": count, "rate": rate, "start": start, "send_errors": errors}, open(out, "w"))


def sink(port, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.2)
    seqs = []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    open(out + ".ready", "w").close()
    while not stop:
        try:
            data = s.recv(2048)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if len(data) >= 8:
            seqs.append(struct.unpack("!Q", data[:8])[0])
    json.dump({"seqs": seqs}, open(out, "w"))


def report(sent_file, sink_files):
    sent = json.load(open(sent_file))
    n, rate = sent["sent"], sent["rate"]
    got = set()
    per = []
    for f in sink_files:
        seqs = json.load(open(f))["seqs"]
        per.append(len(seqs))
        got.update(q for q in seqs if q < n)
    missing = sorted(set(range(n)) - got)
    # The longest run of consecutive missing sequence numbers is the outage.
    gap, run, prev = 0, 0, None
    for q in missing:
        run = run + 1 if prev is not None and q == prev + 1 else 1
        gap = max(gap, run)
        prev = q
    first = missing[0] if missing else None
    print(json.dumps({
        "sent": n, "received": len(got), "per_backend": per, "lost": len(missing),
        "longest_gap": gap, "outage_ms": round(gap * 1000.0 / rate),
        "first_lost_at_ms": None if first is None else round(first * 1000.0 / rate),
    }))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "send":
        send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
    elif cmd == "sink":
        sink(int(sys.argv[2]), sys.argv[3])
    elif cmd == "report":
        report(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
