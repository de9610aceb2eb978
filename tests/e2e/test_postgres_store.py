"""`lyceum server --store postgres://...` against a real PostgreSQL server (Debian's, started by
scripts/test.sh in a temporary folder on loopback): the platform's state lives in PostgreSQL, survives a
restart and a SIGKILL (the replacement re-adopts the running replicas from it), and a second instance on
the same database stands by rather than run the fleet beside the first."""
import os
import subprocess
import uuid

import pytest

from harness import Server, engine_pids, start_server, wait_for  # noqa: F401

POSTGRES = os.environ.get("LYCEUM_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not POSTGRES, reason="scripts/test.sh starts PostgreSQL and sets LYCEUM_TEST_POSTGRES_URL")


def fresh_database():
    name = "e2e_" + uuid.uuid4().hex
    subprocess.run(["psql", POSTGRES, "-qc", f"CREATE DATABASE {name}"], check=True)
    return POSTGRES.rsplit("/", 1)[0] + "/" + name


def sql(url, query):
    return subprocess.run(["psql", url, "-tAc", query], check=True, capture_output=True, text=True).stdout.strip()


def test_state_lives_in_postgres_survives_a_restart_and_one_instance_runs_the_fleet(start_server, tmp_path):
    url = fresh_database()
    server = start_server(args=["--store", url], name="pg")
    d = server.create(min_replicas=2, max_replicas=2)
    server.wait_status(d, "running")
    r = server.chat(d)
    assert r.status_code == 200, r.text
    assert sql(url, f"SELECT status FROM deployments WHERE id = '{d}'") == "running"
    assert sql(url, f"SELECT count(*) FROM replicas WHERE deployment_id = '{d}' AND status = 'running' AND healthy") == "2"
    assert sql(url, "SELECT count(*) FROM api_keys WHERE is_admin") == "1"
    assert not os.path.exists(os.path.join(server.data_dir, "lyceum.db")), "no SQLite file when the store is PostgreSQL"

    # A second instance on the same database does not run the fleet beside the first: it stands by, and
    # serves the API and the gateway from the same state.
    second = Server(tmp_path / "second", args=["--store", url, "--secret-key-file", os.path.join(server.data_dir, "secret.key")])
    second.key = server.key
    second.start()
    try:
        assert second.request("GET", "/readyz").json()["is_leader"] is False
        wait_for(lambda: second.chat(d).status_code == 200, timeout=30, what="the standby to route")
        assert "another instance leads the fleet" in second.log_text()
    finally:
        second.terminate()

    # Restarted, the server finds its deployment, key and events in PostgreSQL and serves again.
    server.terminate()
    server.start()
    server.wait_status(d, "running")
    wait_for(lambda: server.chat(d).status_code == 200, timeout=30, what="answers after the restart")
    kinds = [e["kind"] for e in server.events(d)]
    assert kinds[0] == "created" and kinds.count("replica_healthy") >= 4, kinds
    runs = sql(url, f"SELECT count(*) FROM replica_runs WHERE deployment_id = '{d}' AND ended_at IS NOT NULL")
    assert int(runs) >= 2, "the first two replicas' runs were closed when the server stopped them"

    # SIGKILL: the fleet lock goes with the dead process's connection, so a new instance starts at once and
    # re-adopts the replicas that kept running, from what PostgreSQL holds.
    server.proc.kill()
    server.proc.wait()
    server.start()
    wait_for(lambda: "replica_adopted" in [e["kind"] for e in server.events(d)], timeout=30, what="replicas re-adopted")
    server.wait_status(d, "running")
    assert server.chat(d).status_code == 200
    assert sql(url, f"SELECT count(*) FROM replicas WHERE deployment_id = '{d}' AND status = 'running'") == "2"

    # Stopped soon after the SIGKILL, while the dead instance may still look alive (it heartbeat moments
    # ago): a hand-over then finds no one to take the fleet, so the server takes it back and stops every
    # engine before it exits. Either way no engine outlives it.
    server.terminate()
    ids = sql(url, "SELECT id FROM replicas").split()
    leftovers = engine_pids(ids)
    for pid in leftovers:
        os.kill(pid, 9)
    assert not leftovers, f"engines outlived the last instance: {leftovers}"
