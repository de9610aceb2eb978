"""Several lyceum server instances on one PostgreSQL, measured (run by scripts/bench-ha.sh, which builds the
release binaries and starts a throwaway PostgreSQL on loopback):

1. leader takeover: SIGKILL (crash), SIGSTOP (freeze) and pg_terminate_backend of the lock's session (a
   network cut as the database sees it), REPS times each, three instances; the time from the fault until
   another instance has claimed the fleet under a new epoch (polled every 10 ms);
2. the gateway's added latency on a PostgreSQL-backed instance against an embedded (SQLite) one, each in
   front of the same kind of simulator replica, and against calling the replica directly, side by side
   (ABAB) at fixed open-loop rates;
3. the highest open-loop rate held (no error, p99 under 250 ms) by 1, 2 and 3 gateway instances, the load
   split evenly over them, against two simulator replicas.

Prints a Markdown section for docs/benchmarks.md. Everything binds to 127.0.0.1; every process it starts
is stopped by PID."""
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

LYCEUM = os.path.abspath(".build/release/lyceum")
BENCH = os.path.abspath(".build/release/lyceum-bench")
PG = os.environ["LYCEUM_TEST_POSTGRES_URL"]
REPS = int(os.environ.get("REPS", "5"))
DURATION = float(os.environ.get("DURATION", "8"))
WORK = tempfile.mkdtemp(prefix="bench-ha-")
PROFILES = {"health_interval_s": 0.5, "reconcile_interval_s": 0.3, "hardware_profiles": [
    {"name": "sim.bench", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "0",
     "devices": ["b0", "b1", "b2", "b3"], "ready_timeout_s": 30,
     "engine_args": ["--ttft-ms", "2", "--itl-ms", "2", "--jitter", "0", "--max-num-seqs", "1024"]}]}
CONFIG = os.path.join(WORK, "config.json")
json.dump(PROFILES, open(CONFIG, "w"))
procs = {}
NOTES_TAKEOVER = """
A crash frees the lock with the dead process's connection and a standby (polling every 200 ms) claims it. A
freeze is caught by the lock session's `idle_session_timeout` (the leader heartbeats every second). The
terminated session is a network cut as the database sees it once it has given up on the leader: a real cut
adds that detection, bounded by the session's keepalives (2 s idle, 3 probes 2 s apart) and
`tcp_user_timeout` (8 s)."""
NOTES_CAPACITY = """
On this 2-core machine every gateway instance, both simulator replicas and the load generators share the
same two cores, so a second or third instance cannot add throughput here: the rows measure what splitting
one machine's CPU over more processes costs (each instance also heartbeats and keeps its own route table),
not the scale-out that instances on separate machines get."""


def sql(url, query):
    return subprocess.run(["psql", url, "-tAc", query], check=True, capture_output=True, text=True).stdout.strip()


def fresh_database(name):
    sql(PG, f"CREATE DATABASE {name}")
    return PG.rsplit("/", 1)[0] + "/" + name


def start(name, store=None, args=()):
    data = os.path.join(WORK, name)
    os.makedirs(data, exist_ok=True)
    url_file = os.path.join(data, "server.url")
    if os.path.exists(url_file):
        os.remove(url_file)
    cmd = [LYCEUM, "server", "--port", "0", "--data-dir", data, "--config", CONFIG, "--log-level", "warning", *args]
    if store:
        cmd += ["--store", store, "--instance-id", name, "--secret-key-file", os.path.join(WORK, "secret.key")]
    log = open(os.path.join(WORK, name + ".log"), "ab")
    procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while not (os.path.exists(url_file) and open(url_file).read().strip()):
        assert time.time() < deadline and procs[name].poll() is None, f"{name} did not start"
        time.sleep(0.05)
    return open(url_file).read().strip()


def key_of(name):
    return open(os.path.join(WORK, name, "admin.key")).read().strip()


def api(url, key, method, path, body=None):
    import urllib.request
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def deploy(url, key, replicas):
    d = api(url, key, "POST", "/api/v2/external/inference/create", {
        "hf_model_id": "bench/model", "hardware_profile": "sim.bench", "min_replicas": replicas, "max_replicas": replicas,
        "target_rps": 100000, "target_latency_p95_ms": 60000, "stabilisation_window": 300})["deployment_id"]
    deadline = time.time() + 60
    while api(url, key, "GET", f"/api/v2/external/inference/get?deployment_id={d}")["status"] != "running":
        assert time.time() < deadline, "deployment did not run"
        time.sleep(0.2)
    return d


def wait_routed(url, key, d):
    import urllib.request
    deadline = time.time() + 30
    while True:
        try:
            req = urllib.request.Request(url + "/openai/v1/chat/completions", data=json.dumps(
                {"model": d, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode(),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        assert time.time() < deadline, f"{url} never routed {d}"
        time.sleep(0.1)


def bench_rate(url, key, model, rps, label, duration=DURATION):
    cmd = [BENCH, "rate", "--url", url, "--model", model, "--rps", str(rps), "--duration", str(duration), "--label", label]
    if key:
        cmd += ["--key", key]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def stop(name, sig=signal.SIGTERM):
    p = procs.pop(name, None)
    if p and p.poll() is None:
        p.send_signal(signal.SIGCONT)
        p.send_signal(sig)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def leader(db):
    epoch, name = sql(db, "SELECT epoch || ' ' || instance_id FROM fleet_leader").split(" ", 1)
    return int(epoch), name


def wait_new_epoch(db, epoch, timeout=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        e, name = leader(db)
        if e > epoch:
            return time.monotonic(), name
        time.sleep(0.01)
    raise AssertionError("no takeover")


def takeover():
    db = fresh_database("bench_takeover")
    for n in ("a", "b", "c"):
        start(n, db)
        time.sleep(0.5)
    key = key_of("a")
    url = open(os.path.join(WORK, "a", "server.url")).read().strip()
    deploy(url, key, 1)
    results = {"crash": [], "freeze": [], "cut": []}
    for rep in range(REPS):
        for fault in ("crash", "freeze", "cut"):
            epoch, name = leader(db)
            p = procs[name]
            if fault == "crash":
                t0 = time.monotonic()
                p.kill()
            elif fault == "freeze":
                t0 = time.monotonic()
                p.send_signal(signal.SIGSTOP)
            else:
                pid = sql(db, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND ((classid::bigint << 32) | objid::bigint) = 7816387915691130882")
                t0 = time.monotonic()
                sql(db, f"SELECT pg_terminate_backend({pid})")
            t1, new = wait_new_epoch(db, epoch)
            results[fault].append(t1 - t0)
            # The old leader: killed, or exits 75 on its own (woken, or told its session ended); start it again.
            if fault == "freeze":
                p.send_signal(signal.SIGCONT)
            p.wait(timeout=30)
            procs.pop(name)
            start(name, db)
            time.sleep(1.5)
    for n in ("a", "b", "c"):
        stop(n)
    return results


def added_latency():
    db = fresh_database("bench_latency")
    pg_url = start("pg", db)
    lite_url = start("lite")
    pg_key, lite_key = key_of("pg"), key_of("lite")
    d_pg, d_lite = deploy(pg_url, pg_key, 1), deploy(lite_url, lite_key, 1)
    wait_routed(pg_url, pg_key, d_pg)
    port = sql(db, f"SELECT port FROM replicas WHERE deployment_id = '{d_pg}' AND status = 'running'")
    rows = []
    for rps in (100, 400):
        for _ in range(2):  # ABAB
            rows.append(bench_rate(f"http://127.0.0.1:{port}/v1", None, d_pg, rps, f"direct@{rps}"))
            rows.append(bench_rate(lite_url + "/openai/v1", lite_key, d_lite, rps, f"sqlite@{rps}"))
            rows.append(bench_rate(pg_url + "/openai/v1", pg_key, d_pg, rps, f"postgres@{rps}"))
    stop("pg")
    stop("lite")
    return rows


def capacity():
    db = fresh_database("bench_capacity")
    urls = {}
    for n in ("g1", "g2", "g3"):
        urls[n] = start(n, db)
        time.sleep(0.5)
    key = key_of("g1")
    d = deploy(urls["g1"], key, 2)
    for u in urls.values():
        wait_routed(u, key, d)
    held = {}
    detail = []
    for n in (1, 2, 3):
        best = 0
        for rps in (200, 400, 600, 800, 1000, 1200, 1500, 1800, 2200):
            names = list(urls)[:n]
            ps = [subprocess.Popen([BENCH, "rate", "--url", urls[g] + "/openai/v1", "--key", key, "--model", d, "--rps", str(rps / n),
                                    "--duration", str(DURATION), "--label", f"{n}x{g}@{rps}"], stdout=subprocess.PIPE, text=True)
                  for g in names]
            outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in ps]
            errors = sum(o["errors"] for o in outs)
            p99 = max(o["p99_ms"] for o in outs)
            ok = sum(o["ok"] for o in outs)
            detail.append({"gateways": n, "rps": rps, "ok": ok, "errors": errors, "p99_ms": p99})
            if errors == 0 and p99 < 250:
                best = rps
            else:
                break
        held[n] = best
    for n in ("g1", "g2", "g3"):
        stop(n)
    return held, detail


def main():
    try:
        t = takeover()
        lat = added_latency()
        held, detail = capacity()
    finally:
        for n in list(procs):
            stop(n, signal.SIGKILL)
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    out = ["## Several instances on one PostgreSQL: takeover, added latency, gateways", "",
           f"`scripts/bench-ha.sh` (release build, {cpu} cores, PostgreSQL 15 on loopback, simulator replicas with 2 ms "
           f"time to first token and 2 ms per token, max_tokens 4; REPS={REPS}, DURATION={DURATION:g} s per rate step).", "",
           "### Leader takeover (three instances; fault to a new epoch claimed)", "",
           "| fault | runs | median s | min s | max s |", "|---|---|---|---|---|"]
    names = {"crash": "SIGKILL of the leader", "freeze": "SIGSTOP of the leader (leader_freeze_timeout_s 5)",
             "cut": "the lock's session terminated (pg_terminate_backend)"}
    for fault, xs in t.items():
        out.append(f"| {names[fault]} | {len(xs)} | {statistics.median(xs):.3f} | {min(xs):.3f} | {max(xs):.3f} |")
    out += NOTES_TAKEOVER.splitlines()
    out += ["", "### What the gateway adds (latency ms, open loop, two runs each, interleaved)", "",
            "| path | rate | p50 | p90 | p99 | errors |", "|---|---|---|---|---|---|"]
    for r in lat:
        out.append(f"| {r['label'].split('@')[0]} | {r['rps']:g} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
    out += ["", "### Highest rate held by 1, 2 and 3 gateway instances (no error, p99 < 250 ms; load split evenly)", "",
            "| gateways | held req/s |", "|---|---|"]
    for n, v in held.items():
        out.append(f"| {n} | {v} |")
    out += NOTES_CAPACITY.splitlines()
    out += ["", "<details><summary>every step</summary>", "", "| gateways | req/s | ok | errors | p99 ms |", "|---|---|---|---|---|"]
    for r in detail:
        out.append(f"| {r['gateways']} | {r['rps']} | {r['ok']} | {r['errors']} | {r['p99_ms']:.1f} |")
    out += ["", "</details>"]
    print("\n".join(out))


if __name__ == "__main__":
    main()
