"""A hostile tenant and a broken replica, end to end: every fault of the adversarial pass reproduced against a real
server with real simulator replicas. The broken GPU is a STAND-IN: the simulator answers wrongly when it is given
one of `--broken-devices` (a misconfigured engine answering 404, or a 200 that is not a completion)."""
import concurrent.futures as cf
import json
import os
import random
import signal
import socket
import sqlite3
import time

import requests

from harness import API, start_server, wait_for  # noqa: F401
from hub_standin import HubStandIn, Repo


def sim(name, *args, devices=3):
    return {"name": name, "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "1.00",
            "devices": [f"{name}-{i}" for i in range(devices)], "ready_timeout_s": 30, "engine_args": list(args)}


FAST = sim("sim.fast", "--ttft-ms", "5", "--itl-ms", "1", "--jitter", "0")
NODEV = sim("sim.nodev", devices=0)


def tenant_key(server, org):
    r = server.request("POST", f"{API}/admin/keys", json={"org": org})
    assert r.status_code == 200, r.text
    return r.json()["api_key"]


def create(server, key=None, **fields):
    body = {"hf_model_id": "test/model", "hardware_profile": "sim.fast"}
    body.update(fields)
    return server.request("POST", f"{API}/inference/create", key=key, json=body)


def chat(server, d, key=None, timeout=60, headers=None):
    return server.request("POST", "/openai/v1/chat/completions", key=key, timeout=timeout, headers=dict(headers or {}),
                          json={"model": d, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})


def stop(server, d, key):
    r = server.request("DELETE", f"{API}/inference/stop", key=key, json={"deployment_id": d})
    assert r.status_code == 200, r.text


def wait_running(server, d, key, timeout=30):
    wait_for(lambda: server.get(d, key=key)["status"] == "running", timeout=timeout, what=f"{d} running")


def deployments_in_db(server):
    db = sqlite3.connect(os.path.join(server.data_dir, "lyceum.db"))
    try:
        return db.execute("select count(*) from deployments").fetchone()[0]
    finally:
        db.close()


def test_hostile_numbers_are_refused_with_their_bound_and_nothing_is_stored(start_server):
    server = start_server(config={"hardware_profiles": [FAST]})
    cases = [
        ({"target_rps": 1e-300}, "target_rps", "0.001"),
        ({"target_rps": 1e300}, "target_rps", "1000000"),
        ({"min_replicas": 10 ** 14, "max_replicas": 10 ** 14}, "min_replicas", "64"),
        ({"target_latency_p95_ms": 1e300}, "target_latency_p95_ms", "3600000"),
        ({"stabilisation_window": 10 ** 9}, "stabilisation_window", "86400"),
        ({"hf_model_id": "m\u0000x"}, "hf_model_id", "control"),
    ]
    for fields, field, bound in cases:
        r = create(server, **fields)
        assert r.status_code == 422, (fields, r.text)
        issues = {tuple(i["loc"]): i["msg"] for i in r.json()["detail"]}
        assert bound in issues[("body", field)], (fields, issues)
    assert deployments_in_db(server) == 0, "a refused create stores nothing"
    d = create(server).json()["deployment_id"]
    server.wait_status(d, "running")
    assert chat(server, d).status_code == 200


def test_fuzzed_create_and_chat_bodies_get_no_5xx_and_nothing_half_written(start_server):
    server = start_server(config={"hardware_profiles": [FAST, NODEV]})
    rng = random.Random(1234)
    values = [0, -1, 1, 1e-300, 1e300, 2 ** 63, -2 ** 63, 1.5, 64, 65, "x", "", None, True, [], {}, "\u0000", "a" * 600]
    fields = ["hf_model_id", "hardware_profile", "gpu_type", "gpu_count", "target_rps", "target_latency_p95_ms",
              "stabilisation_window", "min_replicas", "max_replicas", "hf_token"]
    accepted = 0
    for _ in range(250):
        body = {"hf_model_id": "m/x", "hardware_profile": "sim.nodev"}
        for field in rng.sample(fields, rng.randint(1, 4)):
            body[field] = rng.choice(values + ["sim.nodev", "h100", "m/x"])
        r = server.request("POST", f"{API}/inference/create", json=body, timeout=30)
        assert r.status_code in (200, 422), (body, r.status_code, r.text)
        accepted += r.status_code == 200
    assert deployments_in_db(server) == accepted
    for bad in [b"{", b"[]", b"null", b'{"deployment_id": 5}', b"\xff\xfe"]:
        assert server.request("POST", f"{API}/inference/create", data=bad).status_code == 422
    d = create(server).json()["deployment_id"]
    server.wait_status(d, "running")
    statuses = {}
    for _ in range(250):
        body = {"model": rng.choice([d, d + "\u0000", "", None, 5, "x" * 300]),
                "messages": rng.choice([[{"role": "user", "content": "hi"}], [], None, "x", [1], [{"role": "user"}]]),
                "max_tokens": rng.choice([1, 3, 0, -1, 10 ** 9, "x", None]),
                "stream": rng.choice([False, True, "yes", None])}
        r = server.request("POST", "/openai/v1/chat/completions", json=body, timeout=30)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (body, r.status_code, r.text)
    assert statuses.get(200, 0) > 0 and server.proc.poll() is None


def test_a_tenant_cannot_serve_local_files_or_another_organisations_cached_model(start_server, tmp_path):
    gguf = b"GGUF" + bytes(64)
    cache = tmp_path / "hub-cache"
    with HubStandIn({"acme/gated-GGUF": Repo({"m-Q4_K_M.gguf": gguf}, gated=True, tokens={"hf_good"})}) as hub:
        server = start_server(config={"hf_endpoint": hub.url, "model_cache_dir": str(cache), "hub_check_timeout_s": 2})
        a, b = tenant_key(server, "org-a"), tenant_key(server, "org-b")
        for path in ["/etc/shadow", "file:///root/.ssh/id_rsa", str(cache / "x.gguf"), "/tmp/../etc/model.gguf"]:
            r = create(server, key=b, hf_model_id=path, hardware_profile="cpu")
            assert r.status_code == 422, r.text
            assert "operator" in r.json()["detail"][0]["msg"]
        # Organisation A passes the Hub's access check with its token: it is granted the model.
        r = create(server, key=a, hf_model_id="acme/gated-GGUF", hardware_profile="cpu", hf_token="hf_good")
        assert r.status_code == 200, r.text
        stop(server, r.json()["deployment_id"], a)
        assert create(server, key=b, hf_model_id="acme/gated-GGUF", hardware_profile="cpu").status_code == 422
        # The model is in the cache (as A's download left it), and the Hub goes down.
        snapshot = cache / "models--acme--gated-GGUF" / "snapshots" / "abc"
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / "m-Q4_K_M.gguf").write_bytes(gguf)
        hub.outage = True
        r = create(server, key=b, hf_model_id="acme/gated-GGUF", hardware_profile="cpu")
        assert r.status_code == 422, r.text
        assert "not been granted" in r.json()["detail"][0]["msg"]
        r = create(server, key=b, hf_model_id=str(snapshot / "m-Q4_K_M.gguf"), hardware_profile="cpu")
        assert r.status_code == 422
        r = create(server, key=a, hf_model_id="acme/gated-GGUF", hardware_profile="cpu")
        assert r.status_code == 200, "the organisation granted before keeps its access while the Hub is down"
        stop(server, r.json()["deployment_id"], a)

def test_one_broken_replica_is_routed_around_counted_and_replaced(start_server):
    flaky = sim("sim.flaky", "--ttft-ms", "5", "--itl-ms", "1", "--jitter", "0",
                "--broken-devices", "sim.flaky-1", "--broken-mode", "404", "--broken-after-requests", "1")
    server = start_server(config={"hardware_profiles": [flaky]})
    d = create(server, hardware_profile="sim.flaky", min_replicas=3, max_replicas=3).json()["deployment_id"]
    wait_for(lambda: server.get(d)["current_replicas"] == 3, timeout=30, what="three ready replicas")
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: chat(server, d), range(300)))
    bad = [(a.status_code, a.text[:200]) for a in answers if a.status_code != 200 or "choices" not in a.json()]
    assert not bad, bad[:3]
    metrics = server.request("GET", "/metrics").text
    errors = [line for line in metrics.splitlines() if line.startswith("lyceum_replica_errors_total") and not line.endswith(" 0")]
    assert errors, "the broken replica's wrong answers are counted"
    wait_for(lambda: any(e["kind"] == "replica_killed" and "wrongly" in e["message"] for e in server.events(d)),
             timeout=30, what="the broken replica replaced")


def test_a_replica_that_answers_junk_never_takes_traffic(start_server):
    junk = sim("sim.junk", "--ttft-ms", "5", "--itl-ms", "1", "--broken-devices", "sim.junk-1", "--broken-mode", "junk", devices=2)
    server = start_server(config={"hardware_profiles": [junk], "max_consecutive_failures": 2})
    d = create(server, hardware_profile="sim.junk", min_replicas=2, max_replicas=2).json()["deployment_id"]
    server.wait_status(d, "running")
    wait_for(lambda: any("wrongly" in (r["fail_reason"] or "") for r in server.get(d)["replicas"]),
             timeout=30, what="the junk replica's reason")
    answers = [chat(server, d) for _ in range(40)]
    assert all(a.status_code == 200 and a.json()["choices"] for a in answers)
    assert server.get(d)["current_replicas"] == 1


def test_sigterm_exits_within_the_bound_and_waiting_requests_get_503(start_server):
    server = start_server(config={"hardware_profiles": [FAST, NODEV], "shutdown_timeout_s": 8})
    stuck = create(server, hardware_profile="sim.nodev").json()["deployment_id"]
    running = create(server).json()["deployment_id"]
    server.wait_status(running, "running")
    with cf.ThreadPoolExecutor(6) as pool:
        waiting = [pool.submit(chat, server, stuck, None, 60) for _ in range(6)]
        time.sleep(1.0)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=20)
        took = time.monotonic() - started
        answers = [w.result(timeout=20) for w in waiting]
    assert took < 8, f"SIGTERM took {took:.1f} s"
    assert all(a.status_code == 503 and a.json()["error"]["code"] == "shutting_down" for a in answers), [a.text for a in answers]


def test_idle_and_slow_connections_do_not_stop_service(start_server):
    server = start_server(config={"hardware_profiles": [FAST], "header_timeout_s": 1.5})
    d = create(server).json()["deployment_id"]
    server.wait_status(d, "running")
    host, port = server.url.replace("http://", "").split(":")
    idle = []
    try:
        for _ in range(5000):
            idle.append(socket.create_connection((host, int(port)), timeout=5))
        started = time.monotonic()
        assert chat(server, d, timeout=10).status_code == 200
        assert time.monotonic() - started < 5, "service answers with 5,000 idle connections open"
        # A slow-header client is closed after the header timeout, however it drips.
        slow = socket.create_connection((host, int(port)), timeout=10)
        slow.sendall(b"GET /health HTTP/1.1\r\n")
        closed_after = None
        started = time.monotonic()
        for _ in range(20):
            try:
                slow.sendall(b"X-Drip: 1\r\n")
                slow.settimeout(0.5)
                if slow.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except socket.timeout:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
        slow.close()
        assert closed_after is not None and closed_after < 5, closed_after
    finally:
        for s in idle:
            s.close()


def test_per_organisation_limits_answer_clearly(start_server):
    slow = sim("sim.q", "--ttft-ms", "1500", "--itl-ms", "1", devices=4)
    late = sim("sim.late", "--ttft-ms", "15000", "--itl-ms", "1", devices=2)
    quota = {"max_devices_per_profile": 1, "max_requests_in_flight": 2, "max_stored_results": 1}
    server = start_server(config={"hardware_profiles": [slow, late], "org_quota": quota})
    t = tenant_key(server, "tenant")
    d = create(server, key=t, hardware_profile="sim.q", min_replicas=2, max_replicas=2).json()["deployment_id"]
    wait_running(server, d, t)
    waiting = wait_for(lambda: [r for r in server.get(d, key=t)["replicas"] if "organisation holds" in (r["fail_reason"] or "")],
                       what="the second replica held back by the device limit")
    assert waiting[0]["status"] == "pending"
    admin = create(server, hardware_profile="sim.q").json()["deployment_id"]
    server.wait_status(admin, "running", timeout=30)
    with cf.ThreadPoolExecutor(3) as pool:
        codes = sorted(a.status_code for a in pool.map(lambda _: chat(server, d, key=t), range(3)))
    assert codes == [200, 200, 429], codes
    too_many = [a for a in [chat(server, d, key=t)] if a.status_code == 429]
    assert not too_many, "the limit frees as requests finish"
    late_d = create(server, key=t, hardware_profile="sim.late").json()["deployment_id"]
    wait_running(server, late_d, t, timeout=60)
    first = chat(server, late_d, key=t, headers={"X-Timeout-S": "10"})
    assert first.status_code == 202, first.text
    second = chat(server, late_d, key=t, headers={"X-Timeout-S": "10"})
    assert second.status_code == 429 and second.json()["error"]["code"] == "stored_results_limit", second.text


def test_nul_ids_metrics_key_405s_and_one_resumed_event(start_server):
    server = start_server(config={"hardware_profiles": [FAST], "metrics_auth": True, "idle_timeout_s": 2,
                                  "autoscale_interval_s": 0.5})
    t = tenant_key(server, "tenant")
    d = create(server).json()["deployment_id"]
    server.wait_status(d, "running")
    r = requests.get(server.url + f"{API}/inference/get?deployment_id={d}%00junk", headers={"Authorization": f"Bearer {server.key}"})
    assert r.status_code == 404
    started = time.monotonic()
    r = chat(server, d + "\u0000x")
    assert r.status_code in (400, 404) and time.monotonic() - started < 3
    assert requests.get(server.url + "/metrics").status_code == 401
    assert server.request("GET", "/metrics", key=t).status_code == 401
    assert server.request("GET", "/metrics").status_code == 200
    r = server.request("GET", f"{API}/no/such/path")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = server.request("POST", f"{API}/inference/list")
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}
    r = server.request("POST", "/openai/v1/embeddings", json={"model": d, "input": "x"})
    assert r.status_code == 404 and "Embeddings are not served" in r.json()["error"]["message"]
    server.wait_status(d, "paused", timeout=30)
    with cf.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: chat(server, d, timeout=60), range(200)))
    assert all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
    assert [e["kind"] for e in server.events(d)].count("resumed") == 1


def test_rows_stored_before_the_bounds_neither_crash_nor_jam_a_restarted_server(start_server, tmp_path):
    """The issue's reproduction as an old server left it: a deployment stored with target_rps 1e-300 and 1e14
    replicas. Before saturating arithmetic and the per-deployment ceiling, the first request after a restart
    trapped the server, and the replica table grew by thousands of rows a second."""
    server = start_server(config={"hardware_profiles": [FAST], "autoscale_interval_s": 0.5})
    d = create(server).json()["deployment_id"]
    server.wait_status(d, "running")
    server.terminate()
    db = sqlite3.connect(os.path.join(server.data_dir, "lyceum.db"))
    db.execute("update deployments set targetRps = 1e-300, minReplicas = 100000000000000, maxReplicas = 100000000000000, "
               "desiredReplicas = 100000000000000 where id = ?", (d,))
    db.commit()
    db.close()
    server.start()
    answers = [chat(server, d, timeout=60) for _ in range(20)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:2]
    time.sleep(3)
    assert server.proc.poll() is None, "the server is still running"
    rows = server.replica_rows(d)
    assert len(rows) <= 64 + 1, f"{len(rows)} replica rows: the ceiling bounds what a stored count can ask for"
