"""Models from the Hugging Face Hub, against a local server that STANDS IN FOR THE HUB (hub_standin.py: the
Hub's URL layout and status codes; the real Hub cannot be reached from here). Replicas are real llama.cpp
`llama-server` processes serving tiny random-weight GGUF files that the tests generate."""
import glob
import hashlib
import os
import secrets
import subprocess
import sys
import time

from openai import OpenAI

from harness import API, engine_pids, start_server, wait_for  # noqa: F401
from hub_standin import HubStandIn, Repo

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def gguf(tmp_path, seed):
    path = tmp_path / f"tiny-{seed}.gguf"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_tiny_gguf.py"), "--seed", str(seed), str(path)], check=True)
    return path.read_bytes()


def hub_config(hub, tmp_path):
    return {"hf_endpoint": hub.url, "model_cache_dir": str(tmp_path / "hub-cache")}


def create(server, **fields):
    body = {"hardware_profile": "cpu", "target_rps": 10, "target_latency_p95_ms": 5000, "stabilisation_window": 300}
    body.update(fields)
    return server.request("POST", f"{API}/inference/create", json=body)


def test_hub_standin_model_is_fetched_once_into_the_hub_cache_and_served(start_server, tmp_path):
    q4, q8 = gguf(tmp_path, 1), gguf(tmp_path, 2)
    repo = Repo({"tiny-Q4_K_M.gguf": q4, "tiny-Q8_0.gguf": q8, "README.md": b"# tiny\n"})
    with HubStandIn({"acme/tiny-GGUF": repo}) as hub:
        hub.throttle = 150_000  # bytes/s: the download takes about 3 s, long enough to watch
        server = start_server(config=hub_config(hub, tmp_path))
        r = create(server, hf_model_id="acme/tiny-GGUF", min_replicas=2, max_replicas=2)
        assert r.status_code == 200, r.text
        d = r.json()["deployment_id"]

        # Progress shows in the replica status while the file downloads.
        pulling = wait_for(lambda: [x for x in server.get(d)["replicas"]
                                    if x["status"] == "pulling_docker_image" and "downloading" in (x["progress"] or "")],
                           timeout=30, interval=0.1, what="download progress in the replica status")
        assert "tiny-Q4_K_M.gguf" in pulling[0]["progress"] and "MB" in pulling[0]["progress"]
        server.wait_status(d, "running", timeout=120)
        wait_for(lambda: server.get(d)["current_replicas"] == 2, timeout=60, what="both replicas serving")

        # Two replicas, one download; the default quantization (Q4_K_M) was chosen, the other file left alone.
        assert len(hub.file_requests("tiny-Q4_K_M.gguf")) == 1
        assert hub.file_requests("tiny-Q8_0.gguf") == []

        # The Hub's own cache layout.
        folder = tmp_path / "hub-cache" / "models--acme--tiny-GGUF"
        assert (folder / "refs" / "main").read_text() == repo.sha
        link = folder / "snapshots" / repo.sha / "tiny-Q4_K_M.gguf"
        assert os.readlink(link) == "../../blobs/" + hashlib.sha256(q4).hexdigest()
        assert link.read_bytes() == q4
        assert not glob.glob(str(folder / "blobs" / "*.incomplete"))

        pids = engine_pids([x["replica_id"] for x in server.get(d)["replicas"]])
        assert len(pids) == 2
        for pid in pids:
            assert str(link).encode() in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")

        client = OpenAI(base_url=server.url + "/openai/v1", api_key=server.key, max_retries=0)
        answer = client.chat.completions.create(model=d, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert answer.usage.completion_tokens >= 1
        assert any(e["kind"] == "hub_check" and "checked on the Hub" in e["message"] for e in server.events(d))

        # `repo:file` names one file; the cache is shared with the first deployment's.
        hub.throttle = None
        r = create(server, hf_model_id="acme/tiny-GGUF:tiny-Q8_0.gguf")
        assert r.status_code == 200, r.text
        d2 = r.json()["deployment_id"]
        server.wait_status(d2, "running", timeout=120)
        assert len(hub.file_requests("tiny-Q8_0.gguf")) == 1
        assert len(hub.file_requests("tiny-Q4_K_M.gguf")) == 1
        server.stop(d)
        server.stop(d2)


def test_hub_standin_unknown_gated_and_wrong_models_are_refused_with_422(start_server, tmp_path):
    q4 = gguf(tmp_path, 1)
    repos = {
        "acme/tiny-GGUF": Repo({"tiny-Q4_K_M.gguf": q4}),
        "acme/gated-GGUF": Repo({"tiny-Q4_K_M.gguf": q4}, gated=True, tokens={"hf_good"}),
        "acme/safetensors-only": Repo({"config.json": b"{}", "model.safetensors": b"0" * 64}),
    }
    with HubStandIn(repos) as hub:
        server = start_server(config=hub_config(hub, tmp_path))
        cases = [
            ({"hf_model_id": "acme/no-such-model"}, "hf_model_id", "was not found on the Hugging Face Hub"),
            ({"hf_model_id": "acme/gated-GGUF"}, "hf_token", "is gated"),
            ({"hf_model_id": "acme/gated-GGUF", "hf_token": "hf_wrong"}, "hf_token", "does not grant access"),
            ({"hf_model_id": "acme/tiny-GGUF:tiny-Q2_K.gguf"}, "hf_model_id", "its GGUF files: tiny-Q4_K_M.gguf"),
            ({"hf_model_id": "acme/safetensors-only"}, "hf_model_id", "has no GGUF file"),
        ]
        for fields, field, words in cases:
            r = create(server, **fields)
            assert r.status_code == 422, (fields, r.text)
            detail = r.json()["detail"]
            assert detail[0]["loc"] == ["body", field], detail
            assert words in detail[0]["msg"], detail
            assert "hf_wrong" not in r.text
        listed = server.request("GET", f"{API}/inference/list", params={"include_terminated": "true"}).json()
        assert listed["deployments"] == [], "a refused create stores nothing"
        # The right token passes; the simulator never asks the Hub.
        r = create(server, hf_model_id="acme/gated-GGUF", hf_token="hf_good")
        assert r.status_code == 200, r.text
        server.stop(r.json()["deployment_id"])
        before = len(hub.requests)
        sim = server.create(hf_model_id="acme/no-such-model", hardware_profile="sim.h100")
        assert not [x for x in hub.requests[before:] if "no-such-model" in x["path"]]
        server.stop(sim)


def test_hub_unreachable_accepts_the_deployment_and_says_the_check_was_skipped(start_server, tmp_path):
    server = start_server(config={"hf_endpoint": "http://127.0.0.1:9", "model_cache_dir": str(tmp_path / "hub-cache")})
    r = create(server, hf_model_id="acme/tiny-GGUF")
    assert r.status_code == 200, r.text
    d = r.json()["deployment_id"]
    assert any(e["kind"] == "hub_check" and e["message"].startswith("Hub check skipped") for e in server.events(d))
    failed = server.wait_status(d, "failed", timeout=60)
    assert "could not be reached" in failed["replicas"][0]["fail_reason"]


def test_hub_standin_interrupted_download_resumes_with_a_range_request(start_server, tmp_path):
    q4 = gguf(tmp_path, 1)
    with HubStandIn({"acme/tiny-GGUF": Repo({"tiny-Q4_K_M.gguf": q4})}) as hub:
        hub.cut_after["tiny-Q4_K_M.gguf"] = 100_000
        server = start_server(config=hub_config(hub, tmp_path))
        r = create(server, hf_model_id="acme/tiny-GGUF")
        assert r.status_code == 200, r.text
        d = r.json()["deployment_id"]
        server.wait_status(d, "running", timeout=120)
        gets = hub.file_requests("tiny-Q4_K_M.gguf")
        # The second request resumes where the first one's bytes stopped (at most the 100,000 sent).
        assert len(gets) == 2 and gets[0]["range"] is None, gets
        resumed_at = int(gets[1]["range"].removeprefix("bytes=").removesuffix("-"))
        assert 0 < resumed_at <= 100_000, gets
        blob = tmp_path / "hub-cache" / "models--acme--tiny-GGUF" / "blobs" / hashlib.sha256(q4).hexdigest()
        assert blob.read_bytes() == q4
        server.stop(d)


def test_hub_standin_corrupted_download_is_rejected_and_discarded(start_server, tmp_path):
    q4 = gguf(tmp_path, 1)
    with HubStandIn({"acme/tiny-GGUF": Repo({"tiny-Q4_K_M.gguf": q4}, corrupt={"tiny-Q4_K_M.gguf"})}) as hub:
        server = start_server(config=hub_config(hub, tmp_path))
        d = create(server, hf_model_id="acme/tiny-GGUF").json()["deployment_id"]
        failed = server.wait_status(d, "failed", timeout=60)
        reason = failed["replicas"][0]["fail_reason"]
        assert "is corrupt: SHA-256" in reason and hashlib.sha256(q4).hexdigest() in reason, reason
        blobs = tmp_path / "hub-cache" / "models--acme--tiny-GGUF" / "blobs"
        assert list(blobs.iterdir()) == [], "nothing corrupt is kept, not even a partial file"
        assert server.request("GET", f"{API}/inference/list").status_code == 200


def test_hub_standin_gated_model_token_never_leaks_into_answers_logs_events_or_the_process_table(start_server, tmp_path):
    token = "hf_LyceumLeakCanary" + secrets.token_hex(8)
    q4 = gguf(tmp_path, 1)
    with HubStandIn({"acme/gated-GGUF": Repo({"tiny-Q4_K_M.gguf": q4}, gated=True, tokens={token})}) as hub:
        server = start_server(config=hub_config(hub, tmp_path))
        seen = []

        def call(method, path, **kw):
            r = server.request(method, path, **kw)
            seen.append(f"{method} {path} {r.status_code} {dict(r.headers)} {r.text}")
            return r

        r = call("POST", f"{API}/inference/create", json={
            "hf_model_id": "acme/gated-GGUF", "hardware_profile": "cpu", "hf_token": token, "target_rps": 10,
            "target_latency_p95_ms": 5000, "stabilisation_window": 300})
        assert r.status_code == 200, r.text
        d = r.json()["deployment_id"]
        server.wait_status(d, "running", timeout=120)
        call("POST", "/openai/v1/chat/completions", json={"model": d, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        for path, params in [("inference/get", {"deployment_id": d}), ("inference/list", {"include_terminated": "true"}),
                             ("inference/events", {"deployment_id": d}), ("inference/usage", {"deployment_id": d}),
                             ("inference/models", {}), ("pricing", {})]:
            call("GET", f"{API}/{path}", params=params)
        replicas = server.get(d)["replicas"]
        for x in replicas:
            call("GET", f"{API}/inference/replica/{x['replica_id']}/logs")
        cli = subprocess.run([os.environ.get("LYCEUM_BIN", os.path.join(ROOT, ".build/debug/lyceum")), "infer", "status", d, "--json"],
                             env=dict(os.environ, LYCEUM_BASE_URL=server.url, LYCEUM_API_KEY=server.key),
                             capture_output=True, text=True)
        seen.append(cli.stdout + cli.stderr)

        # Positive controls: the token did reach the Hub and the engine's environment (so the search can fail).
        assert any(x["authorization"] == f"Bearer {token}" for x in hub.requests)
        pids = engine_pids([x["replica_id"] for x in replicas])
        assert pids and all(f"HF_TOKEN={token}".encode() in open(f"/proc/{p}/environ", "rb").read() for p in pids)

        # Searched: every answer, the server log, replica logs, the database files, every process's command line.
        haystacks = {"api answers and cli": "\n".join(seen).encode(),
                     "server log": open(server.log.name, "rb").read()}
        for path in glob.glob(os.path.join(server.data_dir, "**", "*"), recursive=True):
            if os.path.isfile(path):
                haystacks[path] = open(path, "rb").read()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    haystacks[f"/proc/{entry}/cmdline"] = open(f"/proc/{entry}/cmdline", "rb").read()
                except OSError:
                    pass
        assert len(haystacks) > 10
        leaks = [where for where, data in haystacks.items() if token.encode() in data]
        assert leaks == [], f"the token appears in: {leaks}"
        r = call("DELETE", f"{API}/inference/stop", json={"deployment_id": d})
        assert token not in r.text


def test_hub_standin_stop_during_a_download_cancels_it_and_the_next_deployment_resumes_it(start_server, tmp_path):
    q4 = gguf(tmp_path, 1)
    with HubStandIn({"acme/tiny-GGUF": Repo({"tiny-Q4_K_M.gguf": q4})}) as hub:
        hub.throttle = 50_000  # about 10 s for the file
        server = start_server(config=hub_config(hub, tmp_path))
        d = create(server, hf_model_id="acme/tiny-GGUF").json()["deployment_id"]
        blobs = tmp_path / "hub-cache" / "models--acme--tiny-GGUF" / "blobs"
        partial = blobs / (hashlib.sha256(q4).hexdigest() + ".incomplete")
        wait_for(lambda: partial.exists() and partial.stat().st_size > 64_000, timeout=30, what="part of the file on disk")
        server.stop(d)
        assert server.get(d, include_terminated=True)["replicas"][0]["status"] == "stopped"
        # The download stops too: the partial file stops growing.
        size = wait_for(lambda: (a := partial.stat().st_size) == (time.sleep(1.5) or partial.stat().st_size) and a,
                        timeout=15, what="the download to stop")
        assert 0 < size < len(q4)
        hub.throttle = None
        d2 = create(server, hf_model_id="acme/tiny-GGUF").json()["deployment_id"]
        server.wait_status(d2, "running", timeout=120)
        gets = hub.file_requests("tiny-Q4_K_M.gguf")
        assert gets[-1]["range"] == f"bytes={size}-", gets
        assert (blobs / hashlib.sha256(q4).hexdigest()).read_bytes() == q4
        server.stop(d2)
