"""Template files may {% include %} others next to them (or from sparkprov's templates/), as in Ansible."""

from __future__ import annotations

from pathlib import Path

from tests.cli import assert_converged, assert_exit, sparkprov

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  vars: {service: jupyter, port: 8888}
  tasks:
    - template: {src: main.conf.j2, dest: "{{ base }}/main.conf"}
"""


def test_included_templates_render_with_the_same_variables(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "main.conf.j2").write_text("[{{ service }}]\n{% include 'port.j2' %}")
    (tmp_path / "templates" / "port.j2").write_text("port = {{ port }}\n")
    playbook = tmp_path / "site.yml"
    playbook.write_text(PLAYBOOK)
    base = tmp_path / "out"
    base.mkdir()
    first = sparkprov("apply", playbook, "-e", f"base={base}", cwd=tmp_path)
    assert_exit(first, 0)
    assert (base / "main.conf").read_text() == "[jupyter]\nport = 8888\n"
    assert_converged(sparkprov("apply", playbook, "-e", f"base={base}", "--format", "json", cwd=tmp_path))
