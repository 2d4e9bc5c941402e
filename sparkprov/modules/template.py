"""ansible.builtin.template: render a Jinja2 template on the controller and write it to the host."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

from sparkprov.modules._files import Attrs, find_source, plan_write, run_ops
from sparkprov.modules.base import Change, Module, ModuleFailure, Outcome, TaskContext
from sparkprov.playbook.templating import TemplateError, load_file_template, render_template

ANSIBLE_MANAGED = "Ansible managed"


def render_template_file(
    ctx: TaskContext,
    src: str,
    dest: str,
    *,
    extra_vars: dict[str, Any] | None = None,
    trim_blocks: bool = True,
    lstrip_blocks: bool = False,
) -> tuple[Path, str]:
    """Find `src` (playbook templates/, playbook dir, bundled templates/) and render it with the
    task's variables, Ansible's template_* names and `extra_vars`; every failure names the file."""
    source = find_source(ctx, src, "templates")
    try:
        template = load_file_template(source, trim_blocks=trim_blocks, lstrip_blocks=lstrip_blocks)
    except UnicodeDecodeError:
        raise ModuleFailure(f"template {source} is not valid UTF-8") from None
    except Exception as exc:  # jinja2.TemplateSyntaxError carries the line
        line = getattr(exc, "lineno", None)
        raise ModuleFailure(f"template {source}{':' + str(line) if line else ''}: {exc}") from None
    scope = ctx.scope.child({**template_vars(source, dest), **(extra_vars or {})})
    try:
        return source, render_template(template, scope, source=str(source))
    except TemplateError as exc:
        raise ModuleFailure(f"cannot render template {source}: {exc}") from None


def template_vars(source: Path, dest: str) -> dict[str, Any]:
    """The names Ansible defines while a template renders."""
    return {
        "ansible_managed": ANSIBLE_MANAGED,
        "template_path": str(source),
        "template_fullpath": str(source.resolve()),
        "template_destpath": dest,
        "template_host": os.uname().nodename,
        "template_uid": pwd.getpwuid(source.stat().st_uid).pw_name,
    }


class TemplateModule(Module):
    name = "template"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        dest = args["dest"]
        source, text = render_template_file(
            ctx,
            args["src"],
            dest,
            trim_blocks=args.get("trim_blocks", True),
            lstrip_blocks=args.get("lstrip_blocks", False),
        )
        newline = args.get("newline_sequence", "\n")
        if newline != "\n":
            text = text.replace("\n", newline)
        state = ctx.conn.stat(dest, checksum=True, become=ctx.become)
        if state.type == "directory":
            dest = os.path.join(dest, source.name.removesuffix(".j2"))
            state = ctx.conn.stat(dest, checksum=True, become=ctx.become)
        return plan_write(
            ctx,
            dest,
            text.encode("utf-8"),
            Attrs.from_args(args),
            state=state,
            backup=bool(args.get("backup")),
            force=args.get("force", True),
        )

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        return run_ops(change, ctx)

    def probe(self, args: dict[str, Any]) -> list[tuple[str, bool]]:
        return [(args["dest"], True)]

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        return Outcome(changed=False, data={"dest": args["dest"], "src": args["src"]})
