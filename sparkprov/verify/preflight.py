"""`preflight`: is this host ready for the playbook? Each check a verdict, and the fix for each failure.

    - name: host is ready
      preflight:
        images: [nvcr.io/nvidia/pytorch:25.11-py3, {name: "nvcr.io/nvidia/vllm:25.11-py3", gb: 25}]
        models_gb: 43                       # what the declared models need in memory at once
        expect: {driver: ">= 580.95", os: "Ubuntu 24.04"}

Two commands on the host: the facts probe (`gather_host_facts`: OS, kernel, /proc/meminfo with
CmaTotal and SwapTotal, GPU, driver and CUDA from nvidia-smi, docker's version and runtimes) and
`EXTRA_SCRIPT` for what facts do not say (the user's groups, free disk, earlyoom, the NVIDIA
container toolkit, the docker socket, NVIDIA display controllers on the PCI bus, which of the
declared images are already present).

Checks (measured name: default expectation): `os` ("Ubuntu 24.04", DGX OS), `driver` (>= 580),
`cuda` (>= 13.0), `docker_reachable` (true), `nvidia_runtime` (docker has the `nvidia` runtime),
`docker_group` (the user may use docker without sudo), `cma_total_mb` (> 0, on unified memory),
`swap_or_earlyoom` (true: over-allocating unified memory can freeze a Spark instead of raising OOM),
`disk_free_gb` (>= what the declared images that are not present yet need, `image_gb` GiB each
unless an image says `gb`), `mem_available_gb` (>= `models_gb`). `kernel`, `arch`, `gpu`, `swap_gb`,
`earlyoom` and `disk_needed_gb` are measured too, for `expect:` to hold them to something.

A host without an NVIDIA GPU (no GPU for nvidia-smi and none on the PCI bus) skips the GPU checks
(driver, cuda, nvidia_runtime, cma_total_mb) and says so; `cma_total_mb` is checked only on a
unified-memory GPU (GB10). Every failed check comes with its fix, in the reason and in
`details.checks`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sparkprov.connection.base import CommandTimeout
from sparkprov.facts.host import (
    UNIFIED_MEMORY_NOTE,
    HostFacts,
    HostFactsError,
    _split_sections,
    gather_host_facts,
)
from sparkprov.verify.base import MetricVerdict, Step, StepContext, StepResult, judge
from sparkprov.verify.expect import parse_expectation

DEFAULT_IMAGE_GB = 20.0
DEFAULT_TIMEOUT_S = 60.0
KIB_PER_GIB = 1024**2
GPU_CHECKS = ("driver", "cuda", "nvidia_runtime", "cma_total_mb")

# Run as `/bin/sh -c EXTRA_SCRIPT sh DISK_PATH IMAGE...`; sections framed like the facts probe.
EXTRA_SCRIPT = r"""LC_ALL=C; export LC_ALL
PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"; export PATH
s() { printf '\n@@sparkprov %s\n' "$1"; }
have() { command -v "$1" >/dev/null 2>&1; }
T=; if timeout 1 true >/dev/null 2>&1; then T='timeout 10'; fi
disk=$1; shift
if [ -z "$disk" ]; then if [ -d /var/lib/docker ]; then disk=/var/lib/docker; else disk=/; fi; fi
s begin; echo 1
s groups; id -Gn 2>/dev/null
s disk-path; printf '%s\n' "$disk"
s df; df -Pk "$disk" 2>/dev/null | tail -n +2
s earlyoom
if have earlyoom; then echo installed; fi
if have systemctl && systemctl is-active --quiet earlyoom 2>/dev/null; then echo active; fi
s nvidia-ctk; if have nvidia-ctk; then echo installed; fi
s docker-cli; if have docker; then echo installed; fi
s docker-socket
if [ -S /var/run/docker.sock ]; then echo present; fi
if [ -w /var/run/docker.sock ]; then echo writable; fi
s nvidia-pci
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ]; then
    case "$(cat "$d/class" 2>/dev/null)" in 0x03*) echo "${d##*/}";; esac
  fi
done
s images
if have docker; then
  for image in "$@"; do
    size=$($T docker image inspect --format '{{.Size}}' "$image" 2>/dev/null) || size=absent
    printf '%s\t%s\n' "$image" "$size"
  done
fi
s end; echo 1
exit 0
"""

_DF_LINE = re.compile(r"\s(\d+)\s+(\d+)\s+(\d+)\s+\d+%\s")


@dataclass(frozen=True)
class Image:
    name: str
    gb: float


@dataclass(frozen=True)
class HostState:
    """The facts and what EXTRA_SCRIPT found."""

    facts: HostFacts
    groups: tuple[str, ...]
    disk_path: str
    disk_free_kib: int | None
    earlyoom_installed: bool
    earlyoom_active: bool
    nvidia_ctk: bool
    docker_cli: bool
    docker_socket: bool
    docker_socket_writable: bool
    nvidia_pci_gpus: tuple[str, ...]
    present_images: frozenset[str]

    @property
    def has_gpu(self) -> bool:
        return bool(self.facts.gpus or self.nvidia_pci_gpus)

    @property
    def unified_memory(self) -> bool:
        return any(g.memory_note == UNIFIED_MEMORY_NOTE or "GB10" in g.name for g in self.facts.gpus)


def images_of(args: dict[str, Any]) -> list[Image]:
    """`images:` entries (a name, or `{name, gb}`) with their sizes (`image_gb` GiB by default)."""
    default = float(args.get("image_gb", DEFAULT_IMAGE_GB))
    found = []
    for entry in args.get("images") or []:
        if isinstance(entry, dict):
            found.append(Image(str(entry["name"]), float(entry.get("gb", default))))
        else:
            found.append(Image(str(entry), default))
    return found


def models_gb(args: dict[str, Any]) -> float | None:
    value = args.get("models_gb")
    if value is None:
        return None
    return float(sum(value)) if isinstance(value, list) else float(value)


def parse_extra(stdout: str, facts: HostFacts) -> HostState:
    """EXTRA_SCRIPT's output (ValueError when it is not) with the facts, as a `HostState`."""
    sections = _split_sections(stdout)
    lines = {
        name: [line.strip() for line in text.splitlines() if line.strip()] for name, text in sections.items()
    }
    df = _DF_LINE.search(" " + sections.get("df", "") + " ")
    present = set()
    for line in lines.get("images", []):
        name, _, size = line.rpartition("\t")
        if name and size.isdigit():
            present.add(name)
    return HostState(
        facts=facts,
        groups=tuple(" ".join(lines.get("groups", [])).split()),
        disk_path=(lines.get("disk-path") or ["/"])[0],
        disk_free_kib=int(df.group(3)) if df else None,
        earlyoom_installed="installed" in lines.get("earlyoom", []),
        earlyoom_active="active" in lines.get("earlyoom", []),
        nvidia_ctk="installed" in lines.get("nvidia-ctk", []),
        docker_cli="installed" in lines.get("docker-cli", []),
        docker_socket="present" in lines.get("docker-socket", []),
        docker_socket_writable="writable" in lines.get("docker-socket", []),
        nvidia_pci_gpus=tuple(lines.get("nvidia-pci", [])),
        present_images=frozenset(present),
    )


def _gib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / KIB_PER_GIB, 2)


def measurements(state: HostState, images: list[Image]) -> dict[str, Any]:
    facts = state.facts
    gpu = facts.gpus[0] if facts.gpus else None
    earlyoom = state.earlyoom_installed or state.earlyoom_active
    found: dict[str, Any] = {
        "os": f"{facts.distribution} {facts.os_version}".strip(),
        "kernel": facts.kernel,
        "arch": facts.arch,
        "gpu": ", ".join(dict.fromkeys(g.name for g in facts.gpus)) or None,
        "driver": gpu.driver if gpu else None,
        "cuda": gpu.cuda if gpu else None,
        "docker_reachable": facts.docker_version is not None,
        "nvidia_runtime": "nvidia" in facts.docker_runtimes if facts.docker_version else None,
        "docker_group": facts.uid == 0 or "docker" in state.groups,
        "disk_free_gb": _gib(state.disk_free_kib),
        "disk_needed_gb": round(sum(i.gb for i in images if i.name not in state.present_images), 2),
        "cma_total_mb": (facts.cma_total_kib or 0) // 1024,
        "swap_gb": _gib(facts.swap_total_kib),
        "earlyoom": earlyoom,
        "swap_or_earlyoom": facts.swap_total_kib > 0 or earlyoom,
        "mem_available_gb": _gib(facts.mem_available_kib),
    }
    return {k: v for k, v in found.items() if v is not None}


def fixes(state: HostState) -> dict[str, str]:
    """What to do about each check that fails on this host."""
    user = state.facts.user
    group = f"sudo usermod -aG docker {user}, then log out and in again (or run `newgrp docker`)"
    toolkit = "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker"
    if not state.nvidia_ctk:
        toolkit = "sudo apt install nvidia-container-toolkit && " + toolkit
    if state.facts.docker_version is None:
        toolkit = f"docker does not answer {user} (see docker_reachable); then, if still missing: {toolkit}"
    if not state.docker_cli:
        docker = "sudo apt install docker.io && sudo systemctl enable --now docker"
    elif state.docker_socket and not state.docker_socket_writable and "docker" not in state.groups:
        docker = f"the daemon's socket is not {user}'s to use: {group}"
    else:
        docker = "sudo systemctl enable --now docker (and `sudo journalctl -u docker` if it does not start)"
    return {
        "os": "sparkprov's Spark playbooks target DGX OS (Ubuntu 24.04): reinstall from NVIDIA's DGX OS "
        "image, or set expect.os for this host",
        "kernel": "install the kernel the platform needs (DGX OS: sudo apt update && sudo apt full-upgrade) "
        "and reboot",
        "driver": "install or upgrade the NVIDIA driver (DGX OS: sudo apt update && sudo apt full-upgrade; "
        "Ubuntu: sudo apt install nvidia-driver-580-open) and reboot",
        "cuda": "the CUDA version is the driver's: upgrade the NVIDIA driver (see driver) and reboot",
        "docker_reachable": docker,
        "nvidia_runtime": toolkit,
        "docker_group": group,
        "disk_free_gb": f"free space on {state.disk_path} for the images still to pull: "
        "`docker image prune -a`, `docker builder prune`, or move Docker's data-root to a larger disk",
        "cma_total_mb": "the kernel reserves no contiguous memory (CmaTotal 0 in /proc/meminfo): boot "
        "DGX OS's NVIDIA kernel, or add a cma= reservation (e.g. cma=64M) to GRUB_CMDLINE_LINUX in "
        "/etc/default/grub, run sudo update-grub and reboot",
        "swap_or_earlyoom": "sudo apt install earlyoom && sudo systemctl enable --now earlyoom "
        "(over-allocating unified memory can freeze the machine instead of raising OOM), or add swap",
        "earlyoom": "sudo apt install earlyoom && sudo systemctl enable --now earlyoom",
        "mem_available_gb": "free memory for the models: stop idle models and containers (`ollama ps`, "
        "`docker ps`) and drop the page cache: sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'",
    }


def skipped_checks(state: HostState, host: str) -> dict[str, str]:
    """GPU checks that do not apply to this host, with why."""
    if not state.has_gpu:
        return {name: f"no NVIDIA GPU on {host}" for name in GPU_CHECKS}
    if not state.unified_memory:
        return {"cma_total_mb": "only unified-memory GPUs (GB10) need CMA"}
    return {}


class PreflightStep(Step):
    name = "preflight"
    default_expect = {
        "os": "Ubuntu 24.04",
        "driver": ">= 580",
        "cuda": ">= 13.0",
        "docker_reachable": True,
        "nvidia_runtime": True,
        "docker_group": True,
        "cma_total_mb": "> 0",
        "swap_or_earlyoom": True,
    }

    def run(self, args: dict[str, Any], ctx: StepContext) -> StepResult:
        expectations = self.expectations(args)
        timeout = float(args.get("timeout") or ctx.timeout or DEFAULT_TIMEOUT_S)
        images = images_of(args)
        try:
            facts = gather_host_facts(ctx.conn, timeout=timeout)
            argv = [
                "/bin/sh",
                "-c",
                EXTRA_SCRIPT,
                "sh",
                str(args.get("disk_path") or ""),
                *[i.name for i in images],
            ]
            state = parse_extra(ctx.conn.run(argv, timeout=timeout).stdout, facts)
        except (HostFactsError, ValueError, CommandTimeout) as exc:
            return StepResult.fail(f"preflight probe on {ctx.host}: {exc}")
        measured = measurements(state, images)
        written = args.get("expect") or {}
        if "disk_free_gb" not in written and measured.get("disk_needed_gb"):
            expectations["disk_free_gb"] = parse_expectation(f">= {measured['disk_needed_gb']:g}")
        wanted = models_gb(args)
        if "mem_available_gb" not in written and wanted is not None:
            expectations["mem_available_gb"] = parse_expectation(f">= {wanted:g}")
        skipped = skipped_checks(state, ctx.host)
        expectations = {k: v for k, v in expectations.items() if k not in skipped}
        result = judge(expectations, measured, details={"disk_path": state.disk_path})
        return _with_fixes(result, fixes(state), skipped)


def _with_fixes(result: StepResult, fix: dict[str, str], skipped: dict[str, str]) -> StepResult:
    """Every check in `details.checks` (failed ones with their fix), failures' fixes in the reason."""
    checks = [_check(name, verdict, fix.get(name)) for name, verdict in result.verdicts.items()]
    checks += [{"check": name, "status": "skip", "reason": why} for name, why in skipped.items()]
    result.details["checks"] = checks
    if skipped:
        result.details["skipped"] = skipped
    failed = [(name, v) for name, v in result.verdicts.items() if not v.ok]
    parts = [f"{v.summary(name)} -> fix: {fix.get(name, 'see the expectation')}" for name, v in failed]
    if skipped:
        parts.append(f"skipped {', '.join(skipped)}: {'; '.join(sorted(set(skipped.values())))}")
    result.reason = "; ".join(parts)
    return result


def _check(name: str, verdict: MetricVerdict, fix: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"check": name, "status": "pass" if verdict.ok else "fail", **verdict.as_dict()}
    if not verdict.ok and fix:
        entry["fix"] = fix
    return entry
