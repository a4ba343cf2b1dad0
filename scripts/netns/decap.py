#!/usr/bin/env python3
"""A tunnelled backend for the testbed, decapsulating in user space.

usage: decap.py GUE_PORT ECHO_PORT OUTFILE

Receives what Spray's tunnel mode sends: IP in IP over IPv4 and IPv6 (raw sockets of
protocols 4 and 41) and GUE variant 0 (UDP port GUE_PORT), parses the outer and inner
headers as RFC 2003, RFC 2473, RFC 4213 and draft-ietf-intarea-gue describe them, checks the
inner IP and UDP checksums, and counts each datagram by encapsulation and inner destination
port. A datagram to ECHO_PORT is answered the way a real tunnelled backend answers: from the
VIP it was sent to (which must be on this host's lo), straight to the client.

Used where the kernel cannot decapsulate (no CONFIG_NET_IPIP / CONFIG_NET_FOU); it is also a
second, independent reading of the headers. Runs until SIGTERM, then writes
{"counts": {"ipip-ip4 v4 5514": N, "gue-ip4 v4 5514": N, "ipip-ip6 v6 5515": N, ...},
 "outer_sources": [...], "bad": N, "bad_examples": [...]} to OUTFILE.
"""
import json
import selectors
import signal
import socket
import struct
import sys

gue_port, echo_port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
counts, sources = {}, set()
bad = {"n": 0, "examples": []}
repliers = {}


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def reject(why, pkt):
    bad["n"] += 1
    if len(bad["examples"]) < 5:
        bad["examples"].append(f"{why}: {pkt[:64].hex()}")
    return None


def inner_udp(pkt):
    """(family, src, dst, sport, dport, payload) of an inner IP/UDP packet, or None."""
    if not pkt:
        return reject("empty inner packet", pkt)
    version = pkt[0] >> 4
    if version == 4:
        ihl = (pkt[0] & 15) * 4
        total = struct.unpack("!H", pkt[2:4])[0]
        if total != len(pkt) or pkt[9] != 17:
            return reject("inner IPv4 length or protocol", pkt)
        if csum(pkt[:ihl]) != 0xFFFF:
            return reject("inner IPv4 header checksum", pkt)
        src, dst = pkt[12:16], pkt[16:20]
        udp = pkt[ihl:]
        pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
        fam = socket.AF_INET
    elif version == 6:
        plen = struct.unpack("!H", pkt[4:6])[0]
        if plen + 40 != len(pkt) or pkt[6] != 17:
            return reject("inner IPv6 length or next header", pkt)
        src, dst = pkt[8:24], pkt[24:40]
        udp = pkt[40:]
        pseudo = src + dst + struct.pack("!IxxxB", len(udp), 17)
        fam = socket.AF_INET6
    else:
        return reject("inner version", pkt)
    sport, dport, ulen, usum = struct.unpack("!HHHH", udp[:8])
    if ulen != len(udp):
        return reject("inner UDP length", pkt)
    if (usum or fam == socket.AF_INET6) and csum(pseudo + udp) != 0xFFFF:
        return reject("inner UDP checksum", pkt)
    return fam, socket.inet_ntop(fam, src), socket.inet_ntop(fam, dst), sport, dport, udp[8:]


def take(kind, outer_src, pkt):
    d = inner_udp(pkt)
    if d is None:
        return
    fam, src, dst, sport, dport, payload = d
    key = f"{kind} {'v4' if fam == socket.AF_INET else 'v6'} {dport}"
    counts[key] = counts.get(key, 0) + 1
    sources.add(outer_src)
    if dport == echo_port:
        r = repliers.get((fam, dst))
        if r is None:
            r = socket.socket(fam, socket.SOCK_DGRAM)
            r.bind((dst, dport))
            repliers[(fam, dst)] = r
        r.sendto(b"echo " + payload, (src, sport))


sel = selectors.DefaultSelector()
for fam in (socket.AF_INET, socket.AF_INET6):
    for proto in (4, 41):
        s = socket.socket(fam, socket.SOCK_RAW, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sel.register(s, selectors.EVENT_READ, ("raw", fam, proto))
    g = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        g.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    g.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    g.bind(("0.0.0.0" if fam == socket.AF_INET else "::", gue_port))
    sel.register(g, selectors.EVENT_READ, ("gue", fam, 0))
for k in sel.get_map().values():
    k.fileobj.setblocking(False)

running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
open(out + ".ready", "w").close()
while running:
    for k, _ in sel.select(timeout=0.1):
        how, fam, proto = k.data
        while True:
            try:
                pkt, addr = k.fileobj.recvfrom(65535)
            except BlockingIOError:
                break
            outer = "ip4" if fam == socket.AF_INET else "ip6"
            if how == "gue":
                # Variant 0, no extension fields: version 0, C 0, Hlen 0; proto = inner.
                if len(pkt) < 4 or pkt[0] != 0 or pkt[2:4] != b"\0\0":
                    reject("GUE header", pkt)
                    continue
                inner = pkt[4:]
                want = 4 if inner and inner[0] >> 4 == 4 else 41
                if pkt[1] != want:
                    reject("GUE protocol field", pkt)
                    continue
                take(f"gue-{outer}", addr[0], inner)
            else:
                # An IPv4 raw socket gets the outer header, an IPv6 one does not.
                inner = pkt[(pkt[0] & 15) * 4:] if fam == socket.AF_INET else pkt
                if not inner or (inner[0] >> 4 == 4) != (proto == 4):
                    reject("outer protocol does not match the inner version", pkt)
                    continue
                take(f"ipip-{outer}", addr[0], inner)
with open(out, "w") as f:
    json.dump({"counts": counts, "outer_sources": sorted(sources),
               "bad": bad["n"], "bad_examples": bad["examples"]}, f)
