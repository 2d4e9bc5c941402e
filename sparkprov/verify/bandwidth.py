"""Device memory bandwidth: the copy measurement the `memory` step's probe makes, and the platform's
theoretical bandwidth it is compared with.

Two timings of the same traffic (read N bytes, write N bytes) on the GPU, with CUDA events after a
warm-up, alternating over several trials:

- `kernel`: an elementwise kernel (`torch.add(a, 1, out=b)`), the copy kernel this step reports as
  `bandwidth_gbps`;
- `copy`: plain `b.copy_(a)` (a device-to-device memcpy), the baseline any torch copy benchmark gets,
  reported as `baseline_gbps`. `bandwidth_vs_baseline` is their ratio: close to 1 when the
  measurement is sound.

GB/s = 2 · bytes / seconds / 1e9 (decimal GB, as vendors quote bandwidth). `bandwidth_ratio` is
`bandwidth_gbps` over the theoretical bandwidth: from `theoretical_gbps:`, else from the table below by
device name (GB10: 273 GB/s, of which about 231-234 are measured in practice), else not reported.

`measure_bandwidth` and `copy_buffer_bytes` run on the host (inside the probe script that
`memory.probe_script()` assembles: standard library and torch only, no sparkprov); the rest runs on
the controller.
"""

from __future__ import annotations

import statistics
from typing import Any


def theoretical_gbps(device_name: str | None) -> float | None:
    """The device's theoretical memory bandwidth from the one table (roofline.py); None if unknown."""
    from sparkprov.verify.roofline import device_for

    device = device_for(device_name)
    return device.bandwidth_gbs if device else None


# ---------------------------------------------------------------- on the host (stdlib + torch)


def copy_buffer_bytes(free_bytes: int) -> int:
    """Size of each copy buffer: 1 GiB, or a tenth of what is free when that is less (whole MiB);
    0 when not even 16 MiB would fit."""
    mib = 1024 * 1024
    size = min(1024 * mib, free_bytes // 10) // mib * mib
    return size if size >= 16 * mib else 0


def measure_bandwidth(torch: Any, nbytes: int, iterations: int = 10, trials: int = 5) -> dict[str, Any]:
    """GB/s of the copy kernel and of `copy_`, per trial (`iterations` launches between two events)."""
    count = nbytes // 4
    buffers = [torch.ones(count, dtype=torch.float32, device="cuda")]
    buffers.append(torch.empty_like(buffers[0]))

    def kernel() -> None:
        torch.add(buffers[0], 1.0, out=buffers[1])

    def copy() -> None:
        buffers[1].copy_(buffers[0])

    def seconds(launch: Any) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            launch()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / 1000.0 / iterations

    try:
        for launch in (kernel, copy, kernel, copy):  # warm-up
            launch()
        torch.cuda.synchronize()
        moved = 2 * count * 4  # read and write
        found: dict[str, Any] = {"bytes": count * 4, "iterations": iterations}
        found.update({"kernel_gbps": [], "copy_gbps": []})
        for _ in range(trials):  # alternating, so that drift affects both alike
            found["kernel_gbps"].append(moved / seconds(kernel) / 1e9)
            found["copy_gbps"].append(moved / seconds(copy) / 1e9)
        return found
    finally:
        del buffers[:]
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- on the controller


def bandwidth_measurements(raw: dict[str, Any], theoretical: float | None) -> dict[str, Any]:
    """The probe's trials as metrics: medians, their ratio, and the ratio to the theoretical value."""
    kernel = _median(raw.get("kernel_gbps"))
    copy = _median(raw.get("copy_gbps"))
    if kernel is None or copy is None:
        return {}
    found: dict[str, Any] = {
        "bandwidth_gbps": round(kernel, 1),
        "baseline_gbps": round(copy, 1),
        "bandwidth_vs_baseline": round(kernel / copy, 3) if copy else None,
    }
    if theoretical:
        found["theoretical_gbps"] = theoretical
        found["bandwidth_ratio"] = round(kernel / theoretical, 3)
    return {k: v for k, v in found.items() if v is not None}


def _median(values: Any) -> float | None:
    numbers = [float(v) for v in values or [] if isinstance(v, (int, float)) and v > 0]
    return statistics.median(numbers) if numbers else None
