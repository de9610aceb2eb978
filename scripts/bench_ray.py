"""Replicas on a Ray cluster against local processes, measured (run by scripts/bench-ray.sh, which builds the
release binary). One Ray head and three workers, each in its own network, PID and mount namespace on a private
bridge (tests/e2e/raycluster.py); one `lyceum server` in a control-plane namespace on that bridge, with two
simulator profiles that differ only in where they run: `sim.local` (a child process of the server) and
`sim.ray` (a Ray job, `{"sim_gpu": 1}`).

1. create to first healthy replica, local and Ray interleaved (ABAB), REPS times each;
2. a worker node killed whole under steady non-streaming load (4 clients in a closed loop) against a deployment
   of 3 replicas spread over the workers: the time until 3 replicas are healthy again, and the requests
   answered and failed, TRIALS times (a fresh worker joins after each trial).

Prints a Markdown section for docs/benchmarks.md. Every server binds inside namespaces this script made."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from raycluster import RayCluster  # noqa: E402

LYCEUM = os.path.abspath(os.environ.get("LYCEUM_BIN", ".build/release/lyceum"))
REPS = int(os.environ.get("REPS", "5"))
TRIALS = int(os.environ.get("TRIALS", "2"))
API = "/api/v2/external"
PORT = 8080
SIM = {"engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "1.00", "ready_timeout_s": 120}
CONFIG = {
    "health_interval_s": 0.3, "reconcile_interval_s": 0.3, "restart_backoff_s": 0.2, "stop_grace_s": 5,
    "unhealthy_restart_after_s": 2, "health_timeout_s": 1,
    "hardware_profiles": [
        dict(SIM, name="sim.local", devices=[f"l{i}" for i in range(4)]),
        dict(SIM, name="sim.ray", provider="ray", resources={"sim_gpu": 1}),
    ],
}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class Server:
    def __init__(self, cluster, work):
        self.cluster, self.work = cluster, work
        self.config_path = os.path.join(work, "config.json")
        json.dump(dict(CONFIG, ray_address=cluster.head_url, ray_cluster_name=f"bench-{cluster.prefix}"), open(self.config_path, "w"))
        self.forwarder = cluster.forward("cp", cluster.cp_ip, PORT)
        self.url = f"http://127.0.0.1:{self.forwarder.port}"
        self.log = open(os.path.join(work, "server.log"), "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", cluster.ns("cp"), LYCEUM, "server", "--host", cluster.cp_ip, "--port", str(PORT),
             "--data-dir", os.path.join(work, "data"), "--config", self.config_path, "--log-level", os.environ.get("LOG_LEVEL", "warning")],
            stdout=self.log, stderr=subprocess.STDOUT)

        def up():
            try:
                return requests.get(self.url + "/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_for(up, 30, "the server")
        self.key = open(os.path.join(work, "data", "admin.key")).read().strip()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.key}"

    def create(self, profile, replicas):
        r = self.session.post(self.url + API + "/inference/create", json={
            "hf_model_id": "bench/model", "hardware_profile": profile, "target_rps": 10, "target_latency_p95_ms": 5000,
            "stabilisation_window": 300, "min_replicas": replicas, "max_replicas": replicas})
        r.raise_for_status()
        return r.json()["deployment_id"]

    def replicas(self, deployment):
        r = self.session.get(self.url + API + "/inference/get", params={"deployment_id": deployment})
        return [x for x in r.json()["replicas"] if x["status"] != "stopped"]

    def healthy(self, deployment):
        return [x for x in self.replicas(deployment) if x["healthy"] and x["status"] == "running"]

    def stop(self, deployment):
        self.session.delete(self.url + API + "/inference/stop", json={"deployment_id": deployment}).raise_for_status()

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.forwarder.close()


def time_to_first_healthy(server, profile):
    t0 = time.monotonic()
    deployment = server.create(profile, 1)
    wait_for(lambda: server.healthy(deployment), 120, f"a healthy {profile} replica")
    elapsed = time.monotonic() - t0
    server.stop(deployment)
    return elapsed


def node_loss(server, cluster, victim_pool):
    deployment = server.create("sim.ray", 3)
    wait_for(lambda: len(server.healthy(deployment)) == 3, 120, "3 healthy replicas")
    by_node = {}
    for replica in server.healthy(deployment):
        by_node.setdefault(replica["node"], 0)
        by_node[replica["node"]] += 1
    victim_ip = max(by_node, key=by_node.get)
    victim = next(name for name in victim_pool if cluster.ip(name) == victim_ip)
    counts = {"ok": 0, "failed": 0}
    lock, stop = threading.Lock(), threading.Event()

    def client():
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.post(server.url + "/openai/v1/chat/completions", headers={"Authorization": f"Bearer {server.key}"},
                                 json={"model": deployment, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}, timeout=60)
                good = r.status_code == 200
            except requests.RequestException:
                good = False
            with lock:
                counts["ok" if good else "failed"] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    killed = time.monotonic()
    cluster.kill_node(victim)
    wait_for(lambda: len(server.healthy(deployment)) == 3 and victim_ip not in {r["node"] for r in server.healthy(deployment)},
             120, "3 healthy replicas off the lost node")
    replaced = time.monotonic() - killed
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    server.stop(deployment)
    return victim, by_node[victim_ip], replaced, counts


def main():
    work = tempfile.mkdtemp(prefix="bench-ray-")
    workers = {"w1": {"sim_gpu": 3}, "w2": {"sim_gpu": 3}, "w3": {"sim_gpu": 3}}
    with RayCluster(workers=workers) as cluster:
        t0 = time.monotonic()
        cluster.start()
        cluster_up = time.monotonic() - t0
        server = Server(cluster, work)
        try:
            starts = {"sim.local": [], "sim.ray": []}
            for _ in range(REPS):
                for profile in ("sim.local", "sim.ray"):
                    starts[profile].append(time_to_first_healthy(server, profile))
            losses = []
            alive = ["w1", "w2", "w3"]
            for trial in range(TRIALS):
                victim, lost, replaced, counts = node_loss(server, cluster, alive)
                losses.append((victim, lost, replaced, counts))
                alive.remove(victim)
                name = f"w{4 + trial}"
                cluster.add_worker(name, {"sim_gpu": 3})
                alive.append(name)
        finally:
            server.close()

    def row(profile):
        values = starts[profile]
        return (f"| {profile} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} | "
                f"{' '.join(f'{v:.2f}' for v in values)} |")

    ratio = statistics.median(starts["sim.ray"]) / statistics.median(starts["sim.local"])
    print("## Replicas on a Ray cluster: `scripts/bench-ray.sh`\n")
    print(f"One Ray 2.60 head and three workers (`{{\"sim_gpu\": 3}}` each), each in its own network, PID and mount")
    print("namespace on one 2-core machine; the server in a fourth namespace. Cluster up in "
          f"{cluster_up:.1f} s. Release build. `REPS={REPS} TRIALS={TRIALS} scripts/bench-ray.sh`.\n")
    print("### Create to first healthy replica (s), local and Ray interleaved\n")
    print("| profile | median | min | max | runs |")
    print("|---|---|---|---|---|")
    print(row("sim.local"))
    print(row("sim.ray"))
    diff = statistics.median(starts["sim.ray"]) - statistics.median(starts["sim.local"])
    print(f"\nA replica on Ray serves {diff:.1f} s later than a local one (medians, {ratio:.0f}x). The job's scheduling "
          "and start on a node take most of that; the launcher's registration and the engine's own start the rest.\n")
    print("### A worker node killed whole under load (3 replicas; 4 closed-loop clients, non-streaming)\n")
    print("| trial | node killed | replicas on it | until 3 healthy again (s) | requests answered | requests failed |")
    print("|---|---|---|---|---|---|")
    for i, (victim, lost, replaced, counts) in enumerate(losses, 1):
        print(f"| {i} | {victim} | {lost} | {replaced:.1f} | {counts['ok']} | {counts['failed']} |")
    print("\nThe server's own health probe finds the lost replicas (connection refused) and takes them out of "
          "routing. After `unhealthy_restart_after_s` (2 s here) it asks Ray to stop their jobs. When Ray cannot "
          "confirm the stop within the grace period (its node is gone, and Ray only declares it dead after about "
          "15 s), the runs count as ended and are replaced on the other workers. The gateway retries requests "
          "that the lost replicas did not answer.")


if __name__ == "__main__":
    main()
