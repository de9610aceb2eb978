"""The control plane end to end: a real `lyceum server`, real simulator replica processes, a real SQLite file."""
import json
import os
import signal
import subprocess

import requests

from harness import API, LYCEUM_BIN, engine_pids, start_server, wait_for  # noqa: F401

TINY = {"name": "sim.tiny", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "2.50",
        "devices": ["t0", "t1"], "ready_timeout_s": 30}
CRASHY = {"name": "sim.crashy", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "1.00",
          "devices": ["c0"], "ready_timeout_s": 30, "engine_args": ["--crash-on-start", "CUDA error: out of memory (simulated)"]}


def replica_ids(server, d):
    return [r["replica_id"] for r in server.get(d, include_terminated=True)["replicas"]]


def test_create_runs_two_replicas_then_stop_leaves_no_process(start_server):
    server = start_server()
    d = server.create(min_replicas=2, max_replicas=2)
    assert server.get(d)["status"] in ("created", "provisioning")
    running = server.wait_status(d, "running")
    wait_for(lambda: server.get(d)["current_replicas"] == 2, what="2 healthy replicas")
    info = server.get(d)
    assert {r["status"] for r in info["replicas"]} == {"running"} and all(r["healthy"] for r in info["replicas"])
    assert all(r["last_health_check"] for r in info["replicas"])
    for field in ("deployment_id", "hf_model_id", "hardware_profile", "status", "current_replicas", "desired_replicas",
                  "min_replicas", "max_replicas", "target_rps", "target_latency_p95_ms", "stabilisation_window", "created_at"):
        assert field in running, field
    for replica in info["replicas"]:
        assert set(replica) >= {"replica_id", "status", "healthy", "last_health_check", "fail_reason"}, replica
        assert replica["fail_reason"] is None
    ids = replica_ids(server, d)
    assert len(engine_pids(ids)) == 2

    assert server.stop(d) == {"deployment_id": d, "status": "stopped"}
    assert engine_pids(ids) == {}, "stop returned while engine processes were alive"
    assert server.request("GET", f"{API}/inference/get", params={"deployment_id": d}).status_code == 404
    stopped = server.get(d, include_terminated=True)
    assert stopped["status"] == "stopped" and {r["status"] for r in stopped["replicas"]} == {"stopped"}
    listed = server.request("GET", f"{API}/inference/list").json()["deployments"]
    assert d not in [x["deployment_id"] for x in listed]
    listed_all = server.request("GET", f"{API}/inference/list", params={"include_terminated": "true"}).json()["deployments"]
    assert d in [x["deployment_id"] for x in listed_all]


def test_cli_deploys_waits_shows_and_stops_with_exit_codes(start_server):
    server = start_server()
    env = dict(os.environ, LYCEUM_BASE_URL=server.url, LYCEUM_API_KEY=server.key)

    def cli(*args):
        return subprocess.run([LYCEUM_BIN, *args], env=env, capture_output=True, text=True, timeout=120)

    deployed = cli("infer", "deploy", "org/model", "-g", "sim.h100", "--min-replicas", "2", "-w", "-y")
    assert deployed.returncode == 0, deployed.stderr
    assert "is running: 2 of 2 replicas healthy" in deployed.stdout
    d = json.loads(cli("infer", "deployments", "--json").stdout)["deployments"][0]["deployment_id"]
    status = json.loads(cli("infer", "status", d, "--json").stdout)
    assert status["status"] == "running" and len(status["replicas"]) == 2
    table = cli("infer", "status", d).stdout
    assert "REPLICA" in table and "running" in table
    assert d in cli("infer", "deployments").stdout
    assert "sim.h100" in cli("infer", "models").stdout
    rid = status["replicas"][0]["replica_id"]
    assert "serving" in cli("infer", "replica", "logs", rid).stdout
    assert "created" in cli("infer", "events", d).stdout
    assert cli("infer", "stop", d).returncode == 0
    missing = cli("infer", "status", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode != 0 and "not found" in (missing.stderr + missing.stdout)
    bad = cli("infer", "deploy", "m", "-g", "gpu.z9", "-y")
    assert bad.returncode != 0 and "known profiles" in (bad.stderr + bad.stdout)
    unauthorised = subprocess.run([LYCEUM_BIN, "infer", "deployments", "--api-key", "lk_wrong"], env=env,
                                  capture_output=True, text=True, timeout=60)
    assert unauthorised.returncode != 0 and "401" in (unauthorised.stderr + unauthorised.stdout)


def test_every_bad_input_gets_a_clear_error_and_nothing_is_stored(start_server):
    server = start_server()
    good = {"hf_model_id": "m", "hardware_profile": "sim.h100", "target_rps": 1, "target_latency_p95_ms": 100,
            "stabilisation_window": 10}

    def create(body=None, raw=None, key=None, headers=None):
        kwargs = {"data": raw} if raw is not None else {"json": body}
        return server.request("POST", f"{API}/inference/create", key=key, headers=headers or {}, **kwargs)

    def fields(r):
        assert r.status_code == 422, r.text
        return {tuple(i["loc"]): i["type"] for i in r.json()["detail"]}

    assert fields(create({k: v for k, v in good.items() if k != "hf_model_id"})) == {("body", "hf_model_id"): "missing"}
    assert fields(create(dict(good, target_rps="fast"))) == {("body", "target_rps"): "float_type"}
    assert fields(create(dict(good, min_replicas=0))) == {("body", "min_replicas"): "greater_than_equal"}
    assert fields(create(dict(good, min_replicas=3, max_replicas=2))) == {("body", "max_replicas"): "value_error"}
    assert fields(create(dict(good, target_rps=0))) == {("body", "target_rps"): "greater_than_equal"}
    assert fields(create(dict(good, target_latency_p95_ms=-1))) == {("body", "target_latency_p95_ms"): "greater_than_equal"}
    assert fields(create(dict(good, stabilisation_window=-1))) == {("body", "stabilisation_window"): "greater_than_equal"}
    unknown = create(dict(good, hardware_profile="gpu.z9"))
    assert fields(unknown) == {("body", "hardware_profile"): "value_error"}
    assert "sim.h100" in unknown.json()["detail"][0]["msg"] and "cpu" in unknown.json()["detail"][0]["msg"]
    assert fields(create(raw="{not json", headers={"Content-Type": "application/json"})) == {("body",): "json_invalid"}
    huge = create(raw=json.dumps(dict(good, hf_model_id="x" * (1 << 20))))
    assert huge.status_code == 413 and "1 MiB" in huge.json()["detail"]
    for key in ("", "lk_wrong"):
        r = requests.post(server.url + f"{API}/inference/create", json=good, timeout=10,
                          headers={"Authorization": f"Bearer {key}"} if key else {})
        assert r.status_code == 401 and isinstance(r.json()["detail"], str)
    assert server.request("GET", f"{API}/inference/get").status_code == 422
    assert server.request("DELETE", f"{API}/inference/stop", json={}).status_code == 422

    listed = server.request("GET", f"{API}/inference/list", params={"include_terminated": "true"}).json()
    assert listed == {"deployments": []}, "a refused request left something behind"
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def test_organisations_cannot_see_each_others_deployments(start_server):
    server = start_server()
    d = server.create()
    other = server.request("POST", f"{API}/admin/keys", json={"org": "other"})
    assert other.status_code == 200, other.text
    other_key = other.json()["api_key"]
    assert other_key.startswith("lk_")
    assert server.request("GET", f"{API}/inference/get", key=other_key, params={"deployment_id": d}).status_code == 404
    assert server.request("DELETE", f"{API}/inference/stop", key=other_key, json={"deployment_id": d}).status_code == 404
    assert server.request("GET", f"{API}/inference/list", key=other_key).json() == {"deployments": []}
    assert server.request("GET", f"{API}/inference/events", key=other_key, params={"deployment_id": d}).status_code == 404
    server.wait_status(d, "running")
    rid = server.get(d)["replicas"][0]["replica_id"]
    assert server.request("GET", f"{API}/inference/replica/{rid}/logs", key=other_key).status_code == 404
    assert server.request("POST", f"{API}/admin/keys", key=other_key, json={"org": "x"}).status_code == 403
    assert server.get(d)["status"] == "running", "the other organisation's stop must not have touched it"


def test_a_full_device_pool_keeps_new_replicas_pending_until_devices_free_up(start_server):
    server = start_server(config={"hardware_profiles": [TINY]})
    a = server.create(hardware_profile="sim.tiny", min_replicas=2, max_replicas=2)
    server.wait_status(a, "running")
    b = server.create(hardware_profile="sim.tiny")
    waiting = wait_for(lambda: (r := server.get(b)["replicas"]) and r[0]["fail_reason"] and r, what="a waiting reason")
    server.wait_status(b, "provisioning", timeout=5)
    assert waiting[0]["status"] == "pending" and waiting[0]["fail_reason"].startswith("waiting for devices")
    assert engine_pids([waiting[0]["replica_id"]]) == {}
    server.stop(a)
    server.wait_status(b, "running")


def test_sigterm_stops_every_replica_and_a_restart_replaces_them(start_server):
    server = start_server()
    d = server.create(min_replicas=2, max_replicas=2)
    server.wait_status(d, "running")
    wait_for(lambda: server.get(d)["current_replicas"] == 2, what="2 healthy replicas")
    before = replica_ids(server, d)
    server.terminate()
    assert engine_pids(before) == {}, "engines outlived a SIGTERM'd server"
    server.start()
    assert {r["status"] for r in server.get(d, include_terminated=True)["replicas"] if r["replica_id"] in before} == {"stopped"}
    wait_for(lambda: server.get(d)["current_replicas"] == 2, what="replacements after restart")


def test_after_sigkill_a_restart_readopts_live_replicas_and_replaces_dead_ones(start_server):
    server = start_server()
    d = server.create(min_replicas=2, max_replicas=2)
    server.wait_status(d, "running")
    wait_for(lambda: server.get(d)["current_replicas"] == 2, what="2 healthy replicas")
    pids = engine_pids(replica_ids(server, d))
    assert len(pids) == 2
    server.kill9()
    assert engine_pids(list(pids.values())) == pids, "replicas survive their server's SIGKILL"
    victim_pid, victim = next(iter(pids.items()))
    os.kill(victim_pid, signal.SIGKILL)
    survivor = next(r for r in pids.values() if r != victim)
    server.start()
    info = server.wait_status(d, "running")
    assert engine_pids([survivor]) == {p: r for p, r in pids.items() if r == survivor}, "the live replica was adopted, same pid"
    wait_for(lambda: {r["replica_id"]: r for r in server.get(d, include_terminated=True)["replicas"]}[victim]["status"] == "stopped",
             what="recovery to reap the dead replica")
    wait_for(lambda: server.get(d)["current_replicas"] == 2, what="the dead replica replaced")
    replicas = {r["replica_id"]: r for r in server.get(d, include_terminated=True)["replicas"]}
    assert replicas[victim]["status"] == "stopped"
    assert replicas[survivor]["status"] == "running"
    kinds = [e["kind"] for e in server.events(d)]
    assert "replica_adopted" in kinds and "replica_reaped" in kinds
    assert info
    server.stop(d)
    assert engine_pids(list(replicas)) == {}


def test_a_crash_looping_engine_ends_failed_with_its_log_as_the_reason(start_server):
    server = start_server(config={"hardware_profiles": [CRASHY], "max_consecutive_failures": 3})
    d = server.create(hardware_profile="sim.crashy")
    failed = server.wait_status(d, "failed", timeout=60)
    replica = failed["replicas"][0]
    assert replica["status"] == "failed" and replica["restart_count"] == 3
    assert "out of memory" in replica["fail_reason"], replica["fail_reason"]
    logs = server.request("GET", f"{API}/inference/replica/{replica['replica_id']}/logs").json()
    assert "CUDA error: out of memory (simulated)" in logs["error_logs"]
    assert any(e["kind"] == "replica_failed" for e in server.events(d))


def test_catalogue_pricing_and_events_have_the_documented_shapes(start_server):
    server = start_server()
    models = server.request("GET", f"{API}/inference/models").json()["models"]
    assert models and set(models[0]) >= {"serving_name", "hf_model_id", "gpu_type", "gpu_count", "price_per_hour",
                                         "is_gpu_available", "ready_timeout_s"}
    by_profile = {m["hardware_profile"]: m for m in models}
    assert by_profile["sim.h100"]["is_gpu_available"] is True
    assert by_profile["gpu.h100"]["is_gpu_available"] in (True, False)
    assert "is_gpu_available" in by_profile["cpu"] and by_profile["cpu"]["is_gpu_available"] is None
    prices = server.request("GET", f"{API}/pricing").json()
    assert {p["hardware_profile"]: p["price_per_hour"] for p in prices["prices"]}["sim.h100"] == "2.50"
    d = server.create()
    server.wait_status(d, "running")
    events = server.events(d)
    assert [e["kind"] for e in events][0] == "created" and all(set(e) == {"at", "kind", "message"} for e in events)


def test_first_start_writes_a_private_admin_key_and_a_second_server_cannot_share_the_data_dir(start_server, tmp_path):
    server = start_server()
    key_file = os.path.join(server.data_dir, "admin.key")
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    assert server.key.startswith("lk_") and len(server.key) > 20
    db = open(os.path.join(server.data_dir, "lyceum.db"), "rb").read()
    assert server.key.encode() not in db, "API keys are stored hashed, never in clear"
    second = subprocess.run([LYCEUM_BIN, "server", "--port", "0", "--data-dir", server.data_dir],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0 and "already using this data directory" in (second.stderr + second.stdout)
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    server.terminate()
    server.start()
    assert server.key == open(key_file).read().strip()
    assert server.log_text().count(server.key) == 1, "the admin key is printed once, on the first start only"


def test_our_cli_says_in_one_sentence_when_the_server_cannot_be_reached(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), LYCEUM_BASE_URL="http://127.0.0.1:9", LYCEUM_API_KEY="lk_x")
    r = subprocess.run([LYCEUM_BIN, "infer", "deployments"], env=env, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Cannot reach the lyceum server at http://127.0.0.1:9" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) <= 2, out
    version = subprocess.run([LYCEUM_BIN, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip()
