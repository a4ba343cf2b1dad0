#!/usr/bin/env python3
"""Report of the mirror test on the namespace testbed (scripts/netns-tests.sh mirror).

usage:
  mirror.py report FACTS_JSON

FACTS_JSON names the sender's log ("SEQ TIME_NS TARGET" lines, scripts/netns/failover.py
send), the sinks of the primary pool and the surviving mirror backend ("SEQ RECV_TIME_NS"
lines, failover.py sink), what Spray sent toward the mirror pool as a tap on its wire saw
it ("SEQ TIME_NS DST_IP", failover.py tap), the controller's events (`spray ctl --json
events`), and the mirror backend that was killed and when. Checks:

  - the primary pool received every datagram exactly once, before, during and after the
    mirror backend's death;
  - Spray sent exactly one copy of every datagram toward the mirror pool;
  - no copy of a datagram sent after the health decision went to the dead backend, and the
    surviving one received every copy sent to it: the mirror pool lost only copies of
    datagrams sent between the death and the decision.

Exit status 1 when a check fails.
"""
import json
import sys

MS = 1_000_000


def lines(path):
    with open(path) as f:
        return [l.split() for l in f if l.strip()]


def seqs(paths):
    got = {}
    for p in paths:
        for a, b in lines(p):
            got.setdefault(int(a), []).append(int(b))
    return got


def ranges(missing, sent, most=5):
    """The first runs of consecutive missing sequence numbers, with their send times
    relative to the first datagram, e.g. " (seq 1200-1299 at +300.0..+324.8 ms)"."""
    if not missing:
        return ""
    runs, start = [], None
    ordered = sorted(missing)
    for i, seq in enumerate(ordered):
        start = seq if start is None else start
        if i + 1 == len(ordered) or ordered[i + 1] != seq + 1:
            runs.append((start, seq))
            start = None
    t0 = min(sent.values())
    shown = ", ".join(f"seq {a}-{b} at +{(sent[a] - t0) / MS:.1f}..+{(sent[b] - t0) / MS:.1f} ms"
                      for a, b in runs[:most])
    more = f", and {len(runs) - most} more runs" if len(runs) > most else ""
    return f" ({shown}{more})"


def report(facts_path):
    facts = json.load(open(facts_path))
    death, dead = facts["death_ns"], facts["dead_backend"]
    events = json.load(open(facts["events"]))["events"]
    down = next((e for e in events if e["kind"] == "health" and e.get("backend") == dead
                 and f"{dead} down for" in e["message"]
                 and e["unix_ms"] * MS >= death - MS), None)
    if down is None:
        print(f"error: no down event for {dead}")
        return 1
    decision = down["unix_ms"] * MS
    sent = {int(a): int(b) for a, b, _ in lines(facts["sent"])}
    # The tail of the run is excused: the sender stopped, the sinks a moment later.
    cutoff = facts["sender_stop_ns"] - 50 * MS
    counted = {s: t for s, t in sent.items() if t < cutoff}
    primary = seqs(facts["primary"])
    survivor = seqs([facts["survivor"]])
    copies = {}
    for a, b, ip in lines(facts["tap"]):
        copies.setdefault(int(a), []).append((int(b), ip))
    ok = True

    def check(cond, what):
        nonlocal ok
        if not cond:
            ok = False
            print(f"error: {what}")

    p_missing = [s for s in counted if s not in primary]
    p_twice = [s for s, v in primary.items() if len(v) > 1]
    c_missing = [s for s in counted if s not in copies]
    c_twice = [s for s, v in copies.items() if len(v) > 1]
    dead = facts["dead_ip"]
    to_dead_after = [s for s, v in copies.items() if s in counted
                     and any(ip == dead for _, ip in v) and counted[s] > decision + MS]
    to_survivor = [s for s, v in copies.items() if s in counted
                   and any(ip != dead for _, ip in v)]
    s_missing = [s for s in to_survivor if s not in survivor]
    lost = [s for s, v in copies.items() if s in counted and counted[s] >= death
            and any(ip == dead for _, ip in v)]
    window = [s for s, t in counted.items() if death <= t <= decision]
    print(f"sent {len(counted)} datagrams (the last 50 ms excused)")
    print(f"death -> decision of the mirror backend: {(decision - death) / MS:.1f} ms "
          f"({down['message']})")
    print(f"primary pool: missing {len(p_missing)}, twice {len(p_twice)}")
    tap_drops = int(open(facts["tap"] + ".drops").read())
    print(f"copies toward the mirror pool: missing {len(c_missing)}{ranges(c_missing, sent)}, "
          f"twice {len(c_twice)}; the tap's socket dropped {tap_drops} frames")
    print(f"mirror pool: lost {len(lost)} copies (sent to the dead backend after its death; "
          f"{len(window)} datagrams were sent between death and decision), to the dead backend "
          f"after the decision {len(to_dead_after)}, missing at the survivor {len(s_missing)} "
          f"of {len(to_survivor)}")
    check(not p_missing and not p_twice, "the primary pool lost or duplicated datagrams")
    check(not tap_drops, "the tap dropped frames: the wire's count of copies is incomplete")
    check(not c_missing and not c_twice, "not exactly one copy per datagram toward the mirror pool")
    check(not to_dead_after, "copies went to the dead backend after the decision")
    check(not s_missing, "the surviving mirror backend did not receive every copy sent to it")
    check(len(window) > 0, "nothing was sent between death and decision")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "report":
        print(__doc__)
        sys.exit(2)
    sys.exit(report(sys.argv[2]))
