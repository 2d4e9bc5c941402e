"""Inventories: Ansible's YAML and INI formats, host patterns, and the variables each host sees.

- `model.py`: `Host`, `Group`, `Inventory` (variable precedence, group members, building).
- `sources.py`: `load_inventory` (a file or a folder; format detection).
- `ini.py`, `yamlfile.py`: the two formats; `hostnames.py`: `name:port` and ranges (`spark[01:12]`).
- `varsdirs.py`: `group_vars/` and `host_vars/` next to the inventory, and `load_vars_dirs` for the
  playbook's folder.
- `patterns.py`: `-l` / `hosts:` patterns (`group`, `spark*`, `~regex`, `a:&b`, `!x`, `g[0]`).

Without an inventory, the implicit inventory holds `localhost` on the local connection.
"""

from __future__ import annotations

from sparkprov.inventory.model import LOCAL_NAMES, Group, Host, Inventory, implicit_localhost
from sparkprov.inventory.sources import load_inventory
from sparkprov.inventory.varsdirs import load_vars_dirs

__all__ = [
    "LOCAL_NAMES",
    "Group",
    "Host",
    "Inventory",
    "implicit_localhost",
    "load_inventory",
    "load_vars_dirs",
]
