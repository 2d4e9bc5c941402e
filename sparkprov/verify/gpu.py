"""`gpu`: the host's NVIDIA GPUs as NVML sees them, held against expectations.

    - name: GPU is the GB10
      gpu: {expect: {name: "NVIDIA GB10", count: 1, cuda: ">= 13.0", compute_capability: "12.1"}}

`PROBE_SCRIPT` runs on the target host with its python3 (`python3 -c SCRIPT` through the connection;
on the local machine this interpreter, which has nvidia-ml-py; `python:` or the host variable
`ansible_python_interpreter` choose another). It prints one JSON document: what NVML reports (pynvml,
imported there if it is installed), else what `nvidia-smi --query-gpu` prints, plus /proc/meminfo.
`parse_probe` turns that into a `GpuProbe` on the controller; both are pure and tested with recorded
outputs (H100, GB10, no GPU).

GB10 has unified memory: NVML raises NotSupported for memory info and nvidia-smi prints "[N/A]". The
memory metrics then come from /proc/meminfo (MemTotal, MemAvailable) and say so; they are never 0.
Measured: count, name, driver, cuda ("13.0"), compute_capability ("12.1"), memory_total_gib,
memory_used_gib, memory_available_gib (per GPU; the smallest GPU when they differ), memory_source.
No GPU, no driver: the step is skipped with the reason.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from sparkprov.connection.base import CommandTimeout
from sparkprov.facts.host import UNIFIED_MEMORY_NOTE
from sparkprov.verify.base import Step, StepContext, StepResult, judge

DEFAULT_TIMEOUT_S = 60.0
GIB = 1024**3
SMI_FIELDS = ("name", "driver_version", "memory.total", "memory.used", "compute_cap")

# Runs on the host's own python3 (3.6+): standard library only, pynvml if it is there.
PROBE_SCRIPT = r"""
import json, subprocess

def text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

def error(exc):
    return "%s: %s" % (type(exc).__name__, text(exc))

def nvml():
    try:
        import pynvml
    except ImportError:
        return {"error": "no NVML (the nvidia-ml-py package is not installed for this python)"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return {"error": "NVML: " + error(exc)}
    try:
        found = {"driver": text(pynvml.nvmlSystemGetDriverVersion()), "gpus": []}
        try:
            found["cuda_driver_version"] = int(pynvml.nvmlSystemGetCudaDriverVersion())
        except Exception as exc:
            found["cuda_error"] = error(exc)
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpu = {"index": index, "name": text(pynvml.nvmlDeviceGetName(handle))}
            try:
                gpu["compute_capability"] = list(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
            except Exception as exc:
                gpu["compute_capability_error"] = error(exc)
            try:
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                gpu["memory_total"] = int(memory.total)
                gpu["memory_used"] = int(memory.used)
            except Exception as exc:
                gpu["memory_error"] = error(exc)
            found["gpus"].append(gpu)
        return found
    except Exception as exc:
        return {"error": "NVML: " + error(exc)}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass

def run(argv):
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=30)
    except OSError as exc:
        return {"rc": 127, "stdout": "", "stderr": text(exc)}
    except subprocess.TimeoutExpired:
        return {"rc": 124, "stdout": "", "stderr": "timed out after 30 s"}
    return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

def smi(fields):
    query = run(["nvidia-smi", "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"])
    if query["rc"] != 0 and "compute_cap" in fields and "compute_cap" in query["stdout"] + query["stderr"]:
        return smi([f for f in fields if f != "compute_cap"])  # drivers older than 510
    query["fields"] = list(fields)
    if query["rc"] == 0:
        query["header"] = run(["nvidia-smi"])["stdout"]
    return query

def meminfo():
    values = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values

found = {"probe": 1, "nvml": nvml(), "meminfo": meminfo()}
if not found["nvml"].get("gpus"):
    found["smi"] = smi(%(fields)r)
print(json.dumps(found))
""".replace("%(fields)r", repr(list(SMI_FIELDS)))

_CUDA_HEADER = re.compile(r"CUDA Version\s*:\s*([0-9][0-9.]*)")
_UNSUPPORTED = ("notsupported", "not supported", "[n/a]", "n/a")


class ProbeError(ValueError):
    """The probe's output is not what PROBE_SCRIPT prints."""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: str | None
    memory_total_bytes: int | None  # None: not reported (see memory_note); never 0
    memory_used_bytes: int | None
    memory_note: str | None = None


@dataclass(frozen=True)
class GpuProbe:
    source: str  # "nvml", "nvidia-smi" or "none"
    gpus: tuple[Gpu, ...]
    driver: str | None
    cuda: str | None
    mem_total_kib: int | None
    mem_available_kib: int | None
    problems: tuple[str, ...] = ()  # why NVML / nvidia-smi found nothing

    @property
    def unified_memory(self) -> bool:
        return any(g.memory_note == UNIFIED_MEMORY_NOTE for g in self.gpus)


def parse_probe(stdout: str) -> GpuProbe:
    """`PROBE_SCRIPT`'s JSON as a `GpuProbe`; ProbeError when it is something else."""
    try:
        data = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("probe") != 1:
        raise ProbeError(f"not GPU probe output: {stdout.strip()[:200]!r}")
    memory = data.get("meminfo") or {}
    total, available = memory.get("MemTotal"), memory.get("MemAvailable")
    nvml = data.get("nvml") or {}
    if nvml.get("gpus"):
        return GpuProbe("nvml", _nvml_gpus(nvml["gpus"]), nvml.get("driver"), _cuda(nvml), total, available)
    problems = [str(nvml["error"])] if nvml.get("error") else ["NVML found no GPU"]
    smi = data.get("smi") or {}
    gpus, driver, smi_problem = _smi_gpus(smi)
    if gpus:
        cuda_match = _CUDA_HEADER.search(smi.get("header") or "")
        cuda = cuda_match.group(1) if cuda_match else None
        return GpuProbe("nvidia-smi", gpus, driver, cuda, total, available, tuple(problems))
    return GpuProbe("none", (), None, None, total, available, (*problems, smi_problem))


def _cuda(nvml: dict[str, Any]) -> str | None:
    """nvmlSystemGetCudaDriverVersion's 13000 -> "13.0", 12040 -> "12.4"."""
    version = nvml.get("cuda_driver_version")
    if not isinstance(version, int) or version <= 0:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def _memory_note(error: str) -> str:
    lowered = error.lower().replace("_", "")
    return (
        UNIFIED_MEMORY_NOTE if any(u in lowered for u in _UNSUPPORTED) else f"not reported by NVML ({error})"
    )


def _nvml_gpus(raw: list[dict[str, Any]]) -> tuple[Gpu, ...]:
    gpus: list[Gpu] = []
    for entry in raw:
        capability = entry.get("compute_capability")
        total, used = entry.get("memory_total"), entry.get("memory_used")
        note = _memory_note(str(entry["memory_error"])) if "memory_error" in entry else None
        if not total:  # never report "not reported" as 0
            total, used, note = None, None, note or _memory_note("[N/A]")
        gpus.append(
            Gpu(
                index=int(entry.get("index", len(gpus))),
                name=str(entry.get("name", "")),
                compute_capability=".".join(str(p) for p in capability) if capability else None,
                memory_total_bytes=total,
                memory_used_bytes=used,
                memory_note=note,
            )
        )
    return tuple(gpus)


def _smi_gpus(smi: dict[str, Any]) -> tuple[tuple[Gpu, ...], str | None, str]:
    """GPUs from `nvidia-smi --query-gpu` CSV, the driver, and why there are none."""
    if not smi:
        return (), None, "nvidia-smi was not run"
    if smi.get("rc") != 0:
        if smi.get("rc") == 127:
            return (), None, "nvidia-smi: not installed"
        reason = (smi.get("stderr") or smi.get("stdout") or "").strip().splitlines()
        return (), None, f"nvidia-smi: exit code {smi.get('rc')}" + (f" ({reason[-1]})" if reason else "")
    fields = list(smi.get("fields") or SMI_FIELDS)
    gpus: list[Gpu] = []
    driver = None
    for line in (smi.get("stdout") or "").splitlines():
        parts = [part.strip() for part in line.rsplit(",", len(fields) - 1)]
        if len(parts) != len(fields) or not parts[0]:
            continue  # "No devices were found" and other messages
        row = dict(zip(fields, parts))
        driver = row.get("driver_version") or driver
        total, used = _mib(row.get("memory.total")), _mib(row.get("memory.used"))
        note = None if total else _memory_note(row.get("memory.total") or "[N/A]")
        capability = row.get("compute_cap")
        gpus.append(
            Gpu(
                index=len(gpus),
                name=row["name"],
                compute_capability=capability if capability and capability[0].isdigit() else None,
                memory_total_bytes=total,
                memory_used_bytes=used if total else None,
                memory_note=note,
            )
        )
    return tuple(gpus), driver, "nvidia-smi found no GPU"


def _mib(value: str | None) -> int | None:
    """nvidia-smi's MiB (nounits) in bytes; None for [N/A] and Not Supported."""
    try:
        return int(float(value or "") * 1024 * 1024)
    except ValueError:
        return None


def _common(values: list[Any]) -> Any:
    """The one value all GPUs share, else all of them joined."""
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else ", ".join(str(v) for v in distinct)


def _gib(value: float | None) -> float | None:
    return None if value is None else round(value / GIB, 2)


def memory_measurements(probe: GpuProbe) -> dict[str, Any]:
    """Memory per GPU; on unified memory (GB10) what /proc/meminfo says the GPU can get."""
    if probe.unified_memory:
        if not probe.mem_total_kib:
            return {"memory_source": f"{UNIFIED_MEMORY_NOTE}; /proc/meminfo unreadable"}
        total = probe.mem_total_kib * 1024
        available = (probe.mem_available_kib or 0) * 1024
        return {
            "memory_total_gib": _gib(total),
            "memory_used_gib": _gib(total - available),
            "memory_available_gib": _gib(available),
            "memory_source": f"/proc/meminfo ({UNIFIED_MEMORY_NOTE})",
        }
    measured = [g for g in probe.gpus if g.memory_total_bytes]
    if not measured:
        return {"memory_source": _common([g.memory_note for g in probe.gpus])}
    smallest = min(measured, key=lambda g: g.memory_total_bytes or 0)
    total, used = smallest.memory_total_bytes or 0, smallest.memory_used_bytes
    return {
        "memory_total_gib": _gib(total),
        "memory_used_gib": _gib(used),
        "memory_available_gib": _gib(total - used) if used is not None else None,
        "memory_source": probe.source,
    }


def measurements(probe: GpuProbe) -> dict[str, Any]:
    values = {
        "count": len(probe.gpus),
        "name": _common([g.name for g in probe.gpus]),
        "driver": probe.driver,
        "cuda": probe.cuda,
        "compute_capability": _common([g.compute_capability for g in probe.gpus]),
        **memory_measurements(probe),
    }
    return {k: v for k, v in values.items() if v is not None}


def gpu_details(probe: GpuProbe) -> dict[str, Any]:
    return {
        "source": probe.source,
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "compute_capability": g.compute_capability,
                "memory_total_gib": _gib(g.memory_total_bytes),
                "memory_used_gib": _gib(g.memory_used_bytes),
                **({"memory_note": g.memory_note} if g.memory_note else {}),
            }
            for g in probe.gpus
        ],
        **({"problems": list(probe.problems)} if probe.problems else {}),
    }


def interpreter(args: dict[str, Any], ctx: StepContext) -> str:
    """Who runs the probe: `python:`, else ansible_python_interpreter, else this interpreter for the
    local machine (it has nvidia-ml-py), else the host's python3."""
    chosen = args.get("python") or ctx.scope.get("ansible_python_interpreter")
    if chosen:
        return str(chosen)
    return sys.executable if ctx.conn.is_local and ctx.become is None else "python3"


class GpuStep(Step):
    name = "gpu"

    def run(self, args: dict[str, Any], ctx: StepContext) -> StepResult:
        expectations = self.expectations(args)
        python = interpreter(args, ctx)
        timeout = float(args.get("timeout") or ctx.timeout or DEFAULT_TIMEOUT_S)
        try:
            result = ctx.conn.run(
                [python, "-c", PROBE_SCRIPT], timeout=timeout, become=ctx.become, env=ctx.environment or None
            )
        except CommandTimeout as exc:
            return StepResult.fail(f"GPU probe on {ctx.host}: {exc}")
        try:
            probe = parse_probe(result.stdout)
        except ProbeError as exc:
            why = result.stderr.strip()[-300:] or str(exc)
            return StepResult.fail(f"the GPU probe could not run with {python} on {ctx.host}: {why}")
        if not probe.gpus:
            return StepResult.skip(f"no NVIDIA GPU or driver on {ctx.host}: {'; '.join(probe.problems)}")
        return judge(expectations, measurements(probe), details=gpu_details(probe))
