"""Checks that need the whole playbook and its variables, done before any host is touched.

* every notified handler exists;
* every variable a template or condition uses is defined somewhere (play vars, vars files,
  inventory, extra vars, register names, set_fact, loop variables, magic variables or facts),
  unless it is guarded with `default(...)` or `is defined`;
* template files exist and parse.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes

from sparkprov.errors import Place, Problem
from sparkprov.playbook.model import Play, Playbook, Task
from sparkprov.playbook.schema import closest
from sparkprov.playbook.templating import environment, is_template, template_searchpath
from sparkprov.resources import locate_source

MAGIC_VARS = frozenset(
    {
        "inventory_hostname",
        "inventory_hostname_short",
        "inventory_dir",
        "inventory_file",
        "groups",
        "group_names",
        "hostvars",
        "playbook_dir",
        "ansible_check_mode",
        "ansible_diff_mode",
        "ansible_play_hosts",
        "ansible_play_hosts_all",
        "ansible_play_batch",
        "ansible_play_name",
        "ansible_version",
        "ansible_run_tags",
        "ansible_skip_tags",
        "omit",
        "play_hosts",
        "sparkprov_version",
        "sparkprov_mode",
    }
)
# What Ansible defines while a template file renders (template_path...).
TEMPLATE_VARS = frozenset(
    {
        "ansible_managed",
        "template_path",
        "template_fullpath",
        "template_destpath",
        "template_host",
        "template_uid",
    }
)
_GUARD_FILTERS = ("default", "d")
# Modules whose `src` is a Jinja template rendered with the play's variables (and their own `vars`).
TEMPLATE_MODULES = ("template", "compose")
_GUARD_TESTS = ("defined", "undefined")


@lru_cache(maxsize=4096)
def _parse(source: str) -> nodes.Template:
    return environment().parse(source)


def unguarded_names(source: str) -> set[str]:
    """Names a template reads from its context that no default()/is defined protects."""
    tree = _parse(source)
    undeclared = meta.find_undeclared_variables(tree)
    found: set[str] = set()
    _walk(tree, frozenset(), found)
    return found & undeclared


def _tested_names(node: nodes.Node) -> set[str]:
    names: set[str] = set()
    tests = [node] if isinstance(node, nodes.Test) else []
    for test in [*tests, *node.find_all(nodes.Test)]:
        if test.name in _GUARD_TESTS:
            names.update(n.name for n in test.node.find_all(nodes.Name))
            if isinstance(test.node, nodes.Name):
                names.add(test.node.name)
    return names


def _walk(node: nodes.Node, guarded: frozenset[str], found: set[str]) -> None:
    if isinstance(node, nodes.Name):
        if node.ctx == "load" and node.name not in guarded:
            found.add(node.name)
        return
    if isinstance(node, nodes.Filter) and node.name in _GUARD_FILTERS:
        for arg in [*node.args, *(kw.value for kw in node.kwargs)]:
            _walk(arg, guarded, found)
        return
    if isinstance(node, nodes.Test) and node.name in _GUARD_TESTS:
        return
    if isinstance(node, (nodes.CondExpr, nodes.If)) and node.test is not None:
        guarded = guarded | _tested_names(node.test)
    elif isinstance(node, (nodes.And, nodes.Or)):
        guarded = guarded | _tested_names(node)
    for child in node.iter_child_nodes():
        _walk(child, guarded, found)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _as_expression(condition: Any) -> str | None:
    if not isinstance(condition, str):
        return None
    return condition if is_template(condition) else "{{ " + condition + " }}"


def task_sources(task: Task) -> Iterator[str]:
    """Every template string a task evaluates (as template source text)."""
    name = () if task.generated_name else (task.name,)
    for value in (*name, task.args, task.loop, task.vars, task.environment, task.become, task.retries):
        yield from (s for s in _strings(value) if is_template(s))
    for conditions in (task.when, task.until, task.changed_when or [], task.failed_when or []):
        for condition in conditions:
            expression = _as_expression(condition)
            if expression:
                yield expression


def _loop_names(task: Task) -> set[str]:
    if task.loop is None:
        return set()
    control = task.loop_control
    names = {control.loop_var, "ansible_loop_var"}
    if control.index_var:
        names.add(control.index_var)
    if control.extended:
        names.add("ansible_loop")
    return names


def _defined_by(tasks: Iterable[Task]) -> set[str]:
    names = set()
    for task in tasks:
        if task.register:
            names.add(task.register)
        if task.module == "set_fact":
            names.update(task.args)
    return names


class StaticChecker:
    def __init__(
        self,
        playbook: Playbook,
        *,
        external: dict[str, tuple[Any, Place]],
        facts: frozenset[str],
    ) -> None:
        """`external`: variables from outside the playbook (inventory, -e), each with its value and
        where it was set; their templates are checked like the play's own."""
        self.playbook = playbook
        self.external = external
        self.external_vars = set(external)
        self.facts = facts
        self.problems: list[Problem] = []
        self.runtime_names: set[str] = set()

    def check(self, play_vars_files: list[dict[str, Any]]) -> list[Problem]:
        # register and set_fact values live on for the host's later plays too
        self.runtime_names = _defined_by(t for p in self.playbook.plays for t in (*p.tasks, *p.handlers))
        for play, files_vars in zip(self.playbook.plays, play_vars_files):
            self._check_handlers(play)
            self._check_variables(play, files_vars)
        return self.problems

    def _check_handlers(self, play: Play) -> None:
        known = {h.name for h in play.handlers} | {name for h in play.handlers for name in h.listen}
        for task in (*play.tasks, *play.handlers):
            for name in task.notify:
                if name not in known and not is_template(name):
                    suggestion = closest(name, known)
                    hint = (
                        f"did you mean '{suggestion}'?"
                        if suggestion
                        else (
                            f"defined handlers: {', '.join(sorted(known))}"
                            if known
                            else "add a 'handlers:' section"
                        )
                    )
                    self.problems.append(
                        Problem(
                            task.place,
                            f"task '{task.name}' notifies handler '{name}', which is not defined",
                            key=name,
                            hint=hint,
                        )
                    )

    def _check_variables(self, play: Play, files_vars: dict[str, Any]) -> None:
        all_tasks = (*play.tasks, *play.handlers, *play.verify)
        known = (
            MAGIC_VARS
            | self.external_vars
            | set(play.vars)
            | set(files_vars)
            | self.runtime_names
            | set(environment().globals)
            | (self.facts if play.gather_facts else frozenset())
        )
        variables = {**{k: value for k, (value, _) in self.external.items()}, **files_vars, **play.vars}
        for key, value in variables.items():
            place = self._place_of(play, key, files_vars)
            if key in play.vars or key in files_vars:
                where = f"variable '{key}' of play '{play.name}'"
            else:
                where = f"variable '{key}' (used by play '{play.name}')"
            for source in _strings(value):
                if is_template(source):
                    self._report_unknown(source, known, place, where)
        self._check_cycles(play, variables)
        for task in all_tasks:
            task_known = known | set(task.vars) | _loop_names(task)
            for source in task_sources(task):
                self._report_unknown(source, task_known, task.place, f"task '{task.name}'")
            if task.module in TEMPLATE_MODULES and "src" in task.args and not is_template(task.args["src"]):
                module_vars = task.args.get("vars")
                names = set(module_vars) if isinstance(module_vars, dict) else set()
                self._check_template_file(task, task_known | TEMPLATE_VARS | names)

    def _place_of(self, play: Play, key: str, files_vars: dict[str, Any]) -> Place:
        """Where a variable the play sees was set: the play, its vars files, else the inventory or -e."""
        if key in play.vars or key not in (*files_vars, *self.external):
            return play.var_places.get(key, play.place)
        if key in files_vars:
            return getattr(files_vars, "places", {}).get(key, play.place)
        return self.external[key][1]

    def _check_cycles(self, play: Play, variables: dict[str, Any]) -> None:
        """`a: "{{ b }}"` with `b: "{{ a }}"` can never be evaluated: say so before running."""
        uses: dict[str, set[str]] = {}
        for key, value in variables.items():
            names: set[str] = set()
            for source in _strings(value):
                if is_template(source):
                    try:
                        names |= unguarded_names(source)
                    except jinja2.TemplateSyntaxError:
                        continue  # reported by the undefined-variable pass
            uses[key] = names & set(variables)
        reported: set[str] = set()
        for start in uses:
            cycle = _find_cycle(start, uses)
            if cycle and not reported & set(cycle):
                reported.update(cycle)
                self.problems.append(
                    Problem(
                        self._place_of(play, cycle[0], {}),
                        f"recursive variable definition in play '{play.name}': {' -> '.join(cycle)}",
                        key=cycle[0],
                        hint="one of these variables must get its value without going through the others",
                    )
                )

    def _report_unknown(self, source: str, known: AbstractSet[str], place: Place, where: str) -> None:
        try:
            names = unguarded_names(source)
        except jinja2.TemplateSyntaxError as exc:
            self.problems.append(
                Problem(place, f"template syntax error in {where}: {exc.message} in {source!r}")
            )
            return
        except (jinja2.TemplateError, RecursionError, ValueError, OverflowError) as exc:
            # Jinja folds constants while compiling ('x'.attr, huge literals): a broken template too
            self.problems.append(
                Problem(place, f"cannot read the template in {where}: {exc!s:.200} in {source!r:.200}")
            )
            return
        for name in sorted(names - known):
            self.problems.append(self._undefined(name, known, place, where))

    @staticmethod
    def _undefined(name: str, known: Iterable[str], place: Place, where: str) -> Problem:
        suggestion = closest(name, [k for k in known if not k.startswith("ansible_")])
        hint = f"did you mean '{suggestion}'? " if suggestion else ""
        hint += f"define it in the play's vars, a vars file, the inventory, or pass -e {name}=..."
        return Problem(place, f"undefined variable '{name}' in {where}", key=name, hint=hint)

    def _check_template_file(self, task: Task, known: AbstractSet[str]) -> None:
        path, tried = locate_source((self.playbook.directory,), task.args["src"], "templates")
        if path is None:
            self.problems.append(
                Problem(
                    task.place,
                    f"template '{task.args['src']}' of task '{task.name}' not found",
                    key="src",
                    hint=f"looked in: {', '.join(tried)}",
                )
            )
            return
        self._check_template_source(path, task, known, (path,))

    def _check_template_source(
        self, path: Path, task: Task, known: AbstractSet[str], chain: tuple[Path, ...]
    ) -> None:
        """A template file and, through {% include %} / {% import %}, the files it pulls in."""
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raw = path.read_bytes()
            bad_line = raw[: exc.start].count(b"\n") + 1
            self.problems.append(
                Problem(
                    Place(str(path), bad_line),
                    f"template is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
                    hint="save the template as UTF-8",
                )
            )
            return
        try:
            names = unguarded_names(source)
            includes = [name for name in meta.find_referenced_templates(_parse(source)) if name]
        except (jinja2.TemplateError, RecursionError, ValueError, OverflowError) as exc:
            self.problems.append(
                Problem(
                    Place(str(path), getattr(exc, "lineno", None)),
                    f"template {'syntax ' if isinstance(exc, jinja2.TemplateSyntaxError) else ''}error: "
                    f"{getattr(exc, 'message', None) or exc!s:.200} "
                    f"(template of task '{task.name}', {task.place})",
                )
            )
            return
        for name in sorted(names - known):
            line = _first_line_using(source, name)
            self.problems.append(
                self._undefined(
                    name, known, Place(str(path), line), f"template used by task '{task.name}' ({task.place})"
                )
            )
        for name in includes:
            self._check_include(path, source, name, task, known, chain)

    def _check_include(
        self, path: Path, source: str, name: str, task: Task, known: AbstractSet[str], chain: tuple[Path, ...]
    ) -> None:
        place = Place(str(path), _first_line_using(source, name))
        found = next((Path(d) / name for d in template_searchpath(path) if (Path(d) / name).is_file()), None)
        if found is None:
            where = ", ".join(template_searchpath(path))
            self.problems.append(
                Problem(place, f"template includes '{name}', which is not found (looked in {where})")
            )
        elif found.resolve() in (p.resolve() for p in chain):
            loop = " -> ".join(p.name for p in (*chain, found))
            self.problems.append(
                Problem(place, f"template includes itself: {loop}", hint="break the include loop")
            )
        else:
            self._check_template_source(found, task, known, (*chain, found))


def _find_cycle(start: str, uses: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start through `uses`, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        for used in sorted(uses.get(name, ())):
            if used == start:
                return [*path, start]
            if used not in seen:
                seen.add(used)
                stack.append((used, [*path, used]))
    return None


def _first_line_using(source: str, name: str) -> int | None:
    for number, line in enumerate(source.splitlines(), start=1):
        if name in line and ("{{" in line or "{%" in line):
            return number
    return None
