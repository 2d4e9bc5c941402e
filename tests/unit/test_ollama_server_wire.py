"""The test suite's Ollama API server (tests/fakes/ollama_server.py) speaks Ollama's wire format.

Checked twice: byte-level with requests (content types, chunked NDJSON, bodies and status codes as the
real server sends them) and with the official `ollama` Python client, a second client written by
Ollama's authors (skipped when it is not installed; it is in the test extra).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.ollama_server import FakeOllama

GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "fakes" / "ollama_server.py"
LLAMA_3B = "registry.ollama.ai/library/llama3.2:3b"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama().running() as server:
        yield server


def lines(response: requests.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.iter_lines() if line]


# ---------------------------------------------------------------- byte level


def test_tags_shape(ollama: FakeOllama) -> None:
    ollama.install("llama3.2", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")
    response = requests.get(f"{ollama.url}/api/tags", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert b": " not in response.content and b", " not in response.content, "Go writes compact JSON"
    models = response.json()["models"]
    assert [m["name"] for m in models] == [
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",  # newest first
        "llama3.2:latest",
    ]
    for model in models:
        assert set(model) == {"name", "model", "modified_at", "size", "digest", "details"}
        assert model["model"] == model["name"]
        assert GO_TIME.match(model["modified_at"]), model["modified_at"]
        assert re.fullmatch(r"[0-9a-f]{64}", model["digest"])
        assert {"format", "family", "parameter_size", "quantization_level"} <= set(model["details"])
        assert model["details"]["format"] == "gguf"


def test_aliases_share_the_digest(ollama: FakeOllama) -> None:
    ollama.install("llama3.2:latest", "llama3.2:3b")
    digests = {m["digest"] for m in requests.get(f"{ollama.url}/api/tags", timeout=5).json()["models"]}
    assert len(digests) == 1


def test_pull_stream(ollama: FakeOllama) -> None:
    response = requests.post(f"{ollama.url}/api/pull", json={"model": "llama3.2:3b"}, stream=True, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert response.headers["Transfer-Encoding"] == "chunked"
    events = lines(response)
    assert events[0] == {"status": "pulling manifest"}
    assert [e["status"] for e in events[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [e for e in events[1:-3]]
    layer_sizes = dict(ollama.catalogue[LLAMA_3B].layers())
    assert {e["digest"] for e in layers} == set(layer_sizes)
    for digest, size in layer_sizes.items():
        seen = [e for e in layers if e["digest"] == digest]
        assert all(e["status"] == f"pulling {digest[7:19]}" and e["total"] == size for e in seen)
        assert "completed" not in seen[0], "Go omits a zero 'completed'"
        completed = [e["completed"] for e in seen[1:]]
        assert completed == sorted(completed) and completed[-1] == size
    assert ollama.installed() == ["llama3.2:3b"]


def test_pull_of_a_layer_already_present(ollama: FakeOllama) -> None:
    ollama.install("llama3.2:3b")
    events = lines(requests.post(f"{ollama.url}/api/pull", json={"model": "llama3.2"}, timeout=5))
    layers = [e for e in events if "digest" in e]
    assert all(e["completed"] == e["total"] for e in layers) and len(layers) == 5


def test_pull_errors_arrive_inside_the_200_stream(ollama: FakeOllama) -> None:
    response = requests.post(f"{ollama.url}/api/pull", json={"model": "nope:1b"}, timeout=5)
    assert response.status_code == 200
    assert lines(response) == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    ollama.fail_pull("llama3.2:1b", after_fraction=0.5)
    events = lines(requests.post(f"{ollama.url}/api/pull", json={"model": "llama3.2:1b"}, timeout=5))
    assert "max retries exceeded" in events[-1]["error"]
    assert events[-2]["completed"] == events[-2]["total"] // 2
    resumed = lines(requests.post(f"{ollama.url}/api/pull", json={"model": "llama3.2:1b"}, timeout=5))
    assert resumed[1]["completed"] == events[-2]["completed"], "a broken download resumes"
    assert resumed[-1] == {"status": "success"}


def test_pull_without_stream(ollama: FakeOllama) -> None:
    answer = requests.post(
        f"{ollama.url}/api/pull", json={"model": "llama3.2:1b", "stream": False}, timeout=5
    )
    assert (answer.status_code, answer.json()) == (200, {"status": "success"})
    answer = requests.post(f"{ollama.url}/api/pull", json={"model": "nope", "stream": False}, timeout=5)
    assert (answer.status_code, answer.json()) == (500, {"error": "pull model manifest: file does not exist"})


def test_dropped_connection_mid_pull(ollama: FakeOllama) -> None:
    ollama.fail_pull("llama3.2:1b", mode="disconnect")
    response = requests.post(f"{ollama.url}/api/pull", json={"model": "llama3.2:1b"}, stream=True, timeout=5)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        lines(response)


def test_delete(ollama: FakeOllama) -> None:
    ollama.install("llama3.2:1b")
    answer = requests.delete(f"{ollama.url}/api/delete", json={"model": "LLAMA3.2:1b"}, timeout=5)
    assert (answer.status_code, answer.content) == (200, b"")
    answer = requests.delete(f"{ollama.url}/api/delete", json={"model": "llama3.2:1b"}, timeout=5)
    assert answer.status_code == 404
    assert answer.content == b'{"error":"model \'llama3.2:1b\' not found"}'
    answer = requests.delete(f"{ollama.url}/api/delete", timeout=5)
    assert (answer.status_code, answer.json()) == (400, {"error": "missing request body"})


def test_routing_errors(ollama: FakeOllama) -> None:
    assert requests.get(f"{ollama.url}/", timeout=5).text == "Ollama is running"
    assert requests.head(f"{ollama.url}/api/version", timeout=5).status_code == 200
    missing = requests.get(f"{ollama.url}/api/nothing", timeout=5)
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    wrong = requests.get(f"{ollama.url}/api/pull", timeout=5)
    assert (wrong.status_code, wrong.text) == (405, "405 method not allowed")
    assert requests.get(f"{ollama.url}/api/version", timeout=5).json() == {"version": ollama.version}


def test_show(ollama: FakeOllama) -> None:
    ollama.install("llama3.2")
    shown = requests.post(f"{ollama.url}/api/show", json={"model": "llama3.2"}, timeout=5).json()
    assert {"license", "modelfile", "parameters", "template", "details", "model_info", "capabilities"} <= set(
        shown
    )
    assert shown["model_info"]["llama.context_length"] == 131072
    missing = requests.post(f"{ollama.url}/api/show", json={"model": "qwen3:8b"}, timeout=5)
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'qwen3:8b' not found"})


def generate(ollama: FakeOllama, **body: Any) -> dict[str, Any]:
    answer = requests.post(f"{ollama.url}/api/generate", json={"stream": False, **body}, timeout=5)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_generate_timings_load_and_prompt_cache(ollama: FakeOllama) -> None:
    ollama.install("llama3.2:3b")
    model = ollama.catalogue[LLAMA_3B]
    prompt = "Explain unified memory on the GB10 in one paragraph, please."
    first = generate(ollama, model="llama3.2:3b", prompt=prompt, options={"num_predict": 16})
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(first[key], int) and first[key] > 0
    assert first["load_duration"] == int(model.load_s * 1e9), "the first call loads the model"
    assert first["prompt_eval_count"] == 12 and first["eval_count"] == 16
    assert first["done"] is True and first["done_reason"] == "length" and first["response"]
    assert first["prompt_eval_count"] / first["prompt_eval_duration"] * 1e9 == pytest.approx(
        model.prefill_tps
    )
    assert first["eval_count"] / first["eval_duration"] * 1e9 == pytest.approx(model.decode_tps)
    assert (
        first["total_duration"]
        >= first["load_duration"] + first["prompt_eval_duration"] + first["eval_duration"]
    )

    again = generate(ollama, model="llama3.2:3b", prompt=prompt, options={"num_predict": 16})
    assert again["load_duration"] < first["load_duration"] / 100, "already loaded"
    assert again["prompt_eval_count"] == 1, "a repeated prompt is served from the cache"
    longer = generate(
        ollama, model="llama3.2:3b", prompt=prompt + " And bandwidth?", options={"num_predict": 4}
    )
    assert longer["prompt_eval_count"] == 3, "only what follows the cached prefix is evaluated"
    unique = generate(ollama, model="llama3.2:3b", prompt="[1] " + prompt, options={"num_predict": 4})
    assert unique["prompt_eval_count"] == 15

    reloaded = generate(
        ollama, model="llama3.2:3b", prompt=prompt, options={"num_predict": 4, "num_ctx": 8192}
    )
    assert reloaded["load_duration"] == int(model.load_s * 1e9), "another num_ctx reloads the model"


def test_generate_stream(ollama: FakeOllama) -> None:
    ollama.install("llama3.2:1b")
    response = requests.post(
        f"{ollama.url}/api/generate",
        json={"model": "llama3.2:1b", "prompt": "hi", "options": {"num_predict": 3}},
        timeout=5,
    )
    assert response.headers["Content-Type"] == "application/x-ndjson"
    events = lines(response)
    assert [e["done"] for e in events] == [False, False, False, True]
    assert all(set(e) == {"model", "created_at", "response", "done"} for e in events[:-1])
    assert events[-1]["response"] == "" and events[-1]["eval_count"] == 3
    assert all(GO_TIME.match(e["created_at"]) for e in events)


def test_load_unload_and_ps(ollama: FakeOllama) -> None:
    ollama.install("llama3.2:1b")
    loaded = generate(ollama, model="llama3.2:1b", prompt="")
    assert loaded["done_reason"] == "load" and loaded["response"] == ""
    ps = requests.get(f"{ollama.url}/api/ps", timeout=5).json()["models"]
    assert [m["name"] for m in ps] == ["llama3.2:1b"]
    assert {"name", "model", "size", "digest", "details", "expires_at", "size_vram"} <= set(ps[0])
    assert GO_TIME.match(ps[0]["expires_at"])
    unloaded = generate(ollama, model="llama3.2:1b", prompt="", keep_alive=0)
    assert unloaded["done_reason"] == "unload"
    assert requests.get(f"{ollama.url}/api/ps", timeout=5).json() == {"models": []}
    first = generate(
        ollama, model="llama3.2:1b", prompt="hello", options={"num_predict": 1}, keep_alive="10m"
    )
    assert first["load_duration"] > 10**8, "an unloaded model loads again"


def test_generate_errors(ollama: FakeOllama) -> None:
    missing = requests.post(
        f"{ollama.url}/api/generate", json={"model": "qwen3:8b", "prompt": "x"}, timeout=5
    )
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'qwen3:8b' not found"})
    ollama.install("qwen3:8b")
    bad = requests.post(
        f"{ollama.url}/api/generate", json={"model": "qwen3:8b", "keep_alive": "10"}, timeout=5
    )
    assert (bad.status_code, bad.json()) == (400, {"error": 'time: missing unit in duration "10"'})


def test_request_log_and_http_controls(ollama: FakeOllama) -> None:
    requests.post(f"{ollama.url}/__test__/install", json={"models": ["llama3.2:1b"]}, timeout=5)
    requests.post(f"{ollama.url}/__test__/fail", json={"model": "qwen3:8b", "error": "boom"}, timeout=5)
    requests.get(f"{ollama.url}/api/tags", timeout=5)
    events = lines(requests.post(f"{ollama.url}/api/pull", json={"model": "qwen3:8b"}, timeout=5))
    assert events[-1] == {"error": "boom"}
    state = requests.get(f"{ollama.url}/__test__/state", timeout=5).json()
    assert state["installed"] == ["llama3.2:1b"]
    assert [(r["method"], r["path"]) for r in state["requests"]] == [
        ("GET", "/api/tags"),
        ("POST", "/api/pull"),
    ]
    assert ollama.count("/api/tags") == 1 and ollama.count(method="POST") == 1


def test_standalone_server_keeps_its_store(tmp_path: Path) -> None:
    def serve() -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), "--port", "0", "--state", str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        return process, process.stdout.readline().split()[-1]

    process, url = serve()
    try:
        lines(requests.post(f"{url}/api/pull", json={"model": "llama3.2:1b"}, timeout=5))
    finally:
        process.terminate()
        process.wait(timeout=10)
    process, url = serve()
    try:
        names = [m["name"] for m in requests.get(f"{url}/api/tags", timeout=5).json()["models"]]
        assert names == ["llama3.2:1b"]
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------- the official client


@pytest.fixture
def client(ollama: FakeOllama) -> Any:
    module = pytest.importorskip("ollama", reason="the official ollama client is in the test extra")
    return module.Client(host=ollama.url, timeout=10)


def test_official_client_list_pull_show_delete(client: Any, ollama: FakeOllama) -> None:
    import ollama as official

    assert client.list().models == []
    statuses = [p.status for p in client.pull("llama3.2", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert client.pull("llama3.2:1b").status == "success"
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"llama3.2:latest", "llama3.2:1b"}
    assert listed["llama3.2:latest"].details.parameter_size == "3.2B"
    assert listed["llama3.2:latest"].size == ollama.catalogue[LLAMA_3B].total_size
    assert client.show("llama3.2").details.family == "llama"
    assert client.delete("llama3.2").status == "success"
    with pytest.raises(official.ResponseError) as info:
        client.delete("llama3.2")
    assert info.value.status_code == 404 and info.value.error == "model 'llama3.2' not found"


def test_official_client_sees_errors_inside_streams(client: Any, ollama: FakeOllama) -> None:
    import ollama as official

    with pytest.raises(official.ResponseError, match="pull model manifest: file does not exist"):
        list(client.pull("no-such-model", stream=True))
    ollama.fail_pull("qwen3:8b")
    with pytest.raises(official.ResponseError, match="connection reset by peer"):
        list(client.pull("qwen3:8b", stream=True))
    with pytest.raises(official.ResponseError) as info:
        client.pull("no-such-model")
    assert info.value.status_code == 500


def test_official_client_generate_and_ps(client: Any, ollama: FakeOllama) -> None:
    ollama.install("llama3.2:3b")
    result = client.generate(
        "llama3.2:3b", "Why is the sky blue?", options={"num_predict": 8, "temperature": 0}
    )
    assert result.done and result.eval_count == 8 and result.prompt_eval_count == 6
    assert result.load_duration == int(ollama.catalogue[LLAMA_3B].load_s * 1e9)
    chunks = list(
        client.generate("llama3.2:3b", "Why is the sky blue?", stream=True, options={"num_predict": 4})
    )
    assert chunks[-1].done and chunks[-1].prompt_eval_count == 1 and chunks[-1].load_duration < 10**8
    running = client.ps().models
    assert [m.model for m in running] == ["llama3.2:3b"] and running[0].size_vram > 0
    assert client.generate("llama3.2:3b", "", keep_alive=0).done_reason == "unload"
    assert client.ps().models == []
