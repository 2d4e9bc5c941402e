"""Static checks before any host is touched (sparkprov/playbook/static.py via load_inputs): variables
defined nowhere, handlers notified but not defined, template syntax errors and template files."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkprov.playbook.static import unguarded_names
from tests.cli import PLAYBOOK, prepare, problems

HEAD = "- name: web\n  hosts: all\n  gather_facts: false\n  vars:\n    dest_dir: /srv\n  tasks:\n"
TEMPLATE = "templates/app.conf.j2"
DEFINE_HINT = "define it in the play's vars, a vars file, the inventory, or pass -e"


def task(body: str, name: str = "t") -> str:
    """HEAD plus one task; its '- name:' is on line 7, its first body line on line 8."""
    return f"{HEAD}    - name: {name}\n" + "".join(f"      {line}\n" for line in body.splitlines())


# ---------------------------------------------------------------- undefined variables


@pytest.mark.parametrize(
    ("body", "name", "suggestion"),
    [
        pytest.param("file: {path: '{{ dest_dri }}/x', state: directory}", "dest_dri", "dest_dir", id="args"),
        pytest.param("debug: {msg: hi}\nwhen: enable_it", "enable_it", None, id="when"),
        pytest.param("debug: {msg: hi}\nwhen: [true, enable_it | bool]", "enable_it", None, id="when-list"),
        pytest.param("debug: {msg: '{{ item }}'}\nloop: '{{ packages }}'", "packages", None, id="loop"),
        pytest.param(
            "debug: {msg: '{{ item }}'}\nwith_items: '{{ packages }}'", "packages", None, id="with_items"
        ),
        pytest.param("command: 'true'\nregister: r\nuntil: r.rc == rc_ok", "rc_ok", None, id="until"),
        pytest.param("command: 'true'\nchanged_when: chnaged", "chnaged", None, id="changed_when"),
        pytest.param('debug: {msg: "{{ a | default(fallback) }}"}', "fallback", None, id="default-argument"),
        pytest.param(
            "debug: {msg: '{{ ansible_hostname }}'}", "ansible_hostname", None, id="fact-without-gather"
        ),
    ],
)
def test_undefined_variable_in_task(tmp_path: Path, body: str, name: str, suggestion: str | None) -> None:
    (problem,) = problems(tmp_path, task(body))
    assert str(problem.place) == f"{tmp_path / PLAYBOOK}:7:7"
    assert problem.key == name
    assert problem.message == f"undefined variable '{name}' in task 't'"
    assert problem.hint is not None and problem.hint.endswith(f"{DEFINE_HINT} {name}=...")
    if suggestion:
        assert problem.hint.startswith(f"did you mean '{suggestion}'? ")


def test_undefined_variable_in_play_vars(tmp_path: Path) -> None:
    playbook = "- name: web\n  hosts: all\n  gather_facts: false\n  vars:\n    url: 'http://{{ hots }}/'\n"
    (problem,) = problems(tmp_path, playbook)
    assert problem.place.file == str(tmp_path / PLAYBOOK)
    assert problem.key == "hots"
    assert problem.message == "undefined variable 'hots' in variable 'url' of play 'web'"


def test_undefined_variable_in_play_vars_names_the_line(tmp_path: Path) -> None:
    playbook = "- name: web\n  hosts: all\n  gather_facts: false\n  vars:\n    url: 'http://{{ hots }}/'\n"
    (problem,) = problems(tmp_path, playbook)
    assert problem.place.line == 5 and "url" in problem.message


def test_undefined_variable_in_template_file(tmp_path: Path) -> None:
    files = {TEMPLATE: "# managed\nport={{ port }}\nlisten={{ prot }}\n"}
    playbook = task("template: {src: app.conf.j2, dest: /etc/app.conf}")
    found = problems(tmp_path, playbook, files=files, extra=("port=80",))
    assert len(found) == 1
    (problem,) = found
    assert str(problem.place) == f"{tmp_path / TEMPLATE}:3"
    assert problem.key == "prot"
    assert problem.message == (
        f"undefined variable 'prot' in template used by task 't' ({tmp_path / PLAYBOOK}:7:7)"
    )
    assert problem.hint is not None and problem.hint.startswith("did you mean 'port'? ")


def test_every_undefined_variable_is_reported_at_once(tmp_path: Path) -> None:
    playbook = (
        task("debug: {msg: '{{ one }}'}", name="a")
        + "    - name: b\n      debug: {msg: '{{ two }} {{ three }}'}\n"
        + "    - name: c\n      debug: {msg: hi}\n      when: four\n"
    )
    found = problems(tmp_path, playbook)
    assert [(p.place.line, p.key) for p in found] == [(7, "one"), (9, "three"), (9, "two"), (11, "four")]


def test_unnamed_task_reports_an_undefined_variable_once(tmp_path: Path) -> None:
    found = problems(tmp_path, HEAD + "    - debug: {msg: '{{ v }}'}\n")
    assert len(found) == 1


# ---------------------------------------------------------------- what counts as defined

INVENTORY = (
    "all:\n  hosts:\n    spark1: {host_var: 1}\n"
    "  children:\n    gpu:\n      hosts: {spark1: }\n      vars: {group_var: 2}\n"
)


@pytest.mark.parametrize(
    ("body", "extra"),
    [
        pytest.param("debug: {msg: \"{{ maybe | default('x') }}\"}", (), id="default"),
        pytest.param("debug: {msg: \"{{ maybe | d('x') }}\"}", (), id="d"),
        pytest.param("debug: {msg: hi}\nwhen: maybe is defined and maybe", (), id="is-defined"),
        pytest.param("debug: {msg: hi}\nwhen: maybe is undefined or maybe", (), id="is-undefined"),
        pytest.param("debug: {msg: \"{{ maybe if maybe is defined else 'y' }}\"}", (), id="if-defined-else"),
        pytest.param('debug: {msg: "{% if maybe is defined %}{{ maybe }}{% endif %}"}', (), id="if-block"),
        pytest.param("debug: {msg: '{{ from_e }}'}", ("from_e=1",), id="extra-vars"),
        pytest.param("debug: {msg: '{{ from_e }}'}", ('{"from_e": 1}',), id="extra-vars-json"),
        pytest.param("debug: {msg: '{{ host_var }} {{ group_var }}'}", (), id="inventory-vars"),
        pytest.param("debug: {msg: '{{ from_file }}'}", (), id="vars-files"),
        pytest.param("debug: {msg: '{{ task_var }}'}\nvars: {task_var: 1}", (), id="task-vars"),
        pytest.param("debug: {msg: '{{ item }}'}\nloop: [1]", (), id="item"),
        pytest.param(
            "debug: {msg: '{{ pkg }} {{ i }} {{ ansible_loop.index }}'}\nloop: [1]\n"
            "loop_control: {loop_var: pkg, index_var: i, extended: true}",
            (),
            id="loop-control",
        ),
        pytest.param(
            "debug: {msg: '{{ inventory_hostname }} {{ groups.all }} {{ playbook_dir }}'}", (), id="magic"
        ),
        pytest.param("debug: {msg: \"{{ lookup('env', 'HOME') }} {{ range(3) | list }}\"}", (), id="globals"),
        pytest.param(
            "debug: {msg: '{% for x in [1] %}{{ x }}{% endfor %}{% set y = 2 %}{{ y }}'}", (), id="local"
        ),
    ],
)
def test_defined_or_guarded_variables_are_accepted(tmp_path: Path, body: str, extra: tuple[str, ...]) -> None:
    playbook = task(body).replace("  vars:\n", "  vars_files: [vars.yml]\n  vars:\n", 1)
    prepare(
        tmp_path,
        playbook,
        files={"vars.yml": "from_file: 1\n", "inv.yml": INVENTORY},
        inventory="inv.yml",
        extra=extra,
    )


@pytest.mark.parametrize(
    "tasks",
    [
        pytest.param(
            "    - command: 'true'\n      register: out\n    - debug: {msg: '{{ out.stdout }}'}\n",
            id="register",
        ),
        pytest.param("    - set_fact: {fact: 1}\n    - debug: {msg: '{{ fact }}'}\n", id="set_fact"),
    ],
)
def test_variables_defined_by_tasks_are_accepted(tmp_path: Path, tasks: str) -> None:
    prepare(tmp_path, HEAD + tasks)


def test_facts_are_accepted_when_gathered(tmp_path: Path) -> None:
    prepare(
        tmp_path,
        task("debug: {msg: '{{ ansible_hostname }}'}").replace("gather_facts: false", "gather_facts: true"),
    )
    prepare(tmp_path, task("debug: {msg: '{{ ansible_hostname }}'}").replace("  gather_facts: false\n", ""))


def test_template_file_sees_play_and_template_variables(tmp_path: Path) -> None:
    files = {TEMPLATE: "{{ dest_dir }} {{ template_path }} {{ ansible_managed }} {{ port | default(80) }}\n"}
    prepare(tmp_path, task("template: {src: app.conf.j2, dest: /etc/app.conf}"), files=files)


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("{{ a }}", {"a"}),
        ("{{ a | default(b) }}", {"b"}),
        ("{{ a.b.c }}", {"a"}),
        ("{{ a if a is defined else b }}", {"b"}),
        ("{{ (a is defined) and a }}", set()),
        ("{% for x in xs %}{{ x }}{{ y }}{% endfor %}", {"xs", "y"}),
        ("{% set z = 1 %}{{ z }}", set()),
        pytest.param(
            "{{ a | mandatory }}",
            {"a"},
            id="mandatory",
        ),
    ],
)
def test_unguarded_names(source: str, names: set[str]) -> None:
    assert unguarded_names(source) == names


def test_recursive_variables_are_reported_before_running(tmp_path: Path) -> None:
    found = problems(tmp_path, "- hosts: all\n  vars:\n    a: '{{ b }}'\n    b: '{{ a }}'\n  tasks: []\n")
    assert len(found) == 1
    assert "recursive variable definition" in found[0].message
    assert "a -> b -> a" in found[0].message


# ---------------------------------------------------------------- handlers


@pytest.mark.parametrize(
    ("handlers", "notify", "hint"),
    [
        pytest.param(
            "    - name: restart ollama\n      command: 'true'\n",
            "restart olama",
            "did you mean 'restart ollama'?",
            id="near-miss",
        ),
        pytest.param(
            "    - name: restart ollama\n      command: 'true'\n",
            "reload nginx",
            "defined handlers: restart ollama",
            id="unrelated",
        ),
        pytest.param("", "restart ollama", "add a 'handlers:' section", id="no-handlers"),
    ],
)
def test_undefined_handler(tmp_path: Path, handlers: str, notify: str, hint: str) -> None:
    playbook = task(f"command: 'true'\nnotify: {notify}") + ("  handlers:\n" + handlers if handlers else "")
    (problem,) = problems(tmp_path, playbook)
    assert str(problem.place) == f"{tmp_path / PLAYBOOK}:7:7"
    assert problem.key == notify
    assert problem.message == f"task 't' notifies handler '{notify}', which is not defined"
    assert problem.hint == hint


def test_handler_notifying_an_undefined_handler(tmp_path: Path) -> None:
    handlers = "  handlers:\n    - name: first\n      command: 'true'\n      notify: second\n"
    (problem,) = problems(tmp_path, task("command: 'true'\nnotify: first") + handlers)
    assert problem.place.line == 11
    assert problem.message == "task 'first' notifies handler 'second', which is not defined"


def test_handlers_by_name_and_listen_topic_are_accepted(tmp_path: Path) -> None:
    handlers = (
        "  handlers:\n    - name: restart ollama\n      command: 'true'\n"
        "    - name: restart web\n      command: 'true'\n      listen: [web changed]\n"
    )
    prepare(tmp_path, task("command: 'true'\nnotify: [restart ollama, web changed]") + handlers)


# ---------------------------------------------------------------- template syntax


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        pytest.param("debug: {msg: '{{ foo }'}", ("unexpected '}'", "'{{ foo }'"), id="args"),
        pytest.param("debug: {msg: hi}\nwhen: foo ==", ("unexpected 'end of print statement'",), id="when"),
        pytest.param("debug: {msg: '{% if x %}open'}", ("Unexpected end of template",), id="unclosed-block"),
    ],
)
def test_template_syntax_error_inline(tmp_path: Path, body: str, fragments: tuple[str, ...]) -> None:
    (problem,) = problems(tmp_path, task(body))
    assert str(problem.place) == f"{tmp_path / PLAYBOOK}:7:7"
    assert problem.message.startswith("template syntax error in task 't': ")
    for fragment in fragments:
        assert fragment in problem.message


@pytest.mark.parametrize(
    ("source", "line", "fragment"),
    [
        pytest.param("line1\nline2\n{{ x }\n", 3, "unexpected '}'", id="bad-expression"),
        pytest.param(
            "line1\n{% if x is defined %}\nfoo\n",
            3,
            "looking for the following tags: 'elif'",
            id="unclosed-if",
        ),
    ],
)
def test_template_syntax_error_in_file(tmp_path: Path, source: str, line: int, fragment: str) -> None:
    files = {TEMPLATE: source}
    (problem,) = problems(tmp_path, task("template: {src: app.conf.j2, dest: /etc/app.conf}"), files=files)
    assert str(problem.place) == f"{tmp_path / TEMPLATE}:{line}"
    assert problem.message.startswith("template syntax error: ")
    assert fragment in problem.message


def test_template_file_syntax_error_names_the_task(tmp_path: Path) -> None:
    files = {TEMPLATE: "{{ x }\n"}
    (problem,) = problems(tmp_path, task("template: {src: app.conf.j2, dest: /etc/app.conf}"), files=files)
    assert "task 't'" in problem.message


def test_missing_template_file_lists_where_it_looked(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, task("template: {src: nowhere.j2, dest: /etc/app.conf}"))
    assert str(problem.place) == f"{tmp_path / PLAYBOOK}:7:7"
    assert problem.key == "src"
    assert problem.message == "template 'nowhere.j2' of task 't' not found"
    assert problem.hint is not None
    assert problem.hint.startswith(
        f"looked in: {tmp_path / 'templates' / 'nowhere.j2'}, {tmp_path / 'nowhere.j2'}"
    )


def test_template_file_not_utf8(tmp_path: Path) -> None:
    files = {TEMPLATE: b"caf\xe9 {{ dest_dir }}\n"}
    (problem,) = problems(tmp_path, task("template: {src: app.conf.j2, dest: /etc/app.conf}"), files=files)
    assert problem.place.file == str(tmp_path / TEMPLATE)
    assert "not valid UTF-8" in problem.message
