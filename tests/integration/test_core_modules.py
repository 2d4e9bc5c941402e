"""The core modules end to end: `sparkprov apply --format json` on the local connection.

Each test seeds its own base directory, applies one playbook from tests/data/modules/ and checks
what is on disk (bytes, type, mode, owner, link target), what the JSON report says, and that a
second apply changes nothing.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
from pathlib import Path

import pytest

from tests.cli import MODULE_PLAYBOOKS, CliRun, apply_twice, current_umask, mode_of, run_playbook

FILE_MODE = 0o666 & ~current_umask()


def assert_failed(run: CliRun, task: str, *fragments: str, ignored: bool = True) -> None:
    result = run.result(task)
    assert result["failed"] is True, result
    assert result.get("ignored", False) is ignored, result
    for fragment in fragments:
        assert fragment in result["msg"], result["msg"]


def assert_rc(run: CliRun, task: str, rc: int, stderr: str) -> None:
    result = run.result(task)
    assert (result["rc"], result["stderr"]) == (rc, stderr), result


def write(path: Path, content: str | bytes = "", perms: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(perms)
    return path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------- file


def test_file_states(tmp_path: Path) -> None:
    plain = write(tmp_path / "plain.txt", "plain\n", 0o644)
    (tmp_path / "link-old").symlink_to("target-a")
    write(tmp_path / "over-file", "was a file\n")
    write(tmp_path / "gone.txt", "bye\n")
    write(tmp_path / "gone-tree" / "x" / "y" / "z.txt", "deep\n")
    for path, perms in [("rtree", 0o700), ("rtree/sub", 0o700)]:
        (tmp_path / path).mkdir()
        (tmp_path / path).chmod(perms)
    write(tmp_path / "rtree" / "f.txt", "f\n", 0o600)
    write(tmp_path / "rtree" / "sub" / "g.txt", "g\n", 0o600)
    write(tmp_path / "sym-equals.txt", "", 0o777)
    write(tmp_path / "sym-plus.txt", "", 0o644)
    (tmp_path / "sym-dir").mkdir(mode=0o700)

    run = apply_twice("file.yml", tmp_path)

    unchanged = {"state file on a missing path", "absent and already missing"}
    assert run.changed_tasks() == set(run.ran()) - unchanged
    for directory in ("a", "a/b", "a/b/c"):
        assert (tmp_path / directory).is_dir() and mode_of(tmp_path / directory) == 0o750, directory
    assert (plain.read_text(), mode_of(plain)) == ("plain\n", 0o600)
    assert_failed(run, "state file on a missing path", "missing.txt", "absent")
    assert not (tmp_path / "missing.txt").exists()
    assert os.readlink(tmp_path / "link-new") == str(plain)
    assert os.readlink(tmp_path / "link-old") == "target-b"
    assert os.readlink(tmp_path / "over-file") == "plain.txt"
    assert (tmp_path / "hard.txt").stat().st_ino == plain.stat().st_ino
    assert plain.stat().st_nlink == 2
    assert not (tmp_path / "gone.txt").exists() and not (tmp_path / "gone-tree").exists()
    assert run.result("absent and already missing")["failed"] is False
    tree = [tmp_path / p for p in ("rtree", "rtree/sub", "rtree/f.txt", "rtree/sub/g.txt")]
    assert {p.name: mode_of(p) for p in tree} == {p.name: 0o750 for p in tree}
    assert mode_of(tmp_path / "sym-equals.txt") == 0o640
    assert mode_of(tmp_path / "sym-plus.txt") == 0o664
    assert mode_of(tmp_path / "sym-dir") == 0o755


def test_file_touch_changes_times_unless_preserved(tmp_path: Path) -> None:
    first = run_playbook("apply", "file_touch.yml", tmp_path, expect_rc=0)
    touched, kept = tmp_path / "touched", tmp_path / "kept"
    assert first.changed_tasks() == {"touch", "touch keeping times"}
    assert (touched.read_bytes(), mode_of(touched)) == (b"", 0o640)
    assert (kept.read_bytes(), mode_of(kept)) == (b"", FILE_MODE)

    old = 1_000_000_000
    for path in (touched, kept):
        os.utime(path, (old, old))
    second = run_playbook("apply", "file_touch.yml", tmp_path, expect_rc=0)
    assert second.changed_tasks() == {"touch"}  # like Ansible: touch always updates the times
    assert touched.stat().st_mtime > old
    assert (kept.stat().st_mtime, kept.stat().st_atime) == (old, old)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_file_owner_and_group_by_name_and_number(tmp_path: Path) -> None:
    try:
        other = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this host")
    other_group = grp.getgrgid(other.pw_gid).gr_name  # 'nogroup' on Debian, 'nobody' elsewhere
    for name in ("root-by-name", "root-by-number", "other-by-name", "other-by-number"):
        write(tmp_path / name, name)
        if name.startswith("root"):
            os.chown(tmp_path / name, other.pw_uid, other.pw_gid)
    extra = {
        "root_group": grp.getgrgid(0).gr_name,
        "other_user": other.pw_name,
        "other_group": other_group,
        "other_uid": other.pw_uid,
        "other_gid": other.pw_gid,
    }

    run = apply_twice("file_owner.yml", tmp_path, extra)

    assert run.stats()["changed"] == 4
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in tmp_path.iterdir()}
    assert owners == {
        "root-by-name": (0, 0),
        "root-by-number": (0, 0),
        "other-by-name": (other.pw_uid, other.pw_gid),
        "other-by-number": (other.pw_uid, other.pw_gid),
    }


def test_file_link_over_a_file_needs_force(tmp_path: Path) -> None:
    regular = write(tmp_path / "regular", "keep me\n")
    run = run_playbook("apply", "file_link_no_force.yml", tmp_path, expect_rc=1)
    assert_failed(run, "symlink over a file without force", "file", ignored=False)
    assert not regular.is_symlink() and regular.read_text() == "keep me\n"


def test_file_recursive_symbolic_mode_is_per_path(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    write(tree / "data.txt", "d\n", 0o666)
    write(tree / "run.sh", "#!/bin/sh\n", 0o777)
    apply_twice("file_recurse_symbolic.yml", tmp_path)
    found = {str(p.relative_to(tree)): mode_of(p) for p in tree.rglob("*")}
    assert (mode_of(tree), found) == (0o750, {"sub": 0o750, "data.txt": 0o640, "run.sh": 0o750})


# ---------------------------------------------------------------------------------------------- copy


def test_copy(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    keep = write(tmp_path / "keep.txt", "original\n")
    write(tmp_path / "backup.txt", "old\n")
    write(tmp_path / "source" / "odd-mode.txt", "odd\n", 0o604)
    blob = bytes(range(256)) * 4 + b"\0\xff\r\n"
    write(tmp_path / "source" / "blob.bin", blob)

    run = apply_twice("copy.yml", tmp_path)

    content = tmp_path / "content.txt"
    assert (content.read_bytes(), mode_of(content)) == (b"line one\nline two\n", 0o640)
    expected_json = {"name": "SPARK", "ports": [8080, 443], "nested": {"enabled": True}}
    assert (tmp_path / "content.json").read_text() == json.dumps(expected_json)
    files = MODULE_PLAYBOOKS / "files"
    motd = tmp_path / "motd.txt"
    assert (motd.read_bytes(), mode_of(motd)) == ((files / "motd.txt").read_bytes(), FILE_MODE)
    assert (tmp_path / "beside.txt").read_bytes() == (MODULE_PLAYBOOKS / "beside.txt").read_bytes()
    assert (tmp_path / "dest" / "notes.txt").read_bytes() == (files / "notes.txt").read_bytes()
    assert files_under(tmp_path / "tree-itself") == {"tree/a.txt", "tree/inner/b.txt"}
    assert files_under(tmp_path / "tree-contents") == {"a.txt", "inner/b.txt"}
    for copied in ("tree-itself/tree", "tree-contents"):
        for name in ("a.txt", "inner/b.txt"):
            assert (tmp_path / copied / name).read_bytes() == (files / "tree" / name).read_bytes()
    assert ((tmp_path / "preserved.txt").read_text(), mode_of(tmp_path / "preserved.txt")) == ("odd\n", 0o604)
    assert keep.read_text() == "original\n"
    assert run.result("force false keeps an existing file")["changed"] is False
    assert (tmp_path / "fresh.txt").read_text() == "fresh\n"
    assert (tmp_path / "backup.txt").read_text() == "new\n"
    backups = list(tmp_path.glob("backup.txt.*~"))
    assert [str(p) for p in backups] == [run.result("backup of the old content")["backup_file"]]
    assert backups[0].read_text() == "old\n"
    assert (tmp_path / "blob.bin").read_bytes() == blob
    assert_failed(run, "missing destination directory", f"{tmp_path}/no/such/dir", "does not exist")
    assert not (tmp_path / "no").exists()


def test_copy_dest_with_slash_creates_the_directory(tmp_path: Path) -> None:
    apply_twice("copy_dest_slash_missing.yml", tmp_path)
    notes = (MODULE_PLAYBOOKS / "files" / "notes.txt").read_bytes()
    assert (tmp_path / "new" / "dir" / "notes.txt").read_bytes() == notes


def test_copy_directory_plans_each_path_once(tmp_path: Path) -> None:
    run = run_playbook("plan", "copy_tree.yml", tmp_path, expect_rc=2)
    root = tmp_path / "tree-itself" / "tree"
    paths = [diff["before_header"] for entry in run.doc["plan"] for diff in entry["diff"]]
    assert sorted(paths) == sorted(str(root / p) for p in ("", "inner", "a.txt", "inner/b.txt"))


# ------------------------------------------------------------------------------------------ template

RENDERED = "# Ansible managed\nuser 1: ANN\nuser 2: CAROL\nmotd: hello\nports: 443, 8080\n"


def test_template(tmp_path: Path) -> None:
    run = apply_twice("template.yml", tmp_path)

    default = tmp_path / "default.txt"
    # trim_blocks by default: no blank line for {% %} lines; the trailing newline is kept.
    assert default.read_text() == RENDERED + "    indented\n    last line\n"
    assert mode_of(default) == 0o640
    assert (tmp_path / "lstrip.txt").read_text() == RENDERED + "indented\nlast line\n"
    assert (tmp_path / "untrimmed.txt").read_text() == (
        "# Ansible managed\n\nuser 1: ANN\n\nuser 2: CAROL\n\n\nmotd: hello\n\nports: 443, 8080\n"
        "    \nindented\n    \nlast line\n"
    )
    crlf = (tmp_path / "crlf.txt").read_bytes()
    assert crlf == default.read_bytes().replace(b"\n", b"\r\n")
    assert_failed(run, "undefined attribute while rendering", "missing_key", "undefined_attr.j2")
    assert not (tmp_path / "undefined.txt").exists()


def test_template_undefined_variable_is_invalid_input(tmp_path: Path) -> None:
    run = run_playbook("apply", "template_undefined.yml", tmp_path, expect_rc=4)
    problems = run.doc["problems"]
    assert [(p["key"], Path(p["file"]).name, p["line"]) for p in problems] == [
        ("defined_nowhere", "undefined_var.j2", 2)
    ]
    assert "undefined variable 'defined_nowhere'" in problems[0]["message"]
    assert list(tmp_path.iterdir()) == [], "nothing may run before the input is valid"


# ------------------------------------------------------------------------------------- command/shell

ALWAYS_RUN = {
    "chdir",
    "argv keeps arguments whole",
    "stdin",
    "failed_when not met",
    "shell pipes and redirections",
}


def test_command_and_shell(tmp_path: Path) -> None:
    write(tmp_path / "exists.txt")
    write(tmp_path / "doomed.txt")
    (tmp_path / "sub").mkdir()

    run = run_playbook("apply", "command.yml", tmp_path, expect_rc=0)

    assert run.changed_tasks() == ALWAYS_RUN | {
        "creates, path missing",
        "removes, path present",
        "registered output in when and content",
    }
    assert (tmp_path / "created.txt").exists() and not (tmp_path / "doomed.txt").exists()
    skipped = {
        "creates, path present": f"skipped, since {tmp_path}/exists.txt exists",
        "removes, path missing": f"skipped, since {tmp_path}/absent.txt does not exist",
    }
    for task, message in skipped.items():
        assert (run.result(task)["msg"], run.result(task)["changed"]) == (message, False)
    assert not (tmp_path / "not-run-1").exists() and not (tmp_path / "not-run-2").exists()
    assert run.result("chdir")["stdout"] == os.path.realpath(tmp_path / "sub")
    assert run.result("argv keeps arguments whole")["stdout"] == "two words|it's||"
    assert run.result("stdin")["stdout"] == "FROM STDIN"
    assert run.result("changed_when false")["changed"] is False
    assert_failed(run, "failed_when on the output")
    assert run.result("failed_when on the output")["rc"] == 0
    assert run.result("failed_when not met")["failed"] is False
    assert_failed(run, "non-zero return code", "non-zero return code 3")
    assert_rc(run, "non-zero return code", 3, "oops")
    assert run.stats()["ignored"] == 2
    assert (tmp_path / "sorted.txt").read_text() == "A\nB\n"
    assert (tmp_path / "from-register.txt").read_text() == "2 lines\n"
    assert run.result("registered output makes when false")["skipped"] is True
    assert not (tmp_path / "never.txt").exists()

    # Commands without a guard run (and report a change) every time; guarded ones do not.
    again = run_playbook("apply", "command.yml", tmp_path, expect_rc=0)
    assert again.changed_tasks() == ALWAYS_RUN
    assert again.result("creates, path missing")["msg"] == f"skipped, since {tmp_path}/created.txt exists"


def test_command_failure_stops_the_host(tmp_path: Path) -> None:
    run = run_playbook("apply", "command_fail.yml", tmp_path, expect_rc=1)
    assert_failed(run, "non-zero return code", "non-zero return code 5", ignored=False)
    assert_rc(run, "non-zero return code", 5, "broken")
    assert "after the failure" not in run.ran() and not (tmp_path / "after-failure").exists()
    assert run.stats()["failures"] == 1


# ---------------------------------------------------------------------------------------- lineinfile


def test_lineinfile(tmp_path: Path) -> None:
    settings = write(tmp_path / "settings.conf", "port=80\ndebug=true\nname=x\n", 0o640)

    run = apply_twice("lineinfile.yml", tmp_path)

    assert (settings.read_text(), mode_of(settings)) == ("port=8080\nname=x\nadded=yes\n", 0o640)
    messages = {
        "present, appended": "line added",
        "regexp replaces": "line replaced",
        "absent by regexp": "1 line(s) removed",
        "created with mode": "line added",
    }
    assert {task: run.result(task)["msg"] for task in messages} == messages
    created = tmp_path / "new" / "created.conf"
    assert (created.read_text(), mode_of(created)) == ("first=1\n", 0o600)


# ------------------------------------------------------------------------------------------- service


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd is running on this host")
def test_service_without_systemd_fails_clearly(tmp_path: Path) -> None:
    run = run_playbook("apply", "service.yml", tmp_path, expect_rc=1)
    assert_failed(run, "service started", "systemd is not running", ignored=False)
    assert "after the service" not in run.ran() and not (tmp_path / "after-service").exists()


# ------------------------------------------------------------------------- debug/set_fact/assert/fail


def test_debug_set_fact_assert_fail(tmp_path: Path) -> None:
    run = run_playbook("apply", "actions.yml", tmp_path, expect_rc=1)

    assert (tmp_path / "fact.txt").read_text() == "hello spark 42\n"
    assert run.result("set a fact")["ansible_facts"] == {"greeting": "hello spark", "answer": 42}
    assert run.result("debug a variable")["greeting"] == "hello spark"
    assert run.result("debug a message")["msg"] == "the answer is 42"
    assert run.result("assert passing")["msg"] == "all good"
    assert_failed(run, "assert failing, ignored", "answer is 42, not 41")
    assert_failed(run, "fail", "stopped on purpose", ignored=False)
    assert "after fail" not in run.ran() and not (tmp_path / "after-fail").exists()
    assert {k: run.stats()[k] for k in ("changed", "failures", "ignored")} == {
        "changed": 1,
        "failures": 1,
        "ignored": 1,
    }


def test_failed_host_skips_later_plays(tmp_path: Path) -> None:
    run = run_playbook("apply", "failed_host.yml", tmp_path, expect_rc=1)
    assert "later play on a failed host" not in run.ran()
    assert not (tmp_path / "later-play").exists()
