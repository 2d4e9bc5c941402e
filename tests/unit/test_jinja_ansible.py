"""Ansible's filters, tests and lookups (sparkprov/playbook/jinja_ansible.py).

Expected values are those of ansible-core (most are the examples of Ansible's own documentation).
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import jinja2
import pytest

from sparkprov.playbook.jinja_ansible import install


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True
    )
    install(environment)
    return environment


@pytest.fixture
def ev(env: jinja2.Environment) -> Any:
    """Evaluate one expression to its native value."""

    def evaluate(expression: str, **variables: Any) -> Any:
        return env.compile_expression(expression, undefined_to_none=False)(**variables)

    return evaluate


@pytest.fixture
def render(env: jinja2.Environment) -> Any:
    def render_(source: str, **variables: Any) -> str:
        return env.from_string(source).render(**variables)

    return render_


def raises(match: str, exc: type[Exception] = jinja2.TemplateRuntimeError) -> Any:
    return pytest.raises(exc, match=match)


# --------------------------------------------------------------------------------------------
# install


def test_install_registers_short_and_fqcn_names(env: jinja2.Environment) -> None:
    for name in ("to_json", "combine", "regex_replace", "bool", "ternary", "mandatory"):
        assert name in env.filters
        assert f"ansible.builtin.{name}" in env.filters
    for name in ("succeeded", "version", "subset", "file", "truthy"):
        assert name in env.tests
        assert f"ansible.builtin.{name}" in env.tests
    assert {"lookup", "query", "q"} <= set(env.globals)


def test_install_keeps_jinja_builtins(ev: Any) -> None:
    assert ev("x | default(3)") == 3
    assert ev("x is defined") is False
    assert ev("[3, 1, 2] | max") == 3


def test_fqcn_names_work_in_templates(render: Any) -> None:
    assert render("{{ {'a': 1} | ansible.builtin.to_json }}") == '{"a": 1}'
    assert render("{{ 'abc' is ansible.builtin.match('a') }}") == "True"


# --------------------------------------------------------------------------------------------
# undefined values


def test_filters_fail_on_undefined_input_naming_the_variable(ev: Any) -> None:
    with raises("'nope' is undefined", jinja2.UndefinedError):
        ev("nope | to_json")
    with raises("'nope' is undefined", jinja2.UndefinedError):
        ev("{'a': 1} | combine(nope)")
    with raises("'nope' is undefined", jinja2.UndefinedError):
        ev("nope is succeeded")


def test_undefined_inside_a_structure_fails_serialisation(ev: Any) -> None:
    with raises("'nope' is undefined", jinja2.UndefinedError):
        ev("[1, nope] | to_json")
    with raises("'nope' is undefined", jinja2.UndefinedError):
        ev("{'a': nope} | to_yaml")


def test_mandatory(ev: Any) -> None:
    assert ev("x | mandatory", x=0) == 0
    with raises(r"^Mandatory variable 'nope' not defined\.$", jinja2.UndefinedError):
        ev("nope | mandatory")
    with raises(r"^set nope in vars\.yml$", jinja2.UndefinedError):
        ev("nope | mandatory('set nope in vars.yml')")


# --------------------------------------------------------------------------------------------
# serialisation


def test_to_json_and_to_nice_json(ev: Any) -> None:
    data = {"b": 1, "a": [1, "é"]}
    assert ev("d | to_json", d=data) == '{"b": 1, "a": [1, "\\u00e9"]}'
    assert ev("d | to_json(ensure_ascii=False)", d=data) == '{"b": 1, "a": [1, "é"]}'
    assert (
        ev("d | to_nice_json", d=data)
        == '{\n    "a": [\n        1,\n        "\\u00e9"\n    ],\n    "b": 1\n}'
    )
    assert ev("d | to_nice_json(indent=2)", d={"a": 1}) == '{\n  "a": 1\n}'
    assert ev("(1, 2) | to_json") == "[1, 2]"


def test_to_json_unserialisable(ev: Any) -> None:
    with raises("to_json: Object of type object is not JSON serializable"):
        ev("o | to_json", o=object())


def test_from_json(ev: Any) -> None:
    assert ev("'{\"a\": [1, true, null]}' | from_json") == {"a": [1, True, None]}
    with raises("from_json: the input is not valid JSON"):
        ev("'{a' | from_json")


def test_to_yaml_and_to_nice_yaml(ev: Any) -> None:
    assert ev("{'b': 1, 'a': [1, 2]} | to_yaml") == "a: [1, 2]\nb: 1\n"
    assert ev("{'a': 1} | to_yaml") == "{a: 1}\n"
    assert ev("{'b': 1, 'a': {'x': [1, 2]}} | to_nice_yaml") == "a:\n    x:\n    - 1\n    - 2\nb: 1\n"
    assert ev("{'a': {'x': 1}} | to_nice_yaml(indent=2)") == "a:\n  x: 1\n"
    assert ev("['é'] | to_nice_yaml") == "- é\n"
    assert ev("(1, 2) | to_nice_yaml") == "- 1\n- 2\n"


def test_to_yaml_unrepresentable(ev: Any) -> None:
    with raises("to_yaml: cannot represent a value of type object"):
        ev("o | to_yaml", o=object())


def test_from_yaml(ev: Any) -> None:
    assert ev("'a: [1, yes]\nb: ~' | from_yaml") == {"a": [1, True], "b": None}
    assert ev("d | from_yaml", d={"a": 1}) == {"a": 1}
    assert ev("'---\na: 1\n---\nb: 2\n' | from_yaml_all") == [{"a": 1}, {"b": 2}]
    with raises("from_yaml: the input is not valid YAML"):
        ev("'a: [1' | from_yaml")


def test_base64(ev: Any) -> None:
    assert ev("'hello' | b64encode") == "aGVsbG8="
    assert ev("'aGVsbG8=' | b64decode") == "hello"
    assert ev("'é' | b64encode(encoding='utf-16-le')") == "6QA="
    assert ev("'6QA=' | b64decode(encoding='utf-16-le')") == "é"
    assert ev("'\xff\xfe' | b64encode(urlsafe=True)") == "w7_Dvg=="
    with raises("b64decode: the input is not valid base64"):
        ev("'a' | b64decode")


# --------------------------------------------------------------------------------------------
# types, strings, paths


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("yes", True), ("Yes", True), ("on", True), ("ON", True), ("true", True), ("True", True), ("1", True),
        (1, True), (True, True), (1.0, True),
        ("no", False), ("off", False), ("false", False), ("0", False), (0, False), (False, False),
        ("y", False), ("t", False), (" yes", False), (2, False), (None, False), ({}, False), ("", False),
    ],
)  # fmt: skip
def test_bool(ev: Any, value: Any, expected: bool) -> None:
    assert ev("v | bool", v=value) is expected


def test_ternary(ev: Any) -> None:
    assert (
        ev("(status == 'needs_restart') | ternary('restart', 'continue')", status="needs_restart")
        == "restart"
    )
    assert ev("false | ternary('a', 'b')") == "b"
    assert ev("none | ternary('a', 'b', 'n')") == "n"
    assert ev("none | ternary('a', 'b')") == "b"
    assert ev("true | ternary('a', nope)") == "a"  # the unused branch may be undefined


def test_quote(ev: Any) -> None:
    assert ev("'a b' | quote") == "'a b'"
    assert ev('"it\'s" | quote') == "'it'\"'\"'s'"
    assert ev("'plain' | quote") == "plain"
    assert ev("none | quote") == "''"


def test_split(ev: Any) -> None:
    assert ev("'jane bob  sam' | split") == ["jane", "bob", "sam"]
    assert ev("'jane,bob' | split(',')") == ["jane", "bob"]
    with raises("split expects a string, got int"):
        ev("3 | split")


def test_type_debug(ev: Any) -> None:
    assert ev("'a' | type_debug") == "str"
    assert ev("{} | type_debug") == "dict"
    assert ev("[] | type_debug") == "list"
    assert ev("none | type_debug") == "NoneType"
    assert ev("1.5 | type_debug") == "float"


def test_comment_styles(ev: Any) -> None:
    assert ev("'Plain style (default)' | comment") == "#\n# Plain style (default)\n#"
    assert ev("'C style' | comment('c')") == "//\n// C style\n//"
    assert ev("'C block style' | comment('cblock')") == "/*\n *\n * C block style\n *\n */"
    assert ev("'Erlang style' | comment('erlang')") == "%\n% Erlang style\n%"
    assert ev("'XML style' | comment('xml')") == "<!--\n -\n - XML style\n -\n-->"
    assert ev("'a\nb' | comment") == "#\n# a\n# b\n#"
    assert ev("'a\n\nb' | comment") == "#\n# a\n#\n# b\n#"


def test_comment_custom_parameters(ev: Any) -> None:
    expr = "'Custom style' | comment('plain', prefix='#######\n#', postfix='#\n#######\n   #\n#')"
    assert ev(expr) == "#######\n#\n# Custom style\n#\n#######\n   #\n#"
    assert ev("'x' | comment(decoration='; ')") == ";\n; x\n;"
    with raises(r"Invalid style 'bash'\. Available styles: plain, erlang, c, cblock, xml"):
        ev("'x' | comment('bash')")


def test_strftime(ev: Any) -> None:
    assert ev("'%Y-%m-%d %H:%M:%S' | strftime(1441357287, utc=True)") == "2015-09-04 09:01:27"
    assert ev("'%Y-%m-%d' | strftime('0', utc=true)") == "1970-01-01"
    assert len(ev("'%Y' | strftime")) == 4
    with raises(r"Invalid value for epoch value \(soon\)"):
        ev("'%Y' | strftime('soon')")


def test_to_datetime(ev: Any) -> None:
    assert (
        ev("(('2016-08-14 20:00:12' | to_datetime) - ('2016-08-14 18:00:00' | to_datetime)).seconds") == 7212
    )
    assert ev("('20160814' | to_datetime('%Y%m%d')).year") == 2016
    with raises("to_datetime: time data"):
        ev("'tomorrow' | to_datetime")


def test_path_filters(ev: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ann")
    assert ev("'/etc/asdf/foo.txt' | basename") == "foo.txt"
    assert ev("'/etc/asdf/foo.txt' | dirname") == "/etc/asdf"
    assert ev("'~/www' | expanduser") == "/home/ann/www"
    assert ev("'$HOME/x' | expandvars") == "/home/ann/x"
    assert ev("'/etc/../etc/./hosts' | realpath") == os.path.realpath("/etc/hosts")
    assert ev("'/etc//a/../b' | normpath") == "/etc/b"
    assert ev("'/etc/a/b' | relpath('/etc')") == "a/b"
    assert ev("'nginx.conf' | splitext") == ("nginx", ".conf")
    assert ev("'/etc/rc.d/S01.sh' | splitext | last") == ".sh"
    assert ev("['/etc', 'apt', 'sources.list'] | path_join") == "/etc/apt/sources.list"
    assert ev("['/a/b/c', '/a/b/d'] | commonpath") == "/a/b"
    with raises("basename expects a path string, got int"):
        ev("3 | basename")


def test_fileglob_filter(ev: Any, tmp_path: Path) -> None:
    for name in ("b.conf", "a.conf", "c.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "d.conf").mkdir()
    assert ev("p | fileglob", p=f"{tmp_path}/*.conf") == [f"{tmp_path}/a.conf", f"{tmp_path}/b.conf"]


# --------------------------------------------------------------------------------------------
# hashing


def test_hash_filters(ev: Any) -> None:
    assert ev("'test1' | hash('sha1')") == "b444ac06613fc8d63795be9ad0beaf55011936ac"
    assert ev("'test1' | hash") == "b444ac06613fc8d63795be9ad0beaf55011936ac"
    assert ev("'test1' | hash('md5')") == "5a105e8b9d40e1329780d62ea2265d8a"
    assert ev("'test1' | md5") == "5a105e8b9d40e1329780d62ea2265d8a"
    assert ev("'test2' | checksum") == "109f4b3c50d7b0df729d299bc6f8e9ef9066971f"
    assert ev("'test2' | sha1") == "109f4b3c50d7b0df729d299bc6f8e9ef9066971f"
    assert ev("'' | hash('sha256')") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    with raises("hash: unsupported hash type 'blowfish'; use one of: .*sha256"):
        ev("'x' | hash('blowfish')")


def test_to_uuid(ev: Any) -> None:
    ansible_namespace = uuid.UUID("361E6D51-FAEC-444A-9079-341386DA8E2E")
    assert ev("'www.example.com' | to_uuid") == str(uuid.uuid5(ansible_namespace, "www.example.com"))
    assert ev("'x' | to_uuid(namespace='6ba7b810-9dad-11d1-80b4-00c04fd430c8')") == str(
        uuid.uuid5(uuid.NAMESPACE_DNS, "x")
    )
    with raises("Invalid value 'nope' for 'namespace'"):
        ev("'x' | to_uuid(namespace='nope')")


# --------------------------------------------------------------------------------------------
# regular expressions


def test_regex_replace(ev: Any) -> None:
    assert ev("'ansible' | regex_replace('^a.*i(.*)$', 'a\\\\1')") == "able"
    assert ev("'foobar' | regex_replace('^f.*o(.*)$', '\\\\1')") == "bar"
    expr = "'localhost:80' | regex_replace('^(?P<host>.+):(?P<port>\\\\d+)$', '\\\\g<host>, \\\\g<port>')"
    assert ev(expr) == "localhost, 80"
    assert ev("'localhost:80' | regex_replace(':80')") == "localhost"
    assert ev("'AaA' | regex_replace('a', 'x', ignorecase=true)") == "xxx"
    assert ev("'a\\nb' | regex_replace('^', '> ', multiline=true)") == "> a\n> b"
    assert ev("'aaa' | regex_replace('a', 'b', count=2)") == "bba"
    assert ev("8080 | regex_replace('80$', '81')") == "8081"


def test_regex_replace_errors(ev: Any) -> None:
    with raises(r"'a' should match 2 times, but matches 3 times in 'aaa'"):
        ev("'aaa' | regex_replace('a', 'b', mandatory_count=2)")
    with raises(r"regex_replace: invalid regular expression '\(': missing \)"):
        ev("'x' | regex_replace('(', '')")
    with raises(r"regex_replace: invalid replacement"):
        ev("'x' | regex_replace('x', '\\\\2')")


def test_regex_search(ev: Any) -> None:
    assert ev("'server1/database42' | regex_search('database[0-9]+')") == "database42"
    assert ev("'DatAbase42' | regex_search('database[0-9]+', ignorecase=true)") == "DatAbase42"
    assert ev("'foo\\nBAR' | regex_search('^bar', multiline=true, ignorecase=true)") == "BAR"
    expr = "'server1/database42' | regex_search('server([0-9]+)/database([0-9]+)', '\\\\1', '\\\\2')"
    assert ev(expr) == ["1", "42"]
    assert ev("'ab' | regex_search('(?P<first>a)(?P<second>b)', '\\\\g<second>', '\\\\g<first>')") == [
        "b",
        "a",
    ]
    assert ev("'ansible' | regex_search('foobar')") is None
    with raises("regex_search: Unknown argument 'first'"):
        ev("'ab' | regex_search('a', 'first')")


def test_regex_findall(ev: Any) -> None:
    ip = "\\\\b(?:[0-9]{1,3}\\\\.){3}[0-9]{1,3}\\\\b"
    expr = f"'Some DNS servers are 8.8.8.8 and 8.8.4.4' | regex_findall('{ip}')"
    assert ev(expr) == ["8.8.8.8", "8.8.4.4"]
    assert ev("'CAR\\ntar\\nfoo\\nbar\\n' | regex_findall('^.ar$', multiline=True, ignorecase=True)") == [
        "CAR",
        "tar",
        "bar",
    ]
    assert ev("'k1=v1 k2=v2' | regex_findall('(\\\\w+)=(\\\\w+)')") == [("k1", "v1"), ("k2", "v2")]


def test_regex_escape(ev: Any) -> None:
    assert ev("'^f.*o(.*)$' | regex_escape") == "\\^f\\.\\*o\\(\\.\\*\\)\\$"
    assert ev("'^f.*o(.*)$' | regex_escape('posix_basic')") == "\\^f\\.\\*o(\\.\\*)\\$"
    assert ev("'a+b|c' | regex_escape('posix_extended')") == "a\\+b\\|c"
    with raises(r"Invalid regex type \(perl\)"):
        ev("'x' | regex_escape('perl')")


# --------------------------------------------------------------------------------------------
# data structures

DEFAULT = {"a": {"x": "default", "y": "default", "list": ["default"]}, "b": ["default"]}
PATCH = {"a": {"y": "patch", "z": "patch", "list": ["patch"]}, "b": ["patch"]}


def test_combine_simple_and_recursive(ev: Any) -> None:
    assert ev("{'a': 1, 'b': 2} | combine({'b': 3})") == {"a": 1, "b": 3}
    expr = "{'a': {'foo': 1, 'bar': 2}, 'b': 2} | combine({'a': {'bar': 3, 'baz': 4}}, recursive=True)"
    assert ev(expr) == {"a": {"foo": 1, "bar": 3, "baz": 4}, "b": 2}
    assert ev("a | combine(b, c)", a={"x": 1}, b={"x": 2, "y": 2}, c={"y": 3}) == {"x": 2, "y": 3}
    assert ev("[a, b] | combine", a={"x": 1}, b={"x": 2}) == {"x": 2}
    assert ev("[] | combine") == {}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("", {"a": PATCH["a"], "b": ["patch"]}),
        (
            "recursive=True",
            {"a": {"x": "default", "y": "patch", "z": "patch", "list": ["patch"]}, "b": ["patch"]},
        ),
        ("list_merge='keep'", {"a": PATCH["a"], "b": ["default"]}),
        ("list_merge='append'", {"a": PATCH["a"], "b": ["default", "patch"]}),
        ("list_merge='prepend'", {"a": PATCH["a"], "b": ["patch", "default"]}),
        (
            "recursive=True, list_merge='append'",
            {
                "a": {"x": "default", "y": "patch", "z": "patch", "list": ["default", "patch"]},
                "b": ["default", "patch"],
            },
        ),
    ],
)
def test_combine_list_merge(ev: Any, options: str, expected: dict[str, Any]) -> None:
    sep = ", " if options else ""
    assert ev(f"default | combine(patch{sep}{options})", default=DEFAULT, patch=PATCH) == expected


def test_combine_list_merge_rp(ev: Any) -> None:
    low, high = {"a": [1, 1, 2, 3]}, {"a": [3, 4, 5, 5]}
    assert ev("l | combine(h, list_merge='append_rp')", l=low, h=high) == {"a": [1, 1, 2, 3, 4, 5, 5]}
    assert ev("l | combine(h, list_merge='prepend_rp')", l=low, h=high) == {"a": [3, 4, 5, 5, 1, 1, 2]}


def test_combine_does_not_modify_its_inputs(ev: Any) -> None:
    low = {"a": {"x": 1}}
    ev("l | combine({'a': {'y': 2}}, recursive=True)", l=low)
    assert low == {"a": {"x": 1}}


def test_combine_errors(ev: Any) -> None:
    with raises("'recursive' and 'list_merge' are the only valid keyword arguments"):
        ev("{} | combine({}, deep=True)")
    with raises(
        "'list_merge' must be one of 'replace', 'keep', 'append', 'prepend', 'append_rp', 'prepend_rp'"
    ):
        ev("{'a': 1} | combine({'b': 1}, list_merge='merge')")
    with raises(
        "failed to combine variables, expected dicts but got a 'dict' and a 'str': \n{\"a\": 1}\n\"x\""
    ):
        ev("{'a': 1} | combine('x')")


def test_dict2items_and_items2dict(ev: Any) -> None:
    assert ev("{'a': 1, 'b': 2} | dict2items") == [{"key": "a", "value": 1}, {"key": "b", "value": 2}]
    assert ev("{'x': '/etc'} | dict2items(key_name='file', value_name='path')") == [
        {"file": "x", "path": "/etc"}
    ]
    tags = [{"key": "Application", "value": "payment"}, {"key": "Environment", "value": "dev"}]
    assert ev("t | items2dict", t=tags) == {"Application": "payment", "Environment": "dev"}
    fruits = [{"fruit": "apple", "color": "red"}, {"fruit": "pear", "color": "yellow"}]
    assert ev("f | items2dict(key_name='fruit', value_name='color')", f=fruits) == {
        "apple": "red",
        "pear": "yellow",
    }


def test_dict2items_and_items2dict_errors(ev: Any) -> None:
    with raises("dict2items requires a dictionary, got <class 'list'> instead."):
        ev("[1] | dict2items")
    with raises("items2dict requires a list, got <class 'dict'> instead."):
        ev("{} | items2dict")
    with raises("items2dict requires each dictionary in the list to contain the keys 'key' and 'value'"):
        ev("[{'k': 1}] | items2dict")
    with raises("items2dict requires a list of dictionaries"):
        ev("[1] | items2dict")


def test_flatten(ev: Any) -> None:
    assert ev("[3, [4, 2]] | flatten") == [3, 4, 2]
    assert ev("[1, [2, [3, [4]]]] | flatten") == [1, 2, 3, 4]
    assert ev("[3, [4, [2]]] | flatten(levels=1)") == [3, 4, [2]]
    assert ev("[3, none, 'None', 'null', [4]] | flatten") == [3, 4]
    assert ev("[3, none, [4, [2]]] | flatten(levels=1, skip_nulls=False)") == [3, None, 4, [2]]
    assert ev("['ab', ['cd']] | flatten") == ["ab", "cd"]


def test_extract_and_subelements(ev: Any) -> None:
    assert ev("[0, 2] | map('extract', ['x', 'y', 'z']) | list") == ["x", "z"]
    hostvars = {"h1": {"ip": {"v4": "10.0.0.1"}}}
    assert ev("['h1'] | map('extract', hv, ['ip', 'v4']) | list", hv=hostvars) == ["10.0.0.1"]
    users = [{"name": "alice", "groups": ["wheel", "docker"]}, {"name": "bob", "groups": []}]
    assert ev("u | subelements('groups') | map(attribute='1') | list", u=users) == ["wheel", "docker"]
    assert ev("u | subelements('keys', skip_missing=True)", u=users) == []
    with raises("could not find 'keys' key in iterated item"):
        ev("u | subelements('keys')", u=users)


# --------------------------------------------------------------------------------------------
# set theory, combinatorics, math

LIST1 = [1, 2, 5, 1, 3, 4, 10]
LIST2 = [1, 2, 3, 4, 5, 11, 99]


def test_set_theory(ev: Any) -> None:
    assert ev("a | unique", a=LIST1) == [1, 2, 5, 3, 4, 10]
    assert ev("a | union(b)", a=LIST1, b=LIST2) == [1, 2, 5, 3, 4, 10, 11, 99]
    assert ev("a | intersect(b)", a=LIST1, b=LIST2) == [1, 2, 5, 3, 4]
    assert ev("a | difference(b)", a=LIST1, b=LIST2) == [10]
    assert ev("a | symmetric_difference(b)", a=LIST1, b=LIST2) == [10, 11, 99]


def test_unique_is_case_insensitive_like_jinja_unless_asked(ev: Any) -> None:
    assert ev("['a', 'A', 'b'] | unique") == ["a", "b"]
    assert ev("['a', 'A', 'b'] | unique(case_sensitive=True)") == ["a", "A", "b"]
    assert ev("['a', 'A'] | union(['b'])") == ["a", "A", "b"]  # the set filters compare exactly
    assert ev("[{'x': 1}, {'x': 2}, {'x': 1}] | unique(attribute='x')") == [{"x": 1}, {"x": 2}]


def test_set_theory_on_unhashable_items(ev: Any) -> None:
    a, b = [{"n": 1}, {"n": 2}, {"n": 1}], [{"n": 2}, {"n": 3}]
    assert ev("a | unique", a=a) == [{"n": 1}, {"n": 2}]
    assert ev("a | union(b)", a=a, b=b) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert ev("a | intersect(b)", a=a, b=b) == [{"n": 2}]
    assert ev("a | difference(b)", a=a, b=b) == [{"n": 1}]
    assert ev("a | symmetric_difference(b)", a=a, b=b) == [{"n": 1}, {"n": 3}]


def test_zip_zip_longest_product(ev: Any) -> None:
    assert ev("[1, 2, 3] | zip(['a', 'b', 'c']) | list") == [(1, "a"), (2, "b"), (3, "c")]
    assert ev("[1, 2, 3, 4] | zip(['a', 'b'])") == [(1, "a"), (2, "b")]
    expr = "[1, 2, 3] | zip_longest(['a', 'b', 'c', 'd'], [21, 22], fillvalue='X') | list"
    assert ev(expr) == [(1, "a", 21), (2, "b", 22), (3, "c", "X"), ("X", "d", "X")]
    assert ev("['foo', 'bar'] | product(['com']) | map('join', '.') | join(',')") == "foo.com,bar.com"
    assert ev("dict(['a', 'b'] | zip([1, 2]))") == {"a": 1, "b": 2}
    assert ev("[1, 2, 3] | combinations(2) | list") == [(1, 2), (1, 3), (2, 3)]
    assert ev("[1, 2] | permutations | list") == [(1, 2), (2, 1)]


def test_math(ev: Any) -> None:
    assert ev("100 | log(10)") == 2.0
    assert ev("8 | log(2)") == 3.0
    assert ev("1 | log") == 0.0
    assert ev("2 | pow(5)") == 32.0
    assert ev("9 | root") == 3.0
    assert ev("27 | root(3)") == pytest.approx(3.0)
    with raises("log\\(\\) can only be used on numbers"):
        ev("'x' | log")
    with raises("pow\\(\\) can only be used on numbers"):
        ev("'x' | pow(2)")
    with raises("root\\(\\) can only be used on numbers"):
        ev("-4 | root")


# --------------------------------------------------------------------------------------------
# tests: task results


@pytest.mark.parametrize(
    ("result", "failed", "changed", "skipped"),
    [
        ({"failed": False, "changed": True}, False, True, False),
        ({"failed": True, "changed": False}, True, False, False),
        ({"skipped": True, "changed": False}, False, False, True),
        ({}, False, False, False),
        ({"results": [{"changed": False}, {"changed": True}]}, False, True, False),
        ({"changed": False, "results": [{"changed": True}]}, False, False, False),
        ({"results": []}, False, False, False),
    ],
)
def test_task_result_tests(
    ev: Any, result: dict[str, Any], failed: bool, changed: bool, skipped: bool
) -> None:
    assert ev("r is failed", r=result) is failed
    assert ev("r is failure", r=result) is failed
    assert ev("r is succeeded", r=result) is (not failed)
    assert ev("r is success", r=result) is (not failed)
    assert ev("r is changed", r=result) is changed
    assert ev("r is change", r=result) is changed
    assert ev("r is skipped", r=result) is skipped
    assert ev("r is skip", r=result) is skipped


def test_task_result_tests_need_a_dict(ev: Any) -> None:
    with raises("The 'failed' test expects a dictionary"):
        ev("'ok' is succeeded")
    with raises("The 'changed' test expects a dictionary"):
        ev("1 is changed")
    with raises("The 'skipped' test expects a dictionary"):
        ev("[] is skipped")


def test_task_results_in_select(ev: Any) -> None:
    results = [{"item": 1, "failed": True}, {"item": 2, "failed": False}]
    assert ev("r | select('failed') | map(attribute='item') | list", r=results) == [1]
    assert ev("r | reject('failed') | map(attribute='item') | list", r=results) == [2]


# --------------------------------------------------------------------------------------------
# tests: regex, sets, truthiness


def test_regex_tests(ev: Any) -> None:
    url = "https://example.com/users/foo/resources/bar"
    assert ev("url is match('https://example.com/users/.*/resources')", url=url) is True
    assert ev("url is match('/users/.*/resources')", url=url) is False
    assert ev("url is search('users')", url=url) is True
    assert ev("url is regex('example\\\\.com/\\\\w+/foo')", url=url) is True
    assert ev("'FOO' is search('foo', ignorecase=True)") is True
    assert ev("'a\\nfoo' is match('^foo', multiline=True)") is False
    assert ev("'a\\nfoo' is search('^foo', multiline=True)") is True
    assert ev("'abc' is regex('abc', match_type='fullmatch')") is True
    with raises(r"search: invalid regular expression '\['"):
        ev("'x' is search('[')")


def test_subset_superset_contains(ev: Any) -> None:
    a, b = [1, 2, 3, 4, 5], [2, 3]
    assert ev("b is subset(a)", a=a, b=b) is True
    assert ev("a is superset(b)", a=a, b=b) is True
    assert ev("a is subset(b)", a=a, b=b) is False
    assert ev("[{'x': 1}] is subset([{'x': 1}, {'y': 2}])") is True
    assert ev("['a', 'b'] is contains('a')") is True
    hosts = [{"name": "a", "groups": ["gpu"]}, {"name": "b", "groups": ["cpu"]}]
    assert ev("h | selectattr('groups', 'contains', 'gpu') | map(attribute='name') | list", h=hosts) == ["a"]


def test_any_all(ev: Any) -> None:
    assert ev("[1, 0] is any") is True
    assert ev("[1, 0] is all") is False
    assert ev("[] is all") is True
    assert ev("[] is any") is False


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("'no' is truthy", True),
        ("'no' is truthy(convert_bool=True)", False),
        ("'Yes' is truthy(convert_bool=True)", True),
        ("'y' is truthy(convert_bool=True)", True),
        ("'off' is falsy(convert_bool=True)", True),
        ("'' is falsy", True),
        ("0 is falsy", True),
        ("[0] is truthy", True),
        ("'false' is falsy", False),
    ],
)
def test_truthy_falsy(ev: Any, expr: str, expected: bool) -> None:
    assert ev(expr) is expected


# --------------------------------------------------------------------------------------------
# tests: versions


@pytest.mark.parametrize(
    ("left", "op", "right", "expected"),
    [
        ("1.10", ">", "1.9", True),
        ("1.10", "gt", "1.9", True),
        ("22.04", ">=", "20.04", True),
        ("22.04", "ge", "22.04", True),
        ("12.04", "<", "12.4", False),
        ("1.2.0", "==", "1.2", False),
        ("1.2.3", "eq", "1.2.3", True),
        ("1.2.3", "=", "1.2.3", True),
        ("1.2.3", "!=", "1.2.4", True),
        ("1.2.3", "<>", "1.2.3", False),
        ("1.2.3", "ne", "1.2.3", False),
        ("1.2.3", "le", "1.2.3", True),
        ("1.2.3", "<=", "1.2.2", False),
        ("1.2.3", "lt", "1.3", True),
        ("2.6.32-754.el6", ">", "2.6.32", True),
        ("6.8.0-1004-nvidia", ">=", "6.8", True),
        ("580.95.05", ">=", "580.82.09", True),
        ("1.0rc1", "<", "1.0rc2", True),
        ("1.0.1", ">", "1.0rc1", True),  # LooseVersion raises here; sparkprov orders numbers after words
    ],
)
def test_version_loose(ev: Any, left: str, op: str, right: str, expected: bool) -> None:
    assert ev(f"'{left}' is version('{right}', '{op}')") is expected
    assert ev(f"'{left}' is version_compare('{right}', operator='{op}')") is expected


def test_version_default_operator_is_eq(ev: Any) -> None:
    assert ev("'1.0' is version('1.0')") is True
    assert ev("v is version('3.10')", v=3.10) is False  # numbers compare as their text: '3.1'


def test_version_strict(ev: Any) -> None:
    assert ev("'1.0' is version('1.0.0', 'eq', strict=True)") is True
    assert ev("'1.0a1' is version('1.0', 'lt', strict=True)") is True
    assert ev("'1.0b2' is version('1.0a3', 'gt', version_type='strict')") is True
    with raises("Version comparison failed: invalid version number '1.0.0.1'"):
        ev("'1.0.0.1' is version('1.0', strict=True)")


def test_version_semver(ev: Any) -> None:
    order = [
        "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
        "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0",
    ]  # fmt: skip
    for low, high in itertools.pairwise(order):
        assert ev("l is version(h, 'lt', version_type='semver')", l=low, h=high) is True
    assert ev("'1.0.0+build.1' is version('1.0.0', 'eq', version_type='semantic')") is True
    with raises("Version comparison failed: invalid semantic version '1.2'"):
        ev("'1.2' is version('1.0.0', 'lt', version_type='semver')")


def test_version_errors(ev: Any) -> None:
    with raises("Input version value cannot be empty"):
        ev("'' is version('1.0')")
    with raises("Version parameter to compare against cannot be empty"):
        ev("'1.0' is version('')")
    ops = "'==', '=', 'eq', '<', 'lt', '<=', 'le', '>', 'gt', '>=', 'ge', '!=', '<>', 'ne'"
    with raises(rf"Invalid operator type \(=>\)\. Must be one of {ops}"):
        ev("'1.0' is version('1.0', '=>')")
    with raises(r"Invalid version type \(pep440\)\. Must be one of 'loose', 'strict', 'semver', 'semantic'"):
        ev("'1.0' is version('1.0', version_type='pep440')")
    with raises("Cannot specify both 'strict' and 'version_type'"):
        ev("'1.0' is version('1.0', strict=True, version_type='loose')")


# --------------------------------------------------------------------------------------------
# tests: controller filesystem


def test_file_tests(ev: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    regular = tmp_path / "f.txt"
    regular.write_text("x")
    link = tmp_path / "l"
    link.symlink_to(regular)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    monkeypatch.setenv("SPARK_TEST_DIR", str(tmp_path))

    assert ev("p is file", p=str(regular)) is True
    assert ev("p is directory", p=str(regular)) is False
    assert ev("p is directory", p=str(tmp_path)) is True
    assert ev("p is exists", p=str(regular)) is True
    assert ev("p is exists", p=str(tmp_path / "missing")) is False
    assert ev("p is link", p=str(link)) is True
    assert ev("p is link", p=str(regular)) is False
    assert ev("p is exists", p=str(dangling)) is False
    assert ev("p is link_exists", p=str(dangling)) is True
    assert ev("'$SPARK_TEST_DIR/f.txt' is file") is True  # variables and ~ are expanded
    assert ev("'/etc' is abs") is True
    assert ev("'etc/hosts' is abs") is False
    assert ev("p is same_file(q)", p=str(link), q=str(regular)) is True
    assert ev("'/' is mount") is True


# --------------------------------------------------------------------------------------------
# lookups


@pytest.fixture
def playbook_dir(tmp_path: Path) -> Path:
    (tmp_path / "files").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "files" / "motd.txt").write_text("welcome\n\n")
    (tmp_path / "files" / "a.conf").write_text("a")
    (tmp_path / "files" / "b.conf").write_text("b")
    (tmp_path / "top.txt").write_text("  top  \n")
    (tmp_path / "templates" / "compose.yml.j2").write_text(
        "image: {{ image }}\n{% if gpus %}\ngpus: {{ gpus }}\n{% endif %}\n"
        "extra: {{ extra | default('none') }}\n"
    )
    return tmp_path


def test_lookup_env(ev: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_A", "alpha")
    monkeypatch.setenv("SPARK_B", "beta")
    monkeypatch.delenv("SPARK_MISSING", raising=False)
    assert ev("lookup('env', 'SPARK_A')") == "alpha"
    assert ev("lookup('env', 'SPARK_A', 'SPARK_B')") == "alpha,beta"
    assert ev("query('env', 'SPARK_A', 'SPARK_B')") == ["alpha", "beta"]
    assert ev("q('env', 'SPARK_A')") == ["alpha"]
    assert ev("lookup('env', 'SPARK_MISSING')") == ""
    assert ev("lookup('env', 'SPARK_MISSING', default='fallback')") == "fallback"
    assert ev("lookup('ansible.builtin.env', 'SPARK_A')") == "alpha"
    assert ev("lookup('env', 'SPARK_A', wantlist=True)") == ["alpha"]
    with raises('The "env" lookup, found an undefined variable: SPARK_MISSING', jinja2.UndefinedError):
        ev("lookup('env', 'SPARK_MISSING', default=Undefined)")


def test_lookup_file(ev: Any, playbook_dir: Path) -> None:
    pb = str(playbook_dir)
    assert ev("lookup('file', 'motd.txt')", playbook_dir=pb) == "welcome"
    assert ev("lookup('file', 'motd.txt', rstrip=False)", playbook_dir=pb) == "welcome\n\n"
    assert ev("lookup('file', 'top.txt')", playbook_dir=pb) == "  top"
    assert ev("lookup('file', 'top.txt', lstrip=True)", playbook_dir=pb) == "top"
    assert ev("lookup('file', p)", p=str(playbook_dir / "files" / "a.conf")) == "a"
    assert ev("lookup('file', 'a.conf', 'b.conf')", playbook_dir=pb) == "a,b"
    assert ev("query('file', 'a.conf', 'b.conf')", playbook_dir=pb) == ["a", "b"]


def test_lookup_file_relative_to_current_directory_without_playbook_dir(
    ev: Any, playbook_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(playbook_dir)
    assert ev("lookup('file', 'a.conf')") == "a"


def test_lookup_file_missing(ev: Any, playbook_dir: Path) -> None:
    expected = (
        rf"lookup\('file'\): could not locate file in lookup: nope.txt "
        rf"\(looked for {playbook_dir}/files/nope.txt, {playbook_dir}/nope.txt\)"
    )
    with raises(expected):
        ev("lookup('file', 'nope.txt')", playbook_dir=str(playbook_dir))


def test_lookup_errors_option(ev: Any, playbook_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    pb = str(playbook_dir)
    assert ev("lookup('file', 'nope.txt', errors='ignore')", playbook_dir=pb) is None
    assert ev("query('file', 'nope.txt', errors='ignore')", playbook_dir=pb) == []
    with caplog.at_level(logging.WARNING):
        assert ev("lookup('file', 'nope.txt', errors='warn')", playbook_dir=pb) is None
    assert "could not locate file in lookup: nope.txt" in caplog.text
    with raises("lookup: errors must be 'strict', 'warn' or 'ignore', not 'loud'"):
        ev("lookup('file', 'nope.txt', errors='loud')", playbook_dir=pb)


def test_lookup_template(render: Any, playbook_dir: Path) -> None:
    variables = {
        "playbook_dir": str(playbook_dir),
        "image": "nvcr.io/nvidia/pytorch:25.01-py3",
        "gpus": "all",
    }
    expected = "image: nvcr.io/nvidia/pytorch:25.01-py3\ngpus: all\nextra: none\n"
    assert render("{{ lookup('template', 'compose.yml.j2') }}", **variables) == expected
    expr = "{{ lookup('template', 'compose.yml.j2', template_vars={'extra': 'x', 'gpus': 0}) }}"
    assert render(expr, **variables) == "image: nvcr.io/nvidia/pytorch:25.01-py3\nextra: x\n"


def test_lookup_template_sees_template_locals(render: Any, playbook_dir: Path) -> None:
    source = "{% set image = 'local:1' %}{{ lookup('template', 'compose.yml.j2') }}"
    assert render(source, playbook_dir=str(playbook_dir), gpus=False).startswith("image: local:1\n")


def test_lookup_template_errors(ev: Any, playbook_dir: Path) -> None:
    pb = str(playbook_dir)
    with raises("'image' is undefined", jinja2.UndefinedError):
        ev("lookup('template', 'compose.yml.j2')", playbook_dir=pb)
    (playbook_dir / "templates" / "bad.j2").write_text("line one\n{% if %}\n")
    with raises(rf"lookup\('template'\): {playbook_dir}/templates/bad.j2:2: "):
        ev("lookup('template', 'bad.j2')", playbook_dir=pb)
    with raises(r"lookup\('template'\): could not locate file in lookup: none.j2"):
        ev("lookup('template', 'none.j2')", playbook_dir=pb)


def test_lookup_fileglob(ev: Any, playbook_dir: Path) -> None:
    pb = str(playbook_dir)
    files = playbook_dir / "files"
    assert ev("lookup('fileglob', '*.conf')", playbook_dir=pb) == f"{files}/a.conf,{files}/b.conf"
    assert ev("query('fileglob', p)", p=f"{files}/*.conf") == [f"{files}/a.conf", f"{files}/b.conf"]
    assert ev("query('fileglob', '*.txt')", playbook_dir=pb) == [f"{files}/motd.txt"]
    assert ev("query('fileglob', '/nonexistent/*.txt')") == []


def test_lookup_items_list_vars(ev: Any) -> None:
    assert ev("lookup('items', [1, 2], 3)") == [1, 2, 3]
    assert ev("query('items', ['a', ['b']])") == ["a", ["b"]]
    assert ev("lookup('items', 'a', 'b')") == "a,b"
    assert ev("query('list', 1, 2)") == [1, 2]
    assert ev("lookup('list', 'only')") == "only"
    assert ev("lookup('vars', 'x')", x={"k": 1}) == {"k": 1}
    assert ev("lookup('vars', 'pre' + 'fix')", prefix="ok") == "ok"
    assert ev("query('vars', 'x', 'y')", x=1, y=2) == [1, 2]
    assert ev("lookup('vars', 'missing', default='d')") == "d"
    hostvars = {"h1": {"ansible_host": "10.0.0.1"}}
    assert ev("lookup('vars', 'ansible_host')", hostvars=hostvars, inventory_hostname="h1") == "10.0.0.1"


def test_lookup_vars_errors(ev: Any) -> None:
    with raises("No variable found with this name: missing", jinja2.UndefinedError):
        ev("lookup('vars', 'missing')")
    with raises("Invalid setting identifier, \"1\" is not a string, its a <class 'int'>"):
        ev("lookup('vars', 1)")


def test_lookup_first_found(ev: Any, playbook_dir: Path) -> None:
    pb = str(playbook_dir)
    files = playbook_dir / "files"
    assert (
        ev("lookup('first_found', ['nope.conf', 'b.conf', 'a.conf'])", playbook_dir=pb) == f"{files}/b.conf"
    )
    assert ev("lookup('first_found', 'nope.conf,a.conf')", playbook_dir=pb) == f"{files}/a.conf"
    assert ev("lookup('first_found', 'top.txt')", playbook_dir=pb) == f"{playbook_dir}/top.txt"
    expr = "lookup('first_found', {'files': ['x.conf', 'a.conf'], 'paths': [p]})"
    assert ev(expr, p=str(files)) == f"{files}/a.conf"
    expr = "lookup('first_found', files=['x.conf', 'b.conf'], paths=[p])"
    assert ev(expr, p=str(files)) == f"{files}/b.conf"
    assert ev("query('first_found', ['x.conf'], skip=True)", playbook_dir=pb) == []
    assert ev("query('first_found', {'files': ['x.conf'], 'skip': True})", playbook_dir=pb) == []


def test_lookup_first_found_nothing_found(ev: Any, playbook_dir: Path) -> None:
    expected = (
        rf"No file was found when using first_found\. Looked for: {playbook_dir}/files/x.conf, "
        rf"{playbook_dir}/x.conf"
    )
    with raises(expected):
        ev("lookup('first_found', ['x.conf'])", playbook_dir=str(playbook_dir))


def test_lookup_unknown_name_and_options(ev: Any) -> None:
    supported = "env, file, fileglob, first_found, items, list, template, vars"
    with raises(rf"lookup plugin \(password\) not found; sparkprov supports: {supported}"):
        ev("lookup('password', '/tmp/x')")
    with raises(r"lookup\('env'\) does not take option\(s\) fallback; it takes: default"):
        ev("lookup('env', 'HOME', fallback='x')")
    with raises(r"lookup\('items'\) does not take option\(s\) x; it takes: no options"):
        ev("lookup('items', 1, x=1)")


def test_lookup_fails_on_undefined_terms(ev: Any) -> None:
    with raises("'nope' is undefined", jinja2.UndefinedError):
        ev("lookup('env', nope)")


def test_lookup_in_a_loop_expression(render: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_A", "alpha")
    assert render("{% for v in query('env', 'SPARK_A') %}[{{ v }}]{% endfor %}") == "[alpha]"
