"""Hostile names and values (spaces, quotes, `$(...)`, backticks, `;`, newlines, leading dashes) go
through file, copy, template, lineinfile, command (argv and cmd) and shell (`| quote`) untouched:
the exact files exist with the exact contents, and no shell ever ran what the values say."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from tests.integration.cli import apply_twice, sparkprov

NAMES = [
    "with space",
    "single'quote",
    'double"quote',
    "$(touch pwned)",
    "`touch pwned`",
    "semi; touch pwned",
    "new\nline",
    "-rf",
    "--help",
]
# Balanced for shlex, so the command module can split them: it must not hand them to a shell.
UNQUOTED = ["$(touch pwned)", "`touch pwned`", "a; touch pwned", "a && touch pwned", "a | touch pwned > x"]
EVIL = "$(touch pwned) `touch pwned`; 'single' \"double\" && touch pwned\n-rf"

# Directory the playbook writes each name into -> the bytes expected in that file.
EXPECTED: dict[str, Callable[[str], bytes]] = {
    "file": lambda name: b"",
    "copy": lambda name: name.encode(),
    "template": lambda name: f"value={name}\n".encode(),
    "lineinfile": lambda name: name.replace("\n", " ").encode() + b"\n",
    "argv": lambda name: b"",
    "cmd": lambda name: b"",
    "shell": lambda name: name.encode(),
}


def test_hostile_names_and_values_are_never_interpreted(tmp_path: Path) -> None:
    base, cwd = tmp_path / "base", tmp_path / "cwd"
    base.mkdir()
    cwd.mkdir()
    extra = {"names": NAMES, "unquoted": UNQUOTED, "evil": EVIL}

    run = apply_twice("shell_safety.yml", base, extra, cwd=cwd)
    sparkprov("plan", "shell_safety.yml", base, extra, cwd=cwd, expect_rc=0)

    for directory, content in EXPECTED.items():
        found = {p.name: p.read_bytes() for p in (base / directory).iterdir()}
        expected = {name: content(name) for name in NAMES}
        if directory == "copy":
            expected["extra-var.txt"] = EVIL.encode()
        assert found == expected, directory
    echoed = [item["stdout"] for item in run.result("command cmd without a shell")["results"]]
    assert echoed == [" ".join(shlex.split(value)) for value in UNQUOTED]
    assert not [p for root in (base, cwd) for p in root.rglob("pwned")]
    assert not (Path.cwd() / "pwned").exists()
