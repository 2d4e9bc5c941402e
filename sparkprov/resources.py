"""Where the bundled playbooks, templates, schemas and inventories are.

In a wheel they are shipped inside the package as `sparkprov/_data/<name>`; in a source checkout
(editable install, tests) they are the repository's top-level directories.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    shipped = _PACKAGE / "_data" / name
    if shipped.is_dir():
        return shipped
    return _PACKAGE.parent / name


def default_playbook() -> Path:
    return data_dir("playbooks") / "spark.yml"


def default_inventory() -> Path:
    return data_dir("inventories") / "local.yml"


def locate_source(search_dirs: tuple[Path, ...], src: str, subdir: str) -> tuple[Path | None, list[str]]:
    """Find a controller-side file as Ansible does: <dir>/<subdir>/src, then <dir>/src, for each
    search dir (the playbook's directory first); then sparkprov's bundled <subdir>/ (templates/).
    Returns the path (or None) and every place tried, for the error message."""
    path = Path(src).expanduser()
    if path.is_absolute():
        return (path if path.exists() else None), [str(path)]
    candidates = [c for d in search_dirs for c in (d / subdir / src, d / src)]
    bundled = data_dir(subdir)
    if bundled.is_dir():
        candidates.append(bundled / src)
    for candidate in candidates:
        if candidate.exists():
            return candidate, []
    return None, list(dict.fromkeys(str(c) for c in candidates))
