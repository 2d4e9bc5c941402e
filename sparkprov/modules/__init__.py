"""The module registry: names as written in playbooks mapped to their implementation."""

from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparkprov.modules.base import Module

# name -> "python module:class". Kept as strings so start-up imports nothing it does not use.
_MODULES = {
    "file": "sparkprov.modules.file:FileModule",
    "copy": "sparkprov.modules.copy:CopyModule",
    "template": "sparkprov.modules.template:TemplateModule",
    "command": "sparkprov.modules.command:CommandModule",
    "shell": "sparkprov.modules.command:ShellModule",
    "lineinfile": "sparkprov.modules.lineinfile:LineInFileModule",
    "service": "sparkprov.modules.service:ServiceModule",
    "docker_image": "sparkprov.modules.docker_image:DockerImageModule",
    "compose": "sparkprov.modules.compose:ComposeModule",
    "jupyter": "sparkprov.modules.jupyter:JupyterModule",
    "ollama": "sparkprov.modules.ollama:OllamaModule",
    "drop_caches": "sparkprov.modules.drop_caches:DropCachesModule",
    "debug": "sparkprov.modules.actions:DebugAction",
    "set_fact": "sparkprov.modules.actions:SetFactAction",
    "assert": "sparkprov.modules.actions:AssertAction",
    "fail": "sparkprov.modules.actions:FailAction",
}

# Ansible spellings accepted for the same module.
_ALIASES = {"systemd": "service", "systemd_service": "service"}
_PREFIXES = ("ansible.builtin.", "ansible.legacy.")


def module_names() -> list[str]:
    return sorted(_MODULES)


def canonical_name(written: str) -> str | None:
    """'ansible.builtin.copy' -> 'copy'; None for an unknown module."""
    name = written
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    name = _ALIASES.get(name, name)
    return name if name in _MODULES else None


@cache
def get_module(name: str) -> Module:
    module_path, class_name = _MODULES[name].split(":")
    cls = getattr(import_module(module_path), class_name)
    return cls()
