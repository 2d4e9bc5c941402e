"""How sizes read in messages and progress lines."""

from __future__ import annotations


def human_bytes(value: float) -> str:
    """'512 B', '3.4 kB', '20.0 MB', '1.25 GB' (decimal units, as docker and registries show them)."""
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"
