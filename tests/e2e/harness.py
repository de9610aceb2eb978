"""Real `lyceum server` processes for end-to-end tests: start on port 0 with a temporary data directory,
talk to the API, find engine processes, and clean up every process a test caused, by PID."""
import json
import os
import signal
import sqlite3
import subprocess
import time

import requests

LYCEUM_BIN = os.environ.get("LYCEUM_BIN", os.path.join(os.path.dirname(__file__), "../../.build/debug/lyceum"))
API = "/api/v2/external"

FAST = {"health_interval_s": 0.3, "reconcile_interval_s": 0.3, "restart_backoff_s": 0.2, "stop_grace_s": 5}


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition"):
    """Polls until predicate() is truthy; returns its value or fails with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def engine_pids(replica_ids):
    """PIDs of live processes whose environment carries one of these replica ids."""
    wanted = {f"LYCEUM_REPLICA_ID={r}".encode() for r in replica_ids}
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        for marker in wanted & env:
            found[int(entry)] = marker.decode().split("=", 1)[1]
    return found


class Server:
    """One `lyceum server` process on a free port with its own data directory."""

    def __init__(self, data_dir, config=None, args=()):
        self.data_dir = str(data_dir)
        self.config = dict(FAST, **(config or {}))
        self.args = list(args)
        self.proc = None
        self.url = None
        self.key = None

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        config_path = os.path.join(self.data_dir, "..", os.path.basename(self.data_dir) + "-config.json")
        with open(config_path, "w") as f:
            json.dump(self.config, f)
        url_file = os.path.join(self.data_dir, "server.url")
        if os.path.exists(url_file):
            os.remove(url_file)
        self.log = open(os.path.join(self.data_dir, "..", os.path.basename(self.data_dir) + "-server.log"), "ab")
        self.proc = subprocess.Popen(
            [LYCEUM_BIN, "server", "--port", "0", "--data-dir", self.data_dir, "--config", config_path, *self.args],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(url_file) and open(url_file).read().strip() or self.proc.poll() is not None,
                 timeout=30, what="server start")
        assert self.proc.poll() is None, f"server exited: {self.log_text()}"
        self.url = open(url_file).read().strip()
        key_file = os.path.join(self.data_dir, "admin.key")
        # An instance joining a shared store finds the admin key already made; the test hands it over.
        if os.path.exists(key_file):
            self.key = open(key_file).read().strip()
        assert self.key, "no admin key: the first server of a store writes admin.key"
        return self

    def log_text(self):
        path = os.path.join(self.data_dir, "..", os.path.basename(self.data_dir) + "-server.log")
        return open(path, errors="replace").read()[-4000:]

    # API

    def request(self, method, path, key=None, **kwargs):
        headers = kwargs.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {key or self.key}")
        return requests.request(method, self.url + path, headers=headers, timeout=kwargs.pop("timeout", 120), **kwargs)

    def create(self, key=None, **fields):
        body = {"hf_model_id": "test/model", "hardware_profile": "sim.h100", "target_rps": 10,
                "target_latency_p95_ms": 5000, "stabilisation_window": 300}
        body.update(fields)
        r = self.request("POST", f"{API}/inference/create", key=key, json=body)
        assert r.status_code == 200, r.text
        return r.json()["deployment_id"]

    def get(self, deployment_id, key=None, include_terminated=False):
        r = self.request("GET", f"{API}/inference/get", key=key,
                         params={"deployment_id": deployment_id, "include_terminated": str(include_terminated).lower()})
        assert r.status_code == 200, r.text
        return r.json()

    def wait_status(self, deployment_id, status, timeout=30):
        return wait_for(lambda: (d := self.get(deployment_id))["status"] == status and d,
                        timeout=timeout, what=f"{deployment_id} to be {status}")

    def stop(self, deployment_id):
        r = self.request("DELETE", f"{API}/inference/stop", json={"deployment_id": deployment_id})
        assert r.status_code == 200, r.text
        return r.json()

    def events(self, deployment_id):
        return self.request("GET", f"{API}/inference/events", params={"deployment_id": deployment_id}).json()["events"]

    def chat(self, deployment_id, content="hello", max_tokens=4, headers=None, timeout=120):
        return self.request("POST", "/openai/v1/chat/completions", headers=headers or {}, timeout=timeout,
                            json={"model": deployment_id, "messages": [{"role": "user", "content": content}],
                                  "max_tokens": max_tokens})

    def replica_rows(self, deployment_id=None):
        db = sqlite3.connect(os.path.join(self.data_dir, "lyceum.db"))
        try:
            query = "select id, deploymentId, status, pid, port from replicas"
            rows = db.execute(query + (" where deploymentId = ?" if deployment_id else ""),
                              (deployment_id,) if deployment_id else ()).fetchall()
        finally:
            db.close()
        return [dict(zip(("id", "deployment_id", "status", "pid", "port"), r)) for r in rows]

    def all_replica_ids(self):
        try:
            return [r["id"] for r in self.replica_rows()]
        except sqlite3.Error:
            return []

    # Process control

    def terminate(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not exit within 60 s of SIGTERM")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def reap_leftovers(self):
        """Kills (by PID) engine processes of this server's replicas that are still alive; returns them."""
        leftovers = engine_pids(self.all_replica_ids())
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return leftovers


import pytest  # noqa: E402


def serve_module(tmp_path_factory, name, config=None):
    """One server for a whole test module (use with `yield from` in a module-scoped fixture), cleaned up like
    start_server: SIGTERM, then no engine process may be left."""
    server = Server(tmp_path_factory.mktemp(name) / "data", config=config)
    try:
        server.start()
        yield server
    finally:
        server.terminate()
        leftovers = server.reap_leftovers()
    assert not leftovers, f"engine processes outlived their server: {leftovers}"


@pytest.fixture
def start_server(tmp_path):
    """Starts servers for a test; afterwards stops them (SIGTERM) and fails if any engine process outlived them."""
    servers = []

    def start(config=None, args=(), name=None):
        server = Server(tmp_path / (name or f"data{len(servers)}"), config=config, args=args).start()
        servers.append(server)
        return server

    yield start
    leftovers = {}
    for server in servers:
        server.terminate()
        leftovers.update(server.reap_leftovers())
    assert not leftovers, f"engine processes outlived their server: {leftovers}"
