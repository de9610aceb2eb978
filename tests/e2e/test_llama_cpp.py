"""Real inference: replicas are llama.cpp `llama-server` processes serving a tiny random-weight GGUF model that
the test generates (tools/make_tiny_gguf.py). The text is gibberish; every token is computed by llama.cpp.
`scripts/test.sh` installs llama-server (`lyceum engine install llama.cpp`) before the tests run."""
import os
import subprocess
import sys
import time

from openai import OpenAI

from harness import LYCEUM_BIN, engine_pids, start_server  # noqa: F401

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def tiny_model(tmp_path):
    path = str(tmp_path / "tiny.gguf")
    started = time.monotonic()
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_tiny_gguf.py"), path], check=True)
    assert time.monotonic() - started < 5
    return path


def test_llama_cpp_replicas_serve_a_real_model_through_the_gateway(start_server, tmp_path):
    model = tiny_model(tmp_path)
    server = start_server()
    d = server.create(hf_model_id=model, hardware_profile="cpu", min_replicas=2, max_replicas=2)
    running = server.wait_status(d, "running", timeout=120)
    deadline = time.monotonic() + 60
    while server.get(d)["current_replicas"] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.get(d)["current_replicas"] == 2, running

    rows = server.replica_rows(d)
    pids = engine_pids([r["id"] for r in rows])
    assert len(pids) == 2
    for pid in pids:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        assert os.path.basename(cmdline[0].decode()) == "llama-server"
        assert model.encode() in cmdline and b"--metrics" in cmdline

    client = OpenAI(base_url=server.url + "/openai/v1", api_key=server.key, max_retries=0)
    answer = client.chat.completions.create(model=d, messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert answer.usage.completion_tokens >= 1 and answer.usage.prompt_tokens > 1
    assert answer.choices[0].message.content is not None

    chunks, usage = [], None
    stream = client.chat.completions.create(model=d, messages=[{"role": "user", "content": "the"}], max_tokens=8,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert chunks and usage is not None and usage.completion_tokens >= 1

    # Both replicas take traffic.
    served_by = {client.chat.completions.with_raw_response.create(
        model=d, messages=[{"role": "user", "content": "a"}], max_tokens=2).headers["x-lyceum-replica-id"] for _ in range(12)}
    assert served_by == {r["id"] for r in rows}

    server.stop(d)
    assert engine_pids([r["id"] for r in rows]) == {}, "llama-server processes outlived the stop"


def test_a_cpu_deployment_of_a_missing_file_fails_with_a_clear_reason(start_server):
    server = start_server()
    d = server.create(hf_model_id="/nonexistent/model.gguf", hardware_profile="cpu")
    failed = server.wait_status(d, "failed", timeout=30)
    reason = failed["replicas"][0]["fail_reason"]
    assert "not a .gguf file on this machine" in reason, reason


def test_a_cpu_deployment_without_llama_server_says_how_to_install_it(start_server, tmp_path):
    model = tiny_model(tmp_path)
    server = start_server(config={"llama_server_executable": str(tmp_path / "no-such-dir" / "llama-server")})
    d = server.create(hf_model_id=model, hardware_profile="cpu")
    failed = server.wait_status(d, "failed", timeout=30)
    reason = failed["replicas"][0]["fail_reason"]
    assert "llama-server is not installed: run `lyceum engine install llama.cpp`" in reason, reason
