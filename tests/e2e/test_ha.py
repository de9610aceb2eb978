"""Several `lyceum server` instances on one PostgreSQL (Debian's, started by scripts/test.sh in a temporary
folder on loopback), with simulator replicas: every instance serves the API and the gateway, exactly one
leads the fleet, and killing, freezing or stopping any instance loses no request and no replica.

Each test gets a fresh database; the instances share one secret-key file, as docs/ha.md tells operators."""
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest
import requests

from harness import API, LYCEUM_BIN, Server, engine_pids, wait_for

POSTGRES = os.environ.get("LYCEUM_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not POSTGRES, reason="scripts/test.sh starts PostgreSQL and sets LYCEUM_TEST_POSTGRES_URL")


def sql(url, query):
    return subprocess.run(["psql", url, "-tAc", query], check=True, capture_output=True, text=True).stdout.strip()


def fresh_database():
    name = "ha_" + uuid.uuid4().hex
    sql(POSTGRES, f"CREATE DATABASE {name}")
    return POSTGRES.rsplit("/", 1)[0] + "/" + name


class Cluster:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.url = fresh_database()
        self.servers = {}

    def start(self, name, args=(), config=None):
        server = Server(self.tmp / name, config=config,
                        args=["--store", self.url, "--secret-key-file", str(self.tmp / "secret.key"), "--instance-id", name, *args])
        server.key = next(iter(self.servers.values())).key if self.servers else None
        server.start()
        self.servers[name] = server
        return server

    def leader(self):
        epoch, instance = sql(self.url, "SELECT epoch || ' ' || instance_id FROM fleet_leader").split(" ", 1)
        return int(epoch), instance

    def wait_leader(self, name, timeout=15):
        return wait_for(lambda: (lead := self.leader())[1] == name and lead, timeout=timeout, what=f"{name} to lead")

    def replicas(self, deployment_id):
        rows = sql(self.url, f"SELECT id, status, pid, restart_count FROM replicas WHERE deployment_id = '{deployment_id}' ORDER BY id")
        return [tuple(r.split("|")) for r in rows.splitlines()]

    def ready_everywhere(self, deployment_id, names):
        for name in names:
            wait_for(lambda: self.servers[name].chat(deployment_id).status_code == 200, timeout=30, what=f"{name} to route {deployment_id}")


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    # Every instance at once, as `systemctl stop` on every machine would: each marks itself leaving, so the
    # leader stops the replicas instead of handing them to an instance that is going away too.
    for s in c.servers.values():
        if s.proc and s.proc.poll() is None:
            s.proc.send_signal(signal.SIGCONT)
            s.proc.send_signal(signal.SIGTERM)
    for s in c.servers.values():
        if s.proc:
            try:
                s.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                s.proc.kill()
    ids = sql(c.url, "SELECT id FROM replicas").split()
    leftovers = engine_pids(ids)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"engine processes outlived every instance: {leftovers}"


class Load:
    """Non-streaming chat requests against some instances, in threads, until stopped; failures by instance."""

    def __init__(self, servers, deployment_id, per_server=2):
        self.ok, self.failed, self.stop = {}, {}, threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(s, deployment_id)) for s in servers for _ in range(per_server)]

    def run(self, server, deployment_id):
        name = os.path.basename(server.data_dir)
        while not self.stop.is_set():
            try:
                r = server.chat(deployment_id, timeout=30)
                outcome = r.status_code == 200
                detail = f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                outcome, detail = False, str(e)[:200]
            bucket = self.ok if outcome else self.failed
            bucket.setdefault(name, []).append(detail if not outcome else 1)
            time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def test_killing_the_leader_under_load_loses_no_request_and_no_replica(cluster):
    a = cluster.start("a")
    cluster.wait_leader("a")
    b, c = cluster.start("b"), cluster.start("c")
    d = b.create(min_replicas=2, max_replicas=2)
    b.wait_status(d, "running")
    cluster.ready_everywhere(d, ["a", "b", "c"])
    before = cluster.replicas(d)
    runs_before = sql(cluster.url, f"SELECT replica_id, started_at FROM replica_runs WHERE deployment_id = '{d}' ORDER BY replica_id")
    epoch, _ = cluster.leader()

    with Load([b, c], d) as load:
        time.sleep(2)
        a.kill9()
        killed = time.monotonic()
        new_epoch, new_leader = wait_for(lambda: (lead := cluster.leader())[0] > epoch and lead, timeout=10, what="a new leader")
        takeover = time.monotonic() - killed
        time.sleep(4)
    assert takeover < 5, f"a new leader took {takeover:.2f} s"
    assert new_leader in ("b", "c")
    assert not load.failed, f"failed requests on the surviving instances: {load.failed}"
    assert sum(len(v) for v in load.ok.values()) > 50 and set(load.ok) == {"b", "c"}, {k: len(v) for k, v in load.ok.items()}

    # The same replicas, same processes, never restarted; re-adopted by the new leader; the ledger still
    # has one open run per replica, started when it was launched.
    wait_for(lambda: [e["kind"] for e in b.events(d)].count("replica_adopted") == 2, timeout=15, what="both replicas re-adopted")
    assert cluster.replicas(d) == before and all(r[1] == "running" and r[3] == "0" for r in before), (before, cluster.replicas(d))
    assert set(engine_pids([r[0] for r in before])) == {int(r[2]) for r in before}
    assert sql(cluster.url, f"SELECT replica_id, started_at FROM replica_runs WHERE deployment_id = '{d}' ORDER BY replica_id") == runs_before
    assert sql(cluster.url, f"SELECT count(*) FROM replica_runs WHERE deployment_id = '{d}' AND ended_at IS NOT NULL") == "0"

    # Who leads is visible to operators: /metrics on every instance, /cluster, and `lyceum infer status`.
    survivor = cluster.servers[new_leader]
    metrics = survivor.request("GET", "/metrics").text
    assert f'lyceum_instance_is_leader{{instance="{new_leader}"}} 1' in metrics
    assert f'lyceum_leader{{instance="{new_leader}",epoch="{new_epoch}"}} 1' in metrics
    assert survivor.request("GET", "/cluster").json()["leader"]["instance_id"] == new_leader
    status = subprocess.run([LYCEUM_BIN, "infer", "status", d, "--base-url", c.url], capture_output=True, text=True,
                            env=dict(os.environ, LYCEUM_API_KEY=c.key), timeout=30)
    assert f"leader {new_leader} (epoch {new_epoch}), answered by c" in status.stdout, status.stdout + status.stderr


def test_a_frozen_leader_is_replaced_and_steps_down_when_it_wakes(cluster):
    a = cluster.start("a")
    cluster.wait_leader("a")
    b = cluster.start("b")
    d = b.create(min_replicas=1, max_replicas=1)
    b.wait_status(d, "running")
    cluster.ready_everywhere(d, ["a", "b"])
    (replica,) = cluster.replicas(d)
    epoch, _ = cluster.leader()

    a.proc.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        with Load([b], d) as load:
            new_epoch, _ = wait_for(lambda: (lead := cluster.leader())[1] == "b" and lead, timeout=15, what="b to take over")
            takeover = time.monotonic() - frozen
            time.sleep(max(0, 20 - (time.monotonic() - frozen)))
    finally:
        a.proc.send_signal(signal.SIGCONT)
    # The leader's session carries idle_session_timeout (5 s): a frozen one stops heartbeating and loses it.
    assert takeover < 10, f"took {takeover:.1f} s"
    assert new_epoch > epoch
    assert not load.failed, load.failed

    # Awake, the old leader finds its writes refused by the epoch (or its session gone) and steps down.
    assert a.proc.wait(timeout=20) == 75
    log = open(os.path.join(a.data_dir, "..", "a-server.log"), errors="replace").read()
    assert "stepping down" in log and ("fleet write was refused" in log or "lost the PostgreSQL session" in log), log[-2000:]
    assert cluster.leader() == (new_epoch, "b")
    assert cluster.replicas(d) == [replica], "the replica was neither replaced nor restarted"
    assert b.chat(d).status_code == 200


def test_two_instances_starting_at_once_apply_each_migration_once(cluster, tmp_path):
    servers = [Server(tmp_path / n, args=["--store", cluster.url, "--secret-key-file", str(tmp_path / "secret.key"), "--instance-id", n])
               for n in ("x", "y")]
    errors = []

    def start(s):
        try:
            s.start()
        except AssertionError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in servers:
        cluster.servers[os.path.basename(s.data_dir)] = s
    # Exactly one of them made the admin key (the other found it made); both joined the same store.
    assert len(errors) == 1 and "no admin key" in errors[0], errors
    assert sql(cluster.url, "SELECT count(*) FROM api_keys WHERE is_admin") == "1"
    logs = "".join(open(os.path.join(tmp_path, f"{n}-server.log"), errors="replace").read() for n in ("x", "y"))
    applied = [line.split("migration.version=")[1].split()[0] for line in logs.splitlines() if "applied store migration" in line]
    versions = sql(cluster.url, "SELECT version FROM schema_migrations ORDER BY version").split()
    assert sorted(applied, key=int) == versions and len(versions) == len(set(versions)) >= 3, (applied, versions)
    assert all(s.proc.poll() is None for s in servers), "both instances run"
    assert cluster.leader()[1] in ("x", "y")


def test_a_paused_deployment_is_resumed_by_a_request_at_a_non_leader(cluster):
    a = cluster.start("a", args=["--idle-timeout", "3", "--autoscale-interval", "0.5"])
    cluster.wait_leader("a")
    b = cluster.start("b")
    d = a.create(min_replicas=1, max_replicas=1)
    a.wait_status(d, "running")
    assert a.chat(d).status_code == 200
    a.wait_status(d, "paused", timeout=30)
    wait_for(lambda: not engine_pids([r[0] for r in cluster.replicas(d)]), timeout=20, what="the paused replica's engine to stop")
    assert cluster.leader()[1] == "a"

    r = b.chat(d, timeout=60)
    assert r.status_code == 200, r.text
    kinds = [e["kind"] for e in b.events(d)]
    assert kinds.count("resumed") == 1 and kinds.index("paused") < kinds.index("resumed"), kinds
    assert b.get(d)["status"] == "running"


def test_a_follower_stops_a_deployment_and_a_leader_stopped_gracefully_hands_its_replicas_over(cluster):
    a = cluster.start("a")
    cluster.wait_leader("a")
    b = cluster.start("b")
    gone = b.create(min_replicas=1, max_replicas=1)
    kept = b.create(min_replicas=2, max_replicas=2)
    b.wait_status(gone, "running")
    b.wait_status(kept, "running")
    cluster.ready_everywhere(kept, ["a", "b"])

    # A stop at a follower returns once the leader has stopped the replica's engine.
    gone_ids = [r[0] for r in cluster.replicas(gone)]
    assert b.stop(gone)["status"] == "stopped"
    assert not engine_pids(gone_ids)
    wait_for(lambda: b.chat(gone).status_code == 404, timeout=10, what="the stopped deployment to leave b's routes")

    # SIGTERM to the leader while another instance can lead: it hands over instead of stopping replicas.
    before = cluster.replicas(kept)
    with Load([b], kept) as load:
        time.sleep(1)
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=60) == 0
        cluster.wait_leader("b", timeout=10)
        time.sleep(2)
    assert not load.failed, load.failed
    assert cluster.replicas(kept) == before
    assert set(engine_pids([r[0] for r in before])) == {int(r[2]) for r in before}
    assert "handing the fleet over" in open(os.path.join(a.data_dir, "..", "a-server.log"), errors="replace").read()


def test_a_gateway_instance_never_leads_and_keeps_serving_without_a_leader(cluster):
    a = cluster.start("a")
    cluster.wait_leader("a")
    g = cluster.start("g", args=["--role", "gateway"])
    d = g.create(min_replicas=1, max_replicas=1)
    a.wait_status(d, "running")
    cluster.ready_everywhere(d, ["g"])
    assert g.request("GET", "/readyz").json() == {"ready": True, "instance_id": "g", "is_leader": False}

    a.kill9()
    time.sleep(3)
    assert cluster.leader()[1] == "a", "a gateway-only instance took the fleet"
    # No leader: the gateway still routes from the table it has.
    assert all(g.chat(d).status_code == 200 for _ in range(5))

    a2 = cluster.start("a2")
    cluster.wait_leader("a2")
    wait_for(lambda: "replica_adopted" in [e["kind"] for e in a2.events(d)], timeout=15, what="re-adoption")
    assert g.chat(d).status_code == 200


def test_the_leader_scales_on_the_traffic_of_every_gateway(cluster):
    """7 req/s at each of two non-leader gateways against a target of 10 per replica: neither gateway alone
    asks for a second replica, their sum does, and only the leader (which sees none of it itself) decides."""
    a = cluster.start("a", args=["--autoscale-interval", "1"])
    cluster.wait_leader("a")
    b, c = cluster.start("b"), cluster.start("c")
    d = b.create(min_replicas=1, max_replicas=3, target_rps=10, target_latency_p95_ms=60000, stabilisation_window=60)
    b.wait_status(d, "running")
    cluster.ready_everywhere(d, ["b", "c"])
    stop = threading.Event()
    failures = []

    def paced(server, per_second):
        next_at = time.monotonic()
        while not stop.is_set():
            r = server.chat(d, timeout=30)
            if r.status_code != 200:
                failures.append(r.status_code)
            next_at += 1 / per_second
            time.sleep(max(0, next_at - time.monotonic()))

    threads = [threading.Thread(target=paced, args=(s, 7)) for s in (b, c)]
    for t in threads:
        t.start()
    try:
        scaled = wait_for(lambda: [e for e in a.events(d) if e["kind"] == "scaled"], timeout=40, what="a scale-up")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    message = scaled[0]["message"]
    assert "1 -> 2" in message, message
    # The decision's signals are the sum: above what either gateway sent (7 req/s), near what both did (14).
    rate = float(message.split("[rate ")[1].split(" ")[0])
    burst = float(message.split("(burst ")[1].split(")")[0])
    assert 10 < max(rate, burst) < 18, f"the leader saw {rate} req/s (burst {burst}); the two gateways sent 14: {message}"


LATE = {"hardware_profiles": [{"name": "sim.late", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "3.60",
                               "devices": ["l0", "l1"], "ready_timeout_s": 30,
                               "engine_args": ["--ttft-ms", "11000", "--itl-ms", "1", "--jitter", "0"]}]}


def test_async_results_usage_and_events_read_the_same_at_every_instance(cluster):
    a = cluster.start("a", config=LATE)
    cluster.wait_leader("a")
    b, c = cluster.start("b", config=LATE), cluster.start("c", config=LATE)
    d = b.create(hardware_profile="sim.late", min_replicas=1, max_replicas=1)
    b.wait_status(d, "running", timeout=60)
    # A request that outlives X-Timeout-S at b finishes in b's background; its result is read at c.
    r = b.chat(d, headers={"X-Timeout-S": "10"}, timeout=30)
    assert r.status_code == 202, r.text
    path = f"/openai/v1/chat/completions/{r.json()['request_id']}"
    result = wait_for(lambda: (x := c.request("GET", path).json())["status"] == "completed" and x, timeout=30, what="the result at c")
    assert result["result"]["object"] == "chat.completion"
    # Usage and events: the same answer from every instance.
    time.sleep(1)
    usages = [s.request("GET", f"{API}/inference/usage", params={"deployment_id": d}).json() for s in (a, b, c)]
    assert all(u["replica_seconds"] > 10 for u in usages), usages
    events = [[e["kind"] for e in s.events(d)] for s in (a, b, c)]
    assert events[0] == events[1] == events[2] and "replica_healthy" in events[0], events


# A replica gets 0.2 s between SIGTERM and SIGKILL: a stream still on it when it is stopped is cut, so only
# the drain (waiting for every gateway's streams) keeps them whole.
STREAMING = {"stop_grace_s": 0.2, "hardware_profiles": [{"name": "sim.stream", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "1.00",
                                    "devices": ["s0", "s1", "s2"], "ready_timeout_s": 30,
                                    "engine_args": ["--ttft-ms", "20", "--itl-ms", "50", "--jitter", "0", "--max-num-seqs", "64"]}]}


def stream_once(server, deployment_id):
    """One streamed chat completion of about a second; None when it arrived whole, else what went wrong."""
    try:
        with requests.post(server.url + "/openai/v1/chat/completions", stream=True, timeout=30,
                           headers={"Authorization": f"Bearer {server.key}"},
                           json={"model": deployment_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20,
                                 "stream": True}) as r:
            if r.status_code != 200:
                return f"{r.status_code} {r.text[:200]}"
            lines = [l for l in r.iter_lines() if l]
    except requests.RequestException as e:
        return str(e)[:200]
    if not lines or lines[-1] != b"data: [DONE]" or any(b'"error"' in l for l in lines):
        return f"cut: {lines[-3:]}"
    return None


def test_a_scale_down_waits_for_streams_at_every_gateway(cluster):
    """Streams run through two non-leader gateways while the leader scales from 2 replicas to 1: the leaving
    replica is out of every gateway's table before it drains, and the leader waits for the other gateways'
    streams on it (their in-flight counts arrive with the heartbeats) before stopping it. No stream is cut."""
    a = cluster.start("a", args=["--autoscale-interval", "0.5"], config=STREAMING)
    cluster.wait_leader("a")
    b, c = cluster.start("b", config=STREAMING), cluster.start("c", config=STREAMING)
    d = b.create(hardware_profile="sim.stream", min_replicas=1, max_replicas=2, target_rps=4, target_latency_p95_ms=60000,
                 stabilisation_window=6)
    b.wait_status(d, "running")
    cluster.ready_everywhere(d, ["b", "c"])
    active = {"n": 4}
    stop = threading.Event()
    problems, done = [], []

    def worker(server, i):
        while not stop.is_set():
            if i >= active["n"]:
                time.sleep(0.05)
                continue
            outcome = stream_once(server, d)
            (problems if outcome else done).append(outcome or 1)

    threads = [threading.Thread(target=worker, args=(s, i)) for s in (b, c) for i in range(4)]
    for t in threads:
        t.start()
    try:
        # About 8 streams a second against 4 per replica: two replicas.
        wait_for(lambda: sum(r[1] == "running" for r in cluster.replicas(d)) == 2, timeout=60, what="the scale-up to 2")
        time.sleep(3)
        # Then about 2 a second: back to one, while streams keep arriving at both gateways.
        active["n"] = 1
        wait_for(lambda: any(r[1] == "stopped" for r in cluster.replicas(d)), timeout=60, what="the scale-down to stop a replica")
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    kinds = [e["kind"] for e in a.events(d)]
    assert "scaled" in kinds and "replica_stopped" in kinds, kinds
    assert len(done) > 40, len(done)
    assert not problems, problems[:5]
