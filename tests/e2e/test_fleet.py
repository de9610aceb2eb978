"""The fleet under way: one deployment's slow work never holds up another's (real server, simulator replicas)."""
import concurrent.futures as cf
import threading
import time

import requests

from harness import API, start_server, wait_for  # noqa: F401


def sim(name, *args, devices=4):
    return {"name": name, "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "1.00",
            "devices": [f"{name}-{i}" for i in range(devices)], "ready_timeout_s": 30, "engine_args": list(args)}


def test_a_replica_draining_open_streams_does_not_delay_another_deployment(start_server):
    streams = sim("sim.streams", "--ttft-ms", "5", "--itl-ms", "100", "--jitter", "0", "--max-num-seqs", "128")
    fast = sim("sim.fast", "--ttft-ms", "5", "--itl-ms", "1", "--jitter", "0")
    server = start_server(config={"hardware_profiles": [streams, fast], "autoscale_interval_s": 0.5})
    a = server.create(hardware_profile="sim.streams", min_replicas=1, max_replicas=2, target_rps=1, stabilisation_window=2)
    server.wait_status(a, "running")
    stop = threading.Event()
    opened = []

    def stream(i):
        with requests.post(server.url + "/openai/v1/chat/completions", stream=True, timeout=120,
                           headers={"Authorization": f"Bearer {server.key}"},
                           json={"model": a, "messages": [{"role": "user", "content": f"s{i}"}], "max_tokens": 500,
                                 "stream": True}) as r:
            opened.append(r.headers.get("x-lyceum-replica-id"))
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    with cf.ThreadPoolExecutor(64) as pool:
        try:
            for i in range(64):
                pool.submit(stream, i)
                time.sleep(0.06)
            # Arrivals pushed it to two replicas; with none since, it scales back to one, and the replica leaving
            # drains the streams it holds.
            draining = wait_for(lambda: [e for e in server.events(a) if e["kind"] == "scaled" and "2 -> 1" in e["message"]],
                                timeout=60, interval=0.2, what="the scale-down that drains a replica")
            assert draining
            assert len(set(opened)) == 2, "streams were open on both replicas"
            started = time.monotonic()
            b = server.create(hardware_profile="sim.fast")
            server.wait_status(b, "running", timeout=30)
            took = time.monotonic() - started
            assert took < 5, f"a new deployment took {took:.1f} s to run while another drained open streams"
            print(f"new deployment running after {took:.2f} s while a replica drained streams")
        finally:
            stop.set()


def test_the_list_pages_newest_first_when_asked(start_server):
    waiting = sim("sim.none", devices=0)
    server = start_server(config={"hardware_profiles": [waiting]})
    ids = [server.create(hardware_profile="sim.none") for _ in range(3)]

    def page(**params):
        r = server.request("GET", f"{API}/inference/list", params=params)
        assert r.status_code == 200, r.text
        return [d["deployment_id"] for d in r.json()["deployments"]]

    everything = page()
    assert sorted(everything) == sorted(ids)
    assert page(limit=2) == everything[:2] and page(limit=2, offset=2) == everything[2:]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}):
        r = server.request("GET", f"{API}/inference/list", params=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "query", r.text
