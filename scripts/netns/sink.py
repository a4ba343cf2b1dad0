#!/usr/bin/env python3
"""A backend for the testbed: counts UDP datagrams on an IPv4 and an IPv6 port.

usage: sink.py V4PORT V6PORT OUTFILE
Runs until SIGTERM, then writes {"v4": N, "v6": M} to OUTFILE.
"""
import json
import selectors
import signal
import socket
import sys

v4port, v6port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
counts = {"v4": 0, "v6": 0}
sel = selectors.DefaultSelector()
for fam, addr, key in ((socket.AF_INET, ("0.0.0.0", v4port), "v4"),
                       (socket.AF_INET6, ("::", v6port), "v6")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(addr)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, key)

running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
open(out + ".ready", "w").close()
while running:
    for k, _ in sel.select(timeout=0.1):
        while True:
            try:
                k.fileobj.recv(65535)
            except BlockingIOError:
                break
            counts[k.data] += 1
with open(out, "w") as f:
    json.dump(counts, f)
