"""The OpenAI-compatible gateway end to end, through the official `openai` client: real server, real simulator
replicas, real failures (SIGKILL of replica processes)."""
import concurrent.futures as cf
import json
import os
import re
import signal
import threading
import time

import openai
import pytest
import requests
from openai import OpenAI

from harness import API, engine_pids, start_server, wait_for  # noqa: F401


def sim(name, *args, devices=6):
    return {"name": name, "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "1.00",
            "devices": [f"{name}-{i}" for i in range(devices)], "ready_timeout_s": 30, "engine_args": list(args)}


PROFILES = [
    sim("sim.fast", "--ttft-ms", "5", "--itl-ms", "1", "--jitter", "0", "--max-model-len", "64"),
    sim("sim.slow", "--ttft-ms", "50", "--itl-ms", "40", "--max-num-seqs", "4", "--jitter", "0"),
    sim("sim.late", "--ttft-ms", "11000", "--itl-ms", "1", "--jitter", "0"),
]


@pytest.fixture
def gateway(start_server):
    server = start_server(config={"hardware_profiles": PROFILES})
    client = OpenAI(base_url=server.url + "/openai/v1", api_key=server.key, max_retries=0)
    return server, client


def deploy(server, profile, replicas):
    d = server.create(hardware_profile=profile, min_replicas=replicas, max_replicas=replicas)
    server.wait_status(d, "running")
    wait_for(lambda: server.get(d)["current_replicas"] == replicas, what=f"{replicas} ready replicas")
    return d


def test_plain_and_header_addressed_completions_across_three_replicas(gateway):
    server, client = gateway
    d = deploy(server, "sim.fast", 3)
    answer = client.chat.completions.create(model=d, messages=[{"role": "user", "content": "hi there"}], max_tokens=7)
    assert answer.model == d and answer.choices[0].message.content
    assert answer.usage.completion_tokens == 7 and answer.usage.prompt_tokens == 5
    raw = client.chat.completions.with_raw_response.create(
        model="any-name", messages=[{"role": "user", "content": "hi"}], max_tokens=2, extra_headers={"X-Deployment-ID": d})
    assert raw.headers["x-request-id"].startswith("req_") and raw.headers["x-lyceum-replica-id"]
    assert raw.parse().usage.completion_tokens == 2
    served = {client.chat.completions.with_raw_response.create(model=d, messages=[{"role": "user", "content": "x"}],
                                                               max_tokens=1).headers["x-lyceum-replica-id"] for _ in range(30)}
    assert len(served) == 3, "requests spread over all three replicas"
    listed = client.models.with_raw_response.list()
    assert [m.id for m in listed.parse().data] == [d]
    assert listed.headers["x-request-id"].startswith("req_"), "every answer carries a request id"


def test_streaming_passes_chunks_through_as_they_are_generated_with_usage(gateway):
    server, client = gateway
    d = deploy(server, "sim.slow", 1)
    started = time.monotonic()
    arrivals, usage = [], None
    stream = client.chat.completions.create(model=d, messages=[{"role": "user", "content": "count"}], max_tokens=20,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
        if chunk.usage:
            usage = chunk.usage
    assert len(arrivals) == 20, "one chunk per generated token, none merged or lost"
    # 50 ms to the first token, then 40 ms per token: chunks must arrive spread out, not all at the end.
    assert arrivals[-1] - arrivals[0] >= 0.6, arrivals
    assert arrivals[0] < 0.5 * arrivals[-1], arrivals
    assert usage is not None and usage.completion_tokens == 20 and usage.prompt_tokens == 4


def test_errors_arrive_as_the_sdks_exception_classes(gateway):
    server, client = gateway
    d = deploy(server, "sim.fast", 1)
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=server.url + "/openai/v1", api_key="lk_wrong", max_retries=0).chat.completions.create(model=d, messages=messages)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-deployment", messages=messages)
    assert unknown.value.code == "model_not_found"
    other_key = server.request("POST", f"{API}/admin/keys", json={"org": "other"}).json()["api_key"]
    with pytest.raises(openai.NotFoundError):
        OpenAI(base_url=server.url + "/openai/v1", api_key=other_key, max_retries=0).chat.completions.create(model=d, messages=messages)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=d, messages=[{"role": "user", "content": "word " * 100}], max_tokens=8)
    assert "maximum context length is 64 tokens" in str(too_long.value), "the engine's own 400 reaches the client"
    with pytest.raises(openai.BadRequestError):
        client.post("/chat/completions", body={"model": d}, cast_to=object)
    malformed = requests.post(server.url + "/openai/v1/chat/completions", data="{oops", timeout=10,
                              headers={"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"})
    assert malformed.status_code == 400 and set(malformed.json()["error"]) == {"message", "type", "param", "code"}
    assert malformed.headers["x-request-id"]
    huge = requests.post(server.url + "/openai/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {server.key}"},
                         data=json.dumps({"model": d, "messages": [{"role": "user", "content": "x" * (33 << 20)}]}))
    assert huge.status_code == 413 and huge.json()["error"]["message"]
    server.stop(d)
    with pytest.raises(openai.NotFoundError) as stopped:
        client.chat.completions.create(model=d, messages=messages)
    assert "stopped" in str(stopped.value)


def test_killing_a_replica_under_steady_load_fails_no_request(gateway):
    server, client = gateway
    d = deploy(server, "sim.fast", 3)
    failures, done = [], []
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            try:
                client.chat.completions.create(model=d, messages=[{"role": "user", "content": "steady"}], max_tokens=4)
                done.append(1)
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(done) > 50, what="steady traffic")
    victim_pid, victim = next(iter(engine_pids([r["id"] for r in server.replica_rows(d)]).items()))
    os.kill(victim_pid, signal.SIGKILL)
    before = len(done)
    wait_for(lambda: len(done) > before + 150, timeout=30, what="traffic after the kill")
    stop.set()
    for t in threads:
        t.join()
    assert failures == [], failures[:3]
    # The controller restarts the killed replica.
    wait_for(lambda: server.get(d)["current_replicas"] == 3, timeout=30, what="the killed replica back")
    assert any(e["kind"] == "replica_crashed" and victim in e["message"] for e in server.events(d))


def test_a_replica_dying_mid_stream_ends_the_stream_with_an_error_promptly(gateway):
    server, client = gateway
    d = deploy(server, "sim.slow", 2)
    raw = client.chat.completions.with_raw_response.create(model=d, messages=[{"role": "user", "content": "long"}],
                                                           max_tokens=200, stream=True)
    replica = raw.headers["x-lyceum-replica-id"]
    stream = raw.parse()
    received = 0
    with pytest.raises(openai.APIError) as broken:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
                if received == 5:
                    pid = next(p for p, r in engine_pids([replica]).items())
                    os.kill(pid, signal.SIGKILL)
                    killed_at = time.monotonic()
    assert time.monotonic() - killed_at < 3, "the error came promptly, not after a timeout"
    assert 5 <= received < 200
    assert "failed mid-stream" in str(broken.value)


def test_outstanding_requests_stay_evenly_spread_over_four_replicas(gateway):
    server, client = gateway
    d = deploy(server, "sim.slow", 4)

    def one(_):
        client.chat.completions.create(model=d, messages=[{"role": "user", "content": "spread"}], max_tokens=40)

    def in_flight():
        text = requests.get(server.url + "/metrics", timeout=5).text
        return [int(v) for v in re.findall(rf'lyceum_replica_in_flight{{deployment="{d}",replica="[^"]+"}} (\d+)', text)]

    # 64 requests of 1.6 s each; sampled while all 64 are in flight, before any finishes. Least-outstanding of
    # two random choices keeps the spread within 4 (random placement would typically show about 7).
    with cf.ThreadPoolExecutor(64) as pool:
        futures = [pool.submit(one, i) for i in range(64)]
        counts = wait_for(lambda: (c := in_flight()) and sum(c) == 64 and c, timeout=10, interval=0.02,
                          what="all 64 requests in flight")
        for f in futures:
            f.result()
    assert len(counts) == 4
    assert max(counts) - min(counts) <= 4, counts


def test_a_request_that_outlives_x_timeout_s_is_answered_later_by_id(gateway):
    server, client = gateway
    d = deploy(server, "sim.late", 1)
    started = time.monotonic()
    r = server.chat(d, headers={"X-Timeout-S": "10"}, timeout=30)
    waited = time.monotonic() - started
    assert r.status_code == 202 and 9.5 <= waited < 11.5, (r.status_code, waited)
    body = r.json()
    assert body["status"] == "pending" and body["request_id"].startswith("req_")
    path = f"/openai/v1/chat/completions/{body['request_id']}"
    result = wait_for(lambda: (x := server.request("GET", path).json())["status"] == "completed" and x, timeout=20,
                      what="the background request to finish")
    assert result["result"]["object"] == "chat.completion" and result["result"]["usage"]["completion_tokens"] == 4
    other_key = server.request("POST", f"{API}/admin/keys", json={"org": "other"}).json()["api_key"]
    assert server.request("GET", path, key=other_key).status_code == 404
    # Without the header a plain client simply waits for the answer.
    plain = client.chat.completions.create(model=d, messages=[{"role": "user", "content": "patient"}], max_tokens=2)
    assert plain.usage.completion_tokens == 2


def test_metrics_expose_gateway_and_server_series(gateway):
    server, client = gateway
    d = deploy(server, "sim.fast", 1)
    for _ in range(5):
        client.chat.completions.create(model=d, messages=[{"role": "user", "content": "m"}], max_tokens=1)
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert f'lyceum_gateway_requests_total{{deployment="{d}"}} 5' in text
    assert f'lyceum_gateway_window_latency_ms{{deployment="{d}",quantile="0.95"}}' in text
    assert f'lyceum_deployment_ready_replicas{{deployment="{d}"}} 1' in text
    assert 'lyceum_deployments{status="running"} 1' in text
