"""Autoscaling, scale to zero and resume, and metering, end to end: a real server, real simulator replicas,
real HTTP load. Intervals are shortened through the server's flags; nothing is faked."""
import concurrent.futures as cf
import threading
import time

from harness import API, engine_pids, start_server, wait_for  # noqa: F401

PROFILE = {"name": "sim.scale", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "3.60",
           "devices": [f"s{i}" for i in range(6)], "ready_timeout_s": 30,
           "engine_args": ["--ttft-ms", "10", "--itl-ms", "2", "--jitter", "0"]}


class Load:
    """Open-loop request load at a rate that can change while it runs; counts failures."""

    def __init__(self, server, deployment_id):
        self.server, self.deployment_id = server, deployment_id
        self.rate = 0.0
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._pool = cf.ThreadPoolExecutor(48)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self):
        try:
            r = self.server.chat(self.deployment_id, max_tokens=3, timeout=60)
            if r.status_code == 200:
                self.ok += 1
            else:
                self.failures.append((r.status_code, r.text[:200]))
        except Exception as e:  # noqa: BLE001 - every failure counts
            self.failures.append(("exception", repr(e)))

    def _run(self):
        next_at = time.monotonic()
        while not self._stop.is_set():
            if self.rate <= 0:
                time.sleep(0.05)
                next_at = time.monotonic()
                continue
            self._pool.submit(self._one)
            next_at += 1.0 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)


def desired(server, deployment_id):
    return server.get(deployment_id)["desired_replicas"]


def test_load_ramp_scales_up_then_down_only_after_the_window_without_failures(start_server):
    server = start_server(config={"hardware_profiles": [PROFILE]}, args=["--autoscale-interval", "0.5"])
    d = server.create(hardware_profile="sim.scale", target_rps=10, min_replicas=1, max_replicas=4, stabilisation_window=6)
    server.wait_status(d, "running")
    with Load(server, d) as load:
        for rate in (2, 10, 20, 30):
            load.rate = rate
            time.sleep(2.5)
        wait_for(lambda: desired(server, d) >= 3, timeout=25, what="3 replicas under 30 req/s")
        wait_for(lambda: server.get(d)["current_replicas"] >= 3, timeout=20, what="3 healthy replicas")
        peak = desired(server, d)
        assert peak == 3, f"30 req/s at 10 req/s per replica should ask for 3, got {peak}"
        load.rate = 2  # keep traffic flowing through the scale-down
        lowered_at = time.monotonic()
        wait_for(lambda: desired(server, d) == 1, timeout=40, what="scale-down to min_replicas")
        took = time.monotonic() - lowered_at
        wait_for(lambda: server.get(d)["current_replicas"] == 1, timeout=20, what="replicas drained and stopped")
        time.sleep(1)
    assert load.failures == [], f"requests failed during scaling: {load.failures[:5]}"
    assert load.ok > 100
    # The rate window is 10 s and the stabilisation window 6 s: no scale-down may come sooner than 6 s.
    assert took >= 6, f"scaled down {took:.1f} s after the load fell, inside the 6 s stabilisation window"
    scaled = [e for e in server.events(d) if e["kind"] == "scaled"]
    assert any("req/s against 10 req/s per replica" in e["message"] for e in scaled), scaled
    assert len(scaled) <= 5, f"too many scaling actions for one ramp up and down: {scaled}"


def test_idle_deployment_pauses_and_a_burst_of_50_resumes_it_with_every_request_answered(start_server):
    server = start_server(config={"hardware_profiles": [PROFILE]}, args=["--autoscale-interval", "0.3", "--idle-timeout", "3"])
    d = server.create(hardware_profile="sim.scale", min_replicas=1, max_replicas=2)
    server.wait_status(d, "running")
    server.wait_status(d, "paused", timeout=20)
    # Paused first (so a request arriving now resumes it), then its replicas stop.
    wait_for(lambda: server.get(d)["current_replicas"] == 0, timeout=10, what="replicas stopped after the pause")
    replica_ids = [r["id"] for r in server.replica_rows(d)]
    assert engine_pids(replica_ids) == {}, "a paused deployment keeps no replica process"
    assert any(e["kind"] == "paused" and "without requests" in e["message"] for e in server.events(d))

    with cf.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda i: server.chat(d, content=f"wake {i}", timeout=60), range(50)))
    assert [a.status_code for a in answers] == [200] * 50, [a.text[:200] for a in answers if a.status_code != 200][:3]
    running = server.get(d)
    assert running["status"] == "running" and running["current_replicas"] >= 1
    assert any(e["kind"] == "resumed" for e in server.events(d))


def test_requests_beyond_the_wait_queue_get_429_with_retry_after_and_the_rest_are_answered(start_server):
    slow_start = dict(PROFILE, name="sim.slowstart", engine_args=["--startup-s", "4"])
    server = start_server(config={"hardware_profiles": [slow_start], "wait_queue_limit": 5})
    d = server.create(hardware_profile="sim.slowstart")
    with cf.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: server.chat(d, timeout=60), range(12)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 5 + [429] * 7, codes
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_metered_replica_seconds_match_process_lifetimes_within_one_percent(start_server):
    server = start_server(config={"hardware_profiles": [PROFILE]})
    d = server.create(hardware_profile="sim.scale", min_replicas=2, max_replicas=2)
    seen = {}  # pid -> [replica, first seen (monotonic, from /proc start time), last seen]
    ticks = __import__("os").sysconf("SC_CLK_TCK")
    boot = time.time() - float(open("/proc/uptime").read().split()[0])

    def sample():
        ids = [r["id"] for r in server.replica_rows(d)]
        now = time.time()
        for pid, rid in engine_pids(ids).items():
            if pid not in seen:
                start_ticks = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])
                seen[pid] = [rid, boot + start_ticks / ticks, now]
            seen[pid][2] = now

    deadline = time.monotonic() + 30
    while server.get(d)["current_replicas"] < 2 and time.monotonic() < deadline:
        sample()
        time.sleep(0.02)
    end = time.monotonic() + 8
    while time.monotonic() < end:
        sample()
        time.sleep(0.02)
    stopper = threading.Thread(target=server.stop, args=(d,))
    stopper.start()
    while stopper.is_alive():
        sample()
        time.sleep(0.01)
    stopper.join()
    actual = sum(last - first for _, first, last in seen.values())
    assert len(seen) == 2
    usage = server.request("GET", f"{API}/inference/usage", params={"deployment_id": d}).json()
    metered = usage["replica_seconds"]
    assert abs(metered - actual) <= 0.01 * actual, f"metered {metered:.3f} s, processes lived {actual:.3f} s"
    expected_cost = metered / 3600 * 3.60
    assert abs(float(usage["cost"]) - expected_cost) < 0.0001, usage


def test_a_growing_engine_queue_scales_up_before_rate_or_latency_would(start_server):
    # One sequence at a time and 0.8 s per answer (3 tokens): at 3 req/s the simulator's own queue
    # (vllm:num_requests_waiting on its /metrics) grows while the rate (3 of 1000 req/s) and the p95 target
    # (a minute) ask for nothing. Only the engines' signal can scale this deployment.
    slow = dict(PROFILE, name="sim.queue", engine_args=["--ttft-ms", "10", "--itl-ms", "400", "--max-num-seqs", "1", "--jitter", "0"])
    server = start_server(config={"hardware_profiles": [slow], "health_interval_s": 0.5}, args=["--autoscale-interval", "0.5"])
    d = server.create(hardware_profile="sim.queue", target_rps=1000, target_latency_p95_ms=60000, min_replicas=1, max_replicas=3,
                      stabilisation_window=30)
    server.wait_status(d, "running")
    with Load(server, d) as load:
        load.rate = 3
        wait_for(lambda: desired(server, d) >= 2, timeout=30, what="a scale-up on the engines' queue")
        load.rate = 0
    scaled = [e for e in server.events(d) if e["kind"] == "scaled"]
    assert scaled and "engines queue" in scaled[0]["message"], scaled
    assert "queued" in scaled[0]["message"] and "running" in scaled[0]["message"], "the event names the engine signals it used"
    assert load.failures == [], load.failures[:5]
