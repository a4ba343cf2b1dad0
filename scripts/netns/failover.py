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
      backend, whether the backend was alive to receive it or not; OUT.drops holds the
      number of frames the tap's socket could not queue (0 unless it fell far behind).
  failover.py report FACTS_JSON
      Prints the figures and checks the assertions (exit 1 when one fails).

Sinks and the tap record the kernel's receive time, and read what is queued before they
exit. Times are CLOCK_REALTIME nanoseconds: every namespace shares the machine's clock,
and the controller's events carry Unix milliseconds.
"""
import ctypes
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


SO_TIMESTAMPNS = 35
SOL_PACKET, PACKET_STATISTICS, SO_ATTACH_FILTER = 263, 6, 26


def receive(s, keep):
    """Calls keep(data, time_ns) for each datagram or frame on S until SIGTERM, then for
    those still queued. The time is the kernel's (SO_TIMESTAMPNS): a reader that fell behind
    still records everything it was sent, and when it arrived."""
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.settimeout(0.1)
    space = socket.CMSG_SPACE(16)

    def one():
        d, anc, _, _ = s.recvmsg(2048, space)
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, ns = struct.unpack("qq", data[:16])
                return keep(d, sec * 1_000_000_000 + ns)
        return keep(d, time.time_ns())

    while running:
        try:
            one()
        except (socket.timeout, InterruptedError):
            continue
    s.setblocking(False)
    while True:
        try:
            one()
        except BlockingIOError:
            return
        except InterruptedError:
            continue


def sink(port, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", port))
    with open(out + ".ready", "w") as f:
        f.write(f"{time.time_ns()}\n")  # bound since
    got = []

    def keep(d, now):
        head = d.split(b" ", 1)[0]
        if head.isdigit():  # else a health check's probe
            got.append((int(head), now))

    receive(s, keep)
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
    # Only Spray's IPv4 UDP frames to PORT are queued: the buffer holds what the tap is for,
    # not the client's traffic or the replies, however late the tap reads.
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, tap_filter(mac, port))
    s.bind((iface, 0))
    open(out + ".ready", "w").close()
    got = []

    def keep(f, now):
        l4 = 14 + (f[14] & 0x0F) * 4
        seq = int(f[l4 + 8:].split(b" ", 1)[0])
        got.append((seq, now, socket.inet_ntoa(f[30:34])))

    receive(s, keep)
    with open(out, "w") as f:
        f.writelines(f"{a} {b} {c}\n" for a, b, c in got)
    # Frames the kernel dropped because the socket's buffer was full: what the tap did not
    # see is not evidence against Spray.
    _, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    with open(out + ".drops", "w") as f:
        f.write(f"{drops}\n")


def tap_filter(mac, port):
    """A classic BPF program (struct sock_fprog) that accepts the IPv4 UDP frames from MAC
    to PORT, run by the kernel before a frame is queued."""
    ld_w, ld_h, ld_b, ldx_msh, ld_h_ind, jeq, ret = 0x20, 0x28, 0x30, 0xB1, 0x48, 0x15, 0x06
    mac_hi, mac_lo = struct.unpack("!IH", mac)
    prog = [  # (code, jump if true, jump if false, k); false jumps land on "ret 0"
        (ld_w, 0, 0, 6), (jeq, 0, 10, mac_hi),        # source MAC, first four bytes
        (ld_h, 0, 0, 10), (jeq, 0, 8, mac_lo),        # and the last two
        (ld_h, 0, 0, 12), (jeq, 0, 6, 0x0800),        # IPv4
        (ld_b, 0, 0, 23), (jeq, 0, 4, 17),            # UDP
        (ldx_msh, 0, 0, 14),                          # X = the IPv4 header's length
        (ld_h_ind, 0, 0, 14 + 2), (jeq, 0, 1, port),  # UDP destination port
        (ret, 0, 0, 0xFFFF), (ret, 0, 0, 0),
    ]
    code = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    global _tap_code  # the kernel copies the program at attach; keep it alive until then
    _tap_code = ctypes.create_string_buffer(code, len(code))
    return struct.pack("@HP", len(prog), ctypes.addressof(_tap_code))


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
    # Sent by the client after the decision, and by Spray before the up decision. The tap's
    # time is when the frame crossed the wire, after Spray chose its backend (later still
    # when Spray is starved of CPU), so only a datagram sent in the last 100 ms before the
    # up decision is excused by a tap time after it.
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
        print(f"client -> tap delay (the kernel's times: the client's stack and Spray): median {pct(0.5):.2f} ms, p99 "
              f"{pct(0.99):.2f} ms, max {delays[-1] / ms:.2f} ms over {len(delays)}; "
              f"over 5 ms: {sum(d > 5 * ms for d in delays)}")
    tap_drops = int(open(facts["tap"] + ".drops").read())
    print(f"death -> decision: {(decision - death) / ms:.1f} ms "
          f"(events: {down['message']}); the tap's socket dropped {tap_drops} frames")
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
    check(not tap_drops, "the tap dropped frames: it may have missed some to the dead backend")
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
