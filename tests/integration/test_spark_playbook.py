"""The bundled playbooks/spark.yml end to end, against real parts standing in for a Spark.

A private dockerd and a registry stand in for nvcr.io (the "NGC PyTorch" image is busybox with a
`jupyter` that sleeps), the Ollama API server of tests/fakes stands in for Ollama, the systemctl
emulator for systemd, and a temporary HOME for the user's home. Only `gpu=false` differs from what a
Spark runs: this machine has no NVIDIA container runtime.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.cli import assert_converged, assert_exit, cli_env, sparkprov
from tests.fakes.ollama_server import FakeOllama
from tests.infra.registry import push_image

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "spark.yml"
IMAGE_REPO = "nvidia/pytorch:25.11-py3"


@pytest.fixture
def pytorch_image(dockerd, busybox_image: str, registry) -> str:  # type: ignore[no-untyped-def]
    """A busybox whose `jupyter` sleeps, pushed as REGISTRY/nvidia/pytorch:25.11-py3, not pulled."""
    builder = "sparkprov-spark-e2e-builder"
    dockerd.docker("rm", "-f", builder, check=False)
    script = "printf '#!/bin/sh\\nexec sleep 3600\\n' > /bin/jupyter && chmod +x /bin/jupyter"
    dockerd.docker("run", "--name", builder, busybox_image, "sh", "-c", script)
    dockerd.docker("commit", builder, "sparkprov-test/jupyter-busybox:1")
    dockerd.docker("rm", "-f", builder)
    ref = push_image(dockerd, "sparkprov-test/jupyter-busybox:1", registry, IMAGE_REPO)
    dockerd.docker("rmi", ref)
    return str(ref)


@pytest.fixture
def spark(
    tmp_path: Path, dockerd, registry, ollama: FakeOllama, pytorch_image: str, systemctl_env: dict[str, str]
) -> Iterator[dict]:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env({**dockerd.env, **systemctl_env}, home=home)
    for name in ("OLLAMA_HOST", "NGC_API_KEY"):
        env.pop(name, None)
    extra = {
        "registry": registry.url,
        "gpu": False,
        "use_docker": True,
        "use_ollama": True,
        "manage_ollama_service": True,
        "drop_caches": os.geteuid() == 0,
        "ollama_url": ollama.url,
        "ollama_dropin": str(tmp_path / "ollama.service.d" / "override.conf"),
        "jupyter_port": 18888,
        # This sandbox may not raise RLIMIT_MEMLOCK to unlimited; a Spark's dockerd can.
        "memlock": resource.getrlimit(resource.RLIMIT_MEMLOCK)[1],
    }
    state = {"env": env, "extra": json.dumps(extra), "home": home, "dockerd": dockerd, "ollama": ollama}
    yield state
    dockerd.docker("compose", "-p", "pytorch-dev", "down", "-t", "1", check=False)


def _run(spark: dict, command: str) -> dict:
    result = sparkprov(
        command,
        PLAYBOOK,
        "-e",
        spark["extra"],
        "--format",
        "json",
        env=spark["env"],
        cwd=spark["home"],
        timeout=300,
    )
    report = result.doc
    report["_result"] = result
    return report


def _pending(report: dict) -> set[str]:
    return {entry["task"] for entry in report["plan"]}


def test_spark_playbook_converges_and_reports_drift(spark: dict) -> None:
    fresh = _run(spark, "plan")
    assert fresh["exit_code"] == 2, fresh["_result"].stderr
    assert {
        "workspace and Hugging Face cache directories",
        "NGC PyTorch image",
        "PyTorch dev container (GPU, ipc host, ulimits, workspace, HF cache, Jupyter port)",
        "Ollama models",
    } <= _pending(fresh)

    first = _run(spark, "apply")
    assert_exit(first["_result"], 0)
    home: Path = spark["home"]
    assert (home / ".ipython/profile_default/startup/00-spark-gpu.py").is_file()
    assert (home / ".jupyter/jupyter_server_config.py").is_file()
    assert (home / "sparkprov/pytorch-dev/compose.yml").is_file()
    assert {"llama3.2:3b", "llama3.1:8b"} <= set(spark["ollama"].installed())
    running = spark["dockerd"].docker("ps", "--filter", "label=com.docker.compose.project=pytorch-dev", "-q")
    assert running.stdout.strip(), "the dev container is not running"

    verdicts = {(v["name"], v["status"]) for v in first["verify"]}
    assert ("the Ollama API answers", "pass") in verdicts
    assert ("PyTorch sees the GPU inside the NGC container", "skip") in verdicts  # gpu=false here

    second = _run(spark, "apply")
    assert_converged(second["_result"])
    converged = _run(spark, "plan")
    assert converged["exit_code"] == 0, converged["plan"]

    # Drift 1: a model removed behind sparkprov's back.
    response = requests.delete(f"{spark['ollama'].url}/api/delete", json={"model": "llama3.1:8b"}, timeout=10)
    assert response.status_code == 200
    # Drift 2: the rendered compose file edited by hand.
    compose = home / "sparkprov/pytorch-dev/compose.yml"
    compose.write_text(compose.read_text() + "# edited by hand\n")

    drifted = _run(spark, "plan")
    assert drifted["exit_code"] == 2
    assert _pending(drifted) == {
        "Ollama models",
        "PyTorch dev container (GPU, ipc host, ulimits, workspace, HF cache, Jupyter port)",
    }
    changes = " ".join(entry["change"] for entry in drifted["plan"])
    assert "llama3.1:8b" in changes
    assert "compose.yml" in changes
