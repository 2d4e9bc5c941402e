"""Roofline ceilings: the fastest a model can decode on a device, from physics rather than hope.

Decode is memory-bandwidth bound: every generated token reads (about) all the weights once, so

    decode tok/s <= memory bandwidth / bytes read per token (~ the model's weights)

At the GB10's 273 GB/s: llama3.2:3b Q4 (2.0 GB) <= ~135 tok/s, llama3.1:8b Q4 (4.9 GB) <= ~56,
llama3.1:70b Q4 (43 GB) <= ~6.3 — so the course's "70B Q4 ~15 tok/s" cannot be met by any Spark
(spark-facts.md, "What to expect"). For a mixture-of-experts model only the routed experts are read:
the ceiling then uses weights x experts_used / experts, a lower bound on the bytes read per token, so
it stays an upper bound on tok/s.

The bandwidths are theoretical peaks (the ceiling is a bound, not a prediction); `measured_gbs` is
what a read benchmark gets, for the practical ceiling reports show next to it.
`expectation_table()` loads the course's expectations with their annotations (data/expectations.yml).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

GB = 1e9  # decimal, as bandwidths and model sizes are quoted


@dataclass(frozen=True)
class Device:
    name: str
    bandwidth_gbs: float  # theoretical peak
    measured_gbs: float | None = None  # what a read benchmark reaches, where published
    source: str = ""


# (pattern on the GPU name as NVML/nvidia-smi report it, device); the first match wins.
DEVICES: tuple[tuple[re.Pattern[str], Device], ...] = (
    (
        re.compile(r"\bGB10\b", re.IGNORECASE),
        Device("NVIDIA GB10", 273.0, 232.0, "LPDDR5X 256-bit, 8533 MT/s; ~231-234 GB/s measured"),
    ),
    (re.compile(r"\bH200\b", re.IGNORECASE), Device("NVIDIA H200", 4800.0, None, "HBM3e 141 GB")),
    (re.compile(r"\bGH200\b", re.IGNORECASE), Device("NVIDIA GH200", 4000.0, None, "HBM3 96 GB")),
    (re.compile(r"\bH100\b.*\bNVL\b", re.IGNORECASE), Device("NVIDIA H100 NVL", 3900.0, None, "HBM3 94 GB")),
    (re.compile(r"\bH100\b.*\bPCIe\b", re.IGNORECASE), Device("NVIDIA H100 PCIe", 2000.0, None, "HBM2e")),
    (re.compile(r"\bH100\b", re.IGNORECASE), Device("NVIDIA H100 SXM", 3350.0, None, "HBM3 80 GB")),
    (re.compile(r"\bA100\b.*\b40GB\b", re.IGNORECASE), Device("NVIDIA A100 40GB", 1555.0, None, "HBM2")),
    (re.compile(r"\bA100\b", re.IGNORECASE), Device("NVIDIA A100 80GB", 2039.0, None, "HBM2e")),
    (re.compile(r"\bL40S\b", re.IGNORECASE), Device("NVIDIA L40S", 864.0, None, "GDDR6")),
    (re.compile(r"\bRTX 4090\b", re.IGNORECASE), Device("NVIDIA GeForce RTX 4090", 1008.0, None, "GDDR6X")),
)


def device_for(gpu_name: str | None) -> Device | None:
    """The table's device for a GPU name ("NVIDIA GB10", "NVIDIA H100 80GB HBM3"); None if unknown."""
    if not gpu_name:
        return None
    return next((device for pattern, device in DEVICES if pattern.search(gpu_name)), None)


@dataclass(frozen=True)
class Ceiling:
    """The decode roofline of one model on one device."""

    device: str
    bandwidth_gbs: float
    model_bytes: int
    active_fraction: float = 1.0  # experts_used / experts for a mixture of experts
    measured_gbs: float | None = None

    @property
    def bytes_per_token(self) -> float:
        return self.model_bytes * self.active_fraction

    @property
    def decode_tps(self) -> float:
        return self.bandwidth_gbs * GB / self.bytes_per_token

    @property
    def practical_decode_tps(self) -> float | None:
        return None if self.measured_gbs is None else self.measured_gbs * GB / self.bytes_per_token

    @property
    def why(self) -> str:
        """ "273 GB/s / 43.0 GB" — the derivation, for verdicts."""
        moe = f" x {self.active_fraction:.3g} (experts used)" if self.active_fraction < 1 else ""
        return f"{self.bandwidth_gbs:g} GB/s / {self.model_bytes / GB:.2f} GB{moe}"

    def as_dict(self) -> dict[str, Any]:
        practical = self.practical_decode_tps
        return {
            "decode_tps": round(self.decode_tps, 2),
            "practical_decode_tps": None if practical is None else round(practical, 2),
            "device": self.device,
            "bandwidth_gbs": self.bandwidth_gbs,
            "measured_bandwidth_gbs": self.measured_gbs,
            "model_bytes": self.model_bytes,
            "active_fraction": self.active_fraction,
            "why": self.why,
        }


def decode_ceiling(
    device: Device, model_bytes: int, *, experts: int | None = None, experts_used: int | None = None
) -> Ceiling | None:
    """The decode ceiling; None without a model size."""
    if model_bytes <= 0:
        return None
    fraction = 1.0
    if experts and experts_used and 0 < experts_used < experts:
        fraction = experts_used / experts
    return Ceiling(device.name, device.bandwidth_gbs, model_bytes, fraction, device.measured_gbs)


def custom_device(bandwidth_gbs: float) -> Device:
    return Device(f"{bandwidth_gbs:g} GB/s (given)", bandwidth_gbs, None, "the step's bandwidth_gbs")


# ---------------------------------------------------------------- the course's expectation table


@dataclass(frozen=True)
class TableRow:
    model: str  # as the course writes it: "70B Q4"
    examples: tuple[str, ...]  # Ollama names of such a model
    model_gb: float
    prefill_tps: float
    decode_tps: float
    memory_gb: float
    annotation: dict[str, Any]

    def ceiling(self, device: Device) -> Ceiling | None:
        return decode_ceiling(device, int(self.model_gb * GB))

    @property
    def impossible(self) -> bool:
        return bool(self.annotation.get("decode_impossible"))


@cache
def expectation_table() -> tuple[TableRow, ...]:
    """The course's expectation table (lab 1.1.5) with its annotations (sparkprov/data/expectations.yml)."""
    text = resources.files("sparkprov").joinpath("data/expectations.yml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    return tuple(
        TableRow(
            model=str(row["model"]),
            examples=tuple(row.get("examples") or ()),
            model_gb=float(row["model_gb"]),
            prefill_tps=float(row["course"]["prefill_tps"]),
            decode_tps=float(row["course"]["decode_tps"]),
            memory_gb=float(row["course"]["memory_gb"]),
            annotation=dict(row.get("annotation") or {}),
        )
        for row in data["rows"]
    )
