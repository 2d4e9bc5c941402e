"""jupyter and drop_caches through the real command line: plan, apply, converge; the token never shown;
drop_caches as root, in a container's view of /proc/sys, and as a user with and without become."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.cli import EXIT_FAILED, EXIT_INPUT, EXIT_OK, EXIT_PENDING, explain, sparkprov, write_text
from tests.integration.conftest import SudoUser

TOKEN = "nb-token-5b0e2d7c"
STARTUP = ".ipython/profile_default/startup"

JUPYTER_PLAY = f"""\
- name: notebooks
  hosts: all
  gather_facts: false
  vars:
    jupyter_token: {TOKEN}
  tasks:
    - name: jupyter settings
      jupyter:
        server_config:
          port: 8890
          root_dir: ~/workspace
          token: "{{{{ jupyter_token }}}}"
"""


def test_jupyter_plans_applies_and_converges_without_showing_the_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    site = write_text(tmp_path / "site.yml", JUPYTER_PLAY)

    plan = sparkprov("plan", site, "--format", "json", home=home)
    assert plan.rc == EXIT_PENDING, plan
    result = plan.result("jupyter settings")
    config_diff = result["diff"][-1]
    assert config_diff["after_header"] == f"{home}/.jupyter/jupyter_server_config.py"
    assert 'c.IdentityProvider.token = "********"' in config_diff["after"]
    assert not home.joinpath(".jupyter").exists(), "plan changes nothing"

    applied = sparkprov("apply", site, "--diff", "--format", "json", home=home)
    assert applied.rc == EXIT_OK, applied
    for run in (plan, applied):
        assert TOKEN not in run.stdout + run.stderr
    assert oct(home.joinpath(STARTUP, "00-spark-gpu.py").stat().st_mode & 0o777) == "0o644"
    config = home / ".jupyter/jupyter_server_config.py"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert f"c.IdentityProvider.token = {TOKEN!r}" in config.read_text()
    assert "c.ServerApp.port = 8890" in config.read_text()

    again = sparkprov("apply", site, "--format", "json", home=home)
    assert again.rc == EXIT_OK and again.stats()["changed"] == 0, again
    assert sparkprov("plan", site, home=home).rc == EXIT_OK


def test_the_course_startup_path_fails_the_plan_with_the_reason(tmp_path: Path) -> None:
    site = write_text(
        tmp_path / "site.yml",
        """\
        - hosts: all
          gather_facts: false
          tasks:
            - name: course startup
              jupyter:
                startup_scripts: [{dest: ~/.jupyter/startup.py, content: "import torch\\n"}]
        """,
    )
    run = sparkprov("plan", site, "--format", "json", home=tmp_path / "home")
    assert run.rc == EXIT_FAILED, run
    assert "the course's ~/.jupyter/startup.py is never executed" in run.result("course startup")["msg"]
    assert not (tmp_path / "home/.jupyter").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("startup_scripts: [{name: startup.txt, content: x}]", "a file name ending in .py or .ipy"),
        ("server_config: {token: abcd, token_env: T}", "'token' and 'token_env' are mutually exclusive"),
        ("root_prefix: /srv/dev-root", "root_prefix"),
    ],
)
def test_invalid_jupyter_arguments_are_input_errors(tmp_path: Path, args: str, message: str) -> None:
    site = write_text(tmp_path / "site.yml", f"- hosts: all\n  tasks:\n    - jupyter: {{{args}}}\n")
    run = sparkprov("validate", site, home=tmp_path / "home")
    assert run.rc == EXIT_INPUT and message in run.stderr, run


DROP_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: drop page cache
      become: {become}
      drop_caches: {{level: 1}}
"""


def _drop_play(tmp: Path, *, become: bool = True) -> Path:
    path = tmp / "drop.yml"
    path.write_text(DROP_PLAY.format(become=str(become).lower()), encoding="utf-8")
    path.chmod(0o644)
    return path


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@needs_root
def test_drop_caches_plans_a_change_and_reports_mem_available(tmp_path: Path) -> None:
    site = _drop_play(tmp_path)
    plan = sparkprov("plan", site, "--format", "json", home=tmp_path)
    assert plan.rc == EXIT_PENDING, plan
    assert plan.result("drop page cache")["msg"] == "sync; echo 1 > /proc/sys/vm/drop_caches"
    applied = sparkprov("apply", site, "--format", "json", home=tmp_path)
    assert applied.rc == EXIT_OK, applied
    result = applied.result("drop page cache")
    assert result["changed"] is True and result["msg"].startswith("MemAvailable ")
    assert result["freed_kib"] == result["mem_available_after_kib"] - result["mem_available_before_kib"]


_READ_ONLY_PROC_SYS = 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"'


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_drop_caches_in_a_container_view_of_proc_sys_is_not_permitted(tmp_path: Path) -> None:
    """sparkprov itself runs where /proc/sys is read-only, as in an unprivileged container."""
    site = _drop_play(tmp_path)
    unshare = ["unshare", "--mount", "sh", "-c", _READ_ONLY_PROC_SYS, "sh", sys.executable]
    proc = sparkprov("apply", site, home=tmp_path, python=unshare, timeout=60)
    assert proc.rc == EXIT_FAILED, proc
    assert (
        "not permitted: /proc/sys/vm/drop_caches is not writable here (running in a container?)"
        in proc.stdout
    )
    assert "run it on the host" in proc.stdout


@pytest.mark.root
def test_drop_caches_as_a_user_needs_become(sudo_user: SudoUser, shared_tmp: Path) -> None:
    without = sudo_user.sparkprov("apply", _drop_play(shared_tmp, become=False), cwd=shared_tmp)
    assert without.rc == EXIT_FAILED, explain(without)
    assert "needs become: true (root)" in without.stdout
    with_become = sudo_user.sparkprov("apply", _drop_play(shared_tmp, become=True), cwd=shared_tmp)
    assert with_become.rc == EXIT_OK, explain(with_become)
    assert "MemAvailable " in with_become.stdout
