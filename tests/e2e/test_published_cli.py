"""The hosted service's own command line, `lyceum-cli` 1.2.2 from PyPI, run unchanged against a real `lyceum server`
with real simulator replicas, the way a user would: a HOME whose `~/.lyceum/config.json` names our server as both its
control plane (`base_url`) and its data plane (`iris_url`), and the commands of the documentation.

The published package's console script is also called `lyceum`; it is run as `python -P -m lyceum` with this
interpreter (the test venv has it from tests/e2e/requirements.txt), our binary as LYCEUM_BIN. Nothing here talks to
any host but 127.0.0.1: the client only calls the URLs in its config, and has no telemetry or version check."""
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time

import pytest
import requests

from harness import API, LYCEUM_BIN, engine_pids, serve_module, wait_for

PUBLISHED = [sys.executable, "-P", "-m", "lyceum"]
VERSION = "1.2.2"
HF_ID = "meta-llama/Llama-3.1-8B-Instruct"
SERVING_NAME = "llama-3.1-8b-instruct"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
MISSING = "00000000-0000-0000-0000-000000000000"
# A simulator whose first token takes 20 s: longer than the shortest wait a caller can ask for (X-Timeout-S 10).
LATE = {"name": "sim.late", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "1.00",
        "devices": ["late-0", "late-1"], "ready_timeout_s": 30,
        "engine_args": ["--ttft-ms", "20000", "--itl-ms", "1", "--jitter", "0"]}
# Variables the published client reads that would change what it does; the tests set what they need.
CLIENT_ENV = {"IRIS_PROXY_URL", "LYCEUM_ORG", "LYCEUM_CODE_MODEL", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
              "LYCEUM_BASE_URL", "LYCEUM_API_KEY", "LYCEUM_CONFIG", "ANTHROPIC_CUSTOM_HEADERS", "PYTHONPATH"}


# Running the two clients

def client_env(home, **extra):
    """A user's environment: this HOME, no proxy (only 127.0.0.1 is called), wide plain output, nothing inherited
    that the client would read."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV and not k.upper().endswith("_PROXY")}
    env.update(HOME=str(home), COLUMNS="300", NO_COLOR="1", TERM="dumb", PYTHONIOENCODING="utf-8", PYTHONUTF8="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


def published(home, *args, timeout=60, env=None):
    """Runs the published client; stdin is closed, as in a script. Its messages go to stdout (rich), a few to stderr."""
    result = subprocess.run([*PUBLISHED, *args], cwd=home, env=env or client_env(home), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout)
    result.out = result.stdout + result.stderr
    assert "Traceback" not in result.out, f"lyceum {shlex.join(args)} crashed:\n{result.out}"
    return result


def ours(home, *args, timeout=60):
    return subprocess.run([LYCEUM_BIN, *args], cwd=home, env=client_env(home), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def write_config(home, **fields):
    os.makedirs(os.path.join(home, ".lyceum"), exist_ok=True)
    with open(os.path.join(home, ".lyceum", "config.json"), "w") as f:
        json.dump(fields, f)
    return home


def read_config(home):
    with open(os.path.join(home, ".lyceum", "config.json")) as f:
        return json.load(f)


def deployment_id(output):
    found = re.search(rf"Deployment ID:\s+({UUID})", output)
    assert found, output
    return found.group(1)


def reference_text(server, deployment, messages, max_tokens):
    """What the deployment answers these messages, asked directly; the simulator's text depends only on them."""
    r = server.request("POST", "/openai/v1/chat/completions", timeout=60,
                       json={"model": deployment, "messages": messages, "max_tokens": max_tokens})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def stop_quietly(server, *deployments):
    for d in deployments:
        if d:
            server.request("DELETE", f"{API}/inference/stop", json={"deployment_id": d})


# Fixtures: one server for the module (built like harness.start_server, with the same clean-up check)

@pytest.fixture(scope="module", autouse=True)
def published_client(tmp_path_factory):
    home = tmp_path_factory.mktemp("version-home")
    found = subprocess.run([*PUBLISHED, "--version"], cwd=home, env=client_env(home), capture_output=True, text=True,
                           timeout=60)
    if found.returncode != 0 or f"lyceum {VERSION}" not in found.stdout:
        pytest.fail(f"lyceum-cli=={VERSION} is not installed in {sys.executable} "
                    f"(pip install -r tests/e2e/requirements.txt): {found.stdout}{found.stderr}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_module(tmp_path_factory, "published-cli", config={"hardware_profiles": [LATE]})


@pytest.fixture(scope="module")
def home(server, tmp_path_factory):
    """A user who wrote ~/.lyceum/config.json by hand: our server is both planes, the key an `lk_` key."""
    return write_config(str(tmp_path_factory.mktemp("home")), base_url=server.url, iris_url=server.url, api_key=server.key)


@pytest.fixture(scope="module")
def deployment(server):
    """A running simulator deployment made through the API, shared by the read-only tests."""
    d = server.create(hf_model_id=HF_ID, hardware_profile="sim.h100")
    server.wait_status(d, "running")
    yield d
    stop_quietly(server, d)


# auth

def test_auth_login_with_an_api_key_checks_it_saves_it_and_status_reports_a_working_connection(server, tmp_path):
    home = str(tmp_path / "user")
    os.makedirs(home)
    login = published(home, "auth", "login", "--api-key", server.key, "--url", server.url)
    assert login.returncode == 0, login.out
    assert "Successfully authenticated!" in login.out
    assert "Org:" in login.out, f"GET {API}/user/org answers which org the key acts as: {login.out}"
    saved = read_config(home)
    assert saved["api_key"] == server.key and saved["base_url"] == server.url

    status = published(home, "auth", "status")
    assert status.returncode == 0, status.out
    assert "Authenticated" in status.out and f"API Key: {server.key[:8]}..." in status.out
    assert f"Base URL: {server.url}" in status.out and "Org:" in status.out
    assert "API connection working" in status.out, status.out

    # Login may have pinned the key's org (active_org_slug, sent as X-Org-Slug from now on): the server takes it.
    write_config(home, **dict(read_config(home), iris_url=server.url))
    listed = published(home, "infer", "deployments", "--json")
    assert listed.returncode == 0, listed.out
    assert isinstance(json.loads(listed.stdout), list)

    refused_home = str(tmp_path / "wrong-key")
    os.makedirs(refused_home)
    refused = published(refused_home, "auth", "login", "--api-key", "lk_wrong", "--url", server.url)
    assert refused.returncode == 1 and "Authentication failed: HTTP 401" in refused.out, refused.out


# infer models

def test_models_lists_serverless_models_and_with_dedicated_the_deployable_catalogue(home):
    serverless = published(home, "infer", "models")
    assert serverless.returncode == 0, serverless.out
    assert "now lists serverless models" in serverless.stderr
    assert "Serverless Models" in serverless.stdout or "No serverless models available." in serverless.stdout
    as_json = published(home, "infer", "models", "--json")
    assert as_json.returncode == 0, as_json.out
    assert all("id" in m for m in json.loads(as_json.stdout))

    dedicated = published(home, "infer", "models", "--dedicated", "--json")
    assert dedicated.returncode == 0, dedicated.out
    models = json.loads(dedicated.stdout)
    for m in models:
        assert set(m) >= {"serving_name", "hf_model_id", "gpu_type", "gpu_count", "price_per_hour", "is_gpu_available",
                          "ready_timeout_s"}, m
        assert m["is_gpu_available"] in (True, False, None) and isinstance(m["ready_timeout_s"], int), m
        assert isinstance(m["gpu_type"], str) and isinstance(m["gpu_count"], int), m
    h100 = [m for m in models if m["serving_name"] == SERVING_NAME and m["gpu_type"] == "h100"]
    assert h100, models
    assert h100[0]["hf_model_id"] == HF_ID and h100[0]["gpu_count"] == 1
    assert h100[0]["price_per_hour"] == "2.50" and h100[0]["is_gpu_available"] is True

    table = published(home, "infer", "models", "--dedicated")
    assert table.returncode == 0, table.out
    assert "Dedicated Models" in table.out
    assert re.search(rf"{re.escape(SERVING_NAME)}\s+│\s+1x H100\s+│\s+\$2\.50\s+│\s+available", table.out), table.out


# infer deploy / stop

def test_deploy_by_hub_id_on_the_simulator_waits_until_healthy_and_stop_ends_it(server, home):
    deployed = published(home, "infer", "deploy", HF_ID, "-g", "sim.h100", "-y", "-w", timeout=150)
    assert deployed.returncode == 0, deployed.out
    assert "Deployment created!" in deployed.out
    d = deployment_id(deployed.out)
    try:
        assert "Deployment is healthy! (1 replica(s))" in deployed.out, deployed.out
        assert "Timed out" not in deployed.out
        info = server.wait_status(d, "running", timeout=10)
        assert info["hardware_profile"] == "sim.h100" and info["hf_model_id"] == HF_ID
        assert (info["min_replicas"], info["max_replicas"]) == (1, 1)
        replicas = [r["replica_id"] for r in info["replicas"]]
        assert engine_pids(replicas), "a real simulator process serves it"

        stopped = published(home, "infer", "stop", d)
        assert stopped.returncode == 0, stopped.out
        assert "Deployment stopped!" in stopped.out and d in stopped.out
        assert re.search(r"Status:\s+stopped", stopped.out), stopped.out
        assert engine_pids(replicas) == {}, "stop returned while engine processes were alive"
    finally:
        stop_quietly(server, d)

    gone = published(home, "infer", "status", d)
    assert gone.returncode == 1 and "HTTP 404" in gone.out, gone.out
    kept = published(home, "infer", "status", d, "--all")
    assert kept.returncode == 0 and re.search(r"Status:\s+stopped", kept.out), kept.out
    current = [x["deployment_id"] for x in json.loads(published(home, "infer", "deployments", "--json").stdout)]
    everything = json.loads(published(home, "infer", "deployments", "--all", "--json").stdout)
    assert d not in current
    assert {x["deployment_id"]: x["status"] for x in everything}[d] == "stopped"
    again = published(home, "infer", "stop", MISSING)
    assert again.returncode == 1 and "HTTP 404" in again.out, again.out


def test_deploy_maps_a_catalogue_name_and_a_bare_gpu_type_to_a_simulator_profile(server, home):
    catalogue = server.request("GET", f"{API}/inference/models").json()["models"]
    first = next(m for m in catalogue if m["serving_name"] == SERVING_NAME)
    by_gpu = bare = None
    try:
        shaped = published(home, "infer", "deploy", SERVING_NAME, "-g", "h100", "--gpu-count", "1", "--min-replicas",
                           "1", "--max-replicas", "2", "-t", "hf_secret_for_the_test", "-y")
        assert shaped.returncode == 0, shaped.out
        by_gpu = deployment_id(shaped.out)
        info = server.wait_status(by_gpu, "running")
        assert info["hardware_profile"] == "sim.h100", "a bare gpu_type picks the first profile listing the model"
        assert info["hf_model_id"] == HF_ID, "the serving_name the client sends stands for the Hub id"
        assert (info["min_replicas"], info["max_replicas"]) == (1, 2)
        for command in (("infer", "status", by_gpu, "--json"), ("infer", "deployments", "--json")):
            shown = published(home, *command)
            assert shown.returncode == 0 and "hf_secret_for_the_test" not in shown.out, "the token is never shown"

        default = published(home, "infer", "deploy", SERVING_NAME, "-y")
        assert default.returncode == 0, default.out
        assert f"{SERVING_NAME} on 1x {first['gpu_type'].upper()} per replica" in default.out
        assert ": available" in default.out, default.out
        bare = deployment_id(default.out)
        profile = server.wait_status(bare, "running")["hardware_profile"]
        assert profile == first["hardware_profile"] and profile.startswith("sim."), \
            "without -g the deployment gets the catalogue's first shape for the model, the one the client showed"
    finally:
        stop_quietly(server, by_gpu, bare)


def test_deploy_refuses_unknown_models_unknown_gpus_another_org_and_asks_before_creating(server, home):
    def everything():
        listed = server.request("GET", f"{API}/inference/list", params={"include_terminated": "true"}).json()
        return sorted(x["deployment_id"] for x in listed["deployments"])

    before = everything()
    unknown = published(home, "infer", "deploy", "nobody/no-such-model", "-y")
    assert unknown.returncode == 1 and "cannot be deployed on dedicated GPUs" in unknown.out, unknown.out
    no_gpu = published(home, "infer", "deploy", SERVING_NAME, "-g", "z9", "-y")
    assert no_gpu.returncode == 1 and "HTTP 422" in no_gpu.out and "gpu_type" in no_gpu.out, no_gpu.out
    elsewhere = published(home, "infer", "deploy", SERVING_NAME, "-y", env=client_env(home, LYCEUM_ORG="someone-else"))
    assert elsewhere.returncode == 1 and "Not deploying" in elsewhere.out, elsewhere.out
    asked = published(home, "infer", "deploy", SERVING_NAME, "-g", "h100")
    assert asked.returncode == 1 and "No HF token detected" in asked.out and "Aborted" in asked.out, asked.out
    assert everything() == before, "a refused deploy left a deployment behind"


# infer status / deployments / replica logs

def test_status_and_deployments_show_a_running_deployment_with_its_replicas(server, home, deployment):
    info = server.get(deployment)
    replica = info["replicas"][0]["replica_id"]
    status = published(home, "infer", "status", deployment)
    assert status.returncode == 0, status.out
    for label, value in (("Deployment ID", deployment), ("HF Model", HF_ID), ("GPU", "sim.h100"), ("Status", "running")):
        assert re.search(rf"{label}:\s+{re.escape(value)}", status.out), (label, status.out)
    assert re.search(r"Replicas:\s+1 current \(1-1 range\)", status.out), status.out
    assert re.search(r"Target RPS:\s+10", status.out) and re.search(r"Stabilisation:\s+300 s", status.out), status.out
    assert re.search(rf"{replica}\s+│\s+running\s+│\s+yes\s+│\s+\S+", status.out), status.out
    as_json = json.loads(published(home, "infer", "status", deployment, "--json").stdout)
    assert as_json["deployment_id"] == deployment and as_json["status"] == "running"
    assert as_json["replicas"][0]["healthy"] is True
    missing = published(home, "infer", "status", MISSING)
    assert missing.returncode == 1 and "HTTP 404" in missing.out, missing.out

    listed = published(home, "infer", "deployments")
    assert listed.returncode == 0 and "Dedicated Deployments" in listed.out, listed.out
    row = next((line for line in listed.out.splitlines() if deployment in line), "")
    assert HF_ID in row and "sim.h100" in row and "1/1" in row and "running" in row, listed.out
    assert re.search(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}", row), f"created_at shown as a date: {row}"
    rows = json.loads(published(home, "infer", "deployments", "--json").stdout)
    mine = next(x for x in rows if x["deployment_id"] == deployment)
    assert mine["status"] == "running" and mine["hardware_profile"] == "sim.h100" and mine["max_replicas"] == 1


def test_replica_logs_prints_what_the_replica_wrote(server, home, deployment):
    replica = server.get(deployment)["replicas"][0]["replica_id"]
    logs = published(home, "infer", "replica", "logs", replica)
    assert logs.returncode == 0, logs.out
    assert "serving" in logs.out and "No logs available" not in logs.out, logs.out
    missing = published(home, "infer", "replica", "logs", MISSING)
    assert missing.returncode == 1 and "HTTP 404" in missing.out, missing.out


# infer chat / result

def test_chat_prints_the_deployments_answer_with_system_prompt_and_prompt_file(server, home, deployment, tmp_path):
    chat = published(home, "infer", "chat", "-d", deployment, "-p", "hi", "-t", "8")
    assert chat.returncode == 0, chat.out
    expected = reference_text(server, deployment, [{"role": "user", "content": "hi"}], 8)
    assert expected.strip() and expected.strip() in chat.out, chat.out
    assert re.search(r"tokens: \d+ in / 8 out / \d+ total", chat.out), chat.out

    system = published(home, "infer", "chat", "-d", deployment, "-p", "hi", "-s", "Answer briefly.", "-t", "6",
                       "--timeout", "30")
    assert system.returncode == 0, system.out
    expected = reference_text(server, deployment, [{"role": "system", "content": "Answer briefly."},
                                                   {"role": "user", "content": "hi"}], 6)
    assert expected.strip() in system.out, system.out

    prompt = tmp_path / "prompt.txt"
    prompt.write_text("a question from a file")
    from_file = published(home, "infer", "chat", "-d", deployment, "-p", str(prompt), "-t", "5")
    assert from_file.returncode == 0, from_file.out
    assert reference_text(server, deployment, [{"role": "user", "content": "a question from a file"}], 5).strip() in from_file.out

    unknown = published(home, "infer", "chat", "-d", MISSING, "-p", "hi")
    assert unknown.returncode == 1 and "HTTP 404" in unknown.out, unknown.out
    assert "visible only to credentials acting as its org" in unknown.out


def test_chat_past_its_timeout_leaves_a_request_id_that_result_fetches(server, home, deployment):
    late = server.create(hf_model_id=HF_ID, hardware_profile="sim.late")
    try:
        server.wait_status(late, "running")
        started = time.monotonic()
        chat = published(home, "infer", "chat", "-d", late, "-p", "hi", "-t", "4", "--timeout", "10", timeout=40)
        waited = time.monotonic() - started
        # The client reads any answer but 200 as an error: it prints the 202 body, which names the request.
        assert chat.returncode == 1 and "HTTP 202" in chat.out, chat.out
        found = re.search(r'"request_id":\s*"([^"]+)"', chat.out)
        assert found and '"pending"' in chat.out, chat.out
        assert 9 < waited < 19, f"X-Timeout-S 10 bounds the wait: {waited:.1f} s"
        request_id = found.group(1)

        pending = published(home, "infer", "result", request_id)
        assert pending.returncode == 0 and "Pending" in pending.out, pending.out
        expected = reference_text(server, deployment, [{"role": "user", "content": "hi"}], 4).strip()
        polled = published(home, "infer", "result", request_id, "--poll", "--timeout", "60", timeout=90)
        assert polled.returncode == 0 and expected in polled.out, polled.out
        assert re.search(r"tokens: \d+ in / 4 out", polled.out), polled.out
        fetched = published(home, "infer", "result", request_id)
        assert fetched.returncode == 0 and expected in fetched.out, fetched.out
    finally:
        stop_quietly(server, late)
    unknown = published(home, "infer", "result", "req_no_such_request")
    assert unknown.returncode == 1 and "Request not found" in unknown.out, unknown.out


# lyceum code (Claude Code on a deployment)

FAKE_CLAUDE = r'''
import json, os, sys, urllib.error, urllib.request
args = sys.argv[1:]
prompt = args[args.index("-p") + 1]
# What Claude Code sends: x-api-key (ANTHROPIC_API_KEY), its version and beta headers, the custom headers, a system
# prompt as text blocks, and the beta Messages path.
headers = {"content-type": "application/json", "x-api-key": os.environ["ANTHROPIC_API_KEY"],
           "anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219"}
for line in os.environ.get("ANTHROPIC_CUSTOM_HEADERS", "").splitlines():
    name, _, value = line.partition(":")
    if name.strip():
        headers[name.strip()] = value.strip()
body = {"model": os.environ["ANTHROPIC_MODEL"], "max_tokens": 8,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]}
request = urllib.request.Request(os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages?beta=true",
                                 data=json.dumps(body).encode(), headers=headers, method="POST")
try:
    with urllib.request.urlopen(request, timeout=60) as r:
        status, answer = r.status, json.load(r)
except urllib.error.HTTPError as e:
    status, answer = e.code, e.read().decode(errors="replace")
record = {"argv": args, "status": status, "answer": answer,
          "env": {k: v for k, v in os.environ.items() if k.startswith(("ANTHROPIC_", "CLAUDE_"))}}
with open(os.environ["FAKE_CLAUDE_RECORD"], "w") as f:
    json.dump(record, f)
if status == 200:
    print("".join(block.get("text", "") for block in answer["content"]))
sys.exit(0 if status == 200 else 5)
'''


def test_code_launches_claude_code_pinned_to_a_deployment_through_the_anthropic_api(server, home, deployment, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "fake_claude.py").write_text(FAKE_CLAUDE)
    launcher = bin_dir / "claude"
    launcher.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(tmp_path / 'fake_claude.py'))} \"$@\"\n")
    launcher.chmod(0o755)
    record_path = tmp_path / "claude-record.json"
    env = client_env(home, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", FAKE_CLAUDE_RECORD=str(record_path))

    # No --model: Claude Code asks for the client's default model name; the X-Deployment-ID header decides.
    code = published(home, "code", "--deployment", deployment, "-p", "hello claude", env=env, timeout=90)
    record = json.loads(record_path.read_text())
    assert code.returncode == 0, (code.out, record)
    assert f"Lyceum backend: {server.url}" in code.out and "Pinned to deployment" in code.out
    assert record["argv"] == ["-p", "hello claude"], "unknown flags go to claude"
    seen = record["env"]
    assert seen["ANTHROPIC_BASE_URL"] == server.url + "/anthropic" and seen["ANTHROPIC_API_KEY"] == server.key
    assert f"X-Deployment-ID: {deployment}" in seen["ANTHROPIC_CUSTOM_HEADERS"]
    assert seen["CLAUDE_CONFIG_DIR"] == os.path.join(home, ".lyceum", "claude")
    assert record["answer"]["content"][0]["type"] == "text"
    expected = reference_text(server, deployment, [{"role": "system", "content": "You are Claude Code."},
                                                   {"role": "user", "content": "hello claude"}], 8)
    assert record["answer"]["content"][0]["text"] == expected and expected.strip() in code.out

    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    missing = published(home, "code", "--deployment", deployment, env=client_env(home, PATH=str(empty_bin)))
    assert missing.returncode == 1 and "Claude Code is not installed" in missing.out, missing.out


# Failures and our own login

def test_an_unreachable_server_gives_a_short_error_and_a_failing_exit_not_a_traceback(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused at once
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        home = write_config(str(tmp_path), base_url=url, iris_url=url, api_key="lk_unreachable")
        for args in (("infer", "deployments"), ("infer", "status", MISSING), ("infer", "models", "--dedicated"),
                     ("infer", "deploy", SERVING_NAME, "-y"), ("infer", "stop", MISSING)):
            r = published(home, *args, timeout=30)
            assert r.returncode == 1 and "Network error" in r.out and "refused" in r.out, (args, r.out)
        for args in (("infer", "chat", "-d", MISSING, "-p", "hi"), ("infer", "result", "req_x")):
            r = published(home, *args, timeout=30)
            assert r.returncode == 1 and "Error:" in r.out and "refused" in r.out, (args, r.out)
        login = published(home, "auth", "login", "--api-key", "lk_unreachable", timeout=30)
        assert login.returncode == 1 and "Authentication failed" in login.out, login.out
        status = published(home, "auth", "status", timeout=30)
        assert status.returncode == 0 and "API connection failed" in status.out, "auth status reports, never fails"


def test_our_login_writes_a_config_the_published_client_uses_and_reads_its_config_back(server, tmp_path):
    home = str(tmp_path / "ours")
    os.makedirs(home)
    login = ours(home, "login", "--base-url", server.url + "/", "--api-key", server.key)
    assert login.returncode == 0, login.stdout + login.stderr
    saved = read_config(home)
    assert saved["base_url"] == server.url, "saved without the trailing slash: the client appends /api/v2/external"
    assert saved["iris_url"] == server.url and saved["api_key"] == server.key

    listed = published(home, "infer", "deployments", "--json")
    assert listed.returncode == 0, listed.out
    assert isinstance(json.loads(listed.stdout), list)
    status = published(home, "auth", "status")
    assert "API connection working" in status.out, status.out

    # The other way round: the config the published client's login writes (with its own extra fields) works for us.
    theirs = str(tmp_path / "theirs")
    os.makedirs(theirs)
    assert published(theirs, "auth", "login", "--api-key", server.key, "--url", server.url).returncode == 0
    mine = ours(theirs, "infer", "deployments", "--json")
    assert mine.returncode == 0, mine.stdout + mine.stderr
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
