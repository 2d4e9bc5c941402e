"""The honesty test: what `plan` reports pending is exactly what `apply` then changes, and plan
changes nothing on disk. Compared as sets of (task name, loop item label)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli import ChangeKey, CliRun, apply_twice, current_umask, run_playbook, snapshot


def plan_unchanged(playbook: str, base: Path, extra: dict[str, Any] | None = None) -> CliRun:
    """Run plan and require that it left the tree exactly as it was."""
    before = snapshot(base, with_times=True)
    plan = run_playbook("plan", playbook, base, extra)
    assert snapshot(base, with_times=True) == before, "plan changed the host"
    return plan


def plan_then_apply(playbook: str, base: Path, extra: dict[str, Any] | None = None) -> set[ChangeKey]:
    """Plan, apply, and require the plan's pending set to be the apply's changed set; return it."""
    plan = plan_unchanged(playbook, base, extra)
    applied = run_playbook("apply", playbook, base, extra, expect_rc=0)
    assert plan.pending() == applied.changed(), (
        f"plan only: {sorted(plan.pending() - applied.changed(), key=str)}; "
        f"apply only: {sorted(applied.changed() - plan.pending(), key=str)}"
    )
    assert plan.rc == (2 if plan.pending() else 0), str(plan)
    return applied.changed()


HONESTY = "honesty.yml"
USER = pwd.getpwuid(os.geteuid()).pw_name
# Every task of honesty.yml that touches the host on a fresh tree (actions and skipped tasks never do).
FRESH: set[ChangeKey] = {
    ("app directories", "conf"),
    ("app directories", "data"),
    ("app directories", "bin"),
    ("private directory", None),
    ("config from a template", None),
    ("static files", "motd.txt"),
    ("static files", "notes.txt"),
    ("inline JSON settings", None),
    ("settings are private", None),
    ("directory tree", None),
    ("tree modes", None),
    ("key placeholder, times kept", None),
    ("current config link", None),
    ("motd hard link", None),
    ("stale file removed", None),
    ("environment file seeded once", None),
    ("environment name", None),
    ("no debug setting", None),
    ("extra line, created with its file", None),
    ("original config kept (command with creates)", None),
    ("build stamp (shell with creates)", None),
    ("owner from a registered result", None),
    ("config reloaded", None),
}


def test_plan_equals_apply_for_every_module(tmp_path: Path) -> None:
    (tmp_path / "stale.txt").write_text("stale\n")

    assert plan_then_apply(HONESTY, tmp_path) == FRESH
    assert not list(tmp_path.rglob("*sparkprov-tmp*")), "apply left temporary files behind"
    app = tmp_path / "app"
    assert (app / "conf" / "env").read_text() == "APP_NAME=demo\n"
    assert (app / "data" / "stamp").read_text() == "DEMO\n"
    assert (app / "data" / "owner.txt").read_text() == f"owner={USER}\n"

    # Drift: a templated file edited, a directory's mode changed, a copied file deleted.
    with (app / "conf" / "app.conf").open("a") as handle:
        handle.write("edited by hand\n")
    (app / "bin").chmod(0o777)
    (app / "data" / "notes.txt").unlink()
    drift = {("config from a template", None), ("app directories", "bin"), ("static files", "notes.txt")}
    assert plan_then_apply(HONESTY, tmp_path) == drift

    apply_twice(HONESTY, tmp_path)
    converged = plan_unchanged(HONESTY, tmp_path)
    assert (converged.rc, converged.doc["plan"]) == (0, [])


def _seed_parent(base: Path) -> None:
    (base / "existing").mkdir()
    (base / "existing").chmod(0o755)


def _seed_shared(base: Path) -> None:
    (base / "shared").mkdir()
    (base / "shared").chmod(0o750)


def _default_attributes() -> dict[str, Any]:
    mask = current_umask()
    return {
        "dir_mode": f"{0o777 & ~mask:04o}",
        "file_mode": f"{0o666 & ~mask:04o}",
        "user": USER,
    }


@pytest.mark.parametrize(
    ("playbook", "seed", "extra"),
    [
        pytest.param(
            "plan_default_attributes.yml",
            None,
            _default_attributes(),
            id="default-attributes",
        ),
        pytest.param(
            "plan_existing_parent.yml",
            _seed_parent,
            None,
            id="existing-parent",
        ),
        pytest.param(
            "plan_recurse_new_children.yml",
            _seed_shared,
            None,
            id="recurse-new-children",
        ),
        pytest.param(
            "plan_hard_link.yml",
            None,
            None,
            id="hard-link",
        ),
    ],
)
def test_plan_equals_apply_after_earlier_tasks(
    tmp_path: Path, playbook: str, seed: Callable[[Path], None] | None, extra: dict[str, Any] | None
) -> None:
    if seed is not None:
        seed(tmp_path)
    plan_then_apply(playbook, tmp_path, extra)
