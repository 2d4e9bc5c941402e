"""Expectations of verify steps: what each `expect:` spelling means, verdicts, and unreadable values."""

from __future__ import annotations

from typing import Any

import pytest

from sparkprov.verify.base import StepStatus, judge
from sparkprov.verify.expect import ExpectationError, parse_expectation, parse_json_subset


@pytest.mark.parametrize(
    ("written", "measured", "ok"),
    [
        (">= 40", 42.5, True),
        (">= 40", 40, True),
        (">= 40", 39.9, False),
        ("> 1.5", 1.6, True),
        ("> 1.5", 1.5, False),
        ("<= 2", 2, True),
        ("< 3", 3, False),
        ("== 1", 1, True),
        ("== 1", 1.0, True),
        ("!= 0", 0, False),
        ("!= 0", 2, True),
        (">= 40", "41", True),  # numeric text (a command's stdout) compares as a number
        (">= 13.0", "13.0", True),  # CUDA version as reported
        (">= 580.95", "580.159.04", True),  # dotted driver versions compare part by part
        ("< 580.95.05", "580.159.04", False),
        ("== NVIDIA GB10", "NVIDIA GB10", True),
        ("!= NVIDIA GB10", "NVIDIA H100 80GB HBM3", True),
        ("~ ^NVIDIA (GB10|H100)", "NVIDIA H100 80GB HBM3", True),
        ("~ GB10", "NVIDIA H100 80GB HBM3", False),
        ("between 10 and 20", 10, True),
        ("between 10 and 20", 20.0, True),
        ("between 10 and 20", 20.1, False),
        ("NVIDIA GB10", "NVIDIA GB10", True),
        ("NVIDIA GB10", "NVIDIA GB100", False),
        (1, 1, True),
        (1, 2, False),
        (12.1, "12.1", True),  # YAML's float 12.1 against the measured "12.1"
        (True, True, True),
        (True, False, False),
        ("13.0", "13.0", True),
    ],
)
def test_expectations_hold_or_not(written: Any, measured: Any, ok: bool) -> None:
    verdict = parse_expectation(written).evaluate(measured)
    assert verdict.ok is ok, verdict.text


@pytest.mark.parametrize(
    ("written", "text"),
    [(">=40", ">= 40"), ("~ ^a", "~ ^a"), ("between 1 and 2", "between 1 and 2"), (1, "== 1"), ("x", "== x")],
)
def test_expectation_text_is_what_reports_show(written: Any, text: str) -> None:
    assert parse_expectation(written).text == text


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("=> 40", "cannot read expectation '=> 40'"),
        ("=< 2", "cannot read expectation"),
        ("> ", "has no value after '>'"),
        (">= fast", "'>=' needs a number or a version"),
        ("~ (unclosed", "invalid regular expression"),
        ("~", "no regular expression"),
        ("between 20 and 10", "low bound is above the high bound"),
        ("between 1 and x", "write 'between LOW and HIGH'"),
        ({"a": 1}, "must be a single value"),
    ],
)
def test_unreadable_expectations_are_errors(written: Any, message: str) -> None:
    with pytest.raises(ExpectationError, match=message.replace("(", r"\(")):
        parse_expectation(written)


def test_a_comparison_with_a_value_it_cannot_compare_fails_with_the_reason() -> None:
    verdict = parse_expectation(">= 40").evaluate("not a number")
    assert not verdict.ok
    assert "cannot be compared" in verdict.text


def test_json_subset_checks_nested_keys_and_leaf_expectations() -> None:
    expectation = parse_json_subset({"status": "ok", "models": {"count": ">= 1"}, "tags": ["a"]})
    document = {"status": "ok", "models": {"count": 3, "names": ["x"]}, "tags": ["a"], "other": 1}
    assert expectation.evaluate(document).ok
    bad = expectation.evaluate({"status": "degraded", "models": {"count": 0}})
    assert not bad.ok
    assert "status: 'degraded' is not 'ok'" in bad.text
    assert "models.count: 0 < 1" in bad.text
    assert "tags: missing" in bad.text


def test_judge_reports_expected_vs_measured_and_fails_on_missing_measurements() -> None:
    expectations = {"count": parse_expectation(1), "cuda": parse_expectation(">= 13.0")}
    result = judge(expectations, {"count": 1})
    assert result.status is StepStatus.FAIL
    assert result.expected == {"count": "== 1", "cuda": ">= 13.0"}
    assert result.verdicts["count"].ok
    assert result.reason == "cuda: expected >= 13.0, measured nothing"
    passed = judge(expectations, {"count": 1, "cuda": "13.0"})
    assert passed.status is StepStatus.PASS
    assert passed.reason == ""
    assert passed.summary() == "count: expected == 1, measured 1; cuda: expected >= 13.0, measured '13.0'"


def test_judge_shows_only_the_part_of_a_json_document_the_expectation_reads() -> None:
    expectations = {"json": parse_json_subset({"status": "ok"})}
    result = judge(expectations, {"json": {"status": "ok", "huge": "x" * 10_000}})
    assert result.status is StepStatus.PASS
    assert result.measured["json"] == {"status": "ok"}
