"""Replicas as jobs on a real Ray cluster: a head and two workers, each in its own network, PID and mount
namespace on a private bridge (raycluster.py); `lyceum server` runs in a control-plane namespace on the same
bridge and talks to the head's Jobs API over it; the test reaches the server through a forwarder. Simulator
replicas ask for a custom `sim_gpu` resource. Scenarios share one cluster and run in file order."""
import json
import os
import subprocess
import sys
import threading
import time

import openai
import pytest
import requests

from harness import API, LYCEUM_BIN, engine_pids, wait_for
from hub_standin import HubStandIn, Repo
from raycluster import RayCluster, missing_requirements, run_in_netns
from rayserver import PORT, ROOT, RayServer, gpu_available, node_name, sim_engines

MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Ray namespace cluster: {MISSING}")

SECRET = "hf_ray_secret_4242"


@pytest.fixture(scope="module")
def ray(tmp_path_factory):
    work = tmp_path_factory.mktemp("ray")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_tiny_gguf.py"), "--seed", "7", str(work / "tiny.gguf")], check=True)
    prefix = "lt" + os.urandom(2).hex()
    # Each node's Hub cache is on its own tmpfs (the temp dir every node mounts privately at this path).
    with RayCluster(prefix=prefix, workers={"w1": {"sim_gpu": 3}, "w2": {"sim_gpu": 3}},
                    env={"HF_HUB_CACHE": f"/tmp/ray-{prefix}/hub"}) as cluster:
        t0 = time.monotonic()
        cluster.start()
        print(f"\nRay cluster up in {time.monotonic() - t0:.1f} s")
        forwarder = cluster.forward("cp", cluster.cp_ip, PORT)
        # A local server standing in for the Hub (the real one cannot be reached here), on the bridge, so that
        # the nodes fetch from it.
        hub = run_in_netns(cluster.ns("cp"), lambda: HubStandIn(
            {"acme/tiny-GGUF": Repo({"tiny-Q4_K_M.gguf": (work / "tiny.gguf").read_bytes()})}, host=cluster.cp_ip))
        hub.__enter__()
        server = RayServer(str(work / "data"), cluster, forwarder, hub).start()
        try:
            yield server
        finally:
            server.terminate()
            try:
                jobs = server.my_jobs()
            except requests.RequestException:
                jobs = []  # the last test takes the head down
            hub.__exit__(None, None, None)
            for job in jobs:
                assert job["status"] in ("STOPPED", "SUCCEEDED", "FAILED"), f"a job outlived the server: {job['submission_id']} {job['status']}"


def test_replicas_spread_over_workers_and_serve(ray):
    t0 = time.monotonic()
    deployment = ray.create(hardware_profile="sim.ray", min_replicas=3, max_replicas=3, hf_token=SECRET)
    wait_for(lambda: len(ray.healthy_nodes(deployment)) == 3, timeout=90, interval=0.3, what="3 healthy replicas on Ray")
    print(f"\n3 replicas healthy on Ray {time.monotonic() - t0:.1f} s after create")
    # A running replica's log is read from Ray, from the node it runs on, at once.
    first = ray.replicas(deployment)[0]["replica_id"]
    logs = ray.request("GET", f"{API}/inference/replica/{first}/logs").json()["error_logs"]
    assert f"lyceum replica {first}: engine will listen on" in logs, logs
    nodes = {node_name(ray, n) for n in ray.healthy_nodes(deployment)}
    assert nodes <= {"w1", "w2"} and len(nodes) == 2, f"replicas should be on both workers, are on {nodes}"
    ray.wait_status(deployment, "running")
    client = openai.OpenAI(base_url=ray.url + "/openai/v1", api_key=ray.key)
    answer = client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert answer.choices[0].message.content
    # Every replica is one job of ours, running, with the replica id in its metadata and no secret in its environment.
    jobs = [j for j in ray.my_jobs() if j["status"] == "RUNNING"]
    ids = {r["replica_id"] for r in ray.replicas(deployment)}
    assert {j["metadata"]["lyceum_replica_id"] for j in jobs} == ids
    for job in jobs:
        assert SECRET not in json.dumps(job), "Ray shows a job's description to anyone who can read its API"
        assert SECRET not in json.dumps(ray.cluster.job(job["submission_id"]))
    # The engines got it from the control plane, through their launcher's registration.
    for pid in sim_engines(ids):
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert f"HF_TOKEN={SECRET}".encode() in f.read().split(b"\0")
    assert len(sim_engines(ids)) == 3
    ray.stop(deployment)
    # A stopped replica's log stays readable (kept by the server when its job ended).
    logs = ray.request("GET", f"{API}/inference/replica/{first}/logs").json()["error_logs"]
    assert f"lyceum replica {first}: engine will listen on" in logs, logs


def test_losing_a_worker_loses_no_request(ray):
    deployment = ray.create(hardware_profile="sim.ray", min_replicas=3, max_replicas=3)
    wait_for(lambda: len(ray.healthy_nodes(deployment)) == 3, timeout=90, interval=0.3, what="3 healthy replicas")
    placed = [node_name(ray, n) for n in ray.healthy_nodes(deployment)]
    victim = max(set(placed), key=placed.count)
    survivor = "w2" if victim == "w1" else "w1"

    results = {"ok": 0, "failed": []}
    stop = threading.Event()
    lock = threading.Lock()

    def load():
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.post(ray.url + "/openai/v1/chat/completions", headers={"Authorization": f"Bearer {ray.key}"},
                                 json={"model": deployment, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8},
                                 timeout=60)
                with lock:
                    if r.status_code == 200 and r.json()["choices"]:
                        results["ok"] += 1
                    else:
                        results["failed"].append(f"{r.status_code}: {r.text[:200]}")
            except requests.RequestException as e:
                with lock:
                    results["failed"].append(repr(e))
            time.sleep(0.02)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        killed_at = time.monotonic()
        ray.cluster.kill_node(victim)
        assert not ray.cluster.pids_in(victim), "nothing may be left in the killed node's namespace"
        wait_for(lambda: len(ray.healthy_nodes(deployment)) == 3 and {node_name(ray, n) for n in ray.healthy_nodes(deployment)} == {survivor},
                 timeout=120, interval=0.3, what=f"3 healthy replicas, all on {survivor}")
        print(f"\nreplacements healthy {time.monotonic() - killed_at:.1f} s after {victim} was killed")
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    print(f"requests during the node loss: {results['ok']} answered, {len(results['failed'])} failed")
    assert results["ok"] > 50
    assert results["failed"] == [], results["failed"][:5]
    ray.stop(deployment)
    wait_for(lambda: not [j for j in ray.my_jobs() if j["status"] in ("RUNNING", "PENDING")], timeout=60, interval=0.5,
             what="every job stopped")


def test_stop_stops_every_job_and_process(ray):
    deployment = ray.create(hardware_profile="sim.ray", min_replicas=2, max_replicas=2)
    wait_for(lambda: len(ray.healthy_nodes(deployment)) == 2, timeout=90, interval=0.3, what="2 healthy replicas")
    ids = {r["replica_id"] for r in ray.replicas(deployment)}
    assert engine_pids(ids), "the engines run (as processes of this machine, in the workers' namespaces)"
    ray.stop(deployment)
    mine = [j for j in ray.my_jobs() if j["metadata"].get("lyceum_replica_id") in ids]
    assert mine and all(j["status"] == "STOPPED" for j in mine), [(j["submission_id"], j["status"]) for j in mine]
    wait_for(lambda: not engine_pids(ids), timeout=10, what="no engine process left")


def test_server_restart_readopts_running_replicas(ray):
    deployment = ray.create(hardware_profile="sim.ray", min_replicas=2, max_replicas=2)
    wait_for(lambda: len(ray.healthy_nodes(deployment)) == 2, timeout=90, interval=0.3, what="2 healthy replicas")
    jobs_before = {j["submission_id"] for j in ray.my_jobs() if j["status"] == "RUNNING"}
    pids_before = sim_engines({r["replica_id"] for r in ray.replicas(deployment)})
    assert len(pids_before) == 2
    ray.kill9()
    ray.start()
    wait_for(lambda: len(ray.healthy_nodes(deployment)) == 2, timeout=60, interval=0.3, what="2 healthy replicas after the restart")
    assert {j["submission_id"] for j in ray.my_jobs() if j["status"] == "RUNNING"} == jobs_before, "no job was relaunched"
    assert sim_engines({r["replica_id"] for r in ray.replicas(deployment)}) == pids_before, "the same engines serve"
    assert sum(e["kind"] == "replica_adopted" for e in ray.events(deployment)) == 2
    assert ray.chat(deployment).status_code == 200
    # An adopted replica whose job ends behind the server's back (stopped through Ray's own API) is seen gone
    # and replaced by a new job.
    gone = sorted(jobs_before)[0]
    ray.cluster.stop_job(gone)
    wait_for(lambda: len(ray.healthy_nodes(deployment)) == 2
             and len({j["submission_id"] for j in ray.my_jobs() if j["status"] == "RUNNING"} - jobs_before) == 1,
             timeout=60, interval=0.3, what="the adopted replica whose job was stopped replaced by a new job")
    ray.stop(deployment)


def test_profile_no_node_has_waits_pending_until_a_node_joins(ray):
    deployment = ray.create(hardware_profile="sim.raybig", min_replicas=1, max_replicas=1)
    wait_for(lambda: any("no node of the Ray cluster" in (r["fail_reason"] or "") and r["status"] == "pending"
                         for r in ray.replicas(deployment)), timeout=30, interval=0.3, what="pending with the reason")
    assert ray.get(deployment)["status"] in ("provisioning", "pending", "created")
    out = subprocess.run([LYCEUM_BIN, "infer", "status", deployment], capture_output=True, text=True,
                         env=dict(os.environ, LYCEUM_BASE_URL=ray.url, LYCEUM_API_KEY=ray.key), timeout=30)
    assert "pending" in out.stdout, out.stdout + out.stderr
    # The catalogue answers from the cluster's free resources: no node has big_gpu; sim_gpu is free on w2.
    assert gpu_available(ray, "sim.raybig") is False
    assert gpu_available(ray, "sim.ray") is True
    joined = time.monotonic()
    ray.cluster.add_worker("w3", {"big_gpu": 1})
    wait_for(lambda: ray.healthy_nodes(deployment) == [ray.cluster.ip("w3")], timeout=90, interval=0.3,
             what="the replica running on the node that joined")
    print(f"\nstarted {time.monotonic() - joined:.1f} s after a node with the resource joined")
    ray.stop(deployment)


def test_each_node_fetches_the_model_into_its_own_hub_cache(ray):
    """llama.cpp replicas of a Hub model (from a local stand-in for the Hub): each node that runs one
    downloads the file into its own cache, once; the server downloads nothing."""
    # A worker was lost earlier in this module: a fresh one joins, so that two can take a replica each.
    ray.cluster.add_worker("w4", {"sim_gpu": 3})
    deployment = ray.create(hardware_profile="cpu.ray", hf_model_id="acme/tiny-GGUF", min_replicas=2, max_replicas=2)
    wait_for(lambda: len(ray.healthy_nodes(deployment)) == 2, timeout=180, interval=0.5, what="2 llama.cpp replicas on Ray")
    nodes = {node_name(ray, n) for n in ray.healthy_nodes(deployment)}
    assert len(nodes) == 2, f"spread over both workers, not {nodes}"
    client = openai.OpenAI(base_url=ray.url + "/openai/v1", api_key=ray.key)
    answer = client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert answer.choices[0].message.content is not None
    assert len(ray.hub.file_requests("tiny-Q4_K_M.gguf")) == 2, "one download per node"
    assert not os.path.exists(os.path.join(ray.data_dir + "-server-hub-cache", "models--acme--tiny-GGUF")), "the server fetched nothing"
    cache = f"/tmp/ray-{ray.cluster.prefix}/hub/models--acme--tiny-GGUF/refs/main"
    for name in nodes:
        assert ray.cluster.exec_in(name, ["test", "-s", cache], node_namespaces=True).wait(timeout=10) == 0, f"{name} has the files"
    assert not os.path.exists(cache), "each node's cache is its own, not this machine's"
    ray.stop(deployment)


def test_head_lost_replicas_keep_serving_and_launches_wait(ray):
    """Last: it takes the head down. Without GCS fault tolerance the workers give up about a minute later;
    until then the replicas serve, the server routes to them, and a new deployment waits with the reason."""
    deployment = ray.create(hardware_profile="sim.ray", min_replicas=2, max_replicas=2)
    wait_for(lambda: len(ray.healthy_nodes(deployment)) == 2, timeout=90, interval=0.3, what="2 healthy replicas")
    ray.cluster.kill_node("head")
    lost = time.monotonic()
    later = ray.create(hardware_profile="sim.ray", min_replicas=1, max_replicas=1)
    answered = 0
    while time.monotonic() - lost < 10:
        r = ray.chat(deployment, timeout=30)
        assert r.status_code == 200, r.text
        answered += 1
    assert len(ray.healthy_nodes(deployment)) == 2, "no replica is given up because the head is gone"
    wait_for(lambda: any("Jobs API does not answer" in (r["fail_reason"] or "") for r in ray.replicas(later)),
             timeout=20, interval=0.3, what="the new deployment waiting for the cluster, with the reason")
    assert ray.healthy_nodes(later) == []
    print(f"\n{answered} requests answered in the 10 s after the head was killed")
    ray.stop(later)
    ray.stop(deployment)
