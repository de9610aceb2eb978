"""A Ray head restart with GCS fault tolerance (Redis, Debian's redis-server): the replicas on the workers
keep serving, the server keeps routing to them without a failed request, and once the head is back its jobs
are still ours and launches go on. A cluster of its own (the head is taken down)."""
import shutil
import subprocess
import threading
import time

import pytest
import requests

from harness import wait_for
from raycluster import RayCluster, missing_requirements
from rayserver import PORT, RayServer

MISSING = missing_requirements() or (None if shutil.which("redis-server") else "`redis-server` not found (apt-get install redis-server)")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Ray head restart: {MISSING}")
REDIS_PORT = 6380


def test_head_restart_with_gcs_fault_tolerance_disturbs_no_replica(tmp_path):
    with RayCluster(workers={"w1": {"sim_gpu": 2}, "w2": {"sim_gpu": 2}}) as cluster:
        # Redis on the bridge (in the control plane's namespace, where it outlives the head), then a head that
        # keeps its state there.
        redis = cluster.exec_in("cp", ["redis-server", "--bind", cluster.cp_ip, "--port", str(REDIS_PORT), "--save", "",
                                       "--appendonly", "no", "--protected-mode", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cluster.head_env["RAY_REDIS_ADDRESS"] = f"{cluster.cp_ip}:{REDIS_PORT}"
        cluster.start()
        forwarder = cluster.forward("cp", cluster.cp_ip, PORT)
        server = RayServer(str(tmp_path / "data"), cluster, forwarder).start()
        try:
            deployment = server.create(hardware_profile="sim.ray", min_replicas=2, max_replicas=2)
            wait_for(lambda: len(server.healthy_nodes(deployment)) == 2, timeout=90, interval=0.3, what="2 healthy replicas")
            jobs_before = {j["submission_id"] for j in server.my_jobs() if j["status"] == "RUNNING"}
            counts, stop = {"ok": 0, "failed": []}, threading.Event()

            def load():
                session = requests.Session()
                while not stop.is_set():
                    r = session.post(server.url + "/openai/v1/chat/completions", headers={"Authorization": f"Bearer {server.key}"},
                                     json={"model": deployment, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}, timeout=60)
                    if r.status_code == 200:
                        counts["ok"] += 1
                    else:
                        counts["failed"].append(f"{r.status_code}: {r.text[:200]}")
                    time.sleep(0.02)

            thread = threading.Thread(target=load)
            thread.start()
            try:
                time.sleep(2)
                cluster.kill_node("head")
                time.sleep(10)
                assert len(server.healthy_nodes(deployment)) == 2, "the replicas serve while the head is down"
                t0 = time.monotonic()
                cluster.restart_head(timeout=90)
                print(f"\nJobs API back {time.monotonic() - t0:.1f} s after the head was started again")
                time.sleep(3)
            finally:
                stop.set()
                thread.join()
            print(f"{counts['ok']} requests answered while the head was down and restarted, {len(counts['failed'])} failed")
            assert counts["ok"] > 100 and counts["failed"] == [], counts["failed"][:5]
            running = {j["submission_id"] for j in server.my_jobs() if j["status"] == "RUNNING"}
            assert jobs_before <= running, "the jobs survived the head restart"
            assert len(server.healthy_nodes(deployment)) == 2
            # Launches go on: a new deployment runs.
            later = server.create(hardware_profile="sim.ray", min_replicas=1, max_replicas=1)
            wait_for(lambda: len(server.healthy_nodes(later)) == 1, timeout=90, interval=0.3, what="a replica launched after the restart")
            server.stop(later)
            server.stop(deployment)
            assert not [j for j in server.my_jobs() if j["status"] in ("RUNNING", "PENDING")]
        finally:
            server.terminate()
            redis.kill()
