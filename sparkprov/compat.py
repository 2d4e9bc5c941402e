"""What fails on a DGX Spark, as data, and the warnings `sparkprov validate` gives about a playbook.

The course's compatibility matrix (lab 1.1.4) ships as `sparkprov/data/compatibility.yml`, with a
reason and a fix for every tool. `compatibility_warnings` reads the typed playbook (and the compose
templates it names, without rendering them) and flags what the matrix says fails on a Spark:
pip-installing PyTorch/JAX on the host, PyTorch workloads outside an NGC image, GPU containers
without GPU access, PyTorch containers without the host IPC namespace, amd64-only images.

Everything here is static: no host is contacted, no template is rendered. Variables are resolved
only where a play or task defines them as plain values (`image: "{{ pytorch_image }}"`); what
cannot be known is not judged, so a warning is always about something the playbook really says.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sparkprov.errors import InputError, Place
from sparkprov.playbook.model import Playbook, Task
from sparkprov.playbook.yamlsrc import YamlMap, load_yaml
from sparkprov.resources import locate_source

UNKNOWN = "__sparkprov_unknown__"  # stands for a template value that cannot be known statically
_CONTAINER_TOOLS = frozenset({"docker", "podman", "nerdctl", "apptainer", "singularity", "enroot"})
# Commands that run the next word as the real command, with their options that take a value.
_WRAPPERS: dict[str, frozenset[str]] = {
    "sudo": frozenset({"-u", "-g", "-C", "-D", "-p", "-r", "-t", "-U"}),
    "env": frozenset({"-u", "-C", "-S"}),
    "nice": frozenset({"-n"}),
    "ionice": frozenset({"-c", "-n", "-p"}),
    "nohup": frozenset(),
    "time": frozenset(),
    "exec": frozenset({"-a"}),
    "stdbuf": frozenset(),
}
_SHELLS = frozenset({"sh", "bash", "dash", "zsh"})
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?$")
_PIP = re.compile(r"pip(\d+(\.\d+)?)?$")
_TORCH_CODE = re.compile(r"\bimport\s+torch\b|\bfrom\s+torch\b|\btorch\.")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Options of `docker run` that take a value (the next word unless written --opt=value).
_RUN_VALUE_OPTIONS = _word_set(
    "-a --attach --add-host --cap-add --cap-drop --cgroupns --cidfile --cpus --cpu-shares -c "
    "--cpuset-cpus --device --dns --entrypoint -e --env --env-file --expose --gpus --group-add "
    "-h --hostname --ipc -l --label --label-file --link --log-driver --log-opt -m --memory "
    "--memory-swap --mount --name --net --network --pid --platform -p --publish --pull --restart "
    "--runtime --security-opt --shm-size --stop-signal --stop-timeout --tmpfs -u --user --ulimit "
    "--uts -v --volume --volumes-from -w --workdir"
)
# Options of `pip install` that take a value, so that value is not read as a package.
_PIP_VALUE_OPTIONS = _word_set(
    "-r --requirement -c --constraint -e --editable -i --index-url --extra-index-url -f "
    "--find-links -t --target --prefix --root --platform --python-version --implementation --abi "
    "--upgrade-strategy --trusted-host --cache-dir --src --progress-bar --report"
)


# ---------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Tool:
    """One row of the compatibility matrix."""

    id: str
    name: str
    status: str
    reason: str
    fix: str
    pip: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    gpu: bool = False
    ipc_host: bool = False


@dataclass(frozen=True)
class X86Image:
    image: str
    evidence: str
    instead: str


@dataclass(frozen=True)
class Matrix:
    source: str
    statuses: dict[str, str]
    tools: dict[str, Tool]
    gpu_image_prefixes: tuple[str, ...]
    torch_launchers: tuple[str, ...]
    x86_only_images: tuple[X86Image, ...]
    x86_tag_hints: tuple[str, ...]
    rules: dict[str, dict[str, str]]

    def tool_for_package(self, package: str) -> Tool | None:
        name = normalize_package(package)
        return next((t for t in self.tools.values() if name in t.pip), None)

    def tool_for_image(self, image: str) -> Tool | None:
        repo = image_repository(image)
        return next((t for t in self.tools.values() if any(_repo_matches(repo, p) for p in t.images)), None)

    def is_gpu_image(self, image: str) -> bool:
        tool = self.tool_for_image(image)
        repo = image_repository(image)
        return bool(tool and tool.gpu) or any(_repo_matches(repo, p) for p in self.gpu_image_prefixes)

    def x86_only(self, image: str, platform: str | None = None) -> X86Image | None:
        """Why `image` (pulled for `platform`) is amd64-only, or None when nothing says so."""
        repo = image_repository(image)
        known = next((x for x in self.x86_only_images if _repo_matches(repo, x.image)), None)
        if known:
            return known
        tag = image_tag(image) or ""
        for hint in self.x86_tag_hints:
            if hint in (platform or "").lower():
                return X86Image(image, f"platform {platform} is an amd64 build", "the linux/arm64 build")
            if hint in tag.lower():
                return X86Image(
                    image,
                    f"its tag '{tag}' names an amd64 build",
                    "the arm64 or multi-arch tag of the same image",
                )
        return None


@cache
def load_matrix() -> Matrix:
    """The compatibility matrix shipped in the package (sparkprov/data/compatibility.yml)."""
    text = resources.files("sparkprov").joinpath("data/compatibility.yml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    tools = {
        key: Tool(
            id=key,
            name=row["name"],
            status=row["status"],
            reason=row["reason"],
            fix=row["fix"],
            pip=tuple(normalize_package(p) for p in row.get("pip", ())),
            images=tuple(row.get("images", ())),
            gpu=bool(row.get("gpu", False)),
            ipc_host=bool(row.get("ipc_host", False)),
        )
        for key, row in data["tools"].items()
    }
    return Matrix(
        source=data["source"],
        statuses=dict(data["statuses"]),
        tools=tools,
        gpu_image_prefixes=tuple(data["gpu_image_prefixes"]),
        torch_launchers=tuple(data["torch_launchers"]),
        x86_only_images=tuple(X86Image(**row) for row in data["x86_only_images"]),
        x86_tag_hints=tuple(data["x86_tag_hints"]),
        rules={name: dict(rule) for name, rule in data["rules"].items()},
    )


def normalize_package(requirement: str) -> str:
    """'Torch[cuda]>=2.5' -> 'torch' (PEP 503 name, without extras, versions or markers)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip().strip("'\""))
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else ""


def image_repository(image: str) -> str:
    """The repository without registry defaults, tag or digest, lower-cased: 'docker.io/library/
    ubuntu:24.04' -> 'ubuntu', 'nvcr.io/nvidia/pytorch:25.11-py3' -> 'nvcr.io/nvidia/pytorch'."""
    name = image.split("@", 1)[0].lower()
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    for prefix in ("docker.io/", "index.docker.io/", "library/"):
        name = name.removeprefix(prefix)
    return name


def image_tag(image: str) -> str | None:
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _repo_matches(repo: str, pattern: str) -> bool:
    if pattern.endswith("/"):
        return repo.startswith(pattern)
    return repo == pattern or repo.startswith(pattern + "/")


# ---------------------------------------------------------------- warnings


@dataclass(frozen=True)
class CompatWarning:
    """Something the playbook does that fails on a Spark: where, what and why, and the fix."""

    place: Place
    message: str
    fix: str
    rule: str


def format_warning(warning: CompatWarning) -> str:
    """'site.yml:12:7: warning: <what>: <why>' and an indented 'fix:' line."""
    return f"{warning.place}: warning: {warning.message}\n  fix: {warning.fix}"


def compatibility_warnings(
    playbook: Playbook, *, template_dirs: tuple[Path, ...] | None = None
) -> list[CompatWarning]:
    """Every compatibility warning for `playbook`, in playbook order. `template_dirs` are where a
    compose task's relative `src` is looked up (default: the playbook's directory), as at run time."""
    checker = _Checker(load_matrix(), template_dirs or (playbook.directory,))
    found: list[CompatWarning] = []
    for play in playbook.plays:
        for task in (*play.tasks, *play.handlers, *play.verify):
            for variables in _bindings(task, play.vars):
                for warning in checker.task(task, _Resolver(variables)):
                    if warning not in found:
                        found.append(warning)
    return found


def _fill(template: str, **values: str) -> str:
    """Replace `{name}` placeholders that are given; leave every other brace alone (YAML in fixes)."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


# ---------------------------------------------------------------- static variables


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_FILTER = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", re.DOTALL)
_STRING_FILTERS: dict[str, Callable[[str], str]] = {"string": str, "lower": str.lower, "trim": str.strip}
_MISSING = object()  # an undefined variable: `default(...)` applies
_UNKNOWABLE = object()  # defined, but not statically: nothing can be said


def _split_filters(expression: str) -> list[str]:
    """'a | default("x|y") | tojson' -> ['a ', ' default("x|y") ', ' tojson'] (quotes respected)."""
    parts, current, quote = [], "", ""
    for char in expression:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "|":
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def _literal(text: str | None) -> Any:
    text = (text or "").strip()
    if text in ("true", "True", "false", "False"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return _UNKNOWABLE


class _Resolver:
    """Resolves simple expressions from variables defined as plain values: `{{ name }}`, `{{ a.b }}`,
    with the filters default/d, tojson/to_json, string, lower, trim. Anything else stays unknown."""

    def __init__(self, variables: Mapping[str, Any]) -> None:
        self.variables = variables

    def lookup(self, dotted: str, depth: int = 0) -> Any:
        value: Any = self.variables
        for part in dotted.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return _MISSING
            value = value[part]
        if isinstance(value, str) and "{" in value:
            value = self.text(value, depth + 1) if depth < 8 else value
            return _UNKNOWABLE if "{{" in value or "{%" in value else value
        return value

    def evaluate(self, expression: str, depth: int = 0) -> Any:
        """The value of a Jinja expression (without braces), _MISSING or _UNKNOWABLE."""
        first, *filters = _split_filters(expression)
        value = self.lookup(first.strip(), depth) if _NAME.fullmatch(first.strip()) else _UNKNOWABLE
        for text in filters:
            match = _FILTER.fullmatch(text)
            name = match.group(1) if match else ""
            if name in ("default", "d") and match:
                value = _literal(match.group(2)) if value is _MISSING or value is None else value
            elif value is _MISSING or value is _UNKNOWABLE:
                break
            elif name in ("tojson", "to_json"):
                value = json.dumps(value)
            elif name in _STRING_FILTERS:
                value = _STRING_FILTERS[name](str(value))
            else:
                value = _UNKNOWABLE
        return value

    def text(self, value: str, depth: int = 0) -> str:
        """`value` with every expression that can be known replaced; the others left as written."""

        def substitute(match: re.Match[str]) -> str:
            found = self.evaluate(match.group(1), depth)
            if found is _MISSING or found is _UNKNOWABLE or isinstance(found, (dict, list)):
                return match.group(0)
            return str(found).lower() if isinstance(found, bool) else str(found)

        return _EXPRESSION.sub(substitute, value)

    def known(self, value: Any) -> str | None:
        """The string `value` stands for, or None when a template in it cannot be resolved."""
        if not isinstance(value, (str, int, float)):
            return None
        resolved = self.text(str(value))
        return None if "{{" in resolved or "{%" in resolved else resolved


def _bindings(task: Task, play_vars: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The variables each run of `task` sees that are known statically: one set per loop item."""
    template_vars = task.args.get("vars") if task.module == "compose" else None  # they win, as in the module
    base = {**play_vars, **task.vars, **(template_vars if isinstance(template_vars, dict) else {})}
    items = task.loop
    if isinstance(items, str):
        match = _EXPRESSION.fullmatch(items.strip())
        items = _Resolver(base).evaluate(match.group(1)) if match else None
    if not isinstance(items, list):
        yield base
        return
    for item in items:
        yield {**base, task.loop_control.loop_var: item}


# ---------------------------------------------------------------- commands


def _words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes (often a Jinja expression): words as written
        return line.split()


def command_segments(command: str) -> Iterator[list[str]]:
    """The simple commands of a shell command line, each as words, with `sudo`/`env`/`VAR=x`
    prefixes removed and `sh -c '...'` scripts opened up."""
    for line in command.replace("\\\n", " ").splitlines():
        segment: list[str] = []
        for word in [*_words(line), ";"]:
            if word and set(word) <= set(";&|"):
                yield from _expand(_unwrap(segment))
                segment = []
            else:
                segment.append(word)


def _unwrap(words: list[str]) -> list[str]:
    i = 0
    while i < len(words):
        word = words[i]
        if _ASSIGNMENT.match(word):
            i += 1
            continue
        value_options = _WRAPPERS.get(Path(word).name)
        if value_options is None:
            break
        i += 1
        while i < len(words) and words[i].startswith("-"):
            i += 2 if words[i] in value_options else 1
    return words[i:]


def _expand(words: list[str]) -> Iterator[list[str]]:
    if not words:
        return
    if Path(words[0]).name in _SHELLS:
        for i, word in enumerate(words[1:-1], start=1):
            if word.startswith("-") and not word.startswith("--") and "c" in word:
                yield from command_segments(words[i + 1])
                return
    yield words


def _pip_packages(words: list[str]) -> list[str]:
    program = Path(words[0]).name
    if _PIP.match(program):
        args = words[1:]
    elif _PYTHON.match(program) and words[1:3] == ["-m", "pip"]:
        args = words[3:]
    elif program == "uv" and words[1:2] == ["pip"]:
        args = words[2:]
    else:
        return []
    if args[:1] != ["install"]:
        return []
    packages, skip = [], False
    for arg in args[1:]:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _PIP_VALUE_OPTIONS
        else:
            packages.append(arg)
    return packages


def _torch_workload(words: list[str], launchers: tuple[str, ...]) -> str | None:
    program = Path(words[0]).name
    if program in launchers:
        return program
    if not _PYTHON.match(program):
        return None
    for flag, value in itertools.pairwise(words[1:]):
        if flag == "-m" and (value == "torch" or value.startswith("torch.")):
            return f"{program} -m {value}"
        if flag == "-c" and _TORCH_CODE.search(value):
            return f"{program} -c '...torch...'"
    return None


@dataclass(frozen=True)
class _Run:
    """A `docker run` command line: its options (name, value) and image."""

    options: tuple[tuple[str, str | None], ...]
    image: str | None

    @classmethod
    def parse(cls, words: list[str]) -> _Run | None:
        start = 2 if words[1:2] == ["run"] else 3 if words[1:3] == ["container", "run"] else 0
        if not start:
            return None
        options: list[tuple[str, str | None]] = []
        i = start
        while i < len(words) and words[i].startswith("-") and words[i] != "--":
            name, sep, value = words[i].partition("=")
            if not sep and name in _RUN_VALUE_OPTIONS and i + 1 < len(words):
                options.append((name, words[i + 1]))
                i += 2
            else:
                options.append((name, value if sep else None))
                i += 1
        i += 1 if i < len(words) and words[i] == "--" else 0
        return cls(tuple(options), words[i] if i < len(words) else None)

    def value(self, *names: str) -> str | None:
        return next((v for n, v in self.options if n in names), None)

    def has_gpu_access(self) -> bool:
        device = self.value("--device") or ""
        return (
            any(n == "--gpus" for n, _ in self.options)
            or self.value("--runtime") == "nvidia"
            or device.startswith("nvidia.com/gpu")
        )


# ---------------------------------------------------------------- compose templates


def _compose_services(path: Path, resolver: _Resolver) -> YamlMap | None:
    """The `services` of a compose template, read without rendering: statements and comments are
    blanked (keeping line numbers), expressions resolved where they can be, else UNKNOWN."""

    def blank(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith("{{"):
            return resolver.known(token) or UNKNOWN
        return "\n" * token.count("\n")

    try:
        text = _JINJA.sub(blank, path.read_text(encoding="utf-8"))
        data = load_yaml(text, str(path))
    except (OSError, UnicodeDecodeError, InputError):
        return None  # not readable as YAML without rendering: nothing can be said statically
    services = data.get("services") if isinstance(data, YamlMap) else None
    return services if isinstance(services, YamlMap) else None


def _mentions_unknown(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_mentions_unknown(k) or _mentions_unknown(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_mentions_unknown(v) for v in value)
    return isinstance(value, str) and UNKNOWN in value


def _compose_gpu(service: Mapping[str, Any]) -> bool | None:
    """Whether a compose service gets the GPU; None when a template hides the answer."""
    if "gpus" in service or service.get("runtime") == "nvidia":
        return True
    deploy = service.get("deploy")
    if _mentions_unknown(deploy) or _mentions_unknown(service.get("runtime")):
        return None
    devices = _dig(deploy, "resources", "reservations", "devices")
    for device in devices if isinstance(devices, list) else []:
        if isinstance(device, dict) and (
            "gpu" in (device.get("capabilities") or []) or device.get("driver") == "nvidia"
        ):
            return True
    return False


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# ---------------------------------------------------------------- the rules


def _judgeable(image: str) -> bool:
    """An image whose repository is known (a template in the tag alone does not matter)."""
    repo = image_repository(image)
    return bool(repo) and "{{" not in repo and UNKNOWN not in repo


def _warn(task: Task, rule: str, what: str, reason: str, fix: str) -> CompatWarning:
    return CompatWarning(task.place, f"{what}: {reason}", fix, rule)


class _Checker:
    def __init__(self, matrix: Matrix, template_dirs: tuple[Path, ...]) -> None:
        self.matrix = matrix
        self.rules = matrix.rules
        self.template_dirs = template_dirs

    def task(self, task: Task, resolver: _Resolver) -> Iterator[CompatWarning]:
        if task.module in ("command", "shell"):
            yield from self._command(task, resolver)
        elif task.module == "docker_image":
            yield from self._docker_image(task, resolver)
        elif task.module == "compose":
            yield from self._compose(task, resolver)

    # command / shell

    def _command(self, task: Task, resolver: _Resolver) -> Iterator[CompatWarning]:
        args = task.args
        raw = args["cmd"] if "cmd" in args else shlex.join(str(a) for a in args.get("argv", []))
        if not isinstance(raw, str):
            return
        for words in command_segments(resolver.text(raw)):
            if Path(words[0]).name not in _CONTAINER_TOOLS:
                yield from self._host_command(task, words)
                continue
            run = _Run.parse(words)
            if run is not None and run.image and _judgeable(run.image):
                yield from self._container(task, f"docker run in task '{task.name}'", run)

    def _host_command(self, task: Task, words: list[str]) -> Iterator[CompatWarning]:
        where = f"task '{task.name}'"
        by_tool: dict[Tool, list[str]] = {}
        for package in _pip_packages(words):
            tool = self.matrix.tool_for_package(package)
            if tool is not None:
                by_tool.setdefault(tool, []).append(normalize_package(package))
        for tool, names in by_tool.items():
            rule = self.rules["pip_on_host"]
            what = _fill(rule["what"], where=where, package=", ".join(names), tool=tool.name)
            yield _warn(task, "pip_on_host", what, tool.reason, tool.fix)
        command = _torch_workload(words, self.matrix.torch_launchers)
        if command is not None:
            rule = self.rules["torch_on_host"]
            tool = self.matrix.tools[rule["tool"]]
            what = _fill(rule["what"], where=where, command=command)
            yield _warn(task, "torch_on_host", what, tool.reason, tool.fix)

    def _container(self, task: Task, where: str, run: _Run) -> Iterator[CompatWarning]:
        assert run.image is not None
        yield from self._x86(task, where, run.image, run.value("--platform"))
        yield from self._gpu_and_ipc(
            task, where, run.image, gpu=run.has_gpu_access(), ipc=run.value("--ipc"), fix="fix_run"
        )

    def _gpu_and_ipc(
        self, task: Task, where: str, image: str, *, gpu: bool | None, ipc: Any, fix: str
    ) -> Iterator[CompatWarning]:
        """GPU images need GPU access; PyTorch images need ipc host (None: a template hides it)."""
        if gpu is False and self.matrix.is_gpu_image(image):
            rule = self.rules["gpu_access"]
            yield _warn(
                task, "gpu_access", _fill(rule["what"], where=where, image=image), rule["reason"], rule[fix]
            )
        tool = self.matrix.tool_for_image(image)
        if tool is not None and tool.ipc_host and ipc != "host" and not _mentions_unknown(ipc):
            rule = self.rules["ipc_host"]
            yield _warn(
                task, "ipc_host", _fill(rule["what"], where=where, image=image), rule["reason"], rule[fix]
            )

    def _x86(self, task: Task, where: str, image: str, platform: str | None) -> Iterator[CompatWarning]:
        found = self.matrix.x86_only(image, platform)
        if found is not None:
            rule = self.rules["x86_only"]
            what = _fill(rule["what"], where=where, image=image, evidence=found.evidence)
            yield _warn(task, "x86_only", what, rule["reason"], _fill(rule["fix"], instead=found.instead))

    # docker_image

    def _docker_image(self, task: Task, resolver: _Resolver) -> Iterator[CompatWarning]:
        name = task.args.get("name")
        if not isinstance(name, str) or not _judgeable(image := resolver.text(name)):
            return
        tag = resolver.known(task.args.get("tag"))
        if tag and image_tag(image) is None:
            image = f"{image}:{tag}"
        yield from self._x86(task, f"task '{task.name}'", image, resolver.known(task.args.get("platform")))

    # compose

    def _compose(self, task: Task, resolver: _Resolver) -> Iterator[CompatWarning]:
        src = resolver.known(task.args.get("src"))
        path = locate_source(self.template_dirs, src, "templates")[0] if src else None
        services = _compose_services(path, resolver) if path is not None else None
        if services is None:
            return
        for name, service in services.items():
            image = service.get("image") if isinstance(service, dict) else None
            if isinstance(image, str) and _judgeable(image):
                where = f"compose service '{name}' ({services.key_places[name]})"
                platform = service.get("platform")
                yield from self._x86(task, where, image, platform if isinstance(platform, str) else None)
                yield from self._gpu_and_ipc(
                    task, where, image, gpu=_compose_gpu(service), ipc=service.get("ipc"), fix="fix_compose"
                )
