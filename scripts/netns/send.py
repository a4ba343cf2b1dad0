#!/usr/bin/env python3
"""The testbed's client: sends COUNT datagrams from one socket to HOST:PORT.

usage: send.py HOST PORT COUNT [RATE]
RATE is datagrams per second (0: as fast as possible). Prints the achieved rate.
"""
import socket
import sys
import time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rate = float(sys.argv[4]) if len(sys.argv) > 4 else 20000.0
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
payload = b"<13>spray testbed " + b"x" * 150
start = time.monotonic()
for i in range(count):
    s.sendto(payload, (host, port))
    if rate > 0 and i % 100 == 99:
        ahead = (i + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
took = time.monotonic() - start
print(f"sent {count} datagrams to {host}:{port} in {took:.3f} s ({count / took:.0f}/s)")
