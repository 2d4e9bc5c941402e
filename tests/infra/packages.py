"""Install the Debian packages that the real test components need, only when missing."""

from __future__ import annotations

import os
import threading

import pytest

from tests.infra.process import run

_lock = threading.Lock()
_apt_updated = False


def require_root() -> None:
    """Skip the requesting test: namespaces, daemons and apt all need root."""
    if os.geteuid() != 0:
        pytest.skip("real test components (dockerd, registry, sshd fleet) need root")


def is_installed(deb: str) -> bool:
    """dpkg's view, like `dpkg -s`, except that a removed package with config files left is missing."""
    status = run(["dpkg-query", "--show", "--showformat=${Status}", deb], check=False)
    return status.returncode == 0 and status.stdout.strip().endswith(" installed")


def ensure_packages(*debs: str) -> None:
    """apt-get install whatever of `debs` is missing; `apt-get update` runs at most once per session."""
    global _apt_updated
    with _lock:
        missing = [deb for deb in debs if not is_installed(deb)]
        if not missing:
            return
        require_root()
        if not _apt_updated:
            _apt("update")
            _apt_updated = True
        _apt("install", "--yes", "--no-install-recommends", *missing)


def _apt(*args: str) -> None:
    # Wait for the dpkg lock instead of failing when another session installs at the same moment.
    argv = ["apt-get", "--quiet", "--option", "DPkg::Lock::Timeout=300", *args]
    run(argv, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
