"""The preflight verify step with recorded host outputs: a DGX Spark that is ready, then the same Spark
with one thing wrong at a time (no NVIDIA runtime in docker, the user not in the docker group, CmaTotal
0, too little disk for the images, too little memory for the models), each failure with its fix; an
H100 host (no CMA check) and this CI machine (no GPU: the GPU checks are skipped, saying so), and the
step run for real here.

Recorded in tests/data/verify/: `preflight_spark_*.txt` are written from the Spark's documented facts
in the probes' framing (no Spark to record on); `preflight_ci_*.txt` were printed by the two probes on
this CI machine (Debian 12, no GPU, a docker CLI without a daemon).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection.base import Become, CommandResult, Connection
from sparkprov.connection.local import LocalConnection
from sparkprov.facts.host import HOST_PROBE_SCRIPT
from sparkprov.playbook.templating import Scope
from sparkprov.verify import get_step
from sparkprov.verify.base import StepContext, StepResult, StepStatus
from sparkprov.verify.preflight import EXTRA_SCRIPT, GPU_CHECKS, PreflightStep

DATA = Path(__file__).resolve().parents[1] / "data" / "verify"
PYTORCH = "nvcr.io/nvidia/pytorch:25.11-py3"
VLLM = "nvcr.io/nvidia/vllm:25.11-py3"
SPARK_RUNTIMES = '{"io.containerd.runc.v2":{"path":"runc"},"nvidia":{"path":"nvidia-container-runtime"},'


def recorded(name: str) -> str:
    return (DATA / f"preflight_{name}.txt").read_text(encoding="utf-8")


class RecordedHost(Connection):
    """Answers the facts probe and the preflight probe with recorded outputs; records the calls."""

    host_name = "spark-01"

    def __init__(self, facts: str, extra: str) -> None:
        self.outputs = {HOST_PROBE_SCRIPT: facts, EXTRA_SCRIPT: extra}
        self.calls: list[list[str]] = []

    def run(self, argv: list[str], **kwargs: Any) -> CommandResult:
        self.calls.append(argv)
        assert argv[:2] == ["/bin/sh", "-c"]
        return CommandResult(tuple(argv), 0, self.outputs[argv[2]], "", 0.01)

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError


def preflight(
    args: dict[str, Any] | None = None,
    facts: str | None = None,
    extra: str | None = None,
    **changes: tuple[str, str],
) -> tuple[StepResult, RecordedHost]:
    """The step on the recorded Spark; `changes` maps a name to (old, new) text in facts or extra."""
    facts, extra = facts or recorded("spark_facts"), extra or recorded("spark_extra")
    for old, new in changes.values():
        assert old in facts or old in extra, old
        facts, extra = facts.replace(old, new), extra.replace(old, new)
    conn = RecordedHost(facts, extra)
    result = PreflightStep().run(args or {}, StepContext(conn, None, Scope([{}])))
    return result, conn


def failed_checks(result: StepResult) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in result.details["checks"] if c["status"] == "fail"}


def test_a_ready_spark_passes_every_check_in_two_commands() -> None:
    result, conn = preflight({"images": [PYTORCH, {"name": VLLM, "gb": 25}], "models_gb": [43, 4.9]})
    assert result.status is StepStatus.PASS, result.reason
    assert result.measured == {
        "os": "Ubuntu 24.04",
        "kernel": "6.11.0-1016-nvidia",
        "arch": "aarch64",
        "gpu": "NVIDIA GB10",
        "driver": "580.95.05",
        "cuda": "13.0",
        "docker_reachable": True,
        "nvidia_runtime": True,
        "docker_group": True,
        "disk_free_gb": 3086.84,
        "disk_needed_gb": 25.0,  # the pytorch image is there already
        "cma_total_mb": 64,
        "swap_gb": 16.0,
        "earlyoom": False,
        "swap_or_earlyoom": True,
        "mem_available_gb": 114.32,
    }
    assert result.expected["disk_free_gb"] == ">= 25"
    assert result.expected["mem_available_gb"] == ">= 47.9"
    assert result.reason == ""
    assert {c["status"] for c in result.details["checks"]} == {"pass"}
    assert [argv[2] for argv in conn.calls] == [HOST_PROBE_SCRIPT, EXTRA_SCRIPT]
    assert conn.calls[1][3:] == ["sh", "", PYTORCH, VLLM]  # disk_path (default) and the image names
    assert result.details["disk_path"] == "/var/lib/docker"


def test_missing_nvidia_runtime_says_how_to_configure_it() -> None:
    result, _ = preflight(runtime=(SPARK_RUNTIMES, '{"io.containerd.runc.v2":{"path":"runc"},'))
    assert result.status is StepStatus.FAIL
    check = failed_checks(result)["nvidia_runtime"]
    assert (
        check["fix"] == "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker"
    )
    assert result.reason == (
        "nvidia_runtime: expected == true, measured false -> fix: sudo nvidia-ctk runtime configure "
        "--runtime=docker && sudo systemctl restart docker"
    )


def test_missing_container_toolkit_is_installed_first() -> None:
    result, _ = preflight(
        runtime=(SPARK_RUNTIMES, '{"io.containerd.runc.v2":{"path":"runc"},'),
        ctk=("@@sparkprov nvidia-ctk\ninstalled\n", "@@sparkprov nvidia-ctk\n"),
    )
    assert failed_checks(result)["nvidia_runtime"]["fix"] == (
        "sudo apt install nvidia-container-toolkit && sudo nvidia-ctk runtime configure --runtime=docker "
        "&& sudo systemctl restart docker"
    )


def test_user_not_in_the_docker_group() -> None:
    result, _ = preflight(
        groups=("lpadmin docker\n", "lpadmin\n"),
        socket=("present\nwritable\n", "present\n"),
        docker=("28.3.3\n" + SPARK_RUNTIMES, "\n"),  # docker info is refused to this user
    )
    assert result.status is StepStatus.FAIL
    failed = failed_checks(result)
    assert sorted(failed) == ["docker_group", "docker_reachable", "nvidia_runtime"]
    group_fix = "sudo usermod -aG docker nvidia, then log out and in again (or run `newgrp docker`)"
    assert failed["docker_group"]["fix"] == group_fix
    assert failed["docker_reachable"]["fix"] == f"the daemon's socket is not nvidia's to use: {group_fix}"
    assert failed["nvidia_runtime"]["measured"] is None  # not measured: docker did not answer
    assert failed["nvidia_runtime"]["fix"].startswith("docker does not answer nvidia (see docker_reachable)")


def test_cma_total_0() -> None:
    result, _ = preflight(cma=("CmaTotal:          65536 kB", "CmaTotal:              0 kB"))
    assert result.status is StepStatus.FAIL
    check = failed_checks(result)["cma_total_mb"]
    assert (check["expected"], check["measured"]) == ("> 0", 0)
    assert "GRUB_CMDLINE_LINUX" in check["fix"] and "update-grub" in check["fix"]
    assert result.reason.startswith(
        "cma_total_mb: expected > 0, measured 0 -> fix: the kernel reserves no contiguous"
    )


def test_low_disk_for_the_images_still_to_pull() -> None:
    result, _ = preflight(
        {"images": [PYTORCH, VLLM], "image_gb": 30},
        disk=("3844538560 412398712 3236786700  12%", "3844538560 3831641592 12896968  100%"),
    )
    assert result.status is StepStatus.FAIL
    check = failed_checks(result)["disk_free_gb"]
    assert (check["expected"], check["measured"]) == (">= 30", 12.3)
    assert check["fix"].startswith(
        "free space on /var/lib/docker for the images still to pull: `docker image prune"
    )


def test_too_little_memory_for_the_models() -> None:
    result, _ = preflight({"models_gb": 120})
    check = failed_checks(result)["mem_available_gb"]
    assert (check["expected"], check["measured"]) == (">= 120", 114.32)
    assert "drop_caches" in check["fix"]


def test_no_swap_and_no_earlyoom() -> None:
    result, _ = preflight(swap=("SwapTotal:      16777212 kB", "SwapTotal:             0 kB"))
    assert failed_checks(result)["swap_or_earlyoom"]["fix"].startswith("sudo apt install earlyoom")
    result, _ = preflight(
        swap=("SwapTotal:      16777212 kB", "SwapTotal:             0 kB"),
        earlyoom=("@@sparkprov earlyoom\n", "@@sparkprov earlyoom\ninstalled\nactive\n"),
    )
    assert result.status is StepStatus.PASS


def test_expect_overrides_the_defaults() -> None:
    result, _ = preflight({"expect": {"driver": ">= 580.126", "os": "Ubuntu 22.04", "kernel": "~ -nvidia$"}})
    assert result.status is StepStatus.FAIL
    assert sorted(failed_checks(result)) == ["driver", "os"]
    assert result.verdicts["driver"].text == "'580.95.05' < 580.126"
    assert result.verdicts["kernel"].ok


def test_an_h100_host_has_no_cma_check() -> None:
    result, _ = preflight(
        gpu=("NVIDIA GB10, 580.95.05, [N/A]", "NVIDIA H100 80GB HBM3, 580.95.05, 81559"),
        cma=("CmaTotal:          65536 kB", "CmaTotal:              0 kB"),
    )
    assert result.status is StepStatus.PASS, result.reason
    assert result.details["skipped"] == {"cma_total_mb": "only unified-memory GPUs (GB10) need CMA"}
    assert result.reason == "skipped cma_total_mb: only unified-memory GPUs (GB10) need CMA"


def test_a_host_without_a_gpu_skips_the_gpu_checks_and_says_so() -> None:
    args = {"expect": {"os": "~ .", "docker_reachable": "~ .", "swap_or_earlyoom": "~ ."}}
    result, _ = preflight(args, facts=recorded("ci_facts"), extra=recorded("ci_extra"))
    assert result.status is StepStatus.PASS, result.reason
    assert sorted(result.details["skipped"]) == sorted(GPU_CHECKS)
    assert result.reason == "skipped driver, cuda, nvidia_runtime, cma_total_mb: no NVIDIA GPU on spark-01"
    assert not set(GPU_CHECKS) & set(result.verdicts)
    assert result.measured["docker_reachable"] is False


def test_a_gpu_on_the_bus_without_a_driver_is_not_skipped() -> None:
    result, _ = preflight(
        gpu=("@@sparkprov gpu-query\nNVIDIA GB10, 580.95.05, [N/A]\n", "@@sparkprov gpu-query\n"),
        smi=("@@sparkprov gpu-cuda\n| NVIDIA-SMI", "@@sparkprov gpu-cuda\n| none"),
    )
    assert result.status is StepStatus.FAIL
    failed = failed_checks(result)
    assert failed["driver"]["text"] == "not measured (expected >= 580)"
    assert failed["driver"]["fix"].startswith("install or upgrade the NVIDIA driver")


def test_failures_on_this_ci_machine_name_their_fixes() -> None:
    result, _ = preflight(facts=recorded("ci_facts"), extra=recorded("ci_extra"))
    assert result.status is StepStatus.FAIL
    assert sorted(failed_checks(result)) == ["docker_reachable", "os", "swap_or_earlyoom"]
    assert failed_checks(result)["docker_reachable"]["fix"].startswith("sudo systemctl enable --now docker")
    assert result.reason.endswith(
        "skipped driver, cuda, nvidia_runtime, cma_total_mb: no NVIDIA GPU on spark-01"
    )


def test_the_step_runs_for_real_on_this_machine() -> None:
    ctx = StepContext(LocalConnection(), None, Scope([{}]))
    result = get_step("preflight").run({"images": ["sparkprov-absent:1"], "disk_path": "/"}, ctx)
    assert result.status in (StepStatus.PASS, StepStatus.FAIL)
    measured = result.measured
    assert measured["disk_needed_gb"] == 20.0
    assert measured["disk_free_gb"] > 0
    assert measured["mem_available_gb"] > 0
    assert result.details["disk_path"] == "/"
    for check in result.details["checks"]:
        assert check["status"] in ("pass", "skip") or check["fix"], check


@pytest.mark.parametrize("value", [{"images": [{"gb": 3}]}, {"models_gb": "lots"}, {"disk": "/"}])
def test_arguments_are_checked_by_the_schema(value: dict[str, Any]) -> None:
    from sparkprov.playbook.schema import validate

    assert validate(value, "verify/preflight", root=None, base_path=[], fallback=None, what="t")
