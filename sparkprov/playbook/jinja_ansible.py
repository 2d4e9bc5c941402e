"""Ansible's Jinja2 filters, tests and lookups, for playbooks ported from Ansible.

`install(env)` registers them on a Jinja environment, each under its short name and under its
`ansible.builtin.` name. Semantics follow ansible-core's `plugins/filter/core.py`, `mathstuff.py`,
`plugins/test/core.py`, `files.py`, `mathstuff.py` and the builtin lookups; the differences are
listed at the end of this docstring.

Errors are `jinja2.TemplateRuntimeError`s (`jinja2.UndefinedError` for undefined values) whose
messages say what to change. Filters and tests fail on an undefined argument as a plain use of
the variable would, except `mandatory`, `ternary` and `type_debug`, which look at undefined values.

Filesystem tests and the `file`, `template`, `fileglob` and `first_found` lookups act on the
controller. Relative paths are looked up in `<playbook_dir>/<files|templates>/` then
`<playbook_dir>/` (Ansible's search order outside roles), where `playbook_dir` comes from the
template's variables and defaults to the current directory.

Deviations from Ansible:
- union/intersect/difference/symmetric_difference always return a list in first-seen order
  (Ansible returns set order for hashable inputs such as tuples).
- zip, zip_longest, product, permutations and combinations return lists, not iterators.
- The loose `version` comparison drops punctuation between parts and orders a number after a
  word where Ansible's LooseVersion raises (e.g. '1.0.1' vs '1.0rc1'); version_type='pep440' is
  not supported.
- fileglob (filter and lookup) results are sorted.
- regex_replace's mandatory_count error reports the real number of matches.
"""

from __future__ import annotations

import base64
import datetime
import functools
import glob
import itertools
import json
import math
import operator
import os
import re
import shlex
import time
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import jinja2
import yaml
from jinja2.filters import do_unique
from jinja2.runtime import Context

__all__ = ["install"]

_BUILTIN_PREFIX = "ansible.builtin."
_UUID_NAMESPACE_ANSIBLE = "361E6D51-FAEC-444A-9079-341386DA8E2E"


class _PluginError(jinja2.TemplateRuntimeError):
    """A filter, test or lookup could not do its work; the message says why and what to change."""


# --------------------------------------------------------------------------------------------
# helpers


def _fail_if_undefined(*values: Any) -> None:
    for value in values:
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()


def _strict(func: Callable[..., Any]) -> Callable[..., Any]:
    """Make `func` raise UndefinedError when given an undefined argument (keeps jinja's pass_* marks)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _fail_if_undefined(*args, *kwargs.values())
        return func(*args, **kwargs)

    return wrapper


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return value if isinstance(value, str) else str(value)


def _bytes(value: Any, encoding: str = "utf-8") -> bytes:
    if isinstance(value, bytes):
        return value
    return _text(value).encode(encoding, errors="surrogateescape")


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _type_name(value: Any) -> str:
    return type(value).__name__


def _compile(pattern: Any, flags: int, who: str) -> re.Pattern[str]:
    try:
        return re.compile(_text(pattern), flags)
    except re.error as exc:
        raise _PluginError(f"{who}: invalid regular expression {pattern!r}: {exc}") from None


def _re_flags(ignorecase: Any = False, multiline: Any = False) -> int:
    return (re.I if ignorecase else 0) | (re.M if multiline else 0)


# --------------------------------------------------------------------------------------------
# serialisation filters


def _json_default(obj: Any) -> Any:
    _fail_if_undefined(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (datetime.date, datetime.datetime)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"Object of type {_type_name(obj)} is not JSON serializable")


def to_json(value: Any, **kwargs: Any) -> str:
    kwargs.setdefault("default", _json_default)
    try:
        return json.dumps(value, **kwargs)
    except (TypeError, ValueError) as exc:
        raise _PluginError(f"to_json: {exc}") from None


def to_nice_json(value: Any, indent: int = 4, sort_keys: bool = True, **kwargs: Any) -> str:
    kwargs.pop("separators", None)
    return to_json(value, indent=indent, sort_keys=sort_keys, separators=(",", ": "), **kwargs)


def from_json(value: Any, **kwargs: Any) -> Any:
    try:
        return json.loads(value, **kwargs)
    except (TypeError, ValueError) as exc:
        raise _PluginError(f"from_json: the input is not valid JSON: {exc}") from None


class _YamlDumper(yaml.SafeDumper):
    """SafeDumper that also writes str subclasses, any Mapping and tuples, and fails on undefined."""


def _represent_undefined(dumper: yaml.SafeDumper, data: jinja2.Undefined) -> Any:
    data._fail_with_undefined_error()


_YamlDumper.add_multi_representer(str, yaml.representer.SafeRepresenter.represent_str)
_YamlDumper.add_multi_representer(Mapping, lambda d, data: d.represent_dict(dict(data)))  # type: ignore[type-abstract]
_YamlDumper.add_representer(tuple, yaml.representer.SafeRepresenter.represent_list)
_YamlDumper.add_multi_representer(jinja2.Undefined, _represent_undefined)


def to_yaml(value: Any, *_args: Any, default_flow_style: bool | None = None, **kwargs: Any) -> str:
    try:
        return yaml.dump(
            value, Dumper=_YamlDumper, allow_unicode=True, default_flow_style=default_flow_style, **kwargs
        )
    except yaml.representer.RepresenterError as exc:
        obj = exc.args[1] if len(exc.args) > 1 else None
        raise _PluginError(f"to_yaml: cannot represent a value of type {_type_name(obj)}") from None


def to_nice_yaml(
    value: Any, indent: int = 4, *_args: Any, default_flow_style: bool = False, **kwargs: Any
) -> str:
    return to_yaml(value, indent=indent, default_flow_style=default_flow_style, **kwargs)


def from_yaml(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # Ansible passes non-string input through
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise _PluginError(f"from_yaml: the input is not valid YAML: {exc}") from None


def from_yaml_all(value: Any) -> Any:
    if value is None:
        return []
    if not isinstance(value, str):
        return value
    try:
        return list(yaml.safe_load_all(value))
    except yaml.YAMLError as exc:
        raise _PluginError(f"from_yaml_all: the input is not valid YAML: {exc}") from None


def b64encode(value: Any, encoding: str = "utf-8", urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(_bytes(value, encoding)).decode("ascii")


def b64decode(value: Any, encoding: str = "utf-8", urlsafe: bool = False) -> str:
    decode = base64.urlsafe_b64decode if urlsafe else base64.b64decode
    try:
        raw = decode(_bytes(value))
    except ValueError as exc:
        raise _PluginError(f"b64decode: the input is not valid base64: {exc}") from None
    return raw.decode(encoding, errors="surrogateescape")


# --------------------------------------------------------------------------------------------
# types, strings, paths

_BOOL_TRUE = frozenset({"yes", "on", "true", "1"})
_BOOL_FALSE = frozenset({"no", "off", "false", "0"})


def to_bool(value: Any) -> bool:
    """Ansible's `bool`: yes/on/true/1 (any case) are true, no/off/false/0 false, else `value == 1`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        key: Any = value.lower()
    elif isinstance(value, int):
        key = str(value)
    else:
        key = value
    try:
        if key in _BOOL_TRUE:
            return True
        if key in _BOOL_FALSE:
            return False
        return bool(key == 1)
    except TypeError:
        return False


def to_datetime(value: Any, format: str = "%Y-%m-%d %H:%M:%S") -> datetime.datetime:
    try:
        return datetime.datetime.strptime(_text(value), format)
    except ValueError as exc:
        raise _PluginError(f"to_datetime: {exc}") from None


def strftime(string_format: str, second: Any = None, utc: bool = False) -> str:
    if second is None:
        epoch = time.time()
    else:
        try:
            epoch = float(second)
        except (TypeError, ValueError):
            raise _PluginError(f"Invalid value for epoch value ({second})") from None
    tz = datetime.timezone.utc if utc else None
    return datetime.datetime.fromtimestamp(epoch, tz=tz).strftime(string_format)


def quote(value: Any) -> str:
    return shlex.quote("" if value is None else _text(value))


def split(value: Any, sep: str | None = None, maxsplit: int = -1) -> list[str]:
    if not isinstance(value, str):
        raise _PluginError(f"split expects a string, got {_type_name(value)}")
    return value.split(sep, maxsplit)


def _path_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def path_filter(path: Any, *args: Any) -> Any:
        if not isinstance(path, (str, os.PathLike)):
            raise _PluginError(f"{name} expects a path string, got {_type_name(path)}")
        return func(path, *args)

    path_filter.__name__ = name
    return path_filter


def path_join(paths: Any) -> str:
    if isinstance(paths, str):
        return paths
    if _is_sequence(paths):
        return os.path.join(*paths)
    raise _PluginError(f"path_join expects a string or a list, got {_type_name(paths)}")


def commonpath(paths: Any) -> str:
    if not _is_sequence(paths):
        raise _PluginError(f"commonpath expects a list, got {_type_name(paths)}")
    return os.path.commonpath(paths)


def fileglob(pathname: Any) -> list[str]:
    return sorted(p for p in glob.glob(_text(pathname)) if os.path.isfile(p))


def type_debug(value: Any) -> str:
    return _type_name(value)


def mandatory(value: Any, msg: str | None = None) -> Any:
    """Return `value`; raise UndefinedError (Ansible's message, or `msg`) when it is undefined."""
    if isinstance(value, jinja2.Undefined):
        if msg is not None:
            raise jinja2.UndefinedError(_text(msg))
        name = getattr(value, "_undefined_name", None)
        label = f"{name!r} " if name is not None else ""
        raise jinja2.UndefinedError(f"Mandatory variable {label}not defined.")
    return value


def ternary(value: Any, true_val: Any, false_val: Any, none_val: Any = None) -> Any:
    if value is None and none_val is not None:
        return none_val
    return true_val if value else false_val


_COMMENT_STYLES: dict[str, dict[str, str]] = {
    "plain": {"decoration": "# "},
    "erlang": {"decoration": "% "},
    "c": {"decoration": "// "},
    "cblock": {"beginning": "/*", "decoration": " * ", "end": " */"},
    "xml": {"beginning": "<!--", "decoration": " - ", "end": "-->"},
}


def comment(text: Any, style: str = "plain", **kw: Any) -> str:
    if style not in _COMMENT_STYLES:
        raise _PluginError(f"Invalid style {style!r}. Available styles: {', '.join(_COMMENT_STYLES)}")
    style_params = _COMMENT_STYLES[style]
    edge = str(kw.get("decoration", style_params["decoration"])).rstrip()
    p: dict[str, Any] = {"newline": "\n", "beginning": "", "prefix": edge, "prefix_count": 1}
    p.update({"decoration": "", "postfix": edge, "postfix_count": 1, "end": ""})
    p.update(style_params)
    p.update(kw)
    nl, deco = p["newline"], p["decoration"]
    beginning = f"{p['beginning']}{nl}" if p["beginning"] else ""
    prefix = ""
    if p["prefix"]:
        prefix = (nl if p["prefix"] == nl else f"{p['prefix']}{nl}") * int(p["prefix_count"])
    body = deco + _text(text).replace(nl, nl + deco)
    body = body.replace(deco + nl, deco.rstrip() + nl)
    postfix = nl.join(["", *[p["postfix"]] * int(p["postfix_count"])])
    end = f"{nl}{p['end']}" if p["end"] else ""
    return beginning + prefix + body + postfix + end


# --------------------------------------------------------------------------------------------
# hashing


def get_hash(data: Any, hashtype: str = "sha1") -> str:
    import hashlib

    try:
        digest = hashlib.new(hashtype)
    except (ValueError, TypeError):
        known = ", ".join(sorted(hashlib.algorithms_guaranteed))
        raise _PluginError(f"hash: unsupported hash type {hashtype!r}; use one of: {known}") from None
    digest.update(_bytes(data))
    return digest.hexdigest()


def checksum(data: Any) -> str:
    return get_hash(data, "sha1")


def md5(data: Any) -> str:
    return get_hash(data, "md5")


def to_uuid(value: Any, namespace: Any = _UUID_NAMESPACE_ANSIBLE) -> str:
    import uuid

    try:
        space = namespace if isinstance(namespace, uuid.UUID) else uuid.UUID(_text(namespace))
    except ValueError as exc:
        raise _PluginError(f"Invalid value '{namespace}' for 'namespace': {exc}") from None
    return str(uuid.uuid5(space, _text(value)))


# --------------------------------------------------------------------------------------------
# regular expressions


def regex_replace(
    value: Any = "",
    pattern: Any = "",
    replacement: Any = "",
    ignorecase: bool = False,
    multiline: bool = False,
    count: int = 0,
    mandatory_count: int = 0,
) -> str:
    compiled = _compile(pattern, _re_flags(ignorecase, multiline), "regex_replace")
    try:
        output, subs = compiled.subn(_text(replacement), _text(value), count=count)
    except (re.error, IndexError) as exc:
        raise _PluginError(f"regex_replace: invalid replacement {replacement!r}: {exc}") from None
    if mandatory_count and mandatory_count != subs:
        raise _PluginError(
            f"'{pattern}' should match {mandatory_count} times, but matches {subs} times in '{value}'"
        )
    return output


def regex_findall(value: Any, regex: Any, multiline: bool = False, ignorecase: bool = False) -> list[Any]:
    return _compile(regex, _re_flags(ignorecase, multiline), "regex_findall").findall(_text(value))


_GROUP_NAME = re.compile(r"\\g<(\S+)>")
_GROUP_NUMBER = re.compile(r"\\(\d+)")


def _regex_group(arg: Any) -> str | int:
    text = _text(arg)
    named = _GROUP_NAME.match(text)
    if named:
        return named.group(1)
    numbered = _GROUP_NUMBER.match(text)
    if numbered:
        return int(numbered.group(1))
    raise _PluginError(f"regex_search: Unknown argument {text!r}; pass groups as '\\\\1' or '\\\\g<name>'")


def regex_search(
    value: Any, regex: Any, *args: Any, ignorecase: bool = False, multiline: bool = False
) -> Any:
    """The whole match, or the list of the groups named in `args`; None when nothing matches."""
    groups = [_regex_group(arg) for arg in args]
    match = _compile(regex, _re_flags(ignorecase, multiline), "regex_search").search(_text(value))
    if not match:
        return None
    if not groups:
        return match.group()
    try:
        return [match.group(g) for g in groups]
    except IndexError as exc:
        raise _PluginError(f"regex_search: {exc} in {regex!r}") from None


_POSIX_BASIC_SPECIAL = re.compile(r"([].[^$*\\])")
_POSIX_EXTENDED_SPECIAL = re.compile(r"([\^$.*+?\[\]|(){}\\])")


def regex_escape(value: Any, re_type: str = "python") -> str:
    text = _text(value)
    if re_type == "python":
        return re.escape(text)
    if re_type == "posix_basic":
        return _POSIX_BASIC_SPECIAL.sub(r"\\\1", text)
    if re_type == "posix_extended":
        return _POSIX_EXTENDED_SPECIAL.sub(r"\\\1", text)
    raise _PluginError(f"Invalid regex type ({re_type}); use python, posix_basic or posix_extended")


# --------------------------------------------------------------------------------------------
# data structures

_LIST_MERGE = ("replace", "keep", "append", "prepend", "append_rp", "prepend_rp")


def _merge_lists(low: list[Any], high: list[Any], list_merge: str) -> list[Any]:
    if list_merge == "replace":
        return high
    if list_merge == "keep":
        return low
    if list_merge == "append":
        return low + high
    if list_merge == "prepend":
        return high + low
    kept = [item for item in low if item not in high]
    return kept + high if list_merge == "append_rp" else high + kept


def _dump_for_error(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def merge_hash(low: Any, high: Any, recursive: bool = True, list_merge: str = "replace") -> dict[Any, Any]:
    """Ansible's merge_hash: a new dict of `high` merged into `low`, `high` winning."""
    if list_merge not in _LIST_MERGE:
        raise _PluginError(f"combine: 'list_merge' must be one of {', '.join(map(repr, _LIST_MERGE))}")
    if not (isinstance(low, Mapping) and isinstance(high, Mapping)):
        raise _PluginError(
            f"failed to combine variables, expected dicts but got a '{_type_name(low)}' and a "
            f"'{_type_name(high)}': \n{_dump_for_error(low)}\n{_dump_for_error(high)}"
        )
    result = dict(low)
    for key, high_value in high.items():
        low_value = result.get(key)
        if key not in result:
            result[key] = high_value
        elif isinstance(low_value, Mapping) and isinstance(high_value, Mapping):
            result[key] = (
                merge_hash(low_value, high_value, recursive, list_merge) if recursive else high_value
            )
        elif isinstance(low_value, list) and isinstance(high_value, list):
            result[key] = _merge_lists(low_value, high_value, list_merge)
        else:
            result[key] = high_value
    return result


def combine(*terms: Any, recursive: bool = False, list_merge: str = "replace", **kwargs: Any) -> Any:
    if kwargs:
        raise _PluginError("'recursive' and 'list_merge' are the only valid keyword arguments")
    dicts = flatten(terms, levels=1)
    if not dicts:
        return {}
    if len(dicts) == 1:
        return dicts[0]
    # Fold from the right as Ansible does: the last dict has the highest priority.
    result = dicts[-1]
    for item in reversed(dicts[:-1]):
        result = merge_hash(item, result, recursive, list_merge)
    return result


def dict2items(value: Any, key_name: str = "key", value_name: str = "value") -> list[dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise _PluginError(f"dict2items requires a dictionary, got {type(value)} instead.")
    return [{key_name: key, value_name: item} for key, item in value.items()]


def items2dict(value: Any, key_name: str = "key", value_name: str = "value") -> dict[Any, Any]:
    if not _is_sequence(value):
        raise _PluginError(f"items2dict requires a list, got {type(value)} instead.")
    try:
        return {item[key_name]: item[value_name] for item in value}
    except KeyError:
        raise _PluginError(
            f"items2dict requires each dictionary in the list to contain the keys '{key_name}' and "
            f"'{value_name}', got {value} instead."
        ) from None
    except TypeError:
        raise _PluginError(f"items2dict requires a list of dictionaries, got {value} instead.") from None


def flatten(value: Any, levels: int | None = None, skip_nulls: bool = True) -> list[Any]:
    result: list[Any] = []
    for element in value:
        if skip_nulls and element in (None, "None", "null"):
            continue
        if _is_sequence(element) and (levels is None or levels >= 1):
            deeper = None if levels is None else int(levels) - 1
            result.extend(flatten(element, levels=deeper, skip_nulls=skip_nulls))
        else:
            result.append(element)
    return result


@jinja2.pass_environment
def extract(environment: jinja2.Environment, item: Any, container: Any, morekeys: Any = None) -> Any:
    if morekeys is None:
        keys = [item]
    elif isinstance(morekeys, list):
        keys = [item, *morekeys]
    else:
        keys = [item, morekeys]
    value = container
    for key in keys:
        value = environment.getitem(value, key)
    return value


def _subelement_values(element: Any, path: list[Any], skip_missing: bool) -> list[Any]:
    values = element
    for key in path:
        try:
            values = values[key]
        except KeyError:
            if skip_missing:
                return []
            raise _PluginError(f"could not find {key!r} key in iterated item {values!r}") from None
        except TypeError:
            raise _PluginError(f"the key {key!r} should point to a dictionary, got {values!r}") from None
    if not isinstance(values, list):
        raise _PluginError(f"the key {path[-1]!r} should point to a list, got {values!r}")
    return values


def subelements(value: Any, subelement: Any, skip_missing: bool = False) -> list[tuple[Any, Any]]:
    if isinstance(value, Mapping):
        elements = list(value.values())
    elif isinstance(value, list):
        elements = value
    else:
        raise _PluginError("subelements: obj must be a list of dicts or a nested dict")
    if isinstance(subelement, list):
        path = subelement
    elif isinstance(subelement, str):
        path = subelement.split(".")
    else:
        raise _PluginError(f"subelements must be a list or a string, got {type(subelement)}")
    return [(e, v) for e in elements for v in _subelement_values(e, path, skip_missing)]


# --------------------------------------------------------------------------------------------
# set theory and math


def _unique_slow(value: Iterable[Any]) -> list[Any]:
    result: list[Any] = []
    for item in value:
        if item not in result:
            result.append(item)
    return result


@jinja2.pass_environment
def unique(
    environment: jinja2.Environment, value: Any, case_sensitive: bool | None = None, attribute: Any = None
) -> list[Any]:
    """Jinja's unique (ignores case unless case_sensitive=True); Ansible's fallback for unhashable items."""
    try:
        return list(do_unique(environment, value, case_sensitive=bool(case_sensitive), attribute=attribute))
    except TypeError:
        if case_sensitive is False or attribute:
            raise _PluginError(
                "unique: case_sensitive=False and attribute= need hashable items; these items are not"
            ) from None
        return _unique_slow(value)


def _unique_cs(value: Iterable[Any]) -> list[Any]:
    value = list(value)
    try:
        seen: set[Any] = set()
        result = []
        for item in value:
            if item not in seen:
                seen.add(item)
                result.append(item)
        return result
    except TypeError:
        return _unique_slow(value)


def union(a: Any, b: Any) -> list[Any]:
    return _unique_cs([*a, *b])


def intersect(a: Any, b: Any) -> list[Any]:
    b = list(b)
    return _unique_cs(x for x in a if x in b)


def difference(a: Any, b: Any) -> list[Any]:
    b = list(b)
    return _unique_cs(x for x in a if x not in b)


def symmetric_difference(a: Any, b: Any) -> list[Any]:
    common = intersect(a, b)
    return [x for x in union(a, b) if x not in common]


def _number_error(name: str, exc: Exception) -> _PluginError:
    return _PluginError(f"{name}() can only be used on numbers: {exc}")


def logarithm(x: Any, base: Any = math.e) -> float:
    try:
        return math.log10(x) if base == 10 else math.log(x, base)
    except (TypeError, ValueError) as exc:
        raise _number_error("log", exc) from None


def power(x: Any, y: Any) -> float:
    try:
        return math.pow(x, y)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _number_error("pow", exc) from None


def inversepower(x: Any, base: Any = 2) -> float:
    try:
        return math.sqrt(x) if base == 2 else math.pow(x, 1.0 / float(base))
    except (TypeError, ValueError) as exc:
        raise _number_error("root", exc) from None


def _listed(func: Callable[..., Iterable[Any]]) -> Callable[..., list[Any]]:
    def listed(*args: Any, **kwargs: Any) -> list[Any]:
        try:
            return list(func(*args, **kwargs))
        except TypeError as exc:
            raise _PluginError(f"{func.__name__}: {exc}") from None

    listed.__name__ = func.__name__
    return listed


# --------------------------------------------------------------------------------------------
# tests: task results


def _result(result: Any, test: str) -> Mapping[str, Any]:
    if not isinstance(result, Mapping):
        raise _PluginError(f"The '{test}' test expects a dictionary")
    return result


def failed(result: Any) -> bool:
    return bool(_result(result, "failed").get("failed", False))


def success(result: Any) -> bool:
    return not failed(result)


def unreachable(result: Any) -> bool:
    return bool(_result(result, "unreachable").get("unreachable", False))


def reachable(result: Any) -> bool:
    return not unreachable(result)


def changed(result: Any) -> bool:
    result = _result(result, "changed")
    if "changed" in result:
        return bool(result["changed"])
    items = result.get("results")
    if isinstance(items, list):
        return any(isinstance(item, Mapping) and item.get("changed", False) for item in items)
    return False


def skipped(result: Any) -> bool:
    return bool(_result(result, "skipped").get("skipped", False))


# --------------------------------------------------------------------------------------------
# tests: regex, sets, truthiness, files


def regex(
    value: Any = "",
    pattern: Any = "",
    ignorecase: bool = False,
    multiline: bool = False,
    match_type: str = "search",
) -> bool:
    if match_type not in ("search", "match", "fullmatch"):
        raise _PluginError(f"regex: match_type must be 'search', 'match' or 'fullmatch', not {match_type!r}")
    compiled = _compile(pattern, _re_flags(ignorecase, multiline), match_type)
    return bool(getattr(compiled, match_type)(_text(value)))


def match(value: Any, pattern: Any = "", ignorecase: bool = False, multiline: bool = False) -> bool:
    return regex(value, pattern, ignorecase, multiline, "match")


def search(value: Any, pattern: Any = "", ignorecase: bool = False, multiline: bool = False) -> bool:
    return regex(value, pattern, ignorecase, multiline, "search")


def issubset(a: Any, b: Any) -> bool:
    try:
        return set(a) <= set(b)
    except TypeError:
        b = list(b)
        return all(x in b for x in a)


def issuperset(a: Any, b: Any) -> bool:
    return issubset(b, a)


def contains(seq: Any, value: Any) -> bool:
    return value in seq


def isnan(value: Any) -> bool:
    try:
        return math.isnan(value)
    except TypeError:
        return False


_BOOLEANS_TRUE = frozenset({"y", "yes", "on", "1", "true", "t", "1.0"})
_BOOLEANS_FALSE = frozenset({"n", "no", "off", "0", "false", "f", "0.0"})


def truthy(value: Any, convert_bool: bool = False) -> bool:
    """Python truthiness; with convert_bool=True, boolean-like strings (yes/no/on/off/...) first."""
    if convert_bool and isinstance(value, (str, bytes)):
        normalized = _text(value).lower().strip()
        if normalized in _BOOLEANS_TRUE:
            return True
        if normalized in _BOOLEANS_FALSE:
            return False
    return bool(value)


def falsy(value: Any, convert_bool: bool = False) -> bool:
    return not truthy(value, convert_bool=convert_bool)


def _path_test(func: Callable[..., bool]) -> Callable[..., bool]:
    def path_test(*paths: Any) -> bool:
        expanded = [os.path.expanduser(os.path.expandvars(_text(p))) for p in paths]
        try:
            return func(*expanded)
        except OSError as exc:
            raise _PluginError(f"{func.__name__}: {exc}") from None

    path_test.__name__ = func.__name__
    return path_test


# --------------------------------------------------------------------------------------------
# tests: version comparison

_VERSION_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "=": operator.eq, "eq": operator.eq,
    "<": operator.lt, "lt": operator.lt,
    "<=": operator.le, "le": operator.le,
    ">": operator.gt, "gt": operator.gt,
    ">=": operator.ge, "ge": operator.ge,
    "!=": operator.ne, "<>": operator.ne, "ne": operator.ne,
}  # fmt: skip

_LOOSE_PART = re.compile(r"\d+|[A-Za-z]+")
_STRICT_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:([ab])(\d+))?$", re.ASCII)
_SEMVER_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][a-zA-Z0-9-]*)"
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-({_SEMVER_IDENT}(?:\.{_SEMVER_IDENT})*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$",
    re.ASCII,
)


def _loose_key(text: str) -> list[tuple[int, int, str]]:
    """Numbers compare numerically, words as text, a word before a number; punctuation separates."""
    return [(1, int(p), "") if p.isdigit() else (0, 0, p) for p in _LOOSE_PART.findall(text)]


def _strict_key(text: str) -> tuple[Any, ...]:
    found = _STRICT_VERSION.match(text)
    if not found:
        raise ValueError(f"invalid version number '{text}'")
    major, minor, patch, tag, number = found.groups()
    prerelease = (0, tag, int(number)) if tag else (1, "", 0)
    return (int(major), int(minor), int(patch or 0), prerelease)


def _semver_key(text: str) -> tuple[Any, ...]:
    found = _SEMVER.match(text)
    if not found:
        raise ValueError(f"invalid semantic version '{text}'")
    major, minor, patch, prerelease = found.groups()
    if prerelease is None:
        pre_key: tuple[Any, ...] = (1, ())
    else:
        pre_key = (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in prerelease.split(".")))
    return (int(major), int(minor), int(patch), pre_key)


_VERSION_TYPES: dict[str, Callable[[str], Any]] = {
    "loose": _loose_key,
    "strict": _strict_key,
    "semver": _semver_key,
    "semantic": _semver_key,
}


def version_compare(
    value: Any, version: Any, operator: str = "eq", strict: Any = None, version_type: str | None = None
) -> bool:
    """Ansible's `version` test; loose comparison unless strict=True or version_type is given."""
    if strict is not None and version_type is not None:
        raise _PluginError("Cannot specify both 'strict' and 'version_type'")
    if not value:
        raise _PluginError("Input version value cannot be empty")
    if not version:
        raise _PluginError("Version parameter to compare against cannot be empty")
    kind = "strict" if strict else (version_type or "loose")
    if kind not in _VERSION_TYPES:
        raise _PluginError(
            f"Invalid version type ({kind}). Must be one of {', '.join(map(repr, _VERSION_TYPES))}"
        )
    if operator not in _VERSION_OPS:
        raise _PluginError(
            f"Invalid operator type ({operator}). Must be one of {', '.join(map(repr, _VERSION_OPS))}"
        )
    key = _VERSION_TYPES[kind]
    try:
        return _VERSION_OPS[operator](key(_text(value)), key(_text(version)))
    except ValueError as exc:
        raise _PluginError(f"Version comparison failed: {exc}") from None


# --------------------------------------------------------------------------------------------
# lookups


def _search_paths(context: Context, subdir: str, term: Any) -> list[str]:
    path = os.path.expanduser(_text(term))
    if os.path.isabs(path):
        return [path]
    base = _text(context.get("playbook_dir") or os.getcwd())
    return [os.path.join(base, subdir, path), os.path.join(base, path)]


def _find_file(context: Context, subdir: str, term: Any, who: str) -> str:
    candidates = _search_paths(context, subdir, term)
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise _PluginError(f"{who}: could not locate file in lookup: {term} (looked for {', '.join(candidates)})")


def _read_text(path: str, who: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise _PluginError(f"{who}: cannot read {path}: {exc.strerror}") from None


def _lookup_env(context: Context, terms: list[Any], default: Any = "") -> list[Any]:
    values = []
    for term in terms:
        name = _text(term).split()[0]
        value = os.environ.get(name, default)
        if isinstance(value, jinja2.Undefined):
            raise jinja2.UndefinedError(f'The "env" lookup, found an undefined variable: {name}')
        values.append(value)
    return values


def _lookup_file(context: Context, terms: list[Any], rstrip: bool = True, lstrip: bool = False) -> list[str]:
    contents = []
    for term in terms:
        text = _read_text(_find_file(context, "files", term, "lookup('file')"), "lookup('file')")
        text = text.rstrip() if rstrip else text
        contents.append(text.lstrip() if lstrip else text)
    return contents


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


def _render_file(context: Context, path: str, extra_vars: Mapping[str, Any], syntax: dict[str, Any]) -> str:
    """Render a controller template with the calling template's variables (lazily) and `extra_vars`."""
    environment = context.environment.overlay(**syntax) if syntax else context.environment
    source = _read_text(path, "lookup('template')")
    try:
        template = environment.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise _PluginError(f"lookup('template'): {path}:{exc.lineno}: {exc.message}") from None
    scope = ChainMap(dict(extra_vars), context.vars, context.parent)
    new_context = template.new_context(cast("dict[str, Any]", scope), shared=True)
    rendered = str(environment.concat(template.root_render_func(new_context)))
    missing = _trailing_newlines(source) - _trailing_newlines(rendered)
    return rendered + "\n" * max(missing, 0)


def _lookup_template(
    context: Context, terms: list[Any], template_vars: Any = None, **syntax: Any
) -> list[str]:
    if template_vars is not None and not isinstance(template_vars, Mapping):
        raise _PluginError(
            f"lookup('template'): template_vars must be a dictionary, got {_type_name(template_vars)}"
        )
    paths = [_find_file(context, "templates", term, "lookup('template')") for term in terms]
    return [_render_file(context, path, template_vars or {}, syntax) for path in paths]


def _lookup_fileglob(context: Context, terms: list[Any]) -> list[str]:
    found: list[str] = []
    for term in terms:
        directory, pattern = os.path.split(_text(term))
        for base in _search_paths(context, "files", directory):
            if os.path.isdir(base):
                found.extend(fileglob(os.path.join(base, pattern)))
                break
    return found


def _lookup_items(context: Context, terms: list[Any]) -> list[Any]:
    result: list[Any] = []
    for term in terms:
        if isinstance(term, (list, tuple)):
            result.extend(term)
        else:
            result.append(term)
    return result


def _lookup_list(context: Context, terms: list[Any]) -> list[Any]:
    return list(terms)


def _host_var(context: Context, name: str) -> Any:
    hostvars = context.get("hostvars")
    host = hostvars.get(context.get("inventory_hostname")) if isinstance(hostvars, Mapping) else None
    return host.get(name, jinja2.utils.missing) if isinstance(host, Mapping) else jinja2.utils.missing


def _lookup_vars(context: Context, terms: list[Any], default: Any = None) -> list[Any]:
    values = []
    for term in terms:
        if not isinstance(term, str):
            raise _PluginError(f'Invalid setting identifier, "{term}" is not a string, its a {type(term)}')
        value = context.resolve_or_missing(term)
        if value is jinja2.utils.missing:
            value = _host_var(context, term)
        if value is jinja2.utils.missing:
            if default is None:
                raise jinja2.UndefinedError(f"No variable found with this name: {term}")
            value = default
        values.append(value)
    return values


def _split_on(values: Any, separators: str) -> list[str]:
    items = [values] if isinstance(values, str) else list(values or [])
    pattern = "[" + re.escape(separators) + "]"
    return [part.strip() for item in items for part in re.split(pattern, _text(item)) if part.strip()]


def _combine_paths(files: Any, paths: Any) -> list[str]:
    filelist, pathlist = _split_on(files, ",;"), _split_on(paths, ",:;")
    if pathlist:
        return [os.path.join(path, name) for path in pathlist for name in filelist]
    return filelist


def _first_found_candidates(terms: list[Any], paths: Any) -> list[str]:
    candidates: list[str] = []
    for term in terms:
        if isinstance(term, Mapping):
            candidates.extend(_combine_paths(term.get("files", []), term.get("paths", [])))
        elif isinstance(term, str):
            candidates.extend(_combine_paths(term, paths))
        elif isinstance(term, (list, tuple)):
            candidates.extend(_first_found_candidates(list(term), paths))
        else:
            raise _PluginError(
                "first_found: Invalid term supplied, can handle string, mapping or list of strings but got: "
                f"{type(term)} for {term}"
            )
    return candidates


def _lookup_first_found(
    context: Context, terms: list[Any], files: Any = None, paths: Any = None, skip: bool = False
) -> list[str]:
    """The first file found, searched in order; terms are names, lists of names or {files, paths, skip}."""
    candidates = _first_found_candidates(terms or [{"files": files or [], "paths": paths or []}], paths)
    searched: list[str] = []
    for candidate in candidates:
        for path in _search_paths(context, "files", candidate):
            searched.append(path)
            if os.path.isfile(path):
                return [path]
    if skip or any(isinstance(term, Mapping) and term.get("skip") for term in terms):
        return []
    looked_for = ", ".join(searched) or "no file names given"
    raise _PluginError(f"No file was found when using first_found. Looked for: {looked_for}")


_TEMPLATE_SYNTAX = (
    "variable_start_string",
    "variable_end_string",
    "comment_start_string",
    "comment_end_string",
)

# name -> (plugin, the keyword options it takes)
_LOOKUPS: dict[str, tuple[Callable[..., list[Any]], tuple[str, ...]]] = {
    "env": (_lookup_env, ("default",)),
    "file": (_lookup_file, ("rstrip", "lstrip")),
    "fileglob": (_lookup_fileglob, ()),
    "first_found": (_lookup_first_found, ("files", "paths", "skip")),
    "items": (_lookup_items, ()),
    "list": (_lookup_list, ()),
    "template": (_lookup_template, ("template_vars", *_TEMPLATE_SYNTAX)),
    "vars": (_lookup_vars, ("default",)),
}


def _lookup_plugin(name: Any, options: Iterable[str]) -> Callable[..., list[Any]]:
    key = _text(name)
    key = key[len(_BUILTIN_PREFIX) :] if key.startswith(_BUILTIN_PREFIX) else key
    if key not in _LOOKUPS:
        raise _PluginError(
            f"lookup plugin ({name}) not found; sparkprov supports: {', '.join(sorted(_LOOKUPS))}"
        )
    plugin, known = _LOOKUPS[key]
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = ", ".join(known) if known else "no options"
        raise _PluginError(f"lookup('{key}') does not take option(s) {', '.join(unknown)}; it takes: {takes}")
    return plugin


def _run_lookup(context: Context, name: Any, terms: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    wantlist = bool(kwargs.pop("wantlist", False))
    errors = kwargs.pop("errors", "strict")
    if errors not in ("strict", "warn", "ignore"):
        raise _PluginError(f"lookup: errors must be 'strict', 'warn' or 'ignore', not {errors!r}")
    plugin = _lookup_plugin(name, kwargs)
    _fail_if_undefined(*terms)
    try:
        ran = plugin(context, list(terms), **kwargs)
    except _PluginError as exc:
        if errors == "strict":
            raise
        if errors == "warn":
            import logging

            logging.getLogger(__name__).warning("lookup('%s') failed, ignored: %s", name, exc)
        return [] if wantlist else None
    return ran if wantlist else _join_lookup_result(ran)


def _join_lookup_result(ran: list[Any]) -> Any:
    """Ansible's lookup() result: strings joined with commas; one non-string item alone; else the list."""
    if not ran:
        return ran
    try:
        return ",".join(ran)
    except TypeError:
        return ran[0] if len(ran) == 1 else ran


@jinja2.pass_context
def lookup(context: Context, name: Any, *terms: Any, **kwargs: Any) -> Any:
    return _run_lookup(context, name, terms, kwargs)


@jinja2.pass_context
def query(context: Context, name: Any, *terms: Any, **kwargs: Any) -> Any:
    kwargs["wantlist"] = True
    return _run_lookup(context, name, terms, kwargs)


def now(utc: bool = False, fmt: str | None = None) -> Any:
    moment = datetime.datetime.now(datetime.timezone.utc) if utc else datetime.datetime.now()
    return moment.strftime(fmt) if fmt else moment


# --------------------------------------------------------------------------------------------
# registration

_FILTERS: dict[str, Callable[..., Any]] = {
    # serialisation
    "to_json": to_json,
    "to_nice_json": to_nice_json,
    "from_json": from_json,
    "to_yaml": to_yaml,
    "to_nice_yaml": to_nice_yaml,
    "from_yaml": from_yaml,
    "from_yaml_all": from_yaml_all,
    "b64encode": b64encode,
    "b64decode": b64decode,
    # types, dates, strings
    "bool": to_bool,
    "to_datetime": to_datetime,
    "strftime": strftime,
    "quote": quote,
    "split": split,
    "comment": comment,
    "type_debug": type_debug,
    "mandatory": mandatory,
    "ternary": ternary,
    # paths
    "basename": _path_filter("basename", os.path.basename),
    "dirname": _path_filter("dirname", os.path.dirname),
    "expanduser": _path_filter("expanduser", os.path.expanduser),
    "expandvars": _path_filter("expandvars", os.path.expandvars),
    "realpath": _path_filter("realpath", os.path.realpath),
    "relpath": _path_filter("relpath", os.path.relpath),
    "normpath": _path_filter("normpath", os.path.normpath),
    "splitext": _path_filter("splitext", os.path.splitext),
    "path_join": path_join,
    "commonpath": commonpath,
    "fileglob": fileglob,
    # hashing
    "hash": get_hash,
    "checksum": checksum,
    "sha1": checksum,
    "md5": md5,
    "to_uuid": to_uuid,
    # regular expressions
    "regex_replace": regex_replace,
    "regex_search": regex_search,
    "regex_findall": regex_findall,
    "regex_escape": regex_escape,
    # data structures
    "combine": combine,
    "dict2items": dict2items,
    "items2dict": items2dict,
    "flatten": flatten,
    "extract": extract,
    "subelements": subelements,
    # set theory, combinatorics, math
    "unique": unique,
    "union": union,
    "intersect": intersect,
    "difference": difference,
    "symmetric_difference": symmetric_difference,
    "zip": _listed(zip),
    "zip_longest": _listed(itertools.zip_longest),
    "product": _listed(itertools.product),
    "permutations": _listed(itertools.permutations),
    "combinations": _listed(itertools.combinations),
    "log": logarithm,
    "pow": power,
    "root": inversepower,
}

# These look at undefined values themselves instead of failing on them.
_UNDEFINED_AWARE = frozenset({"mandatory", "ternary", "type_debug"})

_TESTS: dict[str, Callable[..., Any]] = {
    # task results
    "failed": failed,
    "failure": failed,
    "succeeded": success,
    "success": success,
    "successful": success,
    "changed": changed,
    "change": changed,
    "skipped": skipped,
    "skip": skipped,
    "reachable": reachable,
    "unreachable": unreachable,
    # regular expressions
    "match": match,
    "search": search,
    "regex": regex,
    # versions
    "version": version_compare,
    "version_compare": version_compare,
    # sets and truthiness
    "subset": issubset,
    "issubset": issubset,
    "superset": issuperset,
    "issuperset": issuperset,
    "contains": contains,
    "any": any,
    "all": all,
    "truthy": truthy,
    "falsy": falsy,
    "nan": isnan,
    # controller filesystem
    "abs": _path_test(os.path.isabs),
    "is_abs": _path_test(os.path.isabs),
    "exists": _path_test(os.path.exists),
    "file": _path_test(os.path.isfile),
    "is_file": _path_test(os.path.isfile),
    "directory": _path_test(os.path.isdir),
    "is_dir": _path_test(os.path.isdir),
    "link": _path_test(os.path.islink),
    "is_link": _path_test(os.path.islink),
    "link_exists": _path_test(os.path.lexists),
    "mount": _path_test(os.path.ismount),
    "is_mount": _path_test(os.path.ismount),
    "same_file": _path_test(os.path.samefile),
    "is_same_file": _path_test(os.path.samefile),
}


def _registered(table: dict[str, Callable[..., Any]], aware: frozenset[str]) -> dict[str, Callable[..., Any]]:
    result: dict[str, Callable[..., Any]] = {}
    for name, func in table.items():
        wrapped = func if name in aware else _strict(func)
        result[name] = result[_BUILTIN_PREFIX + name] = wrapped
    return result


_REGISTERED_FILTERS = _registered(_FILTERS, _UNDEFINED_AWARE)
_REGISTERED_TESTS = _registered(_TESTS, frozenset())


def install(env: jinja2.Environment) -> None:
    """Register Ansible's filters, tests and the lookup()/query()/q() globals on env."""
    env.filters.update(_REGISTERED_FILTERS)
    env.tests.update(_REGISTERED_TESTS)
    env.globals.update(lookup=lookup, query=query, q=query, now=now)
