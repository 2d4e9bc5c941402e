from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.infra.fixtures"]


@pytest.fixture(autouse=True)
def _private_run_journals(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state dir for `apply`'s run journals (inherited by the CLI subprocesses):
    tests apply the same playbook files with different variables, and a journal left by one test (an
    unfinished run with handlers to run) must not reach the next, nor the user's ~/.local/state."""
    directory = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("SPARKPROV_STATE_DIR", str(directory))
    return directory
