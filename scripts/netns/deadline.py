#!/usr/bin/env python3
"""Issue 19's failover scenario: sender, sinks, wire tap and the verdict.

usage:
  deadline.py send OUT RATE SECONDS SOCKETS HOST:PORT [HOST:PORT ...]
      Sends numbered datagrams of 200 bytes at RATE/s in all for SECONDS, from SOCKETS
      client source ports in turn, round the targets in turn. Each payload starts with
      "SEQ SEND_TIME_NS ". Writes "SEQ TIME_NS" lines to OUT at the end.
  deadline.py sink PORT OUT
      Records datagrams on UDP PORT until SIGTERM: "SEQ RECV_TIME_NS" lines to OUT
      ("OUT.ready" appears once bound). Datagrams that do not start with a number are
      health checks and are not recorded.
  deadline.py tap IFACE SRC_MAC PORT OUT
      Records, on IFACE (Spray's side of the wire), every UDP datagram to PORT that SRC_MAC
      sends: "SEQ TIME_NS DST_IP DST_MAC" lines to OUT at SIGTERM. This is what Spray sent
      toward each backend, whether the backend was alive to receive it or not.
  deadline.py verdict FACTS_JSON
      Prints the figures and checks the assertions (exit 1 when one fails).

Times are CLOCK_REALTIME nanoseconds: every namespace shares the machine's clock, and the
controller's events carry Unix milliseconds.
"""
import json
import signal
import socket
import struct
import sys
import time

running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

SO_RCVBUFFORCE = 33
MS = 1_000_000


def big_rcvbuf(s, size):
    # Beyond net.core.rmem_max (machine-wide, not ours to change) only as root.
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def send(out, rate, seconds, sockets, targets):
    addrs = []
    for t in targets:
        host, port = t.rsplit(":", 1)
        addrs.append((host, int(port)))
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    log = []
    start = time.monotonic()
    total = int(rate * seconds)
    seq = 0
    while running and seq < total:
        now = time.time_ns()
        head = b"%d %d " % (seq, now)
        socks[seq % sockets].sendto(head.ljust(200, b"x"), addrs[(seq // sockets) % len(addrs)])
        log.append((seq, now))
        seq += 1
        if seq % 20 == 0:
            ahead = seq / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    late = time.monotonic() - start - seconds
    with open(out, "w") as f:
        f.writelines(f"{a} {b}\n" for a, b in log)
    print(f"sent {seq} datagrams in {seconds + late:.2f} s ({seq / (seconds + max(late, 0)):.0f}/s)")


def sink(port, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    big_rcvbuf(s, 32 << 20)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.1)
    with open(out + ".ready", "w") as f:
        f.write(f"{time.time_ns()}\n")
    # Line-buffered: a receiver that is SIGKILLed has written what it received.
    with open(out, "w", buffering=1) as f:
        while running:
            try:
                d = s.recv(2048)
            except (socket.timeout, InterruptedError):
                continue
            head = d.split(b" ", 1)[0]
            if head.isdigit():
                f.write(f"{int(head)} {time.time_ns()}\n")


def tap(iface, mac, port, out):
    mac = bytes.fromhex(mac.replace(":", ""))
    # ETH_P_ALL: on a bridge, protocol-specific packet sockets can miss frames.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    big_rcvbuf(s, 64 << 20)
    s.bind((iface, 0))
    s.settimeout(0.1)
    open(out + ".ready", "w").close()
    got = []
    while running:
        try:
            f = s.recv(2048)
        except (socket.timeout, InterruptedError):
            continue
        now = time.time_ns()
        if len(f) < 42 or f[6:12] != mac or f[12:14] != b"\x08\x00" or f[23] != 17:
            continue
        l4 = 14 + (f[14] & 0x0F) * 4
        if struct.unpack("!H", f[l4 + 2:l4 + 4])[0] != port:
            continue
        head = f[l4 + 8:].split(b" ", 1)[0]
        if head.isdigit():
            got.append((int(head), now, socket.inet_ntoa(f[30:34]), f[0:6].hex(":")))
    with open(out, "w") as f:
        f.writelines(f"{a} {b} {c} {d}\n" for a, b, c, d in got)


def lines(path):
    try:
        with open(path) as f:
            return [l.split() for l in f if l.strip()]
    except FileNotFoundError:
        return []


def verdict(facts_path):
    facts = json.load(open(facts_path))
    dead_ip, dead_mac, backend = facts["dead_ip"], facts["dead_mac"], facts["dead_backend"]
    death, revive = facts["death_ns"], facts["revive_ns"]
    bound = facts["bound_ms"] * MS
    up_bound = facts["up_bound_ms"] * MS
    events = json.load(open(facts["events"]))["events"]

    def event(word, after_ns):
        for e in events:
            if (e["kind"] == "health" and e.get("backend") == backend
                    and f"{backend} {word} for" in e["message"]
                    and e["unix_ms"] * MS >= after_ns - MS):
                return e
        return None

    ok = True

    def check(cond, what):
        nonlocal ok
        if not cond:
            ok = False
            print(f"error: {what}")

    down, up = event("down", death), event("up", revive)
    sent = {int(a): int(b) for a, b in lines(facts["sent"])}
    received = {}
    for name, path in facts["sinks"].items():
        for a, b in lines(path):
            received[int(a)] = name
    tapped = [(int(a), int(b), c, d) for a, b, c, d in lines(facts["tap"])]
    to_dead = [(s, t) for s, t, ip, m in tapped if ip == dead_ip or m == dead_mac]
    up_at = up["unix_ms"] * MS if up else revive + up_bound
    # What Spray sent toward the dead backend later than the bound after its death, and
    # before it was declared up again.
    late = sorted(s for s, t in to_dead if death + bound < t < up_at)
    last = max((t for s, t in to_dead if t < revive), default=death)
    # A receiver that is killed takes what its socket had queued but not read with it: no
    # balancer can save those, so datagrams delivered to it in the last 100 ms before a
    # kill are not counted as lost before the death.
    in_queue = set()
    if facts["death_kind"] == "kill":
        in_queue = {s for s, t in to_dead if death - 100 * MS <= t <= death}
    before = [s for s, t in sent.items() if t < death - 20 * MS]
    lost_before = [s for s in before if s not in received and s not in in_queue]
    after = [s for s, t in sent.items() if t > death + bound]
    lost_after = [s for s in after if s not in received]
    window = [s for s, t in sent.items() if death - 20 * MS <= t <= death + bound]
    lost_window = [s for s in window if s not in received]
    print(f"sent {len(sent)}, received {len(received)}; tapped {len(tapped)}")
    if down:
        print(f"death -> down decision: {(down['unix_ms'] * MS - death) / MS:.1f} ms "
              f"({down['message']})")
    print(f"death -> last datagram toward the dead backend (tap time): {(last - death) / MS:.1f} ms")
    print(f"datagrams toward the dead backend later than {bound // MS} ms after its death: "
          f"{len(late)}")
    print(f"lost: sent before the death {len(lost_before)} of {len(before)} "
          f"({len([s for s in in_queue if s not in received])} more in the killed "
          f"receiver's queue); "
          f"in the window {len(lost_window)} of {len(window)}; "
          f"sent later than {bound // MS} ms after it {len(lost_after)} of {len(after)}")
    if up:
        print(f"revival -> up decision: {(up_at - revive) / MS:.1f} ms ({up['message']})")
    share_from, share_to = up_at + 10 * MS, facts["stop_ns"] - 200 * MS
    share_seqs = {s for s, t in sent.items() if share_from < t < share_to}
    back = sum(1 for s, t, ip, m in tapped if s in share_seqs and (ip == dead_ip or m == dead_mac))
    share = back / max(len(share_seqs), 1)
    print(f"backend 1's share once up again: {100 * share:.1f} % of {len(share_seqs)}")
    for s in late[:10]:
        print(f"  seq {s}: sent death{(sent.get(s, 0) - death) / MS:+.1f} ms")
    check(down is not None, f"{backend} was never declared down")
    check(not late, f"{len(late)} datagram(s) toward the dead backend later than "
          f"{bound // MS} ms after its death")
    check(not lost_before, f"{len(lost_before)} datagram(s) sent before the death were lost")
    check(not lost_after, f"{len(lost_after)} datagram(s) sent later than {bound // MS} ms "
          "after the death were lost")
    check(up is not None and up_at - revive <= up_bound,
          f"{backend} was not up again within {up_bound // MS} ms of its revival")
    check(len(share_seqs) > 100 and abs(share - 1 / 3) < 0.05,
          f"backend 1 does not get its third back ({share:.3f})")
    return 0 if ok else 1


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "send":
        send(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6:])
    elif cmd == "sink":
        sink(int(sys.argv[2]), sys.argv[3])
    elif cmd == "tap":
        tap(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif cmd == "verdict":
        sys.exit(verdict(sys.argv[2]))
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
