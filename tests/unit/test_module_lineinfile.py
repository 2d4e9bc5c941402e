"""lineinfile against real files through the local connection.

Every converging case checks the planned Change, that `check` alone leaves the file alone, that
`apply` writes exactly the expected bytes, and that a second `check` finds nothing to do. Expected
contents are derived by hand from Ansible's present()/absent() (lib/ansible/modules/lineinfile.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sparkprov.connection.local import LocalConnection
from sparkprov.modules.base import Change, ModuleFailure, TaskContext
from sparkprov.modules.lineinfile import LineInFileModule
from sparkprov.playbook.templating import Scope

MODULE = LineInFileModule()


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return TaskContext(conn=LocalConnection(), become=None, scope=Scope([]), search_dirs=(tmp_path,))


def _snapshot(path: Path) -> tuple[bytes, int] | None:
    return (path.read_bytes(), path.stat().st_mode & 0o7777) if path.exists() else None


def converge(ctx: TaskContext, path: Path, args: dict[str, Any]) -> Change:
    """check (read-only), apply, check again (converged); return the first Change."""
    args = {"path": str(path), **args}
    before = _snapshot(path)
    change = MODULE.check(args, ctx)
    assert change is not None
    assert _snapshot(path) == before, "check must not touch the file"
    outcome = MODULE.apply(change, ctx)
    assert outcome.changed
    assert outcome.msg == change.data["msg"]
    assert MODULE.check(args, ctx) is None, "a second check must find nothing to do"
    return change


def write(path: Path, content: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


# (initial content, arguments, expected content, Ansible's msg)
CASES: dict[str, tuple[bytes, dict[str, Any], bytes, str]] = {
    "regexp replaces the last match": (
        b"a=1\nb=2\na=3\n",
        {"regexp": "^a=", "line": "a=9"},
        b"a=1\nb=2\na=9\n",
        "line replaced",
    ),
    "regexp with firstmatch replaces the first match": (
        b"a=1\nb=2\na=3\n",
        {"regexp": "^a=", "line": "a=9", "firstmatch": True},
        b"a=9\nb=2\na=3\n",
        "line replaced",
    ),
    "regexp without match appends at EOF": (
        b"x\n",
        {"regexp": "^nope", "line": "y"},
        b"x\ny\n",
        "line added",
    ),
    "regexp wins over insertafter": (
        b"[a]\nport=1\n[b]\n",
        {"regexp": "^port=", "line": "port=2", "insertafter": r"^\[b\]"},
        b"[a]\nport=2\n[b]\n",
        "line replaced",
    ),
    "search_string replaces the last line containing it": (
        b"#PermitRootLogin prohibit-password\nPort 22\n",
        {"search_string": "PermitRootLogin", "line": "PermitRootLogin no"},
        b"PermitRootLogin no\nPort 22\n",
        "line replaced",
    ),
    "backrefs expand the groups of the match": (
        b"host=old # keep\n",
        {"regexp": r"^(host=)\S+(.*)$", "line": r"\1new\2", "backrefs": True},
        b"host=new # keep\n",
        "line replaced",
    ),
    "no newline at EOF: one is added before the line": (b"a\nb", {"line": "c"}, b"a\nb\nc\n", "line added"),
    "empty file": (b"", {"line": "only"}, b"only\n", "line added"),
    "insertafter regex: after the last matching line": (
        b"[a]\nx=1\n[b]\ny=2\n",
        {"line": "new=1", "insertafter": r"^\["},
        b"[a]\nx=1\n[b]\nnew=1\ny=2\n",
        "line added",
    ),
    "insertafter regex with firstmatch: after the first": (
        b"[a]\nx=1\n[b]\ny=2\n",
        {"line": "new=1", "insertafter": r"^\[", "firstmatch": True},
        b"[a]\nnew=1\nx=1\n[b]\ny=2\n",
        "line added",
    ),
    "insertafter regex without match falls back to EOF": (
        b"a\n",
        {"line": "new", "insertafter": "^nothing"},
        b"a\nnew\n",
        "line added",
    ),
    "insertafter the last line": (
        b"a\nlast\n",
        {"line": "new", "insertafter": "^last"},
        b"a\nlast\nnew\n",
        "line added",
    ),
    "insertbefore regex: before the last matching line": (
        b"[a]\nx=1\n[b]\ny=2\n",
        {"line": "new=1", "insertbefore": r"^\["},
        b"[a]\nx=1\nnew=1\n[b]\ny=2\n",
        "line added",
    ),
    "insertbefore BOF": (b"a\nb\n", {"line": "first", "insertbefore": "BOF"}, b"first\na\nb\n", "line added"),
    "insertafter BOF": (b"a\n", {"line": "first", "insertafter": "BOF"}, b"first\na\n", "line added"),
    # Ansible oddities kept on purpose: these are what ansible.builtin.lineinfile writes.
    "exact line without its newline at EOF is rewritten": (
        b"x\ny",
        {"regexp": "^zzz", "line": "y"},
        b"x\ny\n",
        "line replaced",
    ),
    "exact CRLF line is rewritten with LF": (b"a\r\nb\r\n", {"line": "b"}, b"a\r\nb\n", "line replaced"),
    "insertbefore with firstmatch stops before seeing the line": (
        b"[a]\nnew\n",
        {"line": "new", "insertbefore": r"^\[", "firstmatch": True},
        b"new\n[a]\nnew\n",
        "line added",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_present(ctx: TaskContext, tmp_path: Path, name: str) -> None:
    initial, args, expected, msg = CASES[name]
    path = write(tmp_path / "f.conf", initial)
    change = converge(ctx, path, args)
    assert path.read_bytes() == expected
    assert change.summary == f"{path}: {msg}"
    assert change.data["msg"] == msg
    [diff] = change.diffs
    assert (diff.before, diff.after) == (initial.decode(), expected.decode())


def test_replace_diff_is_unified(ctx: TaskContext, tmp_path: Path) -> None:
    path = write(tmp_path / "f.conf", b"a=1\nb=2\n")
    change = MODULE.check({"path": str(path), "regexp": "^a=", "line": "a=9"}, ctx)
    assert change is not None
    assert "-a=1\n+a=9\n" in change.diffs[0].unified()


def test_insertafter_unterminated_last_line_keeps_it_whole(ctx: TaskContext, tmp_path: Path) -> None:
    # Ansible would write b"a\nlastnew\n" here; sparkprov terminates the anchor line first.
    path = write(tmp_path / "f.conf", b"a\nlast")
    converge(ctx, path, {"line": "new", "insertafter": "^last"})
    assert path.read_bytes() == b"a\nlast\nnew\n"


@pytest.mark.parametrize(
    ("content", "args"),
    [
        (b"a\nb\n", {"line": "b"}),  # the exact line is there
        (b"y\n", {"regexp": "^nomatch", "line": "y"}),  # no regexp match, but the exact line is there
        (b"a=1\n", {"regexp": "^b=(.*)$", "line": r"b=\1", "backrefs": True}),  # backrefs, no match
        (b"[a]\nnew\nx\n", {"line": "new", "insertafter": r"^\[a\]"}),
        (b"host=new\n", {"regexp": r"^(host=)\S+$", "line": r"\1new", "backrefs": True}),
    ],
)
def test_present_already_there(
    ctx: TaskContext, tmp_path: Path, content: bytes, args: dict[str, Any]
) -> None:
    path = write(tmp_path / "f.conf", content)
    assert MODULE.check({"path": str(path), **args}, ctx) is None
    assert path.read_bytes() == content


def test_create_makes_the_file_and_its_directories(ctx: TaskContext, tmp_path: Path) -> None:
    path = tmp_path / "etc" / "app" / "app.conf"
    change = converge(ctx, path, {"line": "key=value", "create": True, "mode": "0600"})
    assert path.read_bytes() == b"key=value\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert change.summary == f"{path}: line added"
    assert (change.diffs[0].before, change.diffs[0].after) == ("", "key=value\n")


def test_create_with_backrefs_and_no_match_creates_nothing(ctx: TaskContext, tmp_path: Path) -> None:
    path = tmp_path / "new.conf"
    args = {"path": str(path), "regexp": "^(a)", "line": r"\1", "backrefs": True, "create": True}
    assert MODULE.check(args, ctx) is None
    assert not path.exists()


def test_missing_file_without_create_fails(ctx: TaskContext, tmp_path: Path) -> None:
    path = tmp_path / "missing.conf"
    with pytest.raises(ModuleFailure, match=r"missing\.conf does not exist.*create: true"):
        MODULE.check({"path": str(path), "line": "x"}, ctx)


def test_directory_fails(ctx: TaskContext, tmp_path: Path) -> None:
    with pytest.raises(ModuleFailure, match="is a directory"):
        MODULE.check({"path": str(tmp_path), "line": "x"}, ctx)


def test_invalid_regexp_fails(ctx: TaskContext, tmp_path: Path) -> None:
    path = write(tmp_path / "f.conf", b"a\n")
    with pytest.raises(ModuleFailure, match="invalid regular expression in 'regexp'"):
        MODULE.check({"path": str(path), "regexp": "(unclosed", "line": "x"}, ctx)


@pytest.mark.parametrize(
    ("args", "expected", "found"),
    [
        ({"line": "a"}, b"b\n#c\n", 2),
        ({"regexp": "^#"}, b"a\nb\na\n", 1),
        ({"search_string": "b"}, b"a\n#c\na\n", 1),
    ],
)
def test_absent(ctx: TaskContext, tmp_path: Path, args: dict[str, Any], expected: bytes, found: int) -> None:
    path = write(tmp_path / "f.conf", b"a\nb\n#c\na\n")
    change = converge(ctx, path, {"state": "absent", **args})
    assert path.read_bytes() == expected
    assert change.data["msg"] == f"{found} line(s) removed"
    assert change.data["found"] == found
    assert change.summary == f"{path}: {found} line(s) removed"


def test_absent_from_missing_file_is_no_change(ctx: TaskContext, tmp_path: Path) -> None:
    path = tmp_path / "missing.conf"
    assert MODULE.check({"path": str(path), "state": "absent", "line": "x"}, ctx) is None
    assert not path.exists()


def test_mode_only(ctx: TaskContext, tmp_path: Path) -> None:
    path = write(tmp_path / "f.conf", b"a\n", 0o644)
    change = converge(ctx, path, {"line": "a", "mode": "0600"})
    assert path.read_bytes() == b"a\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert change.data["msg"] == "mode changed"
    assert change.diffs[0].before == "mode: 0644\n"
    assert change.diffs[0].after == "mode: 0600\n"


def test_line_and_mode(ctx: TaskContext, tmp_path: Path) -> None:
    path = write(tmp_path / "f.conf", b"a\n", 0o644)
    change = converge(ctx, path, {"line": "b", "mode": "u=rw,go="})
    assert path.read_bytes() == b"a\nb\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert change.data["msg"] == "line added and mode changed"
    assert [d.after for d in change.diffs] == ["a\nb\n", "mode: 0600\n"]


def test_backup(ctx: TaskContext, tmp_path: Path) -> None:
    path = write(tmp_path / "f.conf", b"a\n")
    change = MODULE.check({"path": str(path), "line": "b", "backup": True}, ctx)
    assert change is not None
    assert change.data["backup"] == ""
    outcome = MODULE.apply(change, ctx)
    backup = Path(outcome.data["backup"])
    assert backup.parent == tmp_path
    assert backup.read_bytes() == b"a\n"
    assert path.read_bytes() == b"a\nb\n"


def test_symlink_target_is_edited_and_the_link_kept(ctx: TaskContext, tmp_path: Path) -> None:
    target = write(tmp_path / "real.conf", b"a\n")
    link = tmp_path / "link.conf"
    link.symlink_to("real.conf")
    converge(ctx, link, {"line": "b"})
    assert link.is_symlink()
    assert os.readlink(link) == "real.conf"
    assert target.read_bytes() == b"a\nb\n"


def test_predicted_reports_ansible_msg(ctx: TaskContext, tmp_path: Path) -> None:
    path = write(tmp_path / "f.conf", b"a\n")
    args = {"path": str(path), "line": "b"}
    change = MODULE.check(args, ctx)
    assert change is not None
    predicted = MODULE.predicted(change, args)
    assert (predicted.changed, predicted.msg) == (True, "line added")
    assert path.read_bytes() == b"a\n"
