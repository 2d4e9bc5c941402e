"""`memory`: a unified-memory allocation sweep with torch, and the device's copy bandwidth.

    - name: unified memory sweep
      memory: {target_gb: 100, step_gb: 10, headroom_gb: 10, drop_caches: true, image: "{{ pytorch_image }}"}
    - name: the same with the host's torch
      memory: {host_torch: true, target_gb: 8, expect: {achieved_gb: ">= 8", bandwidth_ratio: ">= 0.8"}}

One probe (standard library and torch, `probe_script()`) does everything on the host: it allocates
growing tensors (`step_gb` at a time) on the first CUDA device (CUDA_VISIBLE_DEVICES picks which)
up to `target_gb`, touches each one (fill, synchronize), records per step the size asked for and
got, the total, the seconds and what was available before it, frees everything, then times a
device-to-device copy (see `bandwidth.py`). It runs in an NGC
image (`docker run --rm -i` with NVIDIA's GPU flags, the script on stdin), or with the host's own
python (`host_torch: true`; `python:` or ansible_python_interpreter choose which) through the
connection. It prints one JSON line per step as it goes and a last one with everything.

Never into OOM: before each step the probe reads what the allocation can still get — MemAvailable
from /proc/meminfo on unified memory (GB10: cudaMemGetInfo's "free" counts the page cache as used,
so it is never used alone), the device's free memory on a discrete GPU — and cuts or skips the step
so that at least the headroom stays free: `headroom_gb` GiB or a tenth of what was available at the
start, whichever is larger (`headroom_bytes`, `plan_step`). Over-allocating unified memory can freeze
a Spark instead of raising an error. A CUDA out-of-memory error that happens anyway is caught,
reported (`stopped_by: oom_error`) and everything is freed.

`drop_caches: true` first drops the page cache on the host (the `drop_caches` module's check and
apply, as root); where that is not permitted the reason is in `details.drop_caches` and the sweep
goes on. Sizes (`*_gb`) are GiB (2^30 bytes); bandwidths are decimal GB/s.

Measured: `achieved_gb`, `target_gb`, `stopped_by` (target | headroom | oom_error), `headroom_gb`,
`available_gb` (before the sweep), `steps`, `seconds`, `device`, `unified`, and with `bandwidth`
(default true) `bandwidth_gbps`, `baseline_gbps`, `bandwidth_vs_baseline`, `theoretical_gbps`,
`bandwidth_ratio`. By default the sweep must end without an out-of-memory error. No torch, or no
CUDA device for it: skipped with the reason.

By hand on a GPU machine (this interpreter's torch, or `--image`; `--help` lists the options):
`python -m sparkprov.verify.memory --target-gb 8 --json`.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sparkprov.connection.base import AgentError, Become, BecomeFailed, CommandResult, CommandTimeout
from sparkprov.modules.base import ModuleFailure, TaskContext
from sparkprov.modules.drop_caches import DropCachesModule
from sparkprov.verify.bandwidth import (
    bandwidth_measurements,
    copy_buffer_bytes,
    measure_bandwidth,
    theoretical_gbps,
)
from sparkprov.verify.base import Step, StepContext, StepResult, judge
from sparkprov.verify.container import CLEANUP_TIMEOUT_S, ContainerStep, _docker_problem, docker_run_argv
from sparkprov.verify.expect import Expectation
from sparkprov.verify.gpu import interpreter

GIB = 1024**3
MIN_STEP_BYTES = 64 * 1024**2  # a step cut below this by the headroom is not worth taking
DEFAULT_TIMEOUT_S = 600.0  # the image may have to be pulled first
DEFAULTS = {"target_gb": 100.0, "step_gb": 10.0, "headroom_gb": 10.0}
STOP_REASONS = ("target", "headroom", "oom_error")


# ---------------------------------------------------------------- on the host (stdlib + torch)
# `probe_script()` ships the source of these functions (and bandwidth.py's two) to the host: keep
# them to the standard library, torch passed in as an argument, and Python 3.7 syntax.


def headroom_bytes(available: int, headroom_gib: float) -> int:
    """What the sweep leaves free: `headroom_gib` GiB or a tenth of `available`, whichever is larger."""
    return max(int(headroom_gib * GIB), available // 10)


def plan_step(available: int, allocated: int, target: int, step: int, headroom: int) -> tuple[int, str]:
    """(bytes to allocate next, "") or (0, why the sweep stops: "target" or "headroom").

    The step is `step` bytes, or what is left to the target; it is cut so that `available` minus the
    step never falls below `headroom`, and when the cut leaves less than MIN_STEP_BYTES (and less than
    what was wanted) the sweep stops instead."""
    wanted = min(step, target - allocated)
    if wanted <= 0:
        return 0, "target"
    size = min(wanted, available - headroom)
    if size <= 0 or size < min(wanted, MIN_STEP_BYTES):
        return 0, "headroom"
    return size, ""


def mem_available() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key == "MemAvailable":
                    return int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def is_oom(torch: Any, exc: BaseException) -> bool:
    kind = getattr(torch.cuda, "OutOfMemoryError", None)
    return (kind is not None and isinstance(exc, kind)) or "out of memory" in str(exc).lower()


def pool_available(torch: Any, unified: bool) -> int:
    """What an allocation can still get: MemAvailable on unified memory, else the device's free memory."""
    if unified:
        found = mem_available()
        if found is None:
            raise RuntimeError("/proc/meminfo has no MemAvailable: cannot sweep unified memory safely")
        return found
    return int(torch.cuda.mem_get_info()[0])


def device_facts(torch: Any) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(0)
    integrated = bool(getattr(props, "is_integrated", False))
    return {
        "name": str(props.name),
        "capability": f"{props.major}.{props.minor}",
        "total_bytes": int(props.total_memory),
        "integrated": integrated,
        "unified": integrated or "GB10" in str(props.name),
    }


def sweep(torch: Any, config: dict[str, Any], unified: bool) -> dict[str, Any]:
    """Allocate and touch growing tensors up to the target, never past the headroom; free them all."""
    target, step = int(config["target_gib"] * GIB), int(config["step_gib"] * GIB)
    start = pool_available(torch, unified)
    headroom = headroom_bytes(start, config["headroom_gib"])
    pool = "MemAvailable" if unified else "device_free"
    found: dict[str, Any] = {"target": target, "step": step, "headroom": headroom, "pool": pool}
    found.update({"available_before": start, "achieved": 0, "steps": []})
    tensors: list[Any] = []
    began = time.perf_counter()
    try:
        while True:
            available = pool_available(torch, unified)
            host_available = available if unified else mem_available()
            size, why = plan_step(available, found["achieved"], target, step, headroom)
            if not size:
                found["stopped_by"] = why
                break
            ticked = time.perf_counter()
            try:
                tensors.append(torch.empty(size, dtype=torch.uint8, device="cuda"))
                tensors[-1].fill_(1)  # touch every page
                torch.cuda.synchronize()
            except Exception as exc:
                if not is_oom(torch, exc):
                    raise
                found["stopped_by"], found["oom_error"] = "oom_error", f"{type(exc).__name__}: {exc}"
                break
            found["achieved"] += size
            record = {
                "requested": min(step, target - found["achieved"] + size),
                "allocated": size,
                "total": found["achieved"],
                "seconds": time.perf_counter() - ticked,
                "available": available,
                "mem_available": host_available,
            }
            found["steps"].append(record)
            emit({"probe": "memory", "event": "step", **record})
    finally:
        found["seconds"] = time.perf_counter() - began
        del tensors[:]
        gc.collect()
        torch.cuda.empty_cache()
    found["available_after_free"] = pool_available(torch, unified)
    return found


def run_probe(config: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"probe": "memory", "event": "result", "python": sys.executable}
    try:
        import torch
    except Exception as exc:
        found["skip"] = f"no torch for {sys.executable}: {type(exc).__name__}: {exc}"
        return found
    found.update({"torch": str(torch.__version__), "cuda": torch.version.cuda})
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        found["skip"] = f"torch {torch.__version__} ({build}) sees no CUDA device"
        return found
    try:
        found["device"] = device_facts(torch)
        found["sweep"] = sweep(torch, config, found["device"]["unified"])
        if config.get("bandwidth", True):
            size = copy_buffer_bytes(pool_available(torch, found["device"]["unified"]))
            found["bandwidth"] = measure_bandwidth(torch, size) if size else {"error": "no memory to copy"}
    except Exception as exc:
        found["error"] = f"{type(exc).__name__}: {exc}"
    return found


def probe_main(argv: list[str]) -> None:
    emit(run_probe(json.loads(argv[0]) if argv else {}))


_PROBE_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    headroom_bytes,
    plan_step,
    mem_available,
    emit,
    is_oom,
    pool_available,
    device_facts,
    sweep,
    copy_buffer_bytes,
    measure_bandwidth,
    run_probe,
    probe_main,
)


def probe_script() -> str:
    """The probe as one Python script: `python3 -c SCRIPT CONFIG` or `python3 - CONFIG` (on stdin)."""
    head = [
        "from __future__ import annotations",
        "import gc, json, sys, time",
        f"GIB = {GIB}",
        f"MIN_STEP_BYTES = {MIN_STEP_BYTES}",
    ]
    body = [inspect.getsource(function) for function in _PROBE_FUNCTIONS]
    return "\n".join([*head, "", *body, "probe_main(sys.argv[1:])", ""])


# ---------------------------------------------------------------- on the controller


class ProbeError(ValueError):
    """The output is not the memory probe's."""


@dataclass(frozen=True)
class MemoryProbe:
    result: dict[str, Any] | None  # the last line; None when the probe was cut short
    steps: tuple[dict[str, Any], ...]  # the step lines printed as it went

    @property
    def sweep(self) -> dict[str, Any]:
        return dict((self.result or {}).get("sweep") or {})

    @property
    def device(self) -> dict[str, Any]:
        return dict((self.result or {}).get("device") or {})


def parse_probe(stdout: str) -> MemoryProbe:
    """The probe's JSON lines (images print banners around them); ProbeError when there are none."""
    result, steps = None, []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or document.get("probe") != "memory":
            continue
        if document.get("event") == "step":
            steps.append(document)
        elif document.get("event") == "result":
            result = document
    if result is None and not steps:
        raise ProbeError(f"not memory probe output: {stdout.strip()[-300:]!r}")
    return MemoryProbe(result, tuple(steps))


def _gib(value: Any) -> float | None:
    return round(value / GIB, 2) if isinstance(value, (int, float)) else None


def step_rows(steps: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step, as reports show it: GiB asked for, got, in total; seconds; available before."""
    return [
        {
            "requested_gb": _gib(s.get("requested")),
            "allocated_gb": _gib(s.get("allocated")),
            "achieved_gb": _gib(s.get("total")),
            "seconds": round(float(s.get("seconds") or 0.0), 3),
            "available_before_gb": _gib(s.get("available")),
            "mem_available_before_gb": _gib(s.get("mem_available")),
        }
        for s in steps
    ]


def measurements(probe: MemoryProbe, theoretical: float | None = None) -> dict[str, Any]:
    """The metrics of a finished probe; `theoretical` (GB/s) overrides the table's."""
    sweep, device = probe.sweep, probe.device
    found: dict[str, Any] = {
        "achieved_gb": _gib(sweep.get("achieved")),
        "target_gb": _gib(sweep.get("target")),
        "stopped_by": sweep.get("stopped_by"),
        "headroom_gb": _gib(sweep.get("headroom")),
        "available_gb": _gib(sweep.get("available_before")),
        "steps": len(sweep.get("steps") or []),
        "seconds": round(float(sweep.get("seconds") or 0.0), 3) if sweep else None,
        "device": device.get("name"),
        "unified": device.get("unified"),
    }
    bandwidth = (probe.result or {}).get("bandwidth") or {}
    if "kernel_gbps" in bandwidth:
        found.update(bandwidth_measurements(bandwidth, theoretical or theoretical_gbps(device.get("name"))))
    return {k: v for k, v in found.items() if v is not None}


def probe_details(probe: MemoryProbe) -> dict[str, Any]:
    result, sweep = probe.result or {}, probe.sweep
    details: dict[str, Any] = {
        "torch": result.get("torch"),
        "cuda": result.get("cuda"),
        "python": result.get("python"),
        "pool": sweep.get("pool"),
        "available_after_free_gb": _gib(sweep.get("available_after_free")),
        "steps": step_rows(sweep.get("steps") or []),
        "oom_error": sweep.get("oom_error"),
        "device": probe.device or None,
    }
    bandwidth = dict(result.get("bandwidth") or {})
    if bandwidth:
        details["bandwidth"] = bandwidth
    return {k: v for k, v in details.items() if v not in (None, [])}


def probe_config(args: dict[str, Any]) -> dict[str, Any]:
    """What the probe reads from its argument (sizes in GiB)."""
    sizes = {key: float(args.get(key, default)) for key, default in DEFAULTS.items()}
    return {
        "target_gib": sizes["target_gb"],
        "step_gib": sizes["step_gb"],
        "headroom_gib": sizes["headroom_gb"],
        "bandwidth": bool(args.get("bandwidth", True)),
    }


def drop_page_cache(ctx: StepContext) -> dict[str, Any]:
    """The drop_caches module's check and apply, as root; what happened (never raises)."""
    task = TaskContext(conn=ctx.conn, become=Become(), scope=ctx.scope, search_dirs=(), timeout=ctx.timeout)
    module = DropCachesModule()
    try:
        change = module.check({"level": 3}, task)
        if change is None:  # pragma: no cover - drop_caches always acts
            return {"dropped": False, "reason": "nothing to do"}
        outcome = module.apply(change, task)
    except (ModuleFailure, BecomeFailed, AgentError, CommandTimeout) as exc:
        return {"dropped": False, "reason": str(exc)}
    data = outcome.data
    return {
        "dropped": True,
        "mem_available_before_gb": _gib(data["mem_available_before_kib"] * 1024),
        "mem_available_after_gb": _gib(data["mem_available_after_kib"] * 1024),
    }


class MemoryStep(Step):
    name = "memory"
    default_expect = {"stopped_by": "~ ^(target|headroom)$"}

    def run(self, args: dict[str, Any], ctx: StepContext) -> StepResult:
        expectations = self.expectations(args)
        details: dict[str, Any] = {}
        if args.get("drop_caches", False):
            details["drop_caches"] = drop_page_cache(ctx)
        runner = self._on_host if args.get("host_torch") else self._in_container
        outcome = runner(args, ctx, json.dumps(probe_config(args)))
        if isinstance(outcome, StepResult):
            outcome.details = {**details, **outcome.details}
            return outcome
        result, where = outcome
        details["ran"] = where
        try:
            probe = parse_probe(result.stdout)
        except ProbeError:
            why = result.stderr.strip()[-400:] or f"exit code {result.rc}, no output"
            return StepResult.fail(f"the memory probe did not run ({where}) on {ctx.host}: {why}", **details)
        return self._judge(probe, result, expectations, args, ctx, details)

    def _judge(
        self,
        probe: MemoryProbe,
        result: CommandResult,
        expectations: dict[str, Expectation],
        args: dict[str, Any],
        ctx: StepContext,
        details: dict[str, Any],
    ) -> StepResult:
        outcome = probe.result
        if outcome is None:  # killed mid-sweep (the OOM killer, a timeout): what it got so far
            rows = step_rows(probe.steps)
            reached = rows[-1]["achieved_gb"] if rows else 0
            why = result.stderr.strip()[-300:] or f"exit code {result.rc}"
            return StepResult.fail(
                f"the memory probe on {ctx.host} stopped after {len(rows)} step(s) at {reached} GiB: {why}",
                measured={"achieved_gb": reached, "steps": len(rows)},
                **details,
                steps=rows,
            )
        if outcome.get("skip"):
            return StepResult.skip(f"{outcome['skip']} on {ctx.host}", **details)
        details.update(probe_details(probe))
        if outcome.get("error"):
            return StepResult.fail(
                f"the memory probe failed on {ctx.host}: {outcome['error']}",
                measured=measurements(probe),
                **details,
            )
        theoretical = args.get("theoretical_gbps")
        return judge(expectations, measurements(probe, theoretical), details=details)

    @staticmethod
    def _on_host(
        args: dict[str, Any], ctx: StepContext, config: str
    ) -> tuple[CommandResult, str] | StepResult:
        python = interpreter(args, ctx)
        timeout = float(args.get("timeout") or ctx.timeout or DEFAULT_TIMEOUT_S)
        argv = [python, "-c", probe_script(), config]
        try:
            result = ctx.conn.run(argv, timeout=timeout, become=ctx.become, env=ctx.environment or None)
        except CommandTimeout as exc:
            return StepResult.fail(f"memory probe on {ctx.host}: {exc}")
        return result, f"{python} on the host"

    @staticmethod
    def _in_container(
        args: dict[str, Any], ctx: StepContext, config: str
    ) -> tuple[CommandResult, str] | StepResult:
        if not args.get("image"):
            return StepResult.fail(
                "give the memory step an `image` (an NGC PyTorch image) or `host_torch: true`"
            )
        name = f"sparkprov-memory-{uuid.uuid4().hex[:12]}"
        container = {
            "image": args["image"],
            "options": ["-i", *(args.get("options") or [])],
            "volumes": args.get("volumes") or [],
            "command": [str(args.get("python") or "python3"), "-", config],
        }
        argv = docker_run_argv(container, name)
        env = ContainerStep._environment(container, ctx)
        timeout = float(args.get("timeout") or ctx.timeout or DEFAULT_TIMEOUT_S)
        try:
            result = ctx.conn.run(
                argv, stdin=probe_script().encode("utf-8"), timeout=timeout, become=ctx.become, env=env
            )
        except CommandTimeout as exc:
            ctx.conn.run(
                ["docker", "rm", "--force", name], timeout=CLEANUP_TIMEOUT_S, become=ctx.become, env=env
            )
            return StepResult.fail(f"memory probe on {ctx.host}: {exc}; the container was removed")
        problem = _docker_problem(result, ctx.host, container)
        if problem:
            return StepResult.fail(problem, measured={"rc": result.rc}, argv=argv)
        return result, f"docker run {args['image']}"


# ---------------------------------------------------------------- by hand: python -m sparkprov.verify.memory


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sparkprov.verify.memory",
        description="Run the memory step on this machine (the host's torch unless --image).",
    )
    parser.add_argument("--target-gb", type=float, default=DEFAULTS["target_gb"])
    parser.add_argument("--step-gb", type=float, default=DEFAULTS["step_gb"])
    parser.add_argument("--headroom-gb", type=float, default=DEFAULTS["headroom_gb"])
    parser.add_argument("--no-bandwidth", action="store_true", help="skip the copy bandwidth")
    parser.add_argument("--theoretical-gbps", type=float)
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache first (root)")
    parser.add_argument("--image", help="run in this image with docker instead of the host's torch")
    parser.add_argument("--python", help="interpreter with torch (default: this one)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the step passes or is skipped, 1 when it fails."""
    from sparkprov.connection.local import LocalConnection
    from sparkprov.playbook.templating import Scope

    options = _arguments(sys.argv[1:] if argv is None else argv)
    args: dict[str, Any] = {
        "target_gb": options.target_gb,
        "step_gb": options.step_gb,
        "headroom_gb": options.headroom_gb,
        "bandwidth": not options.no_bandwidth,
        "drop_caches": options.drop_caches,
        "host_torch": options.image is None,
    }
    extra = {"image": options.image, "python": options.python, "theoretical_gbps": options.theoretical_gbps}
    args.update({k: v for k, v in extra.items() if v is not None})
    result = MemoryStep().run(args, StepContext(LocalConnection(), None, Scope([{}])))
    document = {
        "status": result.status.value,
        "reason": result.reason,
        "measured": result.measured,
        "expected": result.expected,
        "details": result.details,
    }
    if options.json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        lines = [f"{result.status.value}: {result.summary() or result.reason}"]
        lines += [f"  {key}: {value}" for key, value in result.measured.items()]
        sys.stdout.write("\n".join(lines) + "\n")
    return 1 if result.status.value == "fail" else 0


if __name__ == "__main__":
    sys.exit(main())
