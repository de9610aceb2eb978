"""Drives scripts/bench-fleet.sh: for each N, a fresh `lyceum server` (release build, production intervals),
N deployments created through the API on a profile without devices (so every deployment waits and no replica
process runs), a settling pause, then the server's own CPU time over an idle period (from /proc/PID/stat) and
the latency of `GET inference/list` (median of 5). Prints the markdown section."""
import argparse
import concurrent.futures as cf
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import urllib.request

API = "/api/v2/external"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def call(url, key, method="GET", body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def measure(lyceum, n, idle_s):
    work = tempfile.mkdtemp()
    config = os.path.join(work, "config.json")
    with open(config, "w") as f:
        json.dump({"hardware_profiles": [{"name": "sim.none", "engine": "sim", "gpu_type": "h100", "gpu_count": 1,
                                          "price_per_hour": "1.00", "devices": [], "ready_timeout_s": 60}],
                   "max_replicas_per_deployment": 64}, f)
    data = os.path.join(work, "data")
    log = open(os.path.join(work, "server.log"), "w")
    proc = subprocess.Popen([lyceum, "server", "--port", "0", "--data-dir", data, "--config", config, "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        url_file = os.path.join(data, "server.url")
        for _ in range(300):
            if os.path.exists(url_file) and open(url_file).read().strip():
                break
            time.sleep(0.1)
        url = open(url_file).read().strip()
        key = open(os.path.join(data, "admin.key")).read().strip()
        body = {"hf_model_id": "m/x", "hardware_profile": "sim.none"}
        started = time.monotonic()
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: call(url + API + "/inference/create", key, "POST", body), range(n)))
        create_s = time.monotonic() - started
        # Settled: every deployment has had its first pass (a replica row waiting for devices, `provisioning`).
        while True:
            listed = json.loads(call(url + API + "/inference/list", key, timeout=120))["deployments"]
            if all(d["status"] == "provisioning" for d in listed) and len(listed) == n:
                break
            time.sleep(2)
        settle_s = time.monotonic() - started
        time.sleep(5)
        before = cpu_seconds(proc.pid)
        time.sleep(idle_s)
        idle_cpu = (cpu_seconds(proc.pid) - before) / idle_s * 100
        lists = []
        for _ in range(5):
            t = time.monotonic()
            answer = call(url + API + "/inference/list", key)
            lists.append((time.monotonic() - t) * 1000)
        assert len(json.loads(answer)["deployments"]) == n
        pages = []
        for _ in range(5):
            t = time.monotonic()
            page = call(url + API + "/inference/list?limit=100", key)
            pages.append((time.monotonic() - t) * 1000)
        assert len(json.loads(page)["deployments"]) == min(n, 100)
        return {"n": n, "create_s": create_s, "settle_s": settle_s, "idle_cpu": idle_cpu, "list_ms": statistics.median(lists),
                "page_ms": statistics.median(pages), "list_kib": len(answer) / 1024, "rss": rss_mib(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lyceum", required=True)
    p.add_argument("--counts", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--idle-s", type=int, default=60)
    a = p.parse_args()
    rows = [measure(a.lyceum, n, a.idle_s) for n in a.counts]
    print("## Idle fleet cost: `scripts/bench-fleet.sh`\n")
    print("N deployments waiting for devices (a profile without any, so no replica process runs), created through the API;")
    print("once every one has had its first pass (a replica row waiting for devices, status `provisioning`), the server's")
    print(f"own CPU over {a.idle_s} s with nothing happening, and `GET inference/list` (median of 5, the whole list")
    print("in one answer, and a page of 100). Release build, production intervals (reconcile tick 1 s, full pass 60 s, autoscaler 5 s).\n")
    print("| deployments | create all (s) | all waiting after (s) | idle CPU (% of one core) | `inference/list`, all (ms) | list size (KiB) | `inference/list?limit=100` (ms) | server RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['create_s']:.1f} | {r['settle_s']:.1f} | {r['idle_cpu']:.1f} | {r['list_ms']:.0f} | {r['list_kib']:.0f} | {r['page_ms']:.0f} | {r['rss']:.0f} |")
    print(f"\nMachine: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}. Command: `scripts/bench-fleet.sh`"
          f" (COUNTS=\"{' '.join(map(str, a.counts))}\" IDLE_S={a.idle_s}).")


if __name__ == "__main__":
    main()
