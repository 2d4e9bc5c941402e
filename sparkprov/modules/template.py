"""ansible.builtin.template: render a Jinja2 template on the controller and write it to the host."""

from __future__ import annotations

import os
import pwd
from typing import Any

from sparkprov.modules._files import Attrs, find_source, plan_write, run_ops
from sparkprov.modules.base import Change, Module, ModuleFailure, Outcome, TaskContext
from sparkprov.playbook.templating import TemplateError, load_file_template, render_template

ANSIBLE_MANAGED = "Ansible managed"


class TemplateModule(Module):
    name = "template"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        source = find_source(ctx, args["src"], "templates")
        dest = args["dest"]
        try:
            template = load_file_template(
                source,
                trim_blocks=args.get("trim_blocks", True),
                lstrip_blocks=args.get("lstrip_blocks", False),
            )
        except UnicodeDecodeError:
            raise ModuleFailure(f"template {source} is not valid UTF-8") from None
        except Exception as exc:  # jinja2.TemplateSyntaxError carries the line
            line = getattr(exc, "lineno", None)
            raise ModuleFailure(f"template {source}{':' + str(line) if line else ''}: {exc}") from None
        scope = ctx.scope.child(self._template_vars(source, args))
        try:
            text = render_template(template, scope, source=str(source))
        except TemplateError as exc:
            raise ModuleFailure(f"cannot render template {source}: {exc}") from None
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

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        return Outcome(changed=False, data={"dest": args["dest"], "src": args["src"]})

    @staticmethod
    def _template_vars(source: Any, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ansible_managed": ANSIBLE_MANAGED,
            "template_path": str(source),
            "template_fullpath": str(source.resolve()),
            "template_destpath": args["dest"],
            "template_host": os.uname().nodename,
            "template_uid": pwd.getpwuid(source.stat().st_uid).pw_name,
        }
