"""compose: a Docker Compose v2 project whose file is rendered from a Jinja template, brought up or down.

`check` renders the template, has `docker compose config` validate the rendered text (fed on stdin,
before anything is written) and compares it with the host: the file through `plan_write`, the
containers through the labels compose itself compares when it decides to re-create one
(`com.docker.compose.config-hash` against `config --hash`, `com.docker.compose.image` against the
service image's current ID). `apply` writes the file and runs exactly the compose commands planned.
Everything goes through `docker compose ...` on the connection, so it works the same on remote hosts.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sparkprov.connection.base import CommandResult, CommandTimeout
from sparkprov.modules import get_module
from sparkprov.modules._files import Attrs, plan_write, run_ops
from sparkprov.modules.base import Change, Diff, Module, ModuleFailure, Outcome, TaskContext
from sparkprov.modules.template import render_template_file

DOCKER = "docker"
QUERY_TIMEOUT_S = 60.0
ACTION_TIMEOUT_S = 3600.0  # `up` may pull a 10-20 GB NGC image first
HASH_LABEL = "com.docker.compose.config-hash"
IMAGE_LABEL = "com.docker.compose.image"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
# Variables that point the docker CLI at its daemon: sudo resets the environment, so a local run
# that becomes another user passes them on explicitly.
DOCKER_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")
GPU_ERROR = re.compile(r'could not select device driver "[^"]*" with capabilities: \[\[gpu\]\]')
NO_GPU_RUNTIME = (
    "the host has no NVIDIA container runtime, so docker cannot give the containers the GPU "
    "they reserve ({error})"
)
NO_GPU_HINT = (
    "install nvidia-container-toolkit and run `nvidia-ctk runtime configure --runtime=docker` then "
    "restart docker; if this host is not a DGX Spark (no NVIDIA GPU), render the file with `gpu: false`"
)


@dataclass(frozen=True)
class Project:
    """Where the project lives on the host and what compose calls it."""

    name: str
    file: str

    @property
    def directory(self) -> str:
        return os.path.dirname(self.file) or "/"

    def argv(self, *args: str, from_stdin: bool = False) -> list[str]:
        """`docker compose -p NAME -f FILE ARGS`; with from_stdin, the file is read from stdin as if
        it were at FILE (relative paths and `.env` resolve against its directory)."""
        if from_stdin:
            return [
                DOCKER,
                "compose",
                "-p",
                self.name,
                "-f",
                "-",
                "--project-directory",
                self.directory,
                *args,
            ]
        return [DOCKER, "compose", "-p", self.name, "-f", self.file, *args]


@dataclass(frozen=True)
class Service:
    """One service of the rendered file, as `docker compose config` resolved it."""

    name: str
    image: str | None
    config_hash: str
    replicas: int = 1


@dataclass(frozen=True)
class Container:
    """One container of the project on the host, from `docker inspect`."""

    id: str
    service: str
    config_hash: str
    image_id: str
    running: bool

    def describe(self) -> str:
        state = "running" if self.running else "stopped"
        return f"{self.service}: {state}, config {self.config_hash[:12]}, image {_short_id(self.image_id)}"


@dataclass(frozen=True)
class Command:
    """A compose command `apply` runs, with what it is for (for messages)."""

    argv: list[str]
    what: str


@dataclass
class Steps:
    """The payload of a compose Change: file operations and compose commands, in order."""

    file_ops: list[dict[str, Any]] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    files_last: bool = False  # absent: take the project down before removing its file
    timeout: float | None = None


def normalize_project_name(name: str) -> str:
    """Compose's own normalisation of a default project name (lowercase, [a-z0-9_-], no leading _-)."""
    return "".join(re.findall(r"[a-z0-9_-]", name.lower())).lstrip("_-")


def project_of(args: dict[str, Any]) -> Project:
    dest = os.path.normpath(args["dest"])
    name = args.get("project") or normalize_project_name(os.path.basename(os.path.dirname(dest)))
    if not name:
        raise ModuleFailure(
            f"cannot derive a compose project name from the directory of {dest}",
            hint="set `project:` (lowercase letters, digits, '_' and '-')",
        )
    return Project(name, dest)


def _short_id(image_id: str | None) -> str:
    return (image_id or "-").removeprefix("sha256:")[:12]


# ---------------------------------------------------------------- running docker


def _environment(ctx: TaskContext) -> dict[str, str] | None:
    env = dict(ctx.environment)
    if ctx.conn.is_local and ctx.become is not None:
        env = {**{k: os.environ[k] for k in DOCKER_ENV if k in os.environ}, **env}
    return env or None


def _docker(
    ctx: TaskContext, argv: list[str], *, stdin: bytes | None = None, timeout: float = QUERY_TIMEOUT_S
) -> CommandResult:
    """Run the docker CLI on the host; fail clearly when docker or its compose plugin is missing."""
    try:
        result = ctx.conn.run(
            argv, stdin=stdin, timeout=timeout, become=ctx.become, env=_environment(ctx), cwd="/"
        )
    except CommandTimeout as exc:
        raise ModuleFailure(f"{' '.join(argv[:3])}: {exc}") from None
    if result.rc == 127:
        raise ModuleFailure(
            f"docker is not installed on {ctx.conn.host_name}",
            hint="install Docker Engine and its compose plugin",
        )
    if result.rc != 0 and "'compose' is not a docker command" in result.stderr:
        raise ModuleFailure(
            f"the Docker Compose v2 plugin is missing on {ctx.conn.host_name}",
            hint="install docker-compose-plugin (`docker compose`); the Python docker-compose is not used",
        )
    return result


def _checked(ctx: TaskContext, argv: list[str], what: str, **kwargs: Any) -> str:
    result = _docker(ctx, argv, **kwargs)
    if result.rc != 0:
        raise ModuleFailure(f"{what} failed on {ctx.conn.host_name}: {_error_text(result)}")
    return result.stdout


def _error_text(result: CommandResult) -> str:
    return result.stderr.strip() or result.stdout.strip() or f"exit code {result.rc}"


def failure_of(result: CommandResult, what: str) -> ModuleFailure:
    """A failed compose command as a ModuleFailure quoting compose; the GPU case explained."""
    error = _error_text(result)
    gpu = GPU_ERROR.search(error)
    if gpu:
        return ModuleFailure(f"{what}: {NO_GPU_RUNTIME.format(error=gpu.group(0))}", hint=NO_GPU_HINT)
    return ModuleFailure(f"{what} failed: {error}")


# ---------------------------------------------------------------- what the file says


def render(args: dict[str, Any], ctx: TaskContext) -> str:
    """The compose file text: `src` rendered with the play's variables plus `vars`."""
    return render_template_file(ctx, args["src"], args["dest"], extra_vars=args.get("vars"))[1]


def parse_services(config: dict[str, Any], hashes: str) -> list[Service]:
    """Services from `config --format json` and `config --hash '*'` ("name hash" lines)."""
    by_name = dict(line.split(None, 1) for line in hashes.splitlines() if line.strip())
    services = []
    for name, spec in sorted((config.get("services") or {}).items()):
        replicas = spec.get("scale") or (spec.get("deploy") or {}).get("replicas")
        services.append(
            Service(
                name, spec.get("image"), by_name.get(name, "").strip(), 1 if replicas is None else replicas
            )
        )
    return services


def validated_services(ctx: TaskContext, project: Project, text: str) -> list[Service]:
    """Have compose validate the rendered text (nothing is written) and resolve its services."""
    stdin = text.encode("utf-8")
    result = _docker(ctx, project.argv("config", "--format", "json", from_stdin=True), stdin=stdin)
    if result.rc != 0:
        raise ModuleFailure(
            f"docker compose rejects the file rendered for {project.file} (nothing was written): "
            f"{_error_text(result)}"
        )
    try:
        config = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise ModuleFailure(f"docker compose config printed no JSON ({exc}); is it Compose v2?") from None
    hashes = _checked(
        ctx,
        project.argv("config", "--hash", "*", from_stdin=True),
        "docker compose config --hash",
        stdin=stdin,
    )
    return parse_services(config, hashes)


# ---------------------------------------------------------------- what the host runs


def parse_containers(inspected: list[dict[str, Any]]) -> list[Container]:
    """Service containers from `docker inspect` output (one-off `compose run` containers left out)."""
    containers = []
    for info in inspected:
        labels = (info.get("Config") or {}).get("Labels") or {}
        if SERVICE_LABEL not in labels or labels.get(ONEOFF_LABEL) == "True":
            continue
        containers.append(
            Container(
                id=info["Id"],
                service=labels[SERVICE_LABEL],
                config_hash=labels.get(HASH_LABEL, ""),
                image_id=labels.get(IMAGE_LABEL) or info.get("Image", ""),
                running=bool((info.get("State") or {}).get("Running")),
            )
        )
    return sorted(containers, key=lambda c: (c.service, c.id))


def project_containers(ctx: TaskContext, project: Project) -> list[Container]:
    """The project's containers, found by label as compose finds them (any state)."""
    label = f"label={PROJECT_LABEL}={project.name}"
    ids = _checked(ctx, [DOCKER, "ps", "--all", "--no-trunc", "--quiet", "--filter", label], "docker ps")
    if not ids.split():
        return []
    result = _docker(ctx, [DOCKER, "inspect", *ids.split()])
    try:  # a container removed meanwhile makes inspect exit 1 but still print the others
        inspected = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        raise failure_of(result, "docker inspect") from None
    return parse_containers(inspected)


def project_networks(ctx: TaskContext, project: Project) -> list[str]:
    label = f"label={PROJECT_LABEL}={project.name}"
    return _checked(
        ctx, [DOCKER, "network", "ls", "--filter", label, "--format", "{{.Name}}"], "docker network ls"
    ).split()


def image_id(ctx: TaskContext, image: str) -> str | None:
    """The ID of the image a reference names on the host now; None when it is not there."""
    result = _docker(ctx, [DOCKER, "image", "inspect", "--format", "{{.Id}}", image])
    if result.rc != 0:
        if "no such image" in result.stderr.lower():
            return None
        raise failure_of(result, f"docker image inspect {image}")
    return result.stdout.strip()


# ---------------------------------------------------------------- deciding


@dataclass(frozen=True)
class Action:
    """One thing `up -d` will do to one service."""

    verb: str  # create | recreate | scale | start | remove orphan
    service: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.verb} {self.service}{self.detail}"


def service_action(service: Service, found: Sequence[Container], image: str | None) -> Action | None:
    """What `up -d` will do to one service (None: nothing), decided as compose decides it."""
    if not found:
        missing = service.image and image is None
        return Action("create", service.name, f" (image {service.image} not present yet)" if missing else "")
    reasons = []
    if any(c.config_hash != service.config_hash for c in found):
        reasons.append("config changed")
    if service.image and any(c.image_id != image for c in found):
        reasons.append("image changed")
    if reasons:
        return Action("recreate", service.name, f": {', '.join(reasons)}")
    if len(found) != service.replicas:
        return Action("scale", service.name, f": {len(found)} -> {service.replicas}")
    if not all(c.running for c in found):
        return Action("start", service.name)
    return None


def up_actions(
    services: list[Service], containers: list[Container], images: dict[str, str | None]
) -> list[Action]:
    """Every change `up -d --remove-orphans` will make, in service order; empty when converged."""
    by_service: dict[str, list[Container]] = {}
    for container in containers:
        by_service.setdefault(container.service, []).append(container)
    actions = []
    for service in services:
        found = by_service.pop(service.name, [])
        action = service_action(service, found, images.get(service.image or ""))
        if action:
            actions.append(action)
    actions.extend(Action("remove orphan", name) for name in sorted(by_service))
    return actions


def services_diff(
    project: Project,
    services: list[Service],
    containers: list[Container],
    images: dict[str, str | None],
    actions: list[Action],
) -> Diff:
    """Before/after of the services `up` touches: state, config hash, image ID."""
    touched = {action.service for action in actions}
    before = "".join(f"{c.describe()}\n" for c in containers if c.service in touched)
    after = "".join(
        f"{s.name}: running, config {s.config_hash[:12]}, image {_short_id(images.get(s.image or ''))}\n"
        for s in services
        if s.name in touched
    )
    return Diff(f"compose project {project.name}", before, after)


def up_command(project: Project, args: dict[str, Any]) -> Command:
    # `--pull missing` is compose's default; only `never` is passed, so older compose plugins work too.
    pull = ["--pull", "never"] if args.get("pull") == "never" else []
    argv = project.argv("up", "--detach", "--remove-orphans", *pull)
    return Command(argv, f"docker compose up of project {project.name}")


def down_command(project: Project) -> Command:
    # By label, without -f: works whatever became of the file (edited, invalid, removed).
    argv = [DOCKER, "compose", "-p", project.name, "down", "--remove-orphans"]
    return Command(argv, f"docker compose down of project {project.name}")


# ---------------------------------------------------------------- the module


class ComposeModule(Module):
    name = "compose"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        project = project_of(args)
        state = args.get("state", "present")
        if state == "absent":
            return self._check_absent(args, ctx, project)
        text = render(args, ctx)
        services = validated_services(ctx, project, text)
        file_change = self._plan_file(args, ctx, project, text)
        parts = [file_change] if file_change else []
        steps = Steps(file_ops=list(file_change.payload) if file_change else [], timeout=_timeout(args, ctx))
        if state == "present":
            up_change = self._plan_up(args, ctx, project, services)
            if up_change:
                parts.append(up_change)
                steps.commands.append(up_command(project, args))
        return _combined(parts, steps, project, state)

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        steps: Steps = change.payload
        if steps.file_ops and not steps.files_last:
            self._write(change, steps, ctx)
        for command in steps.commands:
            result = _docker(ctx, command.argv, timeout=steps.timeout or ACTION_TIMEOUT_S)
            if result.rc != 0:
                raise failure_of(result, command.what)
        if steps.file_ops and steps.files_last:
            self._write(change, steps, ctx)
        return Outcome(changed=True, msg=change.summary, data=dict(change.data))

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        project = project_of(args)
        return Outcome(
            changed=False,
            data={"dest": project.file, "project": project.name, "state": args.get("state", "present")},
        )

    @staticmethod
    def _write(change: Change, steps: Steps, ctx: TaskContext) -> None:
        run_ops(Change(change.summary, payload=steps.file_ops), ctx)

    @staticmethod
    def _plan_file(args: dict[str, Any], ctx: TaskContext, project: Project, text: str) -> Change | None:
        state, parent = ctx.conn.stat_many(
            [project.file, project.directory], checksum=True, become=ctx.become
        )
        change = plan_write(ctx, project.file, text.encode("utf-8"), Attrs.from_args(args), state=state)
        if change is not None and not parent.exists:
            change.payload.insert(0, {"op": "mkdir", "path": project.directory})
            change.summary += f" in a new directory {project.directory}"
        return change

    @staticmethod
    def _plan_up(
        args: dict[str, Any], ctx: TaskContext, project: Project, services: list[Service]
    ) -> Change | None:
        containers = project_containers(ctx, project)
        images = {s.image: image_id(ctx, s.image) for s in services if s.image}
        actions = up_actions(services, containers, images)
        if not actions:
            return None
        diff = services_diff(project, services, containers, images, actions)
        summary = f"project {project.name}: up -d ({'; '.join(map(str, actions))})"
        return Change(summary, [diff], data={"actions": [str(a) for a in actions]})

    def _check_absent(self, args: dict[str, Any], ctx: TaskContext, project: Project) -> Change | None:
        parts = []
        steps = Steps(files_last=True, timeout=_timeout(args, ctx))
        containers = project_containers(ctx, project)
        networks = project_networks(ctx, project)
        if containers or networks:
            what = ", ".join(
                f"{len(found)} {noun}{'s' if len(found) != 1 else ''}"
                for found, noun in ((containers, "container"), (networks, "network"))
                if found
            )
            before = "".join(f"{c.describe()}\n" for c in containers)
            before += "".join(f"network {n}\n" for n in networks)
            diff = Diff(f"compose project {project.name}", before, "")
            parts.append(Change(f"project {project.name}: down (remove {what})", [diff]))
            steps.commands.append(down_command(project))
        if args.get("remove_file"):
            removal = get_module("file").check({"path": project.file, "state": "absent"}, ctx)
            if removal:
                parts.append(removal)
                steps.file_ops.extend(removal.payload)
        return _combined(parts, steps, project, "absent")


def _timeout(args: dict[str, Any], ctx: TaskContext) -> float | None:
    value = args.get("timeout", ctx.timeout)
    return None if value is None else float(value)


def _combined(parts: list[Change], steps: Steps, project: Project, state: str) -> Change | None:
    if not parts:
        return None
    data: dict[str, Any] = {"dest": project.file, "project": project.name, "state": state}
    for part in parts:
        data.update(part.data)
    summary = "; ".join(part.summary for part in parts)
    return Change(summary, [d for part in parts for d in part.diffs], steps, data)
