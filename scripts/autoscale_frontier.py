"""What any autoscaler could reach on the autoscaling benchmark's trace slice: a discrete-event model of the
benchmark (same trace slice and compression, same simulator service times, 8 sequences per replica, 6 s
cold start, least-outstanding routing, decisions every second), used to sweep policies and to bound them.

It is a model, not a measurement: its rows for fixed provisioning and for our policy are printed next to
the measured ones in docs/benchmarks.md so the model's error can be seen. Its purpose is the last row: a
clairvoyant policy that knows every arrival in advance and starts replicas one cold start ahead of need.

    python3 scripts/autoscale_frontier.py [--speedup 10] [--span 1200] [--target-ms 1500] | python3 scripts/bench_section.py autoscale-frontier
"""
import argparse
import csv
import datetime
import heapq
import math
import os

p = argparse.ArgumentParser()
p.add_argument("--trace", default=os.path.join(os.path.dirname(__file__), "../../shared/traces/azure-llm-2023-code.csv"))
p.add_argument("--speedup", type=float, default=10)
p.add_argument("--span", type=float, default=1200)
p.add_argument("--target-ms", type=float, default=1500)
p.add_argument("--cold-start", type=float, default=6)
p.add_argument("--slots", type=int, default=8)
args = p.parse_args()

rows = list(csv.DictReader(open(args.trace)))
t0 = datetime.datetime.fromisoformat(rows[0]["TIMESTAMP"][:26])
reqs = []
for r in rows:
    t = (datetime.datetime.fromisoformat(r["TIMESTAMP"][:26]) - t0).total_seconds()
    if t < args.span:
        # The simulator's latency model: 40 ms + 0.05 ms per prompt word to the first token, 8 ms per output token.
        service = 0.040 + 0.00005 * int(r["ContextTokens"]) + 0.008 * max(1, int(r["GeneratedTokens"]))
        reqs.append((t / args.speedup, service))
reqs.sort()
END = reqs[-1][0] + 5
TARGET = args.target_ms / 1000


def simulate(policy):
    """policy(now, history) -> desired replica count; history has arrivals so far. Returns (attainment, replica_s, actions)."""
    replicas = []          # dicts: ready_at, stopped_at, slots (heap of free times), outstanding
    desired = policy.initial
    def launch(now, warm=False):
        replicas.append({"ready_at": now if warm else now + args.cold_start, "stopped_at": None, "free": [0.0] * args.slots})
    for _ in range(desired):
        launch(0.0, warm=True)
    within = 0
    actions = 0
    next_decision = 1.0
    arrivals = []
    for at, service in reqs:
        while next_decision <= at:
            want = policy.decide(next_decision, arrivals, sum(1 for r in replicas if r["stopped_at"] is None))
            live = [r for r in replicas if r["stopped_at"] is None]
            if want != len(live):
                actions += 1
                if want > len(live):
                    for _ in range(want - len(live)):
                        launch(next_decision)
                else:
                    # Stop the newest first (not-yet-ready ones first), as the controller does.
                    for r in sorted(live, key=lambda r: -r["ready_at"])[: len(live) - want]:
                        r["stopped_at"] = max(next_decision, max(r["free"]))
            next_decision += 1.0
        arrivals.append(at)
        live = [r for r in replicas if r["stopped_at"] is None]
        # Least outstanding among replicas: earliest possible start (a request queues at its replica).
        best = min(live, key=lambda r: max(r["ready_at"], r["free"][0], at))
        start = max(best["ready_at"], best["free"][0], at)
        done = start + service
        heapq.heapreplace(best["free"], done)
        if done - at <= TARGET:
            within += 1
    replica_s = 0.0
    last = reqs[-1][0]
    for r in replicas:
        launched = r["ready_at"] - (0 if r["ready_at"] == 0 else args.cold_start)
        stop = r["stopped_at"] if r["stopped_at"] is not None else last
        replica_s += max(0.0, min(stop, last) - max(0.0, launched))
    return within / len(reqs), replica_s, actions


class Fixed:
    def __init__(self, n): self.initial = n; self.n = n
    def decide(self, now, arrivals, current): return self.n


class Ours:
    """The shipped policy: arrivals over 10 s, a 2 s burst window leading on a doubling (and while the burst
    lasts), at most doubling per decision, stabilisation window for scale-down."""
    def __init__(self, target_rps, lo, hi, window):
        self.initial, self.target, self.lo, self.hi, self.window = lo, target_rps, lo, hi, window
        self.history = []
        self.last_burst = -1e9

    def decide(self, now, arrivals, current):
        def rate(seconds):
            lo = math.floor(now) - seconds
            return sum(1 for a in arrivals[-4000:] if lo <= a < math.floor(now)) / seconds
        want = math.ceil(rate(10) / self.target)
        burst = math.ceil(rate(2) / self.target)
        capacity = max(1, current)
        if burst > want and (burst >= 2 * capacity or (now - self.last_burst < self.window and burst > current)):
            want = burst
            self.last_burst = now
        want = min(max(want, self.lo), self.hi, capacity * 2)
        self.history = [(t, w) for t, w in self.history if now - t <= self.window] + [(now, want)]
        return want if want >= current else min(current, max(w for _, w in self.history))


class Clairvoyant:
    """Knows the future: at each second runs the replicas that the arrivals of the next cold start plus
    `lookahead` seconds need (2 s windows at `per_replica_rps`), so capacity is ready one cold start ahead of
    need, and keeps none that the window does not ask for."""
    def __init__(self, per_replica_rps, lookahead, hi):
        self.initial, self.rate, self.look, self.hi = 1, per_replica_rps, lookahead, hi
        self.times = [a for a, _ in reqs]

    def decide(self, now, arrivals, current):
        import bisect
        need = 1
        # Everything arriving from now until a replica started now could be ready, and `look` seconds past it.
        for k in range(int(args.cold_start + self.look) + 1):
            a, b = now + k - 1, now + k + 1
            n = bisect.bisect_left(self.times, b) - bisect.bisect_left(self.times, a)
            need = max(need, math.ceil(n / 2 / self.rate))
        return min(need, self.hi)


peak_rps = max(sum(1 for a, _ in reqs if m * 6 <= a < (m + 1) * 6) for m in range(int(END / 6) + 1)) / 6
mean_rps = len(reqs) / reqs[-1][0]
peak, mean = math.ceil(peak_rps / 15), math.ceil(mean_rps / 15)
print("## What any autoscaler could reach on that slice: `scripts/autoscale_frontier.py`\n")
print(f"A discrete-event model of the benchmark above (same {len(reqs)} requests over {reqs[-1][0]:.0f} s of wall time, the simulator's")
print(f"service times, {args.slots} sequences per replica, {args.cold_start:g} s cold start, least-outstanding routing, decisions every")
print(f"second, target {args.target_ms:g} ms). A model, not a measurement: compare its first three rows with the measured table above.")
print("The clairvoyant rows know every arrival in advance and run exactly the replicas the next seconds need, started")
print(f"one cold start ahead. Peak provisioning is {peak} replicas, mean {mean}.\n")
print("| provisioning (model) | within target | replica-seconds | actions |")
print("|---|---|---|---|")
rows_out = [("fixed at peak", Fixed(peak)), ("fixed at mean", Fixed(mean)), ("ours: min 1, stabilisation 30 s", Ours(15, 1, peak, 30))]
for stab in (5, 10):
    rows_out.append((f"ours: min 1, stabilisation {stab} s", Ours(15, 1, peak, stab)))
for lo in (2, 3, 4):
    rows_out.append((f"ours: min {lo}, stabilisation 30 s", Ours(15, lo, peak, 30)))
for rate in (30, 26, 22, 18):
    for look in (0, 1, 3):
        rows_out.append((f"clairvoyant: {rate} req/s per replica, {look} s ahead", Clairvoyant(rate, look, 16)))
for name, policy in rows_out:
    att, rs, acts = simulate(policy)
    print(f"| {name} | {100 * att:.1f}% | {rs:.0f} | {acts} |")
