"""jupyter: IPython startup scripts in the profile's startup directory, and jupyter_server_config.py.

IPython runs every `*.py`/`*.ipy` file of `<ipython_dir>/profile_<name>/startup/` when a kernel starts;
the course's `~/.jupyter/startup.py` is never run, so a script placed anywhere else is refused. The
server settings use `c.ServerApp.*` and `c.IdentityProvider.token` (the NotebookApp names are
deprecated). A token given as a value is registered as a secret and masked in every diff and result;
`token_env` keeps it out of the file altogether.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from sparkprov.connection.base import FileState
from sparkprov.modules._files import Attrs, merge_file_changes, plan_write, run_ops
from sparkprov.modules.base import Change, Diff, Module, ModuleFailure, Outcome, TaskContext
from sparkprov.modules.template import render_template_file
from sparkprov.report.masking import MASK
from sparkprov.resources import data_dir

BUNDLED_SCRIPT = {"name": "00-spark-gpu.py", "src": "ipython/00-spark-gpu.py.j2"}
SCRIPT_SUFFIXES = (".py", ".ipy")  # the only files IPython runs from a startup directory
SCRIPT_MODE, SERVER_CONFIG_MODE = 0o644, 0o600
IPYTHON_DIR_MODE, CONFIG_DIR_MODE = 0o755, 0o700
SERVER_DEFAULTS: dict[str, Any] = {"ip": "127.0.0.1", "port": 8888, "open_browser": False}
COURSE_STARTUP = "~/.jupyter/startup.py"
_TOKEN_LINE = re.compile(r"^(\s*c\.\w+\.token\s*=\s*)['\"].*$", re.MULTILINE)


@dataclass(frozen=True)
class Layout:
    """Where the files go on the host (absolute paths)."""

    home: str
    ipython_dir: str
    profile_dir: str
    config_dir: str

    @property
    def startup_dir(self) -> str:
        return os.path.join(self.profile_dir, "startup")

    @property
    def server_config(self) -> str:
        return os.path.join(self.config_dir, "jupyter_server_config.py")

    def expand(self, path: str) -> str:
        """'~' is the home this module writes to (the become user's, or /root's stand-in); a relative
        path is relative to that home too."""
        if path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        return os.path.normpath(os.path.join(self.home, path))


def _home(args: dict[str, Any], ctx: TaskContext) -> str:
    if args.get("container_root"):
        return str(args.get("root_prefix") or "/root")
    if args.get("user_home"):
        return str(args["user_home"])
    # The agent expands '~' as the user it runs as, so this is the become user's home.
    return ctx.conn.stat("~", become=ctx.become).path


def layout(args: dict[str, Any], home: str) -> Layout:
    base = Layout(os.path.normpath(home), "", "", "")
    ipython_dir = base.expand(args.get("ipython_dir") or "~/.ipython")
    profile = str(args.get("profile") or "profile_default")
    if not profile.startswith("profile_"):
        profile = "profile_" + profile  # IPython's profile 'default' lives in profile_default/
    config_dir = base.expand(args.get("config_dir") or "~/.jupyter")
    return Layout(base.home, ipython_dir, os.path.join(ipython_dir, profile), config_dir)


# ---------------------------------------------------------------- startup scripts


def script_dest(item: dict[str, Any], where: Layout) -> str:
    """Where a startup script goes; refuses any place IPython would not run it from."""
    dest = where.expand(item["dest"]) if "dest" in item else os.path.join(where.startup_dir, item["name"])
    if os.path.dirname(dest) != where.startup_dir or ("name" in item and "/" in item["name"]):
        course = dest.endswith("/.jupyter/startup.py")
        raise ModuleFailure(
            f"startup script {dest} is outside {where.startup_dir}: IPython only runs the files of its "
            "profile's startup directory"
            + (f" (the course's {COURSE_STARTUP} is never executed)" if course else ""),
            hint="give the script a file name (name: 00-spark-gpu.py) and sparkprov puts it there; "
            "set ipython_dir/profile to choose another profile",
        )
    if not dest.endswith(SCRIPT_SUFFIXES):
        raise ModuleFailure(
            f"startup script {dest}: IPython runs only *.py and *.ipy files from {where.startup_dir}",
            hint="name it like 10-name.py (files run in name order)",
        )
    return dest


def _scripts(args: dict[str, Any]) -> list[dict[str, Any]]:
    if "startup_scripts" not in args:
        return [{**BUNDLED_SCRIPT, "src": str(data_dir("templates") / BUNDLED_SCRIPT["src"])}]
    return list(args["startup_scripts"] or [])


def _script_files(args: dict[str, Any], ctx: TaskContext, where: Layout) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for item in _scripts(args):
        dest = script_dest(item, where)
        if dest in files:
            raise ModuleFailure(f"two startup scripts are both {dest}", hint="give each a different name")
        text = item["content"] if "content" in item else render_template_file(ctx, item["src"], dest)[1]
        files[dest] = text.encode("utf-8")
    return files


# ---------------------------------------------------------------- server config


def _server_settings(args: dict[str, Any]) -> dict[str, Any] | None:
    value = args.get("server_config", True)
    if value is False or value is None:
        return None
    return {**SERVER_DEFAULTS, **(value if isinstance(value, dict) else {})}


def server_config_text(settings: dict[str, Any]) -> str:
    """jupyter_server_config.py for `settings` (ip, port, open_browser, root_dir, token | token_env)."""
    lines = [
        "# Managed by sparkprov (jupyter module); changes made here are overwritten.",
        "import os",
        "",
        "c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file",
        "",
        f"c.ServerApp.ip = {str(settings['ip'])!r}",
        f"c.ServerApp.port = {int(settings['port'])}",
        f"c.ServerApp.open_browser = {bool(settings['open_browser'])}",
    ]
    if settings.get("root_dir"):
        lines.append(f"c.ServerApp.root_dir = os.path.expanduser({str(settings['root_dir'])!r})")
    if settings.get("token") is not None:
        lines.append(f"c.IdentityProvider.token = {str(settings['token'])!r}")
    elif settings.get("token_env"):
        name = str(settings["token_env"])
        lines += [
            f"# The token is read from ${name} when the server starts; it is never written here.",
            f"if os.environ.get({name!r}):",
            f"    c.IdentityProvider.token = os.environ[{name!r}]",
        ]
    else:
        lines.append("# No token set here: Jupyter uses $JUPYTER_TOKEN, else makes one and logs it.")
    return "\n".join(lines) + "\n"


def _register_token(settings: dict[str, Any] | None, ctx: TaskContext) -> None:
    """Mask the token everywhere from now on; refuse an empty one."""
    token = None if settings is None else settings.get("token")
    if token is None:
        return
    token = str(token)
    if not token:
        raise ModuleFailure(
            "server_config.token is empty, which turns Jupyter's authentication off",
            hint="set a token (from a secret variable), or use token_env to read it at start-up",
        )
    ctx.secret(token)


def masked(text: str) -> str:
    """The text with the value of every `c.<X>.token = '...'` line replaced by the mask (the old file
    may hold a token too, even when the new one reads it from the environment)."""
    return _TOKEN_LINE.sub(lambda m: f'{m.group(1)}"{MASK}"', text)


def _public(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments as they may be shown: no token value."""
    settings = args.get("server_config")
    if isinstance(settings, dict) and "token" in settings:
        return {**args, "server_config": {**settings, "token": MASK}}
    return dict(args)


# ---------------------------------------------------------------- the module


def _mkdir(path: str, state: FileState, mode: int, attrs: Attrs) -> Change | None:
    if state.type == "directory":
        return None
    if state.exists:
        raise ModuleFailure(
            f"{path} exists and is not a directory", hint="move it away or choose another path"
        )
    op = {"op": "mkdir", "path": path, "mode": mode, "owner": attrs.owner, "group": attrs.group}
    return Change(f"create directory {path}", [Diff(path, "state: absent\n", "state: directory\n")], [op])


def _wanted(
    where: Layout, scripts: dict[str, bytes], settings: dict[str, Any] | None
) -> tuple[dict[str, int], dict[str, tuple[bytes, int]]]:
    """The directories (path: mode for a new one) and files (path: content, mode) the host needs."""
    dirs = {where.startup_dir: IPYTHON_DIR_MODE} if scripts else {}
    files = {path: (data, SCRIPT_MODE) for path, data in scripts.items()}
    if settings is not None:
        dirs[where.config_dir] = CONFIG_DIR_MODE
        files[where.server_config] = (server_config_text(settings).encode("utf-8"), SERVER_CONFIG_MODE)
    return dirs, files


def _result_data(where: Layout, scripts: list[str], settings: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "ipython_dir": where.ipython_dir,
        "profile_dir": where.profile_dir,
        "startup_dir": where.startup_dir,
        "startup_scripts": scripts,
        "server_config": where.server_config if settings is not None else None,
    }


class JupyterModule(Module):
    name = "jupyter"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        settings = _server_settings(args)
        _register_token(settings, ctx)
        where = layout(args, _home(args, ctx))
        scripts = _script_files(args, ctx, where)
        dirs, files = _wanted(where, scripts, settings)
        owner, group = args.get("owner"), args.get("group")
        states = ctx.conn.stat_many([*dirs, *files], checksum=True, become=ctx.become)
        changes = [
            _mkdir(path, state, mode, Attrs(None, owner, group))
            for (path, mode), state in zip(dirs.items(), states)
        ]
        for (path, (data, mode)), state in zip(files.items(), states[len(dirs) :]):
            change = plan_write(ctx, path, data, Attrs(mode, owner, group), state=state)
            if change is not None and path == where.server_config:
                change.diffs = [Diff(d.path, masked(d.before), masked(d.after)) for d in change.diffs]
            changes.append(change)
        merged = merge_file_changes([c for c in changes if c is not None])
        if merged is not None:
            merged.data = _result_data(where, list(scripts), settings)
        return merged

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        return run_ops(change, ctx)

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        where = layout(args, _home(args, ctx))
        scripts = [script_dest(item, where) for item in _scripts(args)]
        return Outcome(changed=False, data=_result_data(where, scripts, _server_settings(args)))

    def predicted(self, change: Change, args: dict[str, Any]) -> Outcome:
        return Outcome(changed=True, msg=change.summary, data={**_public(args), **change.data})
