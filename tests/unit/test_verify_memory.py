"""The memory verify step: its probe's output parsed (a GB10-like sweep that stops by headroom, an H100
sweep, a CUDA out-of-memory error, no torch, no CUDA), the headroom arithmetic, the theoretical
bandwidth table, how the probe is run (docker with NVIDIA's flags and the script on stdin, or the
host's python), the page-cache drop through the drop_caches module, and the probe script itself run
for real here (no torch; the CPU build of torch: no CUDA) and on a GPU machine (`-m gpu`).

Recorded outputs in tests/data/verify/: `memory_h100.jsonl` and `memory_h100_oom.jsonl` were printed by
the probe on an H100 80GB HBM3 (torch 2.11, CUDA 13.0; the OOM one with
`torch.cuda.set_per_process_memory_fraction(0.1)` set before the probe ran, so that torch raised its
OutOfMemoryError at 8 GiB); `memory_no_torch.jsonl` and `memory_no_cuda.jsonl` on this CI machine
(python -I -S, and the CPU build of torch 2.13); `memory_gb10_headroom.jsonl` is written from the
Spark's documented figures with the probe's own `plan_step` (no GB10 is available to record on), with
the NGC image's banner in front as `docker run` prints it.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparkprov.connection.base import Become, CommandResult, Connection
from sparkprov.connection.local import LocalConnection
from sparkprov.playbook.templating import Scope
from sparkprov.verify import get_step
from sparkprov.verify.bandwidth import bandwidth_measurements, copy_buffer_bytes, theoretical_gbps
from sparkprov.verify.base import StepContext, StepStatus
from sparkprov.verify.container import GPU_FLAGS
from sparkprov.verify.memory import (
    GIB,
    MIN_STEP_BYTES,
    MemoryStep,
    ProbeError,
    headroom_bytes,
    measurements,
    parse_probe,
    plan_step,
    probe_config,
    probe_script,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "verify"
REPO = Path(__file__).resolve().parents[2]


def recorded(name: str) -> str:
    return (DATA / f"memory_{name}.jsonl").read_text(encoding="utf-8")


class FakeHost(Connection):
    """Answers the probe (docker or python) with recorded output and the drop_caches module's
    commands as a host where root may or may not write /proc/sys/vm/drop_caches; records every call."""

    host_name = "spark"

    def __init__(self, probe: str = "", rc: int = 0, stderr: str = "", drop: str | None = None) -> None:
        self.probe = CommandResult((), rc, probe, stderr, 0.1)
        self.drop = drop  # None: not asked; "writable"/"not-writable": what the drop check finds
        self.calls: list[dict[str, Any]] = []
        self.meminfo = [b"MemAvailable:   90000000 kB\n", b"MemAvailable:   110000000 kB\n"]

    def run(self, argv: list[str], **kwargs: Any) -> CommandResult:
        self.calls.append({"argv": argv, **kwargs})
        if argv[:2] == ["/bin/sh", "-c"] and "drop_caches" in argv[2]:
            if argv[2].startswith("id -u"):
                return CommandResult(tuple(argv), 0, f"0\n{self.drop}\n", "", 0.01)
            return CommandResult(tuple(argv), 0, "", "", 0.2)
        return self.probe

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        assert [op["path"] for op in ops] == ["/proc/meminfo"]
        return [{"data_b64": base64.b64encode(self.meminfo.pop(0)).decode()}]


def context(conn: Connection | None = None, **variables: Any) -> StepContext:
    return StepContext(conn or LocalConnection(), None, Scope([variables]))


SPARK_ARGS = {"target_gb": 100, "step_gb": 10, "headroom_gb": 10, "image": "nvcr.io/nvidia/pytorch:25.11-py3"}


# ---------------------------------------------------------------- recorded probe outputs


def test_gb10_sweep_stops_by_headroom_and_never_goes_below_it() -> None:
    probe = parse_probe(recorded("gb10_headroom"))  # the NGC banner in front is ignored
    found = measurements(probe)
    assert found == {
        "achieved_gb": 93.69,
        "target_gb": 100.0,
        "stopped_by": "headroom",
        "headroom_gb": 10.45,  # a tenth of MemAvailable (104.5 GiB) is more than headroom_gb: 10
        "available_gb": 104.5,
        "steps": 10,
        "seconds": 5.32,
        "device": "NVIDIA GB10",
        "unified": True,
        "bandwidth_gbps": 218.9,
        "baseline_gbps": 221.3,
        "bandwidth_vs_baseline": 0.989,
        "theoretical_gbps": 273.0,
        "bandwidth_ratio": 0.802,
    }
    headroom = probe.sweep["headroom"]
    for step in probe.sweep["steps"]:
        assert step["available"] - step["allocated"] >= headroom
    assert probe.sweep["steps"][-1]["allocated"] < probe.sweep["steps"][-1]["requested"]  # cut to fit
    assert probe.sweep["pool"] == "MemAvailable"


def test_h100_sweep_uses_the_devices_free_memory() -> None:
    probe = parse_probe(recorded("h100"))
    found = measurements(probe)
    assert (found["device"], found["unified"], found["stopped_by"]) == (
        "NVIDIA H100 80GB HBM3",
        False,
        "headroom",
    )
    assert found["available_gb"] == 78.66
    assert found["headroom_gb"] == 10.0
    assert found["achieved_gb"] == 68.57
    assert found["theoretical_gbps"] == 3350.0
    assert 2500 < found["bandwidth_gbps"] < 3350
    assert 0.9 <= found["bandwidth_vs_baseline"] <= 1.1
    assert probe.sweep["pool"] == "device_free"


def test_recorded_steps_are_reported_per_step() -> None:
    result = MemoryStep().run(SPARK_ARGS, context(FakeHost(recorded("gb10_headroom"))))
    assert result.status is StepStatus.PASS, result.reason
    first, last = result.details["steps"][0], result.details["steps"][-1]
    assert first == {
        "requested_gb": 10.0,
        "allocated_gb": 10.0,
        "achieved_gb": 10.0,
        "seconds": 0.61,
        "available_before_gb": 104.5,
        "mem_available_before_gb": 104.5,
    }
    assert (last["requested_gb"], last["allocated_gb"], last["achieved_gb"]) == (10.0, 3.69, 93.69)
    assert result.details["pool"] == "MemAvailable"
    assert result.details["ran"] == "docker run nvcr.io/nvidia/pytorch:25.11-py3"


def test_an_out_of_memory_error_is_reported_and_fails_the_default_expectation() -> None:
    result = MemoryStep().run(SPARK_ARGS, context(FakeHost(recorded("h100_oom"))))
    assert result.status is StepStatus.FAIL
    assert result.reason == "stopped_by: expected ~ ^(target|headroom)$, measured 'oom_error'"
    assert result.measured["achieved_gb"] == 6.0
    assert result.details["oom_error"].startswith("OutOfMemoryError: CUDA out of memory.")
    assert "bandwidth_gbps" in result.measured  # everything was freed and the probe went on


def test_expectations_on_achieved_size_and_bandwidth() -> None:
    args = {**SPARK_ARGS, "expect": {"achieved_gb": ">= 90", "bandwidth_ratio": ">= 0.85"}}
    result = MemoryStep().run(args, context(FakeHost(recorded("gb10_headroom"))))
    assert result.status is StepStatus.FAIL
    assert result.reason == "bandwidth_ratio: expected >= 0.85, measured 0.802"
    assert result.verdicts["achieved_gb"].ok


def test_theoretical_gbps_argument_overrides_the_table() -> None:
    args = {**SPARK_ARGS, "theoretical_gbps": 250}
    result = MemoryStep().run(args, context(FakeHost(recorded("gb10_headroom"))))
    assert (result.measured["theoretical_gbps"], result.measured["bandwidth_ratio"]) == (250, 0.876)


@pytest.mark.parametrize(
    ("recording", "reason"),
    [
        ("no_torch", "no torch for /root/.pyenv/versions/3.11.7/bin/python3: ModuleNotFoundError: "),
        ("no_cuda", "torch 2.13.0+cpu (a CPU-only build) sees no CUDA device on spark"),
    ],
)
def test_no_torch_or_no_cuda_is_a_skip_with_the_reason(recording: str, reason: str) -> None:
    result = MemoryStep().run(SPARK_ARGS, context(FakeHost(recorded(recording))))
    assert result.status is StepStatus.SKIP
    assert result.reason.startswith(reason)


def test_a_probe_killed_mid_sweep_reports_how_far_it_got() -> None:
    steps = [line for line in recorded("gb10_headroom").splitlines() if '"event": "step"' in line][:3]
    conn = FakeHost("\n".join(steps), rc=137, stderr="Killed")
    result = MemoryStep().run(SPARK_ARGS, context(conn))
    assert result.status is StepStatus.FAIL
    assert result.reason == "the memory probe on spark stopped after 3 step(s) at 30.0 GiB: Killed"
    assert result.measured == {"achieved_gb": 30.0, "steps": 3}


def test_output_that_is_not_the_probes() -> None:
    with pytest.raises(ProbeError, match="not memory probe output"):
        parse_probe("Traceback (most recent call last):\n  ...")
    result = MemoryStep().run(SPARK_ARGS, context(FakeHost("", rc=1, stderr="python3: not found")))
    assert result.status is StepStatus.FAIL
    assert (
        "the memory probe did not run (docker run nvcr.io/nvidia/pytorch:25.11-py3) on spark" in result.reason
    )


# ---------------------------------------------------------------- headroom arithmetic


def test_headroom_is_the_larger_of_headroom_gb_and_a_tenth_of_available() -> None:
    assert headroom_bytes(120 * GIB, 10) == 12 * GIB
    assert headroom_bytes(50 * GIB, 10) == 10 * GIB
    assert headroom_bytes(50 * GIB, 0) == 5 * GIB


def test_plan_step_examples() -> None:
    assert plan_step(100 * GIB, 0, 8 * GIB, 10 * GIB, 10 * GIB) == (8 * GIB, "")  # the last bit
    assert plan_step(100 * GIB, 8 * GIB, 8 * GIB, 10 * GIB, 10 * GIB) == (0, "target")
    assert plan_step(15 * GIB, 80 * GIB, 100 * GIB, 10 * GIB, 10 * GIB) == (5 * GIB, "")  # cut to fit
    assert plan_step(10 * GIB, 85 * GIB, 100 * GIB, 10 * GIB, 10 * GIB) == (0, "headroom")
    assert plan_step(10 * GIB + MIN_STEP_BYTES - 1, 0, 100 * GIB, 10 * GIB, 10 * GIB) == (0, "headroom")
    assert plan_step(5 * GIB, 0, 100 * GIB, 10 * GIB, 10 * GIB) == (0, "headroom")  # already below


SIZES = st.integers(min_value=0, max_value=256 * GIB)


@given(available=SIZES, allocated=SIZES, target=SIZES, step=st.integers(1, 64 * GIB), headroom=SIZES)
def test_a_planned_step_never_leaves_less_than_the_headroom(
    available: int, allocated: int, target: int, step: int, headroom: int
) -> None:
    size, why = plan_step(available, allocated, target, step, headroom)
    if size:
        assert why == ""
        assert available - size >= headroom
        assert size <= step and allocated + size <= target
    else:
        assert why in ("target", "headroom")
        assert why == "target" or available - min(step, target - allocated) < headroom


@given(start=st.integers(0, 256 * GIB), target_gib=st.integers(1, 200), step_gib=st.integers(1, 20))
def test_a_whole_sweep_stays_above_the_headroom(start: int, target_gib: int, step_gib: int) -> None:
    headroom = headroom_bytes(start, 10)
    available, allocated = start, 0
    while True:
        size, why = plan_step(available, allocated, target_gib * GIB, step_gib * GIB, headroom)
        if not size:
            break
        available, allocated = available - size, allocated + size
        assert available >= headroom
    assert allocated <= target_gib * GIB
    assert why == "target" or allocated < target_gib * GIB


# ---------------------------------------------------------------- theoretical bandwidth


@pytest.mark.parametrize(
    ("name", "gbps"),
    [
        ("NVIDIA GB10", 273.0),
        ("NVIDIA H100 80GB HBM3", 3350.0),
        ("NVIDIA H100 PCIe", 2000.0),
        ("NVIDIA H100 NVL", 3900.0),
        ("NVIDIA H200", 4800.0),
        ("NVIDIA H200 NVL", 4800.0),
        ("NVIDIA A100-SXM4-80GB", 2039.0),
        ("NVIDIA B200", None),
        (None, None),
    ],
)
def test_theoretical_bandwidth_by_device_name(name: str | None, gbps: float | None) -> None:
    assert theoretical_gbps(name) == gbps


def test_unknown_device_has_no_ratio() -> None:
    found = bandwidth_measurements({"kernel_gbps": [1500.0, 1510.0, 1490.0], "copy_gbps": [1500.0]}, None)
    assert found == {"bandwidth_gbps": 1500.0, "baseline_gbps": 1500.0, "bandwidth_vs_baseline": 1.0}


def test_copy_buffer_is_a_gib_or_a_tenth_of_what_is_free() -> None:
    assert copy_buffer_bytes(100 * GIB) == GIB
    assert copy_buffer_bytes(5 * GIB) == 512 * 1024**2
    assert copy_buffer_bytes(100 * 1024**2) == 0


# ---------------------------------------------------------------- how the probe runs


def test_in_a_container_with_nvidias_flags_and_the_script_on_stdin() -> None:
    conn = FakeHost(recorded("no_cuda"))
    MemoryStep().run({**SPARK_ARGS, "options": ["--shm-size=1g"]}, context(conn))
    (call,) = conn.calls
    argv = call["argv"]
    assert argv[:3] == ["docker", "run", "--rm"]
    assert tuple(argv[5 : 5 + len(GPU_FLAGS)]) == GPU_FLAGS
    assert argv[-6:-3] == ["-i", "--shm-size=1g", SPARK_ARGS["image"]]
    assert argv[-3:-1] == ["python3", "-"]
    assert json.loads(argv[-1]) == probe_config(SPARK_ARGS)
    assert call["stdin"] == probe_script().encode()


def test_with_the_hosts_torch() -> None:
    conn = FakeHost(recorded("no_cuda"))
    MemoryStep().run(
        {"host_torch": True, "python": "/opt/torch/bin/python3", "bandwidth": False}, context(conn)
    )
    (call,) = conn.calls
    assert call["argv"][:3] == ["/opt/torch/bin/python3", "-c", probe_script()]
    assert json.loads(call["argv"][3]) == {
        "target_gib": 100.0,
        "step_gib": 10.0,
        "headroom_gib": 10.0,
        "bandwidth": False,
    }


def test_without_an_image_or_host_torch_it_says_what_to_give() -> None:
    result = MemoryStep().run({"target_gb": 1}, context(FakeHost()))
    assert result.status is StepStatus.FAIL
    assert "`image`" in result.reason and "`host_torch: true`" in result.reason


def test_a_host_without_the_nvidia_container_runtime() -> None:
    error = (
        'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].'
    )
    result = MemoryStep().run(SPARK_ARGS, context(FakeHost("", rc=125, stderr=error)))
    assert result.status is StepStatus.FAIL
    assert result.reason.startswith("no NVIDIA container runtime on spark")


def test_drop_caches_first_reports_memavailable_before_and_after() -> None:
    conn = FakeHost(recorded("gb10_headroom"), drop="writable")
    result = MemoryStep().run({**SPARK_ARGS, "drop_caches": True}, context(conn))
    assert result.status is StepStatus.PASS, result.reason
    assert result.details["drop_caches"] == {
        "dropped": True,
        "mem_available_before_gb": 85.83,
        "mem_available_after_gb": 104.9,
    }
    drop = [c for c in conn.calls if c["argv"][0] == "/bin/sh"]
    assert drop[-1]["argv"][2] == "sync && echo 3 > /proc/sys/vm/drop_caches"
    assert all(c["become"] == Become("root") for c in drop)
    assert conn.calls[-1]["argv"][0] == "docker"  # the sweep came after


def test_drop_caches_not_permitted_is_reported_and_the_sweep_goes_on() -> None:
    conn = FakeHost(recorded("gb10_headroom"), drop="not-writable")
    result = MemoryStep().run({**SPARK_ARGS, "drop_caches": True}, context(conn))
    assert result.status is StepStatus.PASS
    assert result.details["drop_caches"]["dropped"] is False
    assert result.details["drop_caches"]["reason"].startswith("not permitted: /proc/sys/vm/drop_caches")
    assert result.measured["achieved_gb"] == 93.69


def test_the_step_is_registered_and_its_schema_needs_image_or_host_torch() -> None:
    from sparkprov.playbook.schema import validate

    assert isinstance(get_step("memory"), MemoryStep)
    problems = validate({"target_gb": 2}, "verify/memory", root=None, base_path=[], fallback=None, what="t")
    assert [p.message for p in problems] == [
        "t: give the memory step an `image` (an NGC PyTorch image) to run in, or `host_torch: true` for "
        "the host's torch"
    ]
    assert not validate(SPARK_ARGS, "verify/memory", root=None, base_path=[], fallback=None, what="t")


# ---------------------------------------------------------------- the probe script for real


def run_script(*python: str) -> str:
    config = json.dumps(probe_config({"target_gb": 1, "step_gb": 0.25}))
    done = subprocess.run(
        [*python, "-", config], input=probe_script(), capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def test_probe_script_without_torch_says_so() -> None:
    probe = parse_probe(run_script(sys.executable, "-I", "-S"))  # no site-packages: no torch
    assert probe.result is not None
    assert probe.result["skip"].startswith(f"no torch for {sys.executable}: ModuleNotFoundError")


def test_standalone_module_with_torch_but_no_cuda_device_skips() -> None:
    """`python -m sparkprov.verify.memory` runs the step on this machine with this interpreter's torch
    (the CPU build here; on a GPU machine CUDA_VISIBLE_DEVICES="" hides the GPU)."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed for this interpreter")
    done = subprocess.run(
        [sys.executable, "-m", "sparkprov.verify.memory", "--target-gb", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["status"] == "skip", document
    no_cuda = r"torch \S+ \((a CPU-only build|CUDA [\d.]+)\) sees no CUDA device on localhost"
    assert re.fullmatch(no_cuda, document["reason"]), document["reason"]
    assert document["details"] == {"ran": f"{sys.executable} on the host"}


# ---------------------------------------------------------------- on a GPU machine


def _gpu_step(args: dict[str, Any]) -> Any:
    pytest.importorskip("torch")
    return MemoryStep().run({"host_torch": True, **args}, context())


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU")
def test_real_sweep_to_2_gb_and_bandwidth() -> None:
    result = _gpu_step(
        {"target_gb": 2, "step_gb": 0.5, "expect": {"achieved_gb": 2, "bandwidth_gbps": "> 100"}}
    )
    assert result.status is StepStatus.PASS, (result.reason, result.details)
    measured = result.measured
    assert (measured["stopped_by"], measured["steps"]) == ("target", 4)
    assert [row["achieved_gb"] for row in result.details["steps"]] == [0.5, 1.0, 1.5, 2.0]
    # the copy kernel within 10% of a plain torch copy benchmark, on the same GPU in the same run
    assert 0.9 <= measured["bandwidth_vs_baseline"] <= 1.1, measured
    if "theoretical_gbps" in measured:
        assert 0.5 <= measured["bandwidth_ratio"] <= 1.0, measured
    assert result.details["available_after_free_gb"] >= measured["available_gb"] - 1  # all freed


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU")
def test_real_sweep_stops_with_the_headroom_left() -> None:
    result = _gpu_step({"target_gb": 4096, "step_gb": 16, "headroom_gb": 12, "bandwidth": False})
    assert result.status is StepStatus.PASS, (result.reason, result.details)
    measured = result.measured
    assert measured["stopped_by"] == "headroom"
    assert measured["headroom_gb"] >= 12
    assert measured["achieved_gb"] <= measured["available_gb"] - measured["headroom_gb"] + 0.01
    assert measured["achieved_gb"] >= measured["available_gb"] - measured["headroom_gb"] - 1
    for row in result.details["steps"]:
        assert row["available_before_gb"] - row["allocated_gb"] >= measured["headroom_gb"] - 0.01
