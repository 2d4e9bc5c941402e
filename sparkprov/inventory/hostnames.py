"""Host names as inventories write them: `name[:port]` and ranges (`spark[01:12]`, `rack-[a:f]`, `[1:10:2]`).

Follows Ansible's `parse_address` (which text is a host, with which port) and `expand_hostname_range`,
except that an empty numeric range (`[05:01]`) is an error here instead of silently meaning no host.
"""

from __future__ import annotations

import ipaddress
import re
import string

from sparkprov.inventory.model import InventoryProblem

MAX_EXPANDED_HOSTS = 100_000

_RANGE = re.compile(r"\[(?:[a-z]:[a-z]|[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]", re.I)
_BRACKETED_PORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOST_PORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_LABEL = r"(?:[^\W_]|\w[\w-]*[^\W_])"  # starts with a word character, ends with a letter or digit
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_NUMBER = re.compile(r"[0-9]+")
RANGE_HINT = "ranges look like spark[01:12], node-[a:f] or host[1:10:2]"


def parse_address(text: str) -> tuple[str, int | None] | None:
    """(host, port) when `text` is a host name or IP address (ranges allowed) with an optional `:port`."""
    host, port = text, None
    for pattern in (_BRACKETED_PORT, _HOST_PORT):
        found = pattern.match(host)
        if found:
            host, port = found.group(1), int(found.group(2))
    plain = _RANGE.sub("0", host)
    if _HOSTNAME.match(plain) or _is_ip(plain):
        return host, port
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def expand_host(text: str) -> tuple[list[str], int | None]:
    """The host names a host entry stands for, and its port (None when it names none)."""
    address = parse_address(text)
    name, port = address if address is not None else (text, None)
    return expand_ranges(name), port


def expand_ranges(pattern: str) -> list[str]:
    if "[" not in pattern:
        return [pattern]
    head, _, rest = pattern.partition("[")
    body, closed, tail = rest.partition("]")
    if not closed:
        raise InventoryProblem(f"'[' without ']' in host name '{pattern}'", hint=RANGE_HINT)
    items = _range_items(body, pattern)
    tails = expand_ranges(tail)
    if len(items) * len(tails) > MAX_EXPANDED_HOSTS:
        raise InventoryProblem(
            f"host range '{pattern}' stands for more than {MAX_EXPANDED_HOSTS} hosts",
            hint="split the inventory, or check the range bounds",
        )
    return [f"{head}{item}{end}" for item in items for end in tails]


def _range_items(body: str, pattern: str) -> list[str]:
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise InventoryProblem(f"host range [{body}] in '{pattern}' must be [begin:end] or [begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    step = _step(bounds[2] if len(bounds) == 3 else "1", body, pattern)
    if not end:
        raise InventoryProblem(f"host range [{body}] in '{pattern}' has no end", hint=RANGE_HINT)
    if len(begin) == 1 and len(end) == 1 and begin in string.ascii_letters and end in string.ascii_letters:
        first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        _ordered(first, last, body, pattern)
        return list(string.ascii_letters[first : last + 1 : step])
    if not (_NUMBER.fullmatch(begin) and _NUMBER.fullmatch(end)):
        raise InventoryProblem(
            f"host range [{body}] in '{pattern}' needs two numbers or two single letters", hint=RANGE_HINT
        )
    width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
    if width and len(end) != width:
        raise InventoryProblem(
            f"zero-padded host range [{body}] in '{pattern}' needs begin and end of the same width",
            hint=f"write [{begin}:{end.zfill(width)}]",
        )
    first, last = int(begin), int(end)
    _ordered(first, last, body, pattern)
    if (last - first) // step >= MAX_EXPANDED_HOSTS:
        raise InventoryProblem(f"host range '{pattern}' stands for more than {MAX_EXPANDED_HOSTS} hosts")
    return [str(n).zfill(width) for n in range(first, last + 1, step)]


def _step(text: str, body: str, pattern: str) -> int:
    if not _NUMBER.fullmatch(text) or int(text) == 0:
        raise InventoryProblem(f"the step of host range [{body}] in '{pattern}' must be a positive number")
    return int(text)


def _ordered(first: int, last: int, body: str, pattern: str) -> None:
    if first > last:
        raise InventoryProblem(
            f"host range [{body}] in '{pattern}' is empty: it begins after it ends",
            hint="write the smaller bound first",
        )
