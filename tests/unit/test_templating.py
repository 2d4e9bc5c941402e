"""sparkprov.playbook.templating: native values, lazy scopes, recursion and undefined-name errors."""

from __future__ import annotations

from typing import Any

import pytest

from sparkprov.playbook.templating import (
    KnownAfterApply,
    Scope,
    TemplateError,
    UnknownResult,
    evaluate,
    evaluate_condition,
    render,
    render_string,
    truthy,
)


def scope(**values: Any) -> Scope:
    return Scope([values])


# ------------------------------------------------------------------------------------- native values


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ [1, 2, 3] }}", [1, 2, 3]),
        ("{{ range(1, 4) | list }}", [1, 2, 3]),
        ("{{ 42 }}", 42),
        ("{{ 2 * 21 }}", 42),
        ("{{ {'a': 1, 'b': [true]} }}", {"a": 1, "b": [True]}),
        ("{{ true }}", True),
        ("{{ 1 > 2 }}", False),
        ("{{ none }}", None),
        ("{{ 1.5 }}", 1.5),
        ("{{- 7 -}}", 7),
        ("{{ number }}", 5),
        ("{{ items }}", ["a", "b"]),
        ("{{ items | length }}", 2),
    ],
)
def test_a_single_expression_keeps_its_native_type(source: str, expected: Any) -> None:
    value = render_string(source, scope(number=5, items=["a", "b"]))
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("n={{ number }}", "n=5"),
        ("{{ number }}{{ number }}", "55"),
        ("{{ number }} and {{ items }}", "5 and ['a', 'b']"),
        ("{% if number > 1 %}big{% endif %}", "big"),
        ("{{ flag }}!", "True!"),
        ("plain text", "plain text"),
    ],
)
def test_mixed_strings_render_to_str(source: str, expected: str) -> None:
    assert render_string(source, scope(number=5, items=["a", "b"], flag=True)) == expected


@pytest.mark.parametrize("source", ["{{ value }}\n", " {{ value }}", "{{ value }} "])
def test_whitespace_around_a_single_expression_is_kept(source: str) -> None:
    assert render_string(source, scope(value="v")) == source.replace("{{ value }}", "v")


def test_render_walks_dicts_and_lists() -> None:
    data = {"a": "{{ n + 1 }}", "b": ["x{{ n }}", {"c": "{{ [n] }}"}], "d": 3, "e": None}
    assert render(data, scope(n=1)) == {"a": 2, "b": ["x1", {"c": [1]}], "d": 3, "e": None}


# ------------------------------------------------------------------------------------------ lazy scope


def test_vars_may_refer_to_vars_in_any_layer_and_any_order() -> None:
    layers = Scope(
        [
            {"greeting": "{{ word }}, {{ name }}"},  # a higher layer refers to lower ones
            {"word": "hello", "name": "{{ first }} {{ last }}"},
            {"first": "Ada", "last": "{{ 'Love' ~ 'lace' }}"},
        ]
    )
    assert layers["greeting"] == "hello, Ada Lovelace"
    assert layers["name"] == "Ada Lovelace"


def test_earlier_layers_win() -> None:
    layered = Scope([{"x": "extra"}, {"x": "play", "y": "{{ x }}"}])
    assert layered["x"] == "extra"
    assert layered["y"] == "extra"  # resolved in the whole scope, not in its own layer
    assert layered.raw("y") == "{{ x }}"


def test_a_var_referring_to_item_resolves_in_the_loop_child_scope() -> None:
    parent = Scope([{"path": "/srv/{{ item }}", "items": ["a", "b"]}])
    rendered = [parent.child({"item": item})["path"] for item in parent["items"]]
    assert rendered == ["/srv/a", "/srv/b"]
    with pytest.raises(TemplateError) as caught:
        parent["path"]
    assert caught.value.variable == "item"


def test_child_scope_overlays_and_sees_the_parent() -> None:
    parent = scope(a=1, b="{{ a + 1 }}")
    child = parent.child({"a": 10})
    assert child["a"] == 10
    assert child["b"] == 11
    assert parent["b"] == 2
    assert set(child) == {"a", "b"}
    assert len(child) == 2
    assert "b" in child
    assert "zzz" not in child


def test_values_are_rendered_only_when_read() -> None:
    lazy = scope(broken="{{ nowhere }}", fine="ok")
    assert lazy["fine"] == "ok"  # the broken variable is never evaluated
    with pytest.raises(TemplateError):
        lazy["broken"]


# --------------------------------------------------------------------------------- recursion, undefined


def test_recursion_is_detected_and_the_message_names_the_chain() -> None:
    looping = scope(a="{{ b }}", b="{{ c }}", c="x{{ a }}")
    with pytest.raises(TemplateError) as caught:
        looping["a"]
    assert "recursive" in str(caught.value)
    assert "a -> b -> c -> a" in str(caught.value)


def test_self_reference_is_detected() -> None:
    with pytest.raises(TemplateError) as caught:
        scope(path="{{ path }}/sub")["path"]
    assert "path -> path" in str(caught.value)


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{{ nowhere_defined }}", "nowhere_defined"),
        ("prefix {{ nowhere_defined }} suffix", "nowhere_defined"),
        ("{{ config.missing_key }}", "missing_key"),
        ("{{ nowhere_defined | upper }}", "nowhere_defined"),
        ("{% for x in nowhere_defined %}{{ x }}{% endfor %}", "nowhere_defined"),
    ],
)
def test_undefined_variable_error_names_the_variable(source: str, name: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_string(source, scope(config={"present": 1}))
    assert caught.value.variable == name
    assert name in str(caught.value)


def test_undefined_variable_inside_a_referenced_var_names_the_inner_variable() -> None:
    with pytest.raises(TemplateError) as caught:
        render_string("{{ outer }}", scope(outer="{{ inner_missing }}"))
    assert caught.value.variable == "inner_missing"


def test_default_guards_an_undefined_variable() -> None:
    assert render_string("{{ nowhere | default('fallback') }}", scope()) == "fallback"
    assert render_string("{{ nowhere is defined }}", scope()) is False


def test_syntax_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError) as caught:
        render_string("{{ unclosed ", scope())
    assert caught.value.variable is None


# ------------------------------------------------------------------------------- known after apply


def test_unknown_result_raises_known_after_apply_for_outputs() -> None:
    registered = UnknownResult("out", {"changed": True})
    planned = scope(out=registered)
    assert render_string("{{ out.changed }}", planned) is True
    with pytest.raises(KnownAfterApply) as caught:
        render_string("{{ out.stdout }}", planned)
    assert caught.value.what == "'out.stdout'"
    with pytest.raises(KnownAfterApply):
        render_string("value={{ out['rc'] }}", planned)


# -------------------------------------------------------------------------------- evaluate and truthy


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("number > 3", True),
        ("number == 6", False),
        ("items | length", 2),
        ("'a' in items", True),
        ("missing is defined", False),
        ("missing is not defined", True),
        ("{{ number * 2 }}", 10),  # already a template: evaluated as such
        (True, True),
        (False, False),
        (3, 3),
        ("result is changed", True),
        ("result.rc == 0", True),
    ],
)
def test_evaluate_bare_expressions(expression: Any, expected: Any) -> None:
    value = evaluate(expression, scope(number=5, items=["a", "b"], result={"changed": True, "rc": 0}))
    assert value == expected


def test_evaluate_undefined_names_the_variable() -> None:
    with pytest.raises(TemplateError) as caught:
        evaluate("nowhere > 1", scope())
    assert caught.value.variable == "nowhere"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("True", True),
        ("yes", True),
        ("on", True),
        ("1", True),
        (" y ", True),
        ("false", False),
        ("no", False),
        ("0", False),
        ("", False),
        ("anything else", False),
        (1, True),
        (0, False),
        ([], False),
        ([0], True),
        ({}, False),
        (None, False),
    ],
)
def test_truthy(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


def test_evaluate_condition_list_means_all_must_hold() -> None:
    values = scope(a=True, b=False)
    assert evaluate_condition(["a", "not b"], values) is True
    assert evaluate_condition(["a", "b"], values) is False
    assert evaluate_condition([], values) is True
    assert evaluate_condition("{{ a }}", values) is True
    assert evaluate_condition("b", values) is False
