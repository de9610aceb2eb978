"""What the Ray end-to-end tests share: `lyceum server` inside a RayCluster's control-plane namespace, reached
through a forwarder, with simulator and llama.cpp profiles that run on Ray."""
import json
import os
import subprocess

import requests

from harness import API, LYCEUM_BIN, Server, engine_pids, wait_for

PORT = 8080
PROFILES = [
    {"name": "sim.ray", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "1.00",
     "provider": "ray", "resources": {"sim_gpu": 1}, "ready_timeout_s": 120, "catalogue": ["sim/ray-model"]},
    {"name": "sim.raybig", "engine": "sim", "gpu_type": "b200", "gpu_count": 1, "price_per_hour": "4.00",
     "provider": "ray", "resources": {"big_gpu": 1}, "ready_timeout_s": 120, "catalogue": ["sim/ray-model"]},
    {"name": "cpu.ray", "engine": "llama.cpp", "gpu_type": "cpu", "gpu_count": 0, "price_per_hour": "0.10",
     "provider": "ray", "resources": {"sim_gpu": 1}, "ready_timeout_s": 120},
]
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


class RayServer(Server):
    """`lyceum server` inside the cluster's control-plane namespace, reached through a forwarder."""

    def __init__(self, data_dir, cluster, forwarder, hub=None):
        config = {
            "hardware_profiles": PROFILES, "ray_address": cluster.head_url, "ray_cluster_name": f"lyceum-{cluster.prefix}",
            "unhealthy_restart_after_s": 2, "health_timeout_s": 1, "stop_grace_s": 5,
            "model_cache_dir": data_dir + "-server-hub-cache",
        }
        if hub:
            config["hf_endpoint"] = hub.url
        super().__init__(data_dir, config=config)
        self.hub = hub
        self.cluster = cluster
        self.forwarder = forwarder

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        config_path = self.data_dir + "-config.json"
        with open(config_path, "w") as f:
            json.dump(self.config, f)
        self.log = open(self.data_dir + "-server.log", "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.cluster.ns("cp"), LYCEUM_BIN, "server", "--host", self.cluster.cp_ip,
             "--port", str(PORT), "--data-dir", self.data_dir, "--config", config_path],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.forwarder.port}"

        def up():
            assert self.proc.poll() is None, f"server exited: {self.log_text()}"
            try:
                return requests.get(self.url + "/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_for(up, timeout=30, interval=0.2, what="server start in the control-plane namespace")
        self.key = open(os.path.join(self.data_dir, "admin.key")).read().strip()
        return self

    def log_text(self):
        return open(self.data_dir + "-server.log", errors="replace").read()[-6000:]

    def replicas(self, deployment_id):
        return [r for r in self.get(deployment_id)["replicas"] if r["status"] != "stopped"]

    def healthy_nodes(self, deployment_id):
        return [r["node"] for r in self.replicas(deployment_id) if r["healthy"] and r["status"] == "running"]

    def my_jobs(self):
        return [j for j in self.cluster.jobs() if (j.get("metadata") or {}).get("lyceum_cluster") == f"lyceum-{self.cluster.prefix}"]


def sim_engines(replica_ids):
    """PIDs of simulator engines (not their launchers or Ray's processes) serving these replicas."""
    found = set()
    for pid in engine_pids(replica_ids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"engine" in argv and b"sim" in argv and b"replica" not in argv:
            found.add(pid)
    return found


def gpu_available(server, profile):
    models = server.request("GET", f"{API}/inference/models").json()["models"]
    return next(m["is_gpu_available"] for m in models if m["hardware_profile"] == profile)


def node_name(server, address):
    return next((n for n, node in server.cluster.nodes.items() if node.ip == address), address)
