"""ollama: the Ollama service's settings (a systemd drop-in) and the models in its store.

Settings are written as `Environment="KEY=VALUE"` lines to a drop-in (`override.conf`); when that file
changes, the same change runs `systemctl daemon-reload` and restarts the unit (through the service
module), then waits until the API answers. Shell rc files have no effect on the service.

Models are made present (`POST /api/pull`, streamed, with progress) or absent (`DELETE /api/delete`)
through the HTTP API. Names compare as Ollama compares them: `llama3.2` is `llama3.2:latest`, case does
not matter, `registry.ollama.ai/library/` is implied. A converged host costs one `GET /api/tags`.

If the API does not answer before a restart that this task will do itself, the models are checked
after the restart (the plan says so). That is also the case when the restart changes OLLAMA_MODELS:
the store the API serves afterwards is another one.

With `distribute: true` (or the play variable `sparkprov_distribute`), a remote host whose store lacks
a model gets it from `seed` (the controller's own Ollama, or an inventory host's) instead of the
internet: the seed pulls it once per run, then its manifest and the blobs the host lacks are streamed
over SSH into the host's store (`models_dir`) and the host's API must list it (see
`_ollama_store.py`). That needs access to both stores (OLLAMA_MODELS; the service's default is
/usr/share/ollama/.ollama/models, owned by the ollama user: use `become`).

Limitation: the controller talks HTTP to `url` directly. For a remote host, `url` must be an address
of that host reachable from the controller (a loopback URL would reach the controller's own Ollama,
so it is refused there); tunnelling the API over the host's SSH connection is not done yet.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sparkprov.connection.base import FileState
from sparkprov.modules._distribute import CONTROLLER, wanted
from sparkprov.modules._files import Attrs, plan_write, run_ops, sha256
from sparkprov.modules._ollama_api import (
    DEFAULT_URL,
    ApiError,
    InvalidName,
    ModelName,
    OllamaClient,
    Unreachable,
    api_url,
    is_loopback,
)
from sparkprov.modules._ollama_store import ModelRequest, default_models_dir, distribute_model
from sparkprov.modules.base import Change, Diff, Module, ModuleFailure, Outcome, TaskContext
from sparkprov.modules.service import ServiceModule

DEFAULT_SERVICE = "ollama"
DEFAULT_WAIT_TIMEOUT_S = 60.0
DROPIN_MODE = "0644"
DROPIN_HEADER = (
    "# Managed by sparkprov (ollama module): changes made here are overwritten.\n"
    "# Settings of the ollama service; shell rc files do not apply to it.\n"
)
MODELS_SETTING = "OLLAMA_MODELS"


@dataclass(frozen=True)
class ModelSpec:
    name: ModelName
    present: bool
    written: str  # as the playbook gave it: what is sent to the API


@dataclass(frozen=True)
class ModelActions:
    pulls: tuple[ModelSpec, ...] = ()
    deletes: tuple[ModelSpec, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.pulls or self.deletes)


@dataclass(frozen=True)
class Config:
    """The task's arguments, checked and with defaults filled in."""

    url: str
    service: str
    models: tuple[ModelSpec, ...]
    settings: dict[str, str] | None
    dropin: str
    restart: bool
    wait_timeout: float
    pull_timeout: float | None
    seed: str | None = None  # distribute: models come from this source's store ('controller' or a host)
    models_dir: str = ""  # with distribute: the host's store
    seed_url: str | None = None
    seed_models_dir: str | None = None


@dataclass
class Plan:
    """What `apply` does, in order: drop-in, systemctl, wait for the API, pulls, deletes."""

    config: Config
    dropin: Change | None = None  # agent operations writing the drop-in
    service: Change | None = None  # the service module's daemon-reload (+ restart) commands
    models: ModelActions | None = field(default_factory=ModelActions)  # None: decided after restart

    @property
    def file_ops(self) -> list[dict[str, Any]]:
        """The drop-in write, for plan mode's view of pending file changes."""
        return list(self.dropin.payload) if self.dropin is not None else []

    @property
    def restarts(self) -> bool:
        return self.service is not None and any(argv[1] != "daemon-reload" for argv in self.service.payload)


# ---------------------------------------------------------------- arguments


def model_specs(models: Iterable[Any], default_state: str) -> tuple[ModelSpec, ...]:
    """The declared models, normalised, each once; a model declared both present and absent fails."""
    specs: dict[str, ModelSpec] = {}
    for entry in models:
        written, state = (entry, default_state) if isinstance(entry, str) else _entry(entry, default_state)
        try:
            name = ModelName.parse(written)
        except InvalidName as exc:
            raise ModuleFailure(f"invalid model name {exc}") from None
        spec = ModelSpec(name, state == "present", written.strip())
        earlier = specs.setdefault(name.key, spec)
        if earlier.present != spec.present:
            raise ModuleFailure(
                f"model {earlier.name} is declared both present and absent "
                f"('{earlier.written}', '{spec.written}')"
            )
    return tuple(specs.values())


def _entry(entry: dict[str, Any], default_state: str) -> tuple[str, str]:
    return str(entry["name"]), str(entry.get("state", default_state))


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ModuleFailure("a value in 'settings' contains a line break, which systemd cannot hold")
    return text


def _default_url(settings: dict[str, str] | None, ctx: TaskContext) -> str:
    """Where the service listens (its OLLAMA_HOST setting), else $OLLAMA_HOST, else 127.0.0.1:11434."""
    for source in (settings or {}, ctx.environment, os.environ):
        if source.get("OLLAMA_HOST"):
            return source["OLLAMA_HOST"]
    return DEFAULT_URL


def config(args: dict[str, Any], ctx: TaskContext) -> Config:
    settings = None
    if args.get("settings") is not None:
        settings = {str(k): _setting_text(v) for k, v in args["settings"].items()}
    written_url = args.get("url") or _default_url(settings, ctx)
    try:
        url = api_url(written_url)
    except ValueError as exc:
        raise ModuleFailure(f"invalid Ollama URL: {exc}") from None
    service = str(args.get("service") or DEFAULT_SERVICE)
    pull_timeout = args.get("pull_timeout")
    seed = None if ctx.conn.is_local else wanted(args, ctx)
    return Config(
        url=url,
        service=service,
        models=model_specs(args.get("models") or [], args.get("state", "present")),
        settings=settings,
        dropin=args.get("dropin") or f"/etc/systemd/system/{service}.service.d/override.conf",
        restart=args.get("restart", True),
        wait_timeout=float(args.get("wait_timeout", DEFAULT_WAIT_TIMEOUT_S)),
        pull_timeout=float(pull_timeout) if pull_timeout is not None else ctx.timeout,
        seed=seed,
        models_dir=str(args.get("models_dir") or default_models_dir(settings)),
        seed_url=args.get("seed_url"),
        seed_models_dir=args.get("seed_models_dir"),
    )


# ---------------------------------------------------------------- the drop-in


def _quote(value: str) -> str:
    """A value inside systemd's double quotes: backslash and quote escaped, '%' doubled (specifiers)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def dropin_text(settings: dict[str, str]) -> str:
    lines = [f'Environment="{_quote(f"{key}={settings[key]}")}"\n' for key in sorted(settings)]
    return DROPIN_HEADER + "[Service]\n" + "".join(lines)


def environment_of(text: str) -> dict[str, str]:
    """KEY -> value of the `Environment=` lines of a unit file (later lines win, as in systemd)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("Environment="):
            continue
        try:
            words = shlex.split(line[len("Environment=") :].replace("%%", "%"))
        except ValueError:
            continue
        found.update(word.partition("=")[::2] for word in words if "=" in word)
    return found


def _plan_dropin(cfg: Config, ctx: TaskContext) -> tuple[Change | None, dict[str, str]]:
    """The drop-in write (None when it already holds the settings) and the environment it had
    (read only when the content changes)."""
    assert cfg.settings is not None
    data = dropin_text(cfg.settings).encode()
    state, parent = ctx.conn.stat_many(
        [cfg.dropin, os.path.dirname(cfg.dropin) or "/"], checksum=True, become=ctx.become
    )
    before = _current(ctx, cfg.dropin, state, data)
    change = plan_write(ctx, cfg.dropin, data, Attrs(mode=DROPIN_MODE), state=state, before=before)
    if change is not None and not parent.exists:
        mkdir = {"op": "mkdir", "path": parent.path, "mode": 0o755, "owner": None, "group": None}
        change.payload.insert(0, mkdir)
    return change, environment_of((before or b"").decode("utf-8", "replace"))


def _current(ctx: TaskContext, path: str, state: FileState, wanted: bytes) -> bytes | None:
    """The drop-in's content when it differs from `wanted` (b'' when there is none); else None."""
    if state.exists and state.type == "file":
        return None if state.sha256 == sha256(wanted) else ctx.conn.get(path, become=ctx.become)
    return b""


def _rewrites(change: Change | None) -> bool:
    """Whether a drop-in change writes new content (not only a mode or owner fix)."""
    return change is not None and any(op["op"] == "write" for op in change.payload)


def _plan_service(cfg: Config, ctx: TaskContext) -> Change:
    """systemctl daemon-reload, and the restart when asked (a stopped unit is started)."""
    if cfg.restart:
        change = ServiceModule().check(
            {"name": cfg.service, "state": "restarted", "daemon_reload": True}, ctx
        )
        assert change is not None  # 'restarted' always acts
        return change
    return Change("daemon-reload", payload=[["systemctl", "daemon-reload"]], data={"name": cfg.service})


# ---------------------------------------------------------------- models


def plan_models(specs: Iterable[ModelSpec], installed: Iterable[ModelName]) -> ModelActions:
    """Pulls of the present models the store lacks, deletes of the absent models it has (named as
    the store spells them)."""
    have = {name.key: name for name in installed}
    pulls = tuple(s for s in specs if s.present and s.name.key not in have)
    deletes = tuple(
        replace(s, name=have[s.name.key], written=str(have[s.name.key]))
        for s in specs
        if not s.present and s.name.key in have
    )
    return ModelActions(pulls, deletes)


def _api_failure(cfg: Config, exc: ApiError) -> ModuleFailure:
    return ModuleFailure(
        str(exc),
        hint=f"is the {cfg.service} service running (`systemctl status {cfg.service}`, "
        f"`journalctl -u {cfg.service}`), and is 'url' where it listens?",
    )


def _installed(cfg: Config, client: OllamaClient) -> list[ModelName]:
    """The store's models; if the API does not answer yet (a service just started), wait for it once."""
    try:
        return client.tags()
    except Unreachable:
        if cfg.wait_timeout <= 0:
            raise
    client.wait_ready(cfg.wait_timeout)
    return client.tags()


def _require_reachable_url(cfg: Config, ctx: TaskContext) -> None:
    if ctx.conn.is_local or not is_loopback(cfg.url):
        return
    raise ModuleFailure(
        f"the ollama module talks HTTP from the controller, and {cfg.url} is the controller itself, "
        f"not {ctx.conn.host_name}",
        hint=f"give 'url' with an address of {ctx.conn.host_name} that the controller reaches "
        "(e.g. http://HOST:11434, with OLLAMA_HOST=0.0.0.0:11434 in 'settings'), "
        "or wait_timeout: 0 to manage only the settings",
    )


def _plan_model_actions(cfg: Config, ctx: TaskContext, restart: bool, new_store: bool) -> ModelActions | None:
    """The pulls and deletes, or None when they can only be known after the restart this task does."""
    if not cfg.models:
        return ModelActions()
    _require_reachable_url(cfg, ctx)
    if new_store:
        return None
    with OllamaClient(cfg.url) as client:
        try:
            return plan_models(cfg.models, client.tags() if restart else _installed(cfg, client))
        except Unreachable as exc:
            if restart:
                return None  # the restart this task does may bring it up
            raise _api_failure(cfg, exc) from None
        except ApiError as exc:
            raise _api_failure(cfg, exc) from None


# ---------------------------------------------------------------- summaries and results


def _names(specs: Iterable[ModelSpec]) -> str:
    return ", ".join(str(s.name) for s in specs)


def summary(plan: Plan, models: ModelActions | None = None) -> str:
    models = plan.models if models is None else models
    parts = []
    if plan.service is not None:
        steps = [os.path.basename(plan.config.dropin)] + [" ".join(argv[1:]) for argv in plan.service.payload]
        parts.append("write " + " + ".join(steps))
    elif plan.dropin is not None:
        parts.append(plan.dropin.summary)
    if models is None:
        parts.append(f"then pull/delete models as the API at {plan.config.url} reports after the restart")
    else:
        if models.pulls and plan.config.seed is not None:
            source = "the controller" if plan.config.seed == CONTROLLER else plan.config.seed
            parts.append(f"copy {_names(models.pulls)} from {source}")
        elif models.pulls:
            parts.append(f"pull {_names(models.pulls)}")
        if models.deletes:
            parts.append(f"delete {_names(models.deletes)}")
    return "; ".join(parts)


def _models_diff(cfg: Config, models: ModelActions) -> Diff:
    lines = [(str(s.name), "absent", "present") for s in models.pulls]
    lines += [(str(s.name), "present", "absent") for s in models.deletes]
    return Diff(
        f"ollama models at {cfg.url}",
        "".join(f"{name}: {old}\n" for name, old, _ in lines),
        "".join(f"{name}: {new}\n" for name, _, new in lines),
    )


def result_data(
    cfg: Config, pulled: Iterable[ModelSpec] = (), deleted: Iterable[ModelSpec] = (), restarted: bool = False
) -> dict[str, Any]:
    """The registered result: where the API is, what was pulled/deleted, whether the unit restarted."""
    return {
        "url": cfg.url,
        "models": [str(s.name) for s in cfg.models if s.present],
        "pulled": [str(s.name) for s in pulled],
        "deleted": [str(s.name) for s in deleted],
        "restarted": restarted,
        "dropin": cfg.dropin if cfg.settings is not None else None,
    }


# ---------------------------------------------------------------- apply


@dataclass
class _Done:
    pulled: list[ModelSpec] = field(default_factory=list)
    deleted: list[ModelSpec] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)  # how each distributed model came

    def text(self) -> str:
        parts = [f"pulled {_names(self.pulled)}"] if self.pulled else []
        parts += [f"deleted {_names(self.deleted)}"] if self.deleted else []
        return f" (done before the failure: {'; '.join(parts)})" if parts else ""


def _pull(client: OllamaClient, spec: ModelSpec, cfg: Config, progress: Callable[..., None]) -> None:
    what = f"pull {spec.name}"

    def report(done: int, total: int) -> None:
        if done < total:  # the last layer's completion is reported once the pull succeeded
            progress(what, done, total)

    total = client.pull(spec.written, report, timeout=cfg.pull_timeout)
    progress(what, total, total)


def _copy(spec: ModelSpec, cfg: Config, ctx: TaskContext) -> str:
    """The model from the seed's store into this host's (see `_ollama_store.py`); how it went."""
    assert cfg.seed is not None
    request = ModelRequest(
        spec.name, spec.written, cfg.seed, cfg.seed_url, cfg.seed_models_dir, cfg.pull_timeout
    )
    return f"{spec.name}: {distribute_model(ctx, request, cfg.models_dir, cfg.url).note}"


def _run_models(client: OllamaClient, plan: Plan, actions: ModelActions, ctx: TaskContext) -> _Done:
    cfg = plan.config
    done = _Done()
    try:
        for spec in actions.pulls:
            if cfg.seed is not None:
                done.copies.append(_copy(spec, cfg, ctx))
            else:
                _pull(client, spec, cfg, ctx.progress)
            done.pulled.append(spec)
        for spec in actions.deletes:
            client.delete(spec.written)  # False (404): already gone, which is what was wanted
            done.deleted.append(spec)
    except (ApiError, ModuleFailure) as exc:
        raise ModuleFailure(
            f"{exc}{done.text()}",
            **result_data(cfg, done.pulled, done.deleted, plan.restarts),
        ) from None
    return done


class OllamaModule(Module):
    name = "ollama"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        cfg = config(args, ctx)
        plan = Plan(cfg)
        old_env: dict[str, str] = {}
        if cfg.settings is not None:
            plan.dropin, old_env = _plan_dropin(cfg, ctx)
            if _rewrites(plan.dropin):
                plan.service = _plan_service(cfg, ctx)
        if plan.restarts and cfg.wait_timeout > 0:
            _require_reachable_url(cfg, ctx)  # apply waits for the API after the restart
        # A restart onto another OLLAMA_MODELS serves another store than the one the API shows now.
        new_store = plan.restarts and old_env.get(MODELS_SETTING) != (cfg.settings or {}).get(MODELS_SETTING)
        plan.models = _plan_model_actions(cfg, ctx, plan.restarts, new_store)
        if plan.dropin is None and plan.models is not None and not plan.models:
            return None
        diffs = list(plan.dropin.diffs) if plan.dropin is not None else []
        if plan.models:
            diffs.append(_models_diff(cfg, plan.models))
        pending = plan.models or ModelActions()
        data = result_data(cfg, pending.pulls, pending.deletes, plan.restarts)
        return Change(summary(plan), diffs, plan, data)

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        plan: Plan = change.payload
        cfg = plan.config
        if plan.dropin is not None:
            run_ops(plan.dropin, ctx)
        if plan.service is not None:
            ServiceModule().apply(plan.service, ctx)
        actions = plan.models or ModelActions()
        with OllamaClient(cfg.url) as client:
            try:
                if plan.restarts and cfg.wait_timeout > 0:
                    client.wait_ready(cfg.wait_timeout)
                if plan.models is None:
                    actions = plan_models(cfg.models, client.tags())
            except ApiError as exc:
                raise ModuleFailure(
                    f"{exc} after restarting {cfg.service}",
                    hint=f"see why with `journalctl -u {cfg.service}` on the host",
                ) from None
            done = _run_models(client, plan, actions, ctx)
        return Outcome(
            changed=True,
            msg="; ".join([summary(plan, actions), *done.copies]),
            data=result_data(cfg, done.pulled, done.deleted, plan.restarts),
        )

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        return Outcome(changed=False, data=result_data(config(args, ctx)))
