"""The multi-node Ray harness itself (raycluster.py): a real Ray head and workers, each in its own network, PID
and mount namespace on a private bridge; jobs through the Jobs REST API from the control-plane namespace; a
node killed whole; a node joining; and nothing left behind."""
import os
import subprocess
import sys
import time
import uuid

import pytest
import requests

from harness import wait_for
from raycluster import Forwarder, RayCluster, STATE_DIR, missing_requirements, netns_list

MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Ray namespace cluster: {MISSING}")


def memory_mib(pids):
    """(PSS, RSS) of these processes in MiB: PSS splits shared pages between their users, RSS counts them
    in each (the sum over-counts)."""
    totals = {"Pss:": 0, "Rss:": 0}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key = line.split(" ", 1)[0]
                    if key in totals:
                        totals[key] += int(line.split()[1])
        except OSError:
            pass
    return totals["Pss:"] / 1024, totals["Rss:"] / 1024


def job_status(cluster, job_id):
    return cluster.job(job_id)["status"]


def wait_job(cluster, job_id, status, timeout=30):
    return wait_for(lambda: job_status(cluster, job_id) == status and cluster.job(job_id), timeout=timeout,
                    interval=0.2, what=f"job {job_id} {status} (now {job_status(cluster, job_id)})")


def sleeper(cluster, marker):
    """An entrypoint that prints the address of its node (the one it reaches the head from) and sleeps."""
    code = ("import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
            f"s.connect(('{cluster.head_ip}',9)); print('{marker}', s.getsockname()[0], flush=True); time.sleep(600)")
    return f"{sys.executable} -c \"{code}\""


def test_ray_cluster_jobs_node_death_and_join():
    t_test = time.monotonic()
    timings = {}
    seen_pids = set()
    with RayCluster() as cluster:
        prefix = cluster.prefix
        t0 = time.monotonic()
        cluster.start()
        timings["cluster up (head + 2 workers ALIVE)"] = time.monotonic() - t0
        ids = cluster.node_ids()
        assert set(ids) == {"head", "w1", "w2"}, ids
        assert cluster.nodes["head"].ip.endswith(".2") and cluster.nodes["w1"].ip.endswith(".3")

        # The head's Jobs API, as the control plane sees it (a process in the cp namespace, no forwarder).
        out = cluster.run_in("cp", [sys.executable, "-c",
                                    f"import urllib.request; print(urllib.request.urlopen('{cluster.head_url}/api/version').read().decode())"],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "ray_version" in out.stdout, out.stderr
        # ... and the root namespace does not reach it (no interface on the bridge; where the root namespace's
        # default route leads to something that answers any connection, the answer is not Ray's).
        try:
            assert "ray_version" not in requests.get(cluster.head_url + "/api/version", timeout=2).text
        except requests.RequestException:
            pass

        # A job that needs sim_gpu runs on a worker, never on the head (0 CPUs, no sim_gpu).
        job = cluster.submit_job(sleeper(cluster, "ON-NODE"), submission_id=f"sim-{uuid.uuid4().hex[:8]}",
                                 entrypoint_resources={"sim_gpu": 1})
        t0 = time.monotonic()
        info = wait_job(cluster, job, "RUNNING")
        timings["job RUNNING"] = time.monotonic() - t0
        worker = cluster.node_name(info["driver_node_id"])
        assert worker in ("w1", "w2"), info
        logs = wait_for(lambda: "ON-NODE" in cluster.job_logs(job) and cluster.job_logs(job), timeout=15,
                        what="the job's output")
        assert f"ON-NODE {cluster.ip(worker)}" in logs, logs
        assert job in [j["submission_id"] for j in cluster.jobs()]

        for name in ("head", "w1", "w2"):
            pids = cluster.pids_in(name)
            seen_pids.update(pids)
            timings[f"memory {name}, MiB (PSS, RSS)"] = memory_mib(pids)

        t0 = time.monotonic()
        assert cluster.stop_job(job)
        wait_job(cluster, job, "STOPPED", timeout=15)
        timings["job STOPPED"] = time.monotonic() - t0

        # A job pinned to w1, then w1 killed whole: its PID namespace empties at once, Ray marks it DEAD.
        pinned = cluster.submit_job(sleeper(cluster, "PINNED"), entrypoint_resources={f"node:{cluster.ip('w1')}": 0.01})
        assert cluster.node_name(wait_job(cluster, pinned, "RUNNING")["driver_node_id"]) == "w1"
        seen_pids.update(cluster.pids_in("w1"))
        timings["w1 killed: namespace empty"] = cluster.kill_node("w1", timeout=5)
        assert cluster.pids_in("w1") == []
        t0 = time.monotonic()
        wait_for(lambda: cluster.node_state("w1") == "DEAD", timeout=40, interval=0.25, what="w1 DEAD")
        timings["w1 killed: Ray says DEAD"] = time.monotonic() - t0 + timings["w1 killed: namespace empty"]
        wait_job(cluster, pinned, "FAILED", timeout=30)
        timings["w1 killed: pinned job FAILED"] = time.monotonic() - t0 + timings["w1 killed: namespace empty"]
        assert cluster.node_state("w2") == "ALIVE"

        # A job asking for a resource no node has stays PENDING until a node with it joins.
        big = cluster.submit_job(sleeper(cluster, "ON-NODE"), entrypoint_resources={"big_gpu": 1})
        time.sleep(3)
        assert job_status(cluster, big) == "PENDING"
        t0 = time.monotonic()
        cluster.add_worker("w3", {"big_gpu": 1})
        timings["w3 joined (ALIVE)"] = time.monotonic() - t0
        info = wait_job(cluster, big, "RUNNING")
        timings["w3 joined: pending job RUNNING"] = time.monotonic() - t0
        assert cluster.node_name(info["driver_node_id"]) == "w3"
        assert "ON-NODE " + cluster.ip("w3") in wait_for(
            lambda: "ON-NODE" in cluster.job_logs(big) and cluster.job_logs(big), timeout=15, what="w3 job output")
        for name in ("head", "w2", "w3"):
            seen_pids.update(cluster.pids_in(name))
        inits = [n.init_pid for n in cluster.nodes.values() if n.init_pid]
        state_file = os.path.join(STATE_DIR, prefix + ".json")
        assert os.path.exists(state_file)
        t0 = time.monotonic()

    timings["teardown"] = time.monotonic() - t0
    # Nothing left: no namespace of ours, no process we saw in them, no state file, no temp-dir mount point.
    assert [n for n in netns_list() if n.startswith(prefix + "-")] == []
    assert not os.path.exists(state_file)
    left = [p for p in seen_pids | set(inits) if os.path.exists(f"/proc/{p}") and
            open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert left == [], left
    assert not os.path.exists(cluster.temp_dir)
    timings["whole test"] = time.monotonic() - t_test
    print()
    for k, v in timings.items():
        print(f"  {k}: " + (f"{v:.1f}" if isinstance(v, float) else ", ".join(f"{x:.0f}" for x in v)))


STREAMER = r"""
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(3):
            event = f"data: {i}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event)); self.wfile.flush(); time.sleep(1)
        self.wfile.write(b"0\r\n\r\n"); self.wfile.flush()
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def test_forwarder_streams_from_the_control_plane_namespace():
    """A server on 127.0.0.1 inside the cp namespace, reached from here through a Forwarder; an event stream
    arrives event by event, not at the end."""
    with RayCluster() as cluster:        # no start(): the bridge and cp only
        server = cluster.exec_in("cp", [sys.executable, "-c", STREAMER], stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline())
        # Not reachable from the root namespace directly (its own 127.0.0.1 is another loopback).
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        with Forwarder(cluster.ns("cp"), "127.0.0.1", port) as fwd:
            t0 = time.monotonic()
            arrivals = []
            with requests.get(fwd.url + "/", stream=True, timeout=10) as r:
                for chunk in r.iter_content(chunk_size=None):
                    arrivals.append((chunk.decode().strip(), time.monotonic() - t0))
        assert [a[0] for a in arrivals] == ["data: 0", "data: 1", "data: 2"]
        assert arrivals[0][1] < 0.8, arrivals      # the first event came before the stream ended (~2 s)
        assert arrivals[2][1] > 1.5, arrivals
        assert server.pid in cluster.pids_in("cp")     # `ip netns exec` became the server
        prefix = cluster.prefix
    assert server.poll() is not None
    assert [n for n in netns_list() if n.startswith(prefix + "-")] == []
