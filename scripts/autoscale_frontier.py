"""What any autoscaler could reach on the autoscaling benchmark's trace slice: a discrete-event model of the
benchmark (same trace slice, lead-in and compression, same simulator service times, 8 sequences per replica,
6 s cold start, least-outstanding routing, decisions every second), used to sweep policies and to bound them.

It is a model, not a measurement: its rows for fixed provisioning and for our policy sit next to the
measured ones in docs/benchmarks.md so the model's error can be seen. Its purpose is the clairvoyant rows:
a policy that knows every arrival in advance and starts replicas one cold start ahead of need.

    python3 scripts/autoscale_frontier.py --trace ../shared/traces/azure-llm-2023-conv.csv --span 1800 --itl-ms 1 --targets "12 24"
"""
import argparse
import bisect
import csv
import datetime
import heapq
import math
import os

p = argparse.ArgumentParser()
p.add_argument("--trace", default=os.path.join(os.path.dirname(__file__), "../../shared/traces/azure-llm-2023-code.csv"))
p.add_argument("--speedup", type=float, default=10)
p.add_argument("--span", type=float, default=1200, help="measured trace seconds")
p.add_argument("--lead-in", type=float, default=20, help="wall seconds replayed before the measured span, unmeasured")
p.add_argument("--target-ms", type=float, default=1500)
p.add_argument("--cold-start", type=float, default=6)
p.add_argument("--slots", type=int, default=8)
p.add_argument("--itl-ms", type=float, default=8)
p.add_argument("--targets", default="15", help="req/s per replica of the autoscaler rows")
p.add_argument("--peak", type=int, default=8)
args = p.parse_args()

ITL = args.itl_ms / 1000
LEAD = args.lead_in
TARGET = args.target_ms / 1000
rows = list(csv.DictReader(open(args.trace)))
t0 = datetime.datetime.fromisoformat(rows[0]["TIMESTAMP"][:26])
reqs = []
for r in rows:
    t = (datetime.datetime.fromisoformat(r["TIMESTAMP"][:26]) - t0).total_seconds()
    if t < LEAD * args.speedup + args.span:
        # The simulator's latency model: 40 ms + 0.05 ms per prompt word to the first token, ITL per output token.
        service = 0.040 + 0.00005 * int(r["ContextTokens"]) + ITL * max(1, int(r["GeneratedTokens"]))
        reqs.append((t / args.speedup, service))
reqs.sort()
MEASURED = sum(1 for a, _ in reqs if a >= LEAD)


def p95(xs):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.95 * len(xs)))]


def simulate(policy):
    """Replays the slice against `policy`; returns (attainment, replica-seconds, actions, flaps) over the measured span."""
    replicas = []  # ready_at, stopped_at, free (heap of slot free times), starts (request start times)
    def launch(now, warm=False):
        replicas.append({"ready_at": now if warm else now + args.cold_start, "stopped_at": None, "free": [0.0] * args.slots, "starts": []})
    for _ in range(policy.initial):
        launch(0.0, warm=True)
    within = actions = 0
    next_decision = 1.0
    arrivals, done = [], []
    last_change = None
    flaps = 0
    for at, service in reqs:
        while next_decision <= at:
            now = next_decision
            live = [r for r in replicas if r["stopped_at"] is None]
            ready = sum(1 for r in live if r["ready_at"] <= now)
            # Requests assigned to a ready replica but not started yet: what its engine reports as waiting.
            queued = sum(sum(1 for s in r["starts"][-64:] if s > now) for r in live if r["ready_at"] <= now)
            running = sum(sum(1 for f in r["free"] if f > now) for r in live if r["ready_at"] <= now)
            want = policy.decide(now, arrivals, len(live), ready, done, queued, running)
            if want != len(live):
                actions += now >= LEAD
                up = want > len(live)
                if last_change and last_change[1] != up and now - last_change[0] < 30 and now >= LEAD:
                    flaps += 1
                last_change = (now, up)
                if up:
                    for _ in range(want - len(live)):
                        launch(now)
                else:
                    # Stop the newest first (not-yet-ready ones first), as the controller does.
                    for r in sorted(live, key=lambda r: -r["ready_at"])[: len(live) - want]:
                        r["stopped_at"] = max(now, max(r["free"]))
            next_decision += 1.0
        arrivals.append(at)
        live = [r for r in replicas if r["stopped_at"] is None]
        best = min(live, key=lambda r: max(r["ready_at"], r["free"][0], at))
        start = max(best["ready_at"], best["free"][0], at)
        heapq.heapreplace(best["free"], start + service)
        best["starts"].append(start)
        done.append((start + service, start + service - at))
        if at >= LEAD and start + service - at <= TARGET:
            within += 1
    replica_s = 0.0
    last = reqs[-1][0]
    for r in replicas:
        launched = r["ready_at"] - (0 if r["ready_at"] == 0 else args.cold_start)
        stop = r["stopped_at"] if r["stopped_at"] is not None else last
        replica_s += max(0.0, min(stop, last) - max(LEAD, launched))
    return within / MEASURED, replica_s, actions, flaps


class Fixed:
    def __init__(self, n):
        self.initial = self.n = n

    def decide(self, *_):
        return self.n


class Ours:
    """The shipped policy (InferenceCore/ScalingPolicy.swift): arrivals over 10 s held within a 10% band; a
    2 s burst window leading on a doubling (and while the burst lasts); one more when the recent (10 s) p95
    is over target while the engines queue, or the engines' queue grows to a full batch (as many as they run), but only once no replica is
    starting (and, for latency, 15 s after the last scale-up's replicas serve); never down while engines
    queue, nor below what the rate per replica at which pressure last asked for one (once settled) supports; at most doubling per
    decision; scale-down to the highest recommendation of the stabilisation window."""

    def __init__(self, target_rps, lo, hi, window=30, tolerance=0.1, settle=15):
        self.initial, self.target, self.lo, self.hi, self.window = lo, target_rps, lo, hi, window
        self.tolerance, self.settle = tolerance, settle
        self.history, self.last_burst, self.last_up, self.last_queued, self.arrived = [], -1e9, None, 0, 0.0
        self.queued_at = None

    def decide(self, now, arrivals, current, ready, done, queued, running):
        def rate(seconds):
            lo = math.floor(now) - seconds
            return sum(1 for a in arrivals[-8000:] if lo <= a < math.floor(now)) / seconds
        starting = current - ready
        if starting > 0:
            self.arrived = None
        elif self.arrived is None:
            self.arrived = now
        r = rate(10)
        want = math.ceil(r / self.target)
        if current > 0 and abs(r / (current * self.target) - 1) <= self.tolerance:
            want = current
        burst = math.ceil(rate(2) / self.target)
        if burst > want and (burst >= 2 * max(1, current) or (now - self.last_burst < self.window and burst > current)):
            want = burst
            self.last_burst = now
        recent = p95([lat for d, lat in done[-4000:] if now - 10 <= d <= now])
        # The queue leads only once a full batch waits (at least as many as the engines run): a shorter one drains
        # within one service time.
        growing = queued > self.last_queued and ready > 0 and queued >= max(ready, running)
        self.last_queued = queued
        # Latency waits for a scale-up's replicas to serve for `settle` seconds; a growing queue does not.
        settled = self.arrived is not None and now - max(self.arrived, self.last_up or -1e9) >= self.settle
        # Latency acts only while the engines queue (otherwise the slow answers waited before).
        if current + 1 > want and starting == 0 and (growing or (r > 0 and recent > TARGET and settled and queued >= max(ready, running))):
            want = current + 1
            if ready == current and (self.last_up is None or settled):
                self.queued_at = (now, max(r, rate(2)) / ready)
        # Never down below what the rate per replica at which pressure last asked for a replica supports (10 minutes);
        # learned only once the last scale-up has settled, not from the backlog the capacity before it left.
        if self.queued_at and want < current and now - self.queued_at[0] < 600:
            want = max(want, min(current, math.ceil(r / (self.queued_at[1] * (1 - self.tolerance)))))
        if want < current and queued > 0:
            want = current
        want = min(max(min(want, 2 * max(1, current)), self.lo), self.hi)
        self.history = [(t, w) for t, w in self.history if now - t <= self.window] + [(now, want)]
        out = want if want >= current else min(current, max(w for _, w in self.history))
        if out > current:
            self.last_up = now
        return out


class Clairvoyant:
    """Knows the future: at each second runs the replicas that the arrivals of the next cold start plus
    `lookahead` seconds need (2 s windows at `per_replica_rps`), so capacity is ready one cold start ahead of
    need, and keeps none that the window does not ask for."""

    def __init__(self, per_replica_rps, lookahead, hi):
        self.initial, self.rate, self.look, self.hi = 1, per_replica_rps, lookahead, hi
        self.times = [a for a, _ in reqs]

    def decide(self, now, *_):
        need = 1
        for k in range(int(args.cold_start + self.look) + 1):
            a, b = now + k - 1, now + k + 1
            n = bisect.bisect_left(self.times, b) - bisect.bisect_left(self.times, a)
            need = max(need, math.ceil(n / 2 / self.rate))
        return min(need, self.hi)


class Reactive:
    """Knows the past exactly, nothing of the future: the best any causal policy that reacts to arrivals can
    do. At each second it counts the arrivals of the last `window` seconds without error, runs the replicas
    they need at `per_replica_rps` plus `headroom` spare ones, and keeps the highest count of the last `hold`
    seconds; the replicas it asks for serve one cold start later."""

    def __init__(self, per_replica_rps, window, hold, headroom, lo, hi):
        self.initial, self.rate, self.window, self.hold, self.headroom, self.lo, self.hi = lo, per_replica_rps, window, hold, headroom, lo, hi
        self.history = []
        self.times = [a for a, _ in reqs]

    def decide(self, now, *_):
        n = bisect.bisect_left(self.times, now) - bisect.bisect_left(self.times, now - self.window)
        need = math.ceil(n / self.window / self.rate) + self.headroom
        self.history = [(t, w) for t, w in self.history if now - t <= self.hold] + [(now, need)]
        return max(self.lo, min(self.hi, max(w for _, w in self.history)))


RATES, WINDOWS, HOLDS, HEADROOMS = range(9, 37, 3), (1, 2, 5), (5, 15, 30, 60, 120), range(0, 5)


def reactive_frontier(lo, hi):
    """The reactive family swept (rate per replica, window, hold, headroom), reduced to its frontier: each row
    the cheapest policy reaching more than every cheaper one."""
    rows = []
    for rate in RATES:
        for window in WINDOWS:
            for hold in HOLDS:
                for headroom in HEADROOMS:
                    att, rs, acts, flaps = simulate(Reactive(rate, window, hold, headroom, lo, hi))
                    rows.append((rs, -att, f"{rate} req/s per replica over {window} s, +{headroom}, held {hold} s", acts, flaps, att))
    rows.sort()
    front, best = [], -1.0
    for rs, _, label, acts, flaps, att in rows:
        if att > best + 0.0005:
            best = att
            front.append((label, att, rs, acts, flaps))
    return front


targets = [float(t) for t in args.targets.split()]
name = os.path.basename(args.trace)
print(f"## What any autoscaler could reach on that slice (model): `scripts/autoscale_frontier.py` ({name})\n")
print(f"A discrete-event model of the benchmark above: the same {MEASURED} measured requests after the same lead-in, the")
print(f"simulator's service times ({args.itl_ms:g} ms per output token), {args.slots} sequences per replica, {args.cold_start:g} s cold start,")
print(f"least-outstanding routing, decisions every second, target {args.target_ms:g} ms. A model, not a measurement: compare its")
print("fixed and autoscaler rows with the measured table above. The clairvoyant rows know every arrival in advance and run")
print("exactly the replicas the next seconds need, started one cold start ahead. The reactive rows are the frontier of")
print("a family of causal policies that measure the past without error (no policy that only reacts can measure it better):")
settings = len(RATES) * len(WINDOWS) * len(HOLDS) * len(HEADROOMS)
print("the arrivals of the last 1, 2 or 5 s at 9 to 36 req/s per replica, plus 0 to 4 spare replicas, the highest count")
print(f"held 5 to 120 s, min 1 and max 16: {settings} settings, each row the cheapest that reaches more than every cheaper one")
print("(from 85% on).\n")
print("| provisioning (model) | within target | replica-seconds | actions | flaps |")
print("|---|---|---|---|---|")
policies = [(f"fixed at {n}", Fixed(n)) for n in range(1, args.peak + 1)]
for t in targets:
    policies.append((f"ours: {t:g} req/s per replica, min 1", Ours(t, 1, 8)))
    policies.append((f"ours: {t:g} req/s per replica, min 2", Ours(t, 2, 8)))
for rate in sorted({round(t * k) for t in targets for k in (1, 1.5, 2)}, reverse=True):
    for look in (0, 2):
        policies.append((f"clairvoyant: {rate} req/s per replica, {look} s ahead", Clairvoyant(rate, look, 16)))
peak_rs = None
for label, policy in policies:
    att, rs, acts, flaps = simulate(policy)
    if label == f"fixed at {args.peak}":
        peak_rs = rs
    print(f"| {label} | {100 * att:.2f}% | {rs:.0f} | {acts} | {flaps} |")
front = reactive_frontier(1, 16)
for label, att, rs, acts, flaps in [row for row in front if row[1] >= 0.85][:12]:
    print(f"| reactive: {label} | {100 * att:.2f}% | {rs:.0f} | {acts} | {flaps} |")
print()
fixed_rows = [(n, *simulate(Fixed(n))[:2]) for n in range(1, args.peak + 1)]
for goal in (0.95, 0.99):
    cheapest = next(((label, att, rs) for label, att, rs, *_ in front if att >= goal), None)
    fixed = next(((n, att, rs) for n, att, rs in fixed_rows if att >= goal), None)
    line = f"- Reaching {100 * goal:.0f}%: "
    line += (f"the cheapest reactive policy needs {cheapest[2]:.0f} replica-seconds ({100 * cheapest[2] / peak_rs:.0f}% of fixed at {args.peak}'s)"
             if cheapest else "no reactive policy of the sweep")
    line += (f"; the smallest fixed count is {fixed[0]}, {fixed[2]:.0f} replica-seconds ({100 * fixed[2] / peak_rs:.0f}%)." if fixed else "; no fixed count up to the peak's.")
    print(line)
