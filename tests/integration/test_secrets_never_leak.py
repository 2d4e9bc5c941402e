"""Secrets never leak: a playbook uses two random secrets every way a user could (an `NGC_API_KEY` in
the environment, a play variable `hf_token`), and every output of plan, apply (text, `--diff`,
`--format json`), verify and `--report DIR` is searched for them, with the command lines of every
process on the machine sampled while a task sleeps. The files the playbook writes on the host hold
the secrets on purpose: that is the host's state, not output. The mask (`********`) is fine."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cli import cli_env, sparkprov

MASK = "********"
SLEEP_S = 1.5  # the task during which the process list is sampled
SAMPLE_EVERY_S = 0.02
PS_EVERY = 5  # run `ps -eo args` on every 5th sample; read /proc/*/cmdline on all of them

TEMPLATE = "token = {{ hf_token }}\nkey = {{ ngc_key }}\n"
PLAYBOOK = """\
- name: use the secrets every way
  hosts: localhost
  gather_facts: false
  vars:
    hf_token: {hf_token}
    ngc_key: "{{{{ lookup('env', 'NGC_API_KEY') }}}}"
    out: {host}
  tasks:
    - name: echo the key from the environment
      shell: echo "key=$NGC_API_KEY token=$HF"
      environment: {{HF: "{{{{ hf_token }}}}"}}
      register: echoed
      changed_when: false
      check_mode: false
    - name: show what was registered
      debug: var=echoed
    - name: render a template with both
      template: {{src: token.j2, dest: "{{{{ out }}}}/token.conf", mode: "0600"}}
    - name: copy the token
      copy: {{content: "token={{{{ hf_token }}}}\\n", dest: "{{{{ out }}}}/token.txt", mode: "0600"}}
    - name: a line with the token
      lineinfile:
        {{path: "{{{{ out }}}}/line.conf", line: "HF_TOKEN={{{{ hf_token }}}}", create: true, mode: "0600"}}
    - name: "log in with {{{{ hf_token }}}}"
      debug: {{msg: "token is {{{{ hf_token }}}}"}}
    - name: show the token
      debug: var=hf_token
    - name: derive a header
      set_fact: {{auth_header: "Bearer {{{{ hf_token }}}}"}}
    - name: show the header
      debug: var=auth_header
    - name: loop over it
      debug: {{msg: "item {{{{ item }}}}"}}
      loop: ["{{{{ hf_token }}}}", plain]
    - name: hidden task with the token in its arguments and output
      command: {{cmd: cat, stdin: "{{{{ hf_token }}}}"}}
      no_log: true
    - name: hidden failing task
      shell: echo "$NGC_API_KEY" >&2; exit 3
      no_log: true
      ignore_errors: true
    - name: a long task, with the token in its environment
      shell: sleep {sleep}; touch {{{{ out }}}}/slept
      args: {{creates: "{{{{ out }}}}/slept"}}
      environment: {{HF_TOKEN: "{{{{ hf_token }}}}"}}
    - name: stderr prints the key and the task fails
      shell: echo "rejected key $NGC_API_KEY" >&2; exit 3
      ignore_errors: true
    - name: an assertion that prints the token
      assert: {{that: ["hf_token == 'wrong'"], fail_msg: "expected {{{{ hf_token }}}}"}}
      ignore_errors: true
  verify:
    - name: the key is not what we expect
      command: {{cmd: 'echo "$NGC_API_KEY"', expect: {{stdout: nope}}}}
    - name: the token file holds the token
      command: {{cmd: 'cat {{{{ out }}}}/token.txt', expect: {{stdout: token=nope}}}}
- name: give up
  hosts: localhost
  gather_facts: false
  vars:
    hf_token: {hf_token}
  tasks:
    - name: fail with the token
      fail: msg="token {{{{ hf_token }}}} was rejected"
"""


@dataclass(frozen=True)
class Secrets:
    """The two secrets, and the strings that must appear nowhere (their random parts)."""

    ngc_api_key: str
    hf_token: str
    needles: tuple[str, ...]


def _token() -> Secrets:
    ngc, hf = f"nvapi-{secrets.token_urlsafe(24)}", f"hf_{secrets.token_hex(16)}"
    return Secrets(ngc, hf, (ngc, hf))


def _shaped(shape: Callable[[str, str], str]) -> Callable[[], Secrets]:
    """Secrets built around random parts; a leak in any form (escaped, split in lines) shows a part."""

    def make() -> Secrets:
        parts = [secrets.token_hex(8) for _ in range(4)]
        return Secrets(shape(parts[0], parts[1]), shape(parts[2], parts[3]), tuple(parts))

    return make


SHAPES = [
    pytest.param(_token, id="token"),
    pytest.param(
        _shaped(lambda a, b: f"{a}\\\"'{b}"),
        id="password-with-quotes",
    ),
    pytest.param(
        _shaped(lambda a, b: f"-----BEGIN PRIVATE KEY-----\n{a}\n{b}\n-----END PRIVATE KEY-----"),
        id="multi-line-private-key",
    ),
]


@dataclass
class ProcessWatch:
    """Command lines of every process on the machine, sampled in a thread: where a secret showed up,
    and whether the sleeping task was seen at all (else the sampling proved nothing)."""

    needles: tuple[str, ...]
    marker: str
    leaks: list[str] = field(default_factory=list)
    saw_marker: bool = False
    samples: int = 0

    def check(self, source: str, text: str) -> None:
        if self.marker in text:
            self.saw_marker = True
        self.leaks.extend(f"{source}: {line}" for line in _leaking_lines(text, self.needles))

    def sample(self) -> None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    raw = (entry / "cmdline").read_bytes()
                except OSError:  # the process ended meanwhile
                    continue
                self.check(f"/proc/{entry.name}/cmdline", raw.replace(b"\0", b" ").decode("utf-8", "replace"))
        if self.samples % PS_EVERY == 0:
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False)
            self.check("ps -eo args", ps.stdout)
        self.samples += 1


@contextmanager
def watching(watch: ProcessWatch) -> Iterator[ProcessWatch]:
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            watch.sample()
            stop.wait(SAMPLE_EVERY_S)

    thread = threading.Thread(target=loop, name="process-watch", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join(timeout=10)


def _leaking_lines(text: str, needles: tuple[str, ...]) -> list[str]:
    """Lines holding a needle, with the needle replaced so the failure message does not print it."""
    lines = []
    for line in text.splitlines():
        if any(needle in line for needle in needles):
            for needle in needles:
                line = line.replace(needle, "<SECRET>")
            lines.append(line.strip()[:300])
    return lines


@dataclass(frozen=True)
class Layout:
    """Inputs, the host's files (secrets allowed), and everything that counts as output."""

    root: Path

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def host(self) -> Path:
        return self.root / "host"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmpdir(self) -> Path:
        return self.root / "tmp"

    def reports(self, name: str) -> Path:
        return self.root / "reports" / name

    def output_files(self) -> Iterator[Path]:
        """Every file written outside the host's directory and the playbook itself."""
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and self.host not in path.parents and path != self.project / "site.yml":
                yield path


# (name, arguments after the playbook, expected exit code): plan, apply (text, --diff: the run that
# sleeps), apply --format json and verify, each with --report where it fits. Each run ends with the
# `fail` task of the second play: exit 1.
RUNS: list[tuple[str, tuple[str, ...], int]] = [
    ("plan", ("--report", "{reports}/plan"), 1),
    ("apply", ("--diff",), 1),
    ("apply", ("--format", "json", "--diff", "--report", "{reports}/apply"), 1),
    ("verify", ("--format", "json", "--report", "{reports}/verify"), 1),
    ("verify", (), 1),
]


def _write_inputs(layout: Layout, known: Secrets) -> None:
    for path in (layout.project / "templates", layout.host, layout.home, layout.tmpdir):
        path.mkdir(parents=True)
    (layout.project / "templates" / "token.j2").write_text(TEMPLATE, encoding="utf-8")
    playbook = PLAYBOOK.format(
        hf_token=json.dumps(known.hf_token), host=json.dumps(str(layout.host)), sleep=SLEEP_S
    )
    (layout.project / "site.yml").write_text(playbook, encoding="utf-8")


def _environment(layout: Layout, known: Secrets) -> dict[str, str]:
    # State (the run journal), caches and temporary files all land under HOME and TMPDIR: scanned.
    env = cli_env({"NGC_API_KEY": known.ngc_api_key, "TMPDIR": str(layout.tmpdir)}, home=layout.home)
    return {k: v for k, v in env.items() if not k.startswith(("XDG_", "SPARKPROV_"))}


@pytest.mark.parametrize("make_secrets", SHAPES)
def test_secrets_appear_in_no_output(tmp_path: Path, make_secrets: Callable[[], Secrets]) -> None:
    known = make_secrets()
    layout = Layout(tmp_path)
    _write_inputs(layout, known)
    env = _environment(layout, known)
    watch = ProcessWatch(known.needles, marker=str(layout.host / "slept"))
    leaks: list[str] = []  # where a secret showed up: "place: line", the secret replaced
    masked = 0

    with watching(watch):
        for command, args, expected_rc in RUNS:
            argv = [command, "site.yml", *(a.format(reports=layout.root / "reports") for a in args)]
            proc = sparkprov(*argv, env=env, cwd=layout.project, timeout=120)
            label = " ".join(argv)
            for stream, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
                leaks += [f"{label} ({stream}): {line}" for line in _leaking_lines(text, known.needles)]
            assert not leaks, "secrets leaked:\n" + "\n".join(leaks[:40])
            assert proc.rc == expected_rc, f"{label} -> {proc.rc}\n{proc.stderr[-3000:]}"
            assert "Traceback" not in proc.stderr, f"{label}\n{proc.stderr[-3000:]}"
            masked += (proc.stdout + proc.stderr).count(MASK)

    for path in layout.output_files():
        text = path.read_bytes().decode("utf-8", "replace")
        leaks += [f"{path.relative_to(layout.root)}: {line}" for line in _leaking_lines(text, known.needles)]
    leaks += watch.leaks
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks[:40])

    # The test saw what it claims to: the secrets reached the host, output masked them, the process
    # list was sampled while the long task ran, and every report was written.
    written = (layout.host / "token.conf").read_text(encoding="utf-8")
    assert known.hf_token in written and known.ngc_api_key in written
    assert masked >= 10, f"only {masked} masked values in the output"
    assert watch.saw_marker, f"the sleeping task never showed in {watch.samples} samples of the process list"
    for name in ("plan", "apply", "verify"):
        assert {p.name for p in layout.reports(name).iterdir()} >= {"report.json", "junit.xml", "report.md"}
