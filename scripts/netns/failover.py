#!/usr/bin/env python3
"""The issue 4 seed scenario on the namespace testbed: sender, sinks, wire tap and report.

usage:
  failover.py send OUT RATE HOST:PORT [HOST:PORT ...]
      Sends numbered datagrams round the targets in turn at RATE/s in all until SIGTERM;
      each payload is "SEQ SEND_TIME_NS TARGET_INDEX ". Writes "SEQ TIME_NS TARGET" lines
      to OUT at the end.
  failover.py sink PORT OUT
      Records datagrams on UDP PORT (IPv4) until SIGTERM; writes "SEQ RECV_TIME_NS" lines
      to OUT ("OUT.ready" appears once bound, with the time it was bound).
  failover.py tap IFACE MAC PORT OUT
      Records, on IFACE (Spray's side of the wire), every UDP datagram to PORT that MAC
      sends: "SEQ TIME_NS DST_IP" lines to OUT at SIGTERM. This is what Spray sent to each
      backend, whether the backend was alive to receive it or not.
  failover.py report FACTS_JSON
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


def send(out, rate, targets):
    addrs = []
    for t in targets:
        host, port = t.rsplit(":", 1)
        addrs.append((host, int(port)))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    log = []
    pad = b"x" * 120
    start = time.monotonic()
    seq = 0
    while running:
        i = seq % len(addrs)
        now = time.time_ns()
        s.sendto(b"%d %d %d " % (seq, now, i) + pad, addrs[i])
        log.append((seq, now, i))
        seq += 1
        if seq % 20 == 0:
            ahead = seq / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    with open(out, "w") as f:
        f.writelines(f"{a} {b} {c}\n" for a, b, c in log)


def sink(port, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.1)
    with open(out + ".ready", "w") as f:
        f.write(f"{time.time_ns()}\n")  # bound since
    got = []
    while running:
        try:
            d = s.recv(2048)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        head = d.split(b" ", 1)[0]
        if head.isdigit():  # else a health check's probe
            got.append((int(head), time.time_ns()))
    with open(out, "w") as f:
        f.writelines(f"{a} {b}\n" for a, b in got)


def tap(iface, mac, port, out):
    mac = bytes.fromhex(mac.replace(":", ""))
    # ETH_P_ALL: on a bridge port, protocol-specific packet sockets see nothing (the bridge
    # takes the frame first); taps for all protocols see it.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.bind((iface, 0))
    s.settimeout(0.1)
    open(out + ".ready", "w").close()
    got = []
    while running:
        try:
            f = s.recv(2048)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        now = time.time_ns()
        if f[6:12] != mac or f[12:14] != b"\x08\x00" or f[23] != 17:
            continue
        l4 = 14 + (f[14] & 0x0F) * 4
        if struct.unpack("!H", f[l4 + 2:l4 + 4])[0] != port:
            continue
        seq = int(f[l4 + 8:].split(b" ", 1)[0])
        got.append((seq, now, socket.inet_ntoa(f[30:34])))
    with open(out, "w") as f:
        f.writelines(f"{a} {b} {c}\n" for a, b, c in got)


def lines(path):
    with open(path) as f:
        return [l.split() for l in f if l.strip()]


def report(facts_path):
    facts = json.load(open(facts_path))
    ms = 1_000_000
    dead, backend = facts["dead_ip"], facts["dead_backend"]
    death, revived = facts["death_ns"], facts["revive_ns"]
    events = json.load(open(facts["events"]))["events"]

    def event(word, after_ns):
        for e in events:
            if (e["kind"] == "health" and e.get("backend") == backend
                    and f"{backend} {word} for" in e["message"]
                    and e["unix_ms"] * ms >= after_ns - ms):
                return e
        return None

    down, up = event("down", death), event("up", revived)
    if down is None or up is None:
        print(f"error: missing health event (down {down}, up {up})")
        return 1
    # unix_ms is truncated to the millisecond: the decision is within [t, t + 1 ms).
    decision = down["unix_ms"] * ms
    up_at = up["unix_ms"] * ms
    sent = {int(a): (int(b), int(c)) for a, b, c in lines(facts["sent"])}
    tapped = {}
    for a, b, c in lines(facts["tap"]):
        tapped[int(a)] = (int(b), c)
    received = {}
    for name, path in facts["sinks"].items():
        for a, b in lines(path):
            received[int(a)] = (int(b), name)
    ok = True

    def check(cond, what):
        nonlocal ok
        if not cond:
            ok = False
            print(f"error: {what}")

    to_dead = [(s, sent[s][0], t) for s, (t, ip) in tapped.items() if ip == dead and s in sent]
    # Sent by the client after the decision, and by Spray before the up decision. The tap
    # sees a frame after Spray sent it (late when the tap is starved of CPU), so only a
    # datagram sent in the last 100 ms before the up decision is excused by a tap time
    # after it.
    after = [x for x in to_dead
             if x[1] > decision and (x[2] < up_at or x[1] < up_at - 100 * ms)]
    after1 = [x for x in after if x[1] > decision + ms]
    before = [x for x in to_dead if x[1] <= decision + ms]
    last = max((x[2] for x in before), default=0)
    window = [s for s, (t, _) in sent.items() if death <= t <= decision]
    lost = [s for s in window if s not in received]
    steady = [s for s, (t, _) in sent.items() if decision + ms < t < revived]
    missing = [s for s in steady if s not in received]
    wrong = [s for s in steady if s in received and received[s][1] == "be1"]
    share_from = up_at + 10 * ms
    share_to = facts["stop_ns"] - 200 * ms
    late = [s for s, (t, _) in sent.items() if share_from < t < share_to]
    late_dead = [s for s in late if s in tapped and tapped[s][1] == dead]
    late_rx = [s for s in late_dead if s in received and received[s][1] == "be1"]
    delays = sorted(tapped[s][0] - sent[s][0] for s in tapped if s in sent)
    if delays:
        pct = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))] / ms
        print(f"client -> tap delay (Spray's forwarding plus the tap's own lag): median {pct(0.5):.2f} ms, p99 "
              f"{pct(0.99):.2f} ms, max {delays[-1] / ms:.2f} ms over {len(delays)}; "
              f"over 5 ms: {sum(d > 5 * ms for d in delays)}")
    print(f"death -> decision: {(decision - death) / ms:.1f} ms "
          f"(events: {down['message']})")
    print(f"decision -> last datagram to the dead backend seen on the wire (tap time): "
          f"{(last - decision) / ms:.1f} ms")
    print(f"datagrams Spray sent to the dead backend that the client sent after the decision: "
          f"{len(after)} (after decision + 1 ms: {len(after1)})")
    print(f"lost in the detection window (sent between death and decision, received by no "
          f"backend): {len(lost)} of {len(window)}")
    print(f"sent after decision + 1 ms until revival: {len(steady)}, missing at backends 2+3: "
          f"{len(missing)}, at backend 1: {len(wrong)}")
    print(f"revival -> up decision: {(up_at - revived) / ms:.1f} ms")
    share = len(late_dead) / max(len(late), 1)
    print(f"backend 1's share after it is up again: {100 * share:.1f} % of {len(late)} "
          f"(received {len(late_rx)} of {len(late_dead)})")
    for seq, t_sent, t_tap in sorted(after)[:10]:
        print(f"  seq {seq}: sent decision{(t_sent - decision) / ms:+.2f} ms, "
              f"left Spray decision{(t_tap - decision) / ms:+.2f} ms")
    check(len(after1) == 0, f"{len(after1)} datagram(s) to the dead backend after the decision")
    check(len(steady) > 0 and not missing and not wrong,
          "backends 2 and 3 did not receive everything sent after the decision")
    check(len(late) > 100 and abs(share - 1 / 3) < 0.02,
          f"backend 1 does not get its third back ({share:.3f})")
    check(len(late_rx) >= 0.99 * len(late_dead), "backend 1 does not receive its share")
    return 0 if ok else 1


def main():
    cmd = sys.argv[1]
    if cmd == "send":
        send(sys.argv[2], float(sys.argv[3]), sys.argv[4:])
    elif cmd == "sink":
        sink(int(sys.argv[2]), sys.argv[3])
    elif cmd == "tap":
        tap(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif cmd == "report":
        sys.exit(report(sys.argv[2]))
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
