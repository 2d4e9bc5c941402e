"""The gpu verify step: its probe's output parsed for an H100 (memory reported), a GB10 (NVML's
NotSupported, nvidia-smi's [N/A]) and a machine without a GPU, the probe script itself run against a
stand-in NVML, and the real step on a GPU machine.

Recorded outputs in tests/data/verify/: `probe_h100_*.json` were printed by PROBE_SCRIPT on an H100
(NVML, and nvidia-smi with pynvml hidden); `probe_no_gpu.json` on this CI machine; the GB10 ones are
written from NVIDIA's documentation of the Spark (no GB10 is available to record on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection.local import LocalConnection
from sparkprov.facts.host import UNIFIED_MEMORY_NOTE
from sparkprov.playbook.templating import Scope
from sparkprov.verify.base import StepContext, StepStatus
from sparkprov.verify.gpu import PROBE_SCRIPT, GpuStep, ProbeError, interpreter, measurements, parse_probe

DATA = Path(__file__).resolve().parents[1] / "data" / "verify"
FAKE_GPU = DATA / "fake_gpu"


def recorded(name: str) -> str:
    return (DATA / f"probe_{name}.json").read_text(encoding="utf-8")


def test_h100_through_nvml_reports_its_dedicated_memory() -> None:
    probe = parse_probe(recorded("h100_nvml"))
    assert probe.source == "nvml"
    assert measurements(probe) == {
        "count": 1,
        "name": "NVIDIA H100 80GB HBM3",
        "driver": "580.159.04",
        "cuda": "13.0",
        "compute_capability": "9.0",
        "memory_total_gib": 79.65,
        "memory_used_gib": 0.47,
        "memory_available_gib": 79.18,
        "memory_source": "nvml",
    }


def test_h100_through_nvidia_smi_when_pynvml_is_missing() -> None:
    probe = parse_probe(recorded("h100_smi"))
    assert probe.source == "nvidia-smi"
    assert "no NVML" in probe.problems[0]
    found = measurements(probe)
    assert (found["name"], found["driver"], found["cuda"], found["compute_capability"]) == (
        "NVIDIA H100 80GB HBM3",
        "580.159.04",
        "13.0",
        "9.0",
    )
    assert found["memory_total_gib"] == 79.65  # 81559 MiB
    assert found["memory_used_gib"] == 0.0


@pytest.mark.parametrize("recording", ["gb10_nvml", "gb10_smi"])
def test_gb10_unified_memory_comes_from_meminfo_and_is_never_zero(recording: str) -> None:
    probe = parse_probe(recorded(recording))
    assert probe.unified_memory
    found = measurements(probe)
    assert found["name"] == "NVIDIA GB10"
    assert found["compute_capability"] == "12.1"
    assert found["cuda"] == "13.0"
    assert found["driver"] == "580.95.05"
    assert found["memory_total_gib"] == 124.48  # MemTotal 130530416 kB
    assert found["memory_available_gib"] == 113.78  # MemAvailable
    assert found["memory_used_gib"] == 10.71
    assert found["memory_source"] == f"/proc/meminfo ({UNIFIED_MEMORY_NOTE})"
    assert probe.gpus[0].memory_total_bytes is None
    assert probe.gpus[0].memory_note == UNIFIED_MEMORY_NOTE


def test_nvidia_smi_not_supported_spelling_is_unified_memory_too() -> None:
    text = recorded("gb10_smi").replace("[N/A], [N/A]", "Not Supported, Not Supported")
    probe = parse_probe(text)
    assert probe.unified_memory
    assert measurements(probe)["memory_total_gib"] == 124.48


def test_no_gpu_lists_why_nothing_was_found() -> None:
    probe = parse_probe(recorded("no_gpu"))
    assert probe.source == "none"
    assert probe.gpus == ()
    assert probe.problems == (
        "NVML: NVMLError_LibraryNotFound: NVML Shared Library Not Found",
        "nvidia-smi: not installed",
    )


def test_output_that_is_not_the_probes_is_an_error() -> None:
    with pytest.raises(ProbeError, match="not GPU probe output"):
        parse_probe("Traceback (most recent call last): ...")


# ---------------------------------------------------------------- the probe script itself


def fake_gpu_environment(spec: str, *, with_smi: bool = False) -> dict[str, str]:
    """The stand-in pynvml playing `spec`; on PATH only the stand-in nvidia-smi, or nothing (so that a
    real nvidia-smi on a GPU machine stays out of it)."""
    path = FAKE_GPU if with_smi else FAKE_GPU / "empty"
    return {"PYTHONPATH": str(FAKE_GPU), "FAKE_GPU": str(FAKE_GPU / f"{spec}.json"), "PATH": str(path)}


def run_probe(spec: str, *, with_smi: bool) -> str:
    """PROBE_SCRIPT under this interpreter with the stand-in pynvml playing `spec`."""
    env = {**os.environ, **fake_gpu_environment(spec, with_smi=with_smi)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return done.stdout


def test_probe_script_on_a_gb10_turns_notsupported_into_unified_memory() -> None:
    probe = parse_probe(run_probe("gb10", with_smi=False))
    assert probe.source == "nvml"
    assert probe.unified_memory
    found = measurements(probe)
    assert (found["name"], found["cuda"], found["compute_capability"]) == ("NVIDIA GB10", "13.0", "12.1")
    assert found["memory_total_gib"] > 0


def test_probe_script_falls_back_to_nvidia_smi_without_pynvml() -> None:
    probe = parse_probe(run_probe("absent", with_smi=True))
    assert probe.source == "nvidia-smi"
    assert probe.problems[0].startswith("no NVML")
    assert measurements(probe)["name"] == "NVIDIA GB10"
    assert probe.unified_memory


def test_probe_script_without_driver_or_nvidia_smi_finds_nothing() -> None:
    probe = parse_probe(run_probe("no_driver", with_smi=False))
    assert probe.gpus == ()
    assert probe.problems == (
        "NVML: NVMLError_LibraryNotFound: NVML Shared Library Not Found",
        "nvidia-smi: not installed",
    )


# ---------------------------------------------------------------- the step


def context(
    environment: dict[str, str] | None = None, variables: dict[str, Any] | None = None
) -> StepContext:
    return StepContext(LocalConnection(), None, Scope([variables or {}]), environment=environment or {})


def test_step_judges_the_gb10_against_its_expectations() -> None:
    args = {"expect": {"name": "NVIDIA GB10", "count": 1, "cuda": ">= 13.0", "memory_total_gib": "> 1"}}
    result = GpuStep().run(args, context(fake_gpu_environment("gb10")))
    assert result.status is StepStatus.PASS, result.reason
    assert result.expected["name"] == "== NVIDIA GB10"
    assert result.details["gpus"][0]["memory_note"] == UNIFIED_MEMORY_NOTE


def test_step_fails_with_expected_vs_measured() -> None:
    result = GpuStep().run(
        {"expect": {"name": "NVIDIA H100 80GB HBM3"}}, context(fake_gpu_environment("gb10"))
    )
    assert result.status is StepStatus.FAIL
    assert result.reason == "name: expected == NVIDIA H100 80GB HBM3, measured 'NVIDIA GB10'"


def test_step_is_skipped_without_a_gpu() -> None:
    result = GpuStep().run({"expect": {"count": 1}}, context(fake_gpu_environment("no_driver")))
    assert result.status is StepStatus.SKIP
    assert result.reason.startswith("no NVIDIA GPU or driver on localhost: ")


def test_step_fails_clearly_when_the_interpreter_is_missing() -> None:
    result = GpuStep().run({"python": "/nonexistent/python3"}, context())
    assert result.status is StepStatus.FAIL
    assert "could not run with /nonexistent/python3 on localhost" in result.reason


def test_interpreter_follows_ansible_python_interpreter() -> None:
    assert interpreter({}, context()) == sys.executable  # local: this interpreter has nvidia-ml-py
    assert interpreter({}, context(variables={"ansible_python_interpreter": "/opt/py"})) == "/opt/py"
    assert interpreter({"python": "/usr/bin/python3"}, context()) == "/usr/bin/python3"


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU")
def test_real_gpu_step_on_this_machine() -> None:
    result = GpuStep().run(
        {"expect": {"count": ">= 1", "name": "~ ^NVIDIA", "cuda": "~ ^\\d+\\.\\d+$"}}, context()
    )
    assert result.status is StepStatus.PASS, result.reason
    measured = result.measured
    assert measured["memory_total_gib"] > 0
    assert measured["compute_capability"]
    if measured["name"] == "NVIDIA GB10":
        assert measured["memory_source"].startswith("/proc/meminfo")
    else:
        assert measured["memory_source"] == "nvml"
