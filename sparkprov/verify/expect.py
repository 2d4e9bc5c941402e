"""Expectations: what a verification step's `expect:` values mean, and how a measurement is judged.

    ">= 40", "> 1.5", "<= 2", "< 3", "== 1", "!= 0"   comparisons (numbers, or versions: "13.0", "580.95.05")
    "~ regex"                                          re.search on the measured value as text
    "between 10 and 20"                                inclusive range
    anything else ("NVIDIA GB10", 1, true)             equality (1 == 1.0; 13.0 == "13.0")
    a mapping (only where a step says so: http/container `json`)    subset of a JSON document, whose
                                                       leaves are expectations themselves
    "within 10% of baseline"                           |measured - baseline| <= 10% of the baseline (the same
                                                       metric in the report given with --baseline)
    ">= 70% of roofline"                               a comparison with a fraction of the metric's physical
                                                       ceiling (decode tok/s: memory bandwidth / model bytes)

Where a step knows a metric's physical ceiling (`References.ceiling`), an expectation that asks for more
than the ceiling cannot be met by any machine: `evaluate_against` flags it "impossible" with the ceiling
instead of failing the host (the course's "70B Q4 ~15 tok/s" on a GB10, whose ceiling is ~6.3).

Every expectation is a value with a `text` (what is expected, for reports) and `evaluate(measured)
-> Verdict`. New kinds (roofline ceilings, baselines) are new classes with the same two members plus a
parser appended to `PARSERS`; nothing else changes.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_COMPARISON = re.compile(r"^(>=|<=|==|!=|>|<)\s*(.*)$", re.DOTALL)
_BETWEEN = re.compile(r"^between\s+(\S+)\s+and\s+(\S+)$", re.IGNORECASE)
# A string that starts like an operator but is not one of ours is a typo ("=> 40"), not a value.
_LOOKS_LIKE_OPERATOR = re.compile(r"^(=>|=<|=|<>|!|~|>|<)")

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
SYNTAX_HELP = (
    "write '>= 40', '< 2.5', '== 1', '!= 0', '~ regex', 'between 10 and 20', 'within 10% of baseline', "
    "'>= 70% of roofline' or a plain value"
)


class ExpectationError(ValueError):
    """An `expect:` value that cannot be read (invalid input, exit code 4 when found before a run)."""


# Verdict flags: held (ok), but not judged as written.
IMPOSSIBLE = "impossible"  # the expectation is above the metric's physical ceiling
NO_BASELINE = "no baseline"  # relative to a baseline, and the run was given none


@dataclass(frozen=True)
class Verdict:
    ok: bool
    text: str  # why, in words: "42.0 >= 40", "'NVIDIA H100' is not 'NVIDIA GB10'"
    flag: str = ""  # IMPOSSIBLE, NO_BASELINE or "" (judged as written)


class Expectation(Protocol):
    @property
    def text(self) -> str: ...

    def evaluate(self, measured: Any) -> Verdict: ...


def _number(value: Any) -> float | None:
    """A number from an int/float or a numeric string; None otherwise (booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return None


def _version(value: Any) -> tuple[int, ...] | None:
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    return tuple(int(p) for p in text.split(".")) if _VERSION.match(text) else None


def _padded(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    size = max(len(a), len(b))
    return a + (0,) * (size - len(a)), b + (0,) * (size - len(b))


def show(value: Any) -> str:
    """A measured or expected value as it reads in a verdict."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _comparable(measured: Any, operand: Any) -> tuple[Any, Any] | None:
    """Both sides as numbers, or as versions when either side is a dotted version ("580.95.05")."""
    if any(isinstance(v, str) and v.count(".") > 1 for v in (measured, operand)):
        left_v, right_v = _version(measured), _version(operand)
        return _padded(left_v, right_v) if left_v is not None and right_v is not None else None
    left, right = _number(measured), _number(operand)
    return (left, right) if left is not None and right is not None else None


@dataclass(frozen=True)
class Comparison:
    op: str
    operand: Any

    @property
    def text(self) -> str:
        return f"{self.op} {self.operand}"

    def evaluate(self, measured: Any) -> Verdict:
        if self.op in ("==", "!=") and _comparable(measured, self.operand) is None:
            equal = _equal(measured, self.operand)
            ok = equal if self.op == "==" else not equal
            return Verdict(
                ok, f"{show(measured)} {self.op if ok else _negated(self.op)} {show(self.operand)}"
            )
        pair = _comparable(measured, self.operand)
        if pair is None:
            return Verdict(False, f"{show(measured)} cannot be compared with {self.text}")
        ok = _OPERATORS[self.op](*pair)
        return Verdict(ok, f"{show(measured)} {self.op if ok else _negated(self.op)} {self.operand}")


def _negated(op: str) -> str:
    return {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!=", "!=": "=="}[op]


def _equal(measured: Any, expected: Any) -> bool:
    if isinstance(expected, (dict, list)) or isinstance(measured, (dict, list)):
        return bool(measured == expected)
    if isinstance(expected, bool) or isinstance(measured, bool):
        return str(measured).lower() == str(expected).lower()  # true == "true"
    left, right = _number(measured), _number(expected)
    if left is not None and right is not None:
        return left == right  # 1 == 1.0, 13.0 == "13.0"
    return str(measured) == str(expected)


@dataclass(frozen=True)
class Equal:
    value: Any

    @property
    def text(self) -> str:
        return f"== {self.value if isinstance(self.value, str) else show(self.value)}"

    def evaluate(self, measured: Any) -> Verdict:
        if _equal(measured, self.value):
            return Verdict(True, f"{show(measured)} == {show(self.value)}")
        return Verdict(False, f"{show(measured)} is not {show(self.value)}")


@dataclass(frozen=True)
class Match:
    pattern: re.Pattern[str]

    @property
    def text(self) -> str:
        return f"~ {self.pattern.pattern}"

    def evaluate(self, measured: Any) -> Verdict:
        text = measured if isinstance(measured, str) else show(measured)
        if self.pattern.search(text):
            return Verdict(True, f"matches /{self.pattern.pattern}/")
        return Verdict(False, f"{_excerpt(text)} does not match /{self.pattern.pattern}/")


@dataclass(frozen=True)
class Between:
    low: float
    high: float

    @property
    def text(self) -> str:
        return f"between {self.low:g} and {self.high:g}"

    def evaluate(self, measured: Any) -> Verdict:
        value = _number(measured)
        if value is None:
            return Verdict(False, f"{show(measured)} is not a number")
        ok = self.low <= value <= self.high
        return Verdict(ok, f"{value:g} is {'' if ok else 'not '}{self.text}")


def not_measured(expectation: Expectation) -> Verdict:
    """The verdict on a metric a step could not measure."""
    return Verdict(False, f"not measured (expected {expectation.text})")


@dataclass(frozen=True)
class JsonSubset:
    """Every key of `expected` is in the document, and each leaf meets its own expectation."""

    expected: dict[str, Any]
    leaves: dict[tuple[str, ...], Expectation]

    @property
    def text(self) -> str:
        return f"contains {show(self.expected)}"

    def evaluate(self, measured: Any) -> Verdict:
        failures = []
        for path, expectation in self.leaves.items():
            found, value = _lookup(measured, path)
            dotted = ".".join(path)
            if not found:
                failures.append(f"{dotted}: missing")
                continue
            verdict = expectation.evaluate(value)
            if not verdict.ok:
                failures.append(f"{dotted}: {verdict.text}")
        if failures:
            return Verdict(False, "; ".join(failures))
        return Verdict(True, f"contains {show(self.expected)}")

    def project(self, document: Any) -> Any:
        """The part of `document` this expectation looks at (what a report shows as measured)."""
        return _project(document, self.expected)


def _lookup(document: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if isinstance(document, dict) and key in document:
            document = document[key]
        elif isinstance(document, list) and key.isdigit() and int(key) < len(document):
            document = document[int(key)]
        else:
            return False, None
    return True, document


def _project(document: Any, shape: Any) -> Any:
    if not isinstance(shape, dict):
        return document
    if not isinstance(document, dict):
        return document
    return {k: _project(document[k], v) for k, v in shape.items() if k in document}


def _excerpt(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# ---------------------------------------------------------------- parsing


def _parse_operand(op: str, raw: str, written: str) -> Any:
    operand = raw.strip()
    if not operand:
        raise ExpectationError(f"expectation {written!r} has no value after '{op}'")
    if operand.count(".") > 1 and _VERSION.match(operand):
        return operand  # a version such as 580.95.05
    number = _number(operand)
    if number is not None:
        return int(operand) if re.fullmatch(r"[+-]?\d+", operand) else number
    if op in ("==", "!="):
        return operand
    raise ExpectationError(f"expectation {written!r}: '{op}' needs a number or a version such as 13.0")


def _comparison(text: str) -> Expectation | None:
    match = _COMPARISON.match(text)
    if not match:
        return None
    op = match.group(1)
    return Comparison(op, _parse_operand(op, match.group(2), text))


def _match(text: str) -> Expectation | None:
    if not text.startswith("~"):
        return None
    pattern = text[1:].strip()
    if not pattern:
        raise ExpectationError(f"expectation {text!r} has no regular expression after '~'")
    try:
        return Match(re.compile(pattern))
    except re.error as exc:
        raise ExpectationError(f"expectation {text!r}: invalid regular expression: {exc}") from None


def _between(text: str) -> Expectation | None:
    if not text.lower().startswith("between"):
        return None
    match = _BETWEEN.match(text)
    low = _number(match.group(1)) if match else None
    high = _number(match.group(2)) if match else None
    if low is None or high is None:
        raise ExpectationError(f"expectation {text!r}: write 'between LOW and HIGH' with two numbers")
    if low > high:
        raise ExpectationError(f"expectation {text!r}: the low bound is above the high bound")
    return Between(low, high)


def _typo(text: str) -> Expectation | None:
    if _LOOKS_LIKE_OPERATOR.match(text):
        raise ExpectationError(f"cannot read expectation {text!r}; {SYNTAX_HELP}")
    return None


# ---------------------------------------------------------------- relative to a reference


@dataclass(frozen=True)
class References:
    """What relative expectations of one metric are held against; None where unknown."""

    ceiling: float | None = None  # the metric's physical upper bound (roofline)
    ceiling_why: str = ""  # how the ceiling was derived: "273 GB/s / 43.0 GB"
    unit: str = ""  # "tok/s"
    baseline: float | None = None  # the same metric in the baseline report


@dataclass(frozen=True)
class WithinBaseline:
    """`within 10% of baseline`: no more than `percent` away from the baseline, either way."""

    percent: float

    @property
    def text(self) -> str:
        return f"within {self.percent:g}% of baseline"

    def resolve(self, refs: References) -> tuple[Expectation, str] | Verdict:
        if refs.baseline is None:
            return Verdict(True, "no baseline to compare with (run with --baseline REPORT)", NO_BASELINE)
        spread = abs(refs.baseline) * self.percent / 100.0
        return Between(refs.baseline - spread, refs.baseline + spread), f"baseline {refs.baseline:.4g}"

    def evaluate(self, measured: Any) -> Verdict:
        return evaluate_against(self, measured, References())


@dataclass(frozen=True)
class OfRoofline:
    """`>= 70% of roofline`: a comparison with a fraction of the metric's physical ceiling."""

    op: str
    percent: float

    @property
    def text(self) -> str:
        return f"{self.op} {self.percent:g}% of roofline"

    def resolve(self, refs: References) -> tuple[Expectation, str] | Verdict:
        if refs.ceiling is None:
            return Verdict(False, f"{self.text}: no roofline ceiling is known for this metric")
        threshold = round(refs.ceiling * self.percent / 100.0, 3)
        return Comparison(self.op, threshold), f"{self.percent:g}% of the ceiling {refs.ceiling:.4g}"

    def evaluate(self, measured: Any) -> Verdict:
        return evaluate_against(self, measured, References())


def minimum_required(expectation: Expectation) -> tuple[float, bool] | None:
    """The smallest value `expectation` accepts, and whether it must be exceeded (`>`); None when it
    also accepts small values (`<= 10`, `~ regex`) or is not numeric."""
    if isinstance(expectation, Comparison) and expectation.op in (">=", ">", "=="):
        value = _number(expectation.operand)
        return None if value is None else (value, expectation.op == ">")
    if isinstance(expectation, Between):
        return expectation.low, False
    if isinstance(expectation, Equal):
        value = _number(expectation.value)
        return None if value is None else (value, False)
    return None


def evaluate_against(expectation: Expectation, measured: Any, refs: References) -> Verdict:
    """`expectation.evaluate(measured)`, with a relative expectation resolved against `refs`, and one
    that asks for more than `refs.ceiling` flagged IMPOSSIBLE (held: no machine can meet it)."""
    note = ""
    if isinstance(expectation, (WithinBaseline, OfRoofline)):
        resolved = expectation.resolve(refs)
        if isinstance(resolved, Verdict):
            return resolved
        absolute, note = resolved
    else:
        absolute = expectation
    required = minimum_required(absolute)
    if refs.ceiling is not None and required is not None:
        value, strict = required
        if value > refs.ceiling or (strict and value >= refs.ceiling):
            return Verdict(True, _impossible(expectation, measured, refs), IMPOSSIBLE)
    verdict = absolute.evaluate(measured)
    return Verdict(verdict.ok, f"{verdict.text} ({note})", verdict.flag) if note else verdict


def _impossible(expectation: Expectation, measured: Any, refs: References) -> str:
    unit = f" {refs.unit}" if refs.unit else ""
    why = f" = {refs.ceiling_why}" if refs.ceiling_why else ""
    return (
        f"impossible (ceiling {refs.ceiling:.1f}{unit}): '{expectation.text}' is above the physical "
        f"ceiling{why}; measured {show(measured)}, not a failure of this machine"
    )


_WITHIN_BASELINE = re.compile(r"^within\s+(\d+(?:\.\d+)?)\s*%\s+of\s+(?:the\s+)?baseline$", re.IGNORECASE)
_OF_ROOFLINE = re.compile(r"^(>=|>|<=|<)\s*(\d+(?:\.\d+)?)\s*%\s+of\s+(?:the\s+)?(?:roofline|ceiling)$")


def _within_baseline(text: str) -> Expectation | None:
    match = _WITHIN_BASELINE.match(text)
    if match is not None:
        return WithinBaseline(float(match.group(1)))
    if text.lower().startswith("within "):
        raise ExpectationError(f"cannot read expectation {text!r}; write 'within 10% of baseline'")
    return None


def _of_roofline(text: str) -> Expectation | None:
    match = _OF_ROOFLINE.match(text)
    if match is not None:
        return OfRoofline(match.group(1), float(match.group(2)))
    if _COMPARISON.match(text) and "%" in text:
        raise ExpectationError(f"cannot read expectation {text!r}; write '>= 70% of roofline'")
    return None


# Tried in order on a string; the first that recognises it wins. The relative kinds come first (their
# text starts like a comparison: ">= 70% of roofline"); later kinds add their parser before `_typo`.
PARSERS: list[Callable[[str], Expectation | None]] = [
    _within_baseline,
    _of_roofline,
    _comparison,
    _match,
    _between,
    _typo,
]


def parse_expectation(value: Any) -> Expectation:
    """The expectation a scalar `expect:` value means; ExpectationError when it cannot be read."""
    if isinstance(value, (dict, list)):
        raise ExpectationError(f"an expectation must be a single value, got {show(value)}")
    if isinstance(value, str):
        text = value.strip()
        for parser in PARSERS:
            found = parser(text)
            if found is not None:
                return found
        return Equal(text)
    return Equal(value)


def parse_json_subset(value: Any) -> Expectation:
    """`json: {status: ok, models: {count: ">= 1"}}`: a mapping whose leaves are expectations."""
    if not isinstance(value, dict):
        raise ExpectationError(f"a json expectation must be a mapping, got {show(value)}")
    leaves: dict[tuple[str, ...], Expectation] = {}

    def walk(node: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, child in node.items():
            path = (*prefix, str(key))
            if isinstance(child, dict) and child:
                walk(child, path)
            elif isinstance(child, (dict, list)):
                leaves[path] = Equal(child)
            else:
                leaves[path] = parse_expectation(child)

    walk(value, ())
    return JsonSubset(value, leaves)
