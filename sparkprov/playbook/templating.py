"""Jinja2 templating with Ansible's conventions.

* StrictUndefined: using a variable that is not defined is an error that names the variable.
* A string that is exactly one `{{ expression }}` evaluates to the expression's native value
  (so `loop: "{{ range(1, 4) | list }}"` is a list); anything else renders to a string.
* Variables are resolved lazily through `Scope`, so `vars` may refer to other vars, extra vars or
  registered results, and a recursive definition is reported instead of looping forever.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nodes
from jinja2.runtime import Context

_SINGLE_EXPRESSION = re.compile(r"\A\{\{-?(?P<expr>.*?)-?\}\}\Z", re.DOTALL)


class TemplateError(Exception):
    """A template could not be evaluated; `variable` is set when the cause is an undefined name."""

    def __init__(self, message: str, *, variable: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable
        self.source = source


class KnownAfterApply(Exception):
    """A plan evaluated a value that only exists once a pending task has really run."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is known after apply")
        self.what = what


class UnknownResult(dict):
    """The registered result of a task that plan did not run: what it would return is unknown."""

    def __init__(self, register: str, known: dict[str, Any]) -> None:
        super().__init__(known)
        self.register = register

    def __missing__(self, key: str) -> Any:
        raise KnownAfterApply(f"'{self.register}.{key}'")


class UnknownValue:
    """A variable whose value a plan cannot know (set from the output of a task it did not run)."""

    def __init__(self, source: str) -> None:
        self.source = source


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def contains_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_template(v) for v in value)
    return False


def undefined_name(exc: jinja2.UndefinedError) -> str | None:
    """Pull the variable or attribute name out of Jinja's UndefinedError message."""
    message = str(exc)
    match = re.match(r"(?:Mandatory variable )?'([^']+)' (?:is undefined|not defined)", message)
    if match:
        return match.group(1)
    match = re.search(r"has no attribute '([^']+)'", message)
    return match.group(1) if match else None


def _make_environment(
    *, trim_blocks: bool, lstrip_blocks: bool, searchpath: tuple[str, ...] = ()
) -> jinja2.Environment:
    from sparkprov.playbook.jinja_ansible import install

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=trim_blocks,
        lstrip_blocks=lstrip_blocks,
        keep_trailing_newline=True,
        autoescape=False,
        cache_size=2000,
        # template files may {% include %} / {% import %} others next to them
        loader=jinja2.FileSystemLoader(list(searchpath)) if searchpath else None,
    )
    install(env)
    return env


@cache
def environment(*, trim_blocks: bool = True, lstrip_blocks: bool = False) -> jinja2.Environment:
    return _make_environment(trim_blocks=trim_blocks, lstrip_blocks=lstrip_blocks)


class DataLayer(dict):
    """Variables that are results, not templates: registered task results, set_fact values and
    facts. A command's output that contains '{{' is text, and is never rendered again (Ansible
    marks such values unsafe)."""


class Scope(Mapping[str, Any]):
    """Variables for one evaluation: layers searched first to last, raw values rendered on access.

    A Scope is cheap to make (`child`) and caches what it rendered, so a task evaluated with
    dozens of templated variables renders each of them once.
    """

    def __init__(self, layers: list[Mapping[str, Any]], *, parent: Scope | None = None) -> None:
        self._layers = layers
        self._parent = parent
        self._rendered: dict[str, Any] = {}
        self._resolving: list[str] = []

    def child(self, overlay: Mapping[str, Any]) -> Scope:
        return Scope([overlay], parent=self)

    def refreshed(self) -> Scope:
        """The same layers without cached renders (after a layer's values changed)."""
        return Scope(self._layers, parent=self._parent)

    def raw(self, key: str) -> Any:
        return self._find(key)[0]

    def _find(self, key: str) -> tuple[Any, bool]:
        """The value as stored, and whether it is data (never templated again)."""
        for layer in self._layers:
            if key in layer:
                return layer[key], isinstance(layer, DataLayer)
        if self._parent is not None:
            return self._parent._find(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if any(key in layer for layer in self._layers):
            return True
        return self._parent is not None and key in self._parent

    def __getitem__(self, key: str) -> Any:
        if key in self._rendered:
            return self._rendered[key]
        value, data = self._find(key)
        if isinstance(value, UnknownValue):
            raise KnownAfterApply(f"'{key}' (set by task '{value.source}')")
        if data or not contains_template(value):
            return value
        if key in self._resolving:
            chain = " -> ".join([*self._resolving[self._resolving.index(key) :], key])
            raise TemplateError(f"recursive variable definition: {chain}", variable=key)
        self._resolving.append(key)
        try:
            rendered = render(value, self)
        finally:
            self._resolving.pop()
        self._rendered[key] = rendered
        return rendered

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        scope: Scope | None = self
        while scope is not None:
            for layer in scope._layers:
                for key in layer:
                    if key not in seen:
                        seen.add(key)
                        yield key
            scope = scope._parent

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _ScopeWithGlobals(Mapping[str, Any]):
    """What Jinja sees as the template's parent namespace: the scope, then the env's globals."""

    __slots__ = ("globals", "scope")

    def __init__(self, scope: Mapping[str, Any], globals_: Mapping[str, Any]) -> None:
        self.scope = scope
        self.globals = globals_

    def __contains__(self, key: object) -> bool:
        return key in self.scope or key in self.globals

    def __getitem__(self, key: str) -> Any:
        if key in self.scope:
            return self.scope[key]
        return self.globals[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.scope
        yield from self.globals

    def __len__(self) -> int:
        return len(self.scope) + len(self.globals)


def _context(template: jinja2.Template, scope: Mapping[str, Any]) -> Context:
    # shared=True makes Jinja use our mapping as is instead of copying every variable into a dict.
    return template.new_context(_ScopeWithGlobals(scope, template.globals), shared=True)  # type: ignore[arg-type]


@lru_cache(maxsize=4096)
def _compile_string(source: str, trim_blocks: bool) -> tuple[bool, jinja2.Template]:
    env = environment(trim_blocks=trim_blocks)
    match = _SINGLE_EXPRESSION.match(source)  # "{{ x }}\n" is text: the newline is kept
    if match and "{{" not in match.group("expr") and "}}" not in match.group("expr"):
        return True, env.from_string("{% set __value__ = (" + match.group("expr") + ") %}")
    return False, env.from_string(source)


def _run(template: jinja2.Template, scope: Mapping[str, Any], *, native: bool, source: str) -> Any:
    try:
        context = _context(template, scope)
        if native:
            for _ in template.root_render_func(context):
                pass
            value = context.vars["__value__"]
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            return value
        return template.environment.concat(template.root_render_func(context))
    except jinja2.UndefinedError as exc:
        name = undefined_name(exc)
        raise TemplateError(f"{exc} in '{source}'", variable=name, source=source) from None
    except (TemplateError, KnownAfterApply):
        raise
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{exc} in '{source}'", source=source) from None
    except RecursionError:
        raise TemplateError(f"template recursion too deep in '{source}'", source=source) from None
    except Exception as exc:  # filters raise plain Python errors (TypeError, ValueError...)
        raise TemplateError(f"{type(exc).__name__}: {exc} in '{source}'", source=source) from None


def render_string(source: str, scope: Mapping[str, Any], *, trim_blocks: bool = True) -> Any:
    if not is_template(source):
        return source
    try:
        native, template = _compile_string(source, trim_blocks)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message} in '{source}'", source=source) from None
    except (jinja2.TemplateError, RecursionError, ValueError, OverflowError) as exc:
        # Jinja folds constant expressions while compiling, so evaluation errors surface here too
        raise TemplateError(
            f"cannot compile template: {exc!s:.200} in '{source:.200}'", source=source
        ) from None
    return _run(template, scope, native=native, source=source)


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render every template string inside `value` (dicts and lists are walked)."""
    if isinstance(value, str):
        return render_string(value, scope)
    if isinstance(value, dict):
        return {k: render(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, scope) for v in value]
    return value


def evaluate(expression: Any, scope: Mapping[str, Any]) -> Any:
    """Evaluate a bare Jinja expression as Ansible's `when`/`until`/`changed_when` do."""
    if not isinstance(expression, str):
        return expression
    if is_template(expression):
        result = render_string(expression, scope)
        return result
    return render_string("{{ " + expression + " }}", scope)


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1", "y")
    return bool(value)


def evaluate_condition(condition: Any, scope: Mapping[str, Any]) -> bool:
    if isinstance(condition, list):
        return all(evaluate_condition(c, scope) for c in condition)
    return truthy(evaluate(condition, scope))


@lru_cache(maxsize=512)
def _file_template(path: str, mtime: float, trim_blocks: bool, lstrip_blocks: bool) -> jinja2.Template:
    env = file_environment(Path(path), trim_blocks=trim_blocks, lstrip_blocks=lstrip_blocks)
    source = Path(path).read_text(encoding="utf-8")
    return env.from_string(source)


def template_searchpath(path: Path) -> tuple[str, ...]:
    """Where a template file's includes are found: its own folder, then sparkprov's templates/."""
    from sparkprov.resources import data_dir

    return (str(path.parent), str(data_dir("templates")))


@lru_cache(maxsize=64)
def _file_environment(
    searchpath: tuple[str, ...], trim_blocks: bool, lstrip_blocks: bool
) -> jinja2.Environment:
    return _make_environment(trim_blocks=trim_blocks, lstrip_blocks=lstrip_blocks, searchpath=searchpath)


def file_environment(
    path: Path, *, trim_blocks: bool = True, lstrip_blocks: bool = False
) -> jinja2.Environment:
    return _file_environment(template_searchpath(path), trim_blocks, lstrip_blocks)


def load_file_template(
    path: Path, *, trim_blocks: bool = True, lstrip_blocks: bool = False
) -> jinja2.Template:
    """Compile a template file (cached while the file is unchanged)."""
    return _file_template(str(path), path.stat().st_mtime, trim_blocks, lstrip_blocks)


def render_template(template: jinja2.Template, scope: Mapping[str, Any], *, source: str) -> str:
    return str(_run(template, scope, native=False, source=source))
