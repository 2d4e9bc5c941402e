"""What every verification step is: `run(args, ctx) -> StepResult`, with expected vs measured.

A step measures (on the host through `ctx.conn`, or from the controller for `http`) and returns what it
measured; `judge` holds the measurements against the step's expectations, so every step reports
verdicts the same way. A step that cannot measure at all returns `skip` (nothing to verify here: no
GPU) or `fail` (it should have worked: the command timed out) with a reason.
"""

from __future__ import annotations

import abc
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sparkprov.connection.base import Become, Connection
from sparkprov.playbook.templating import Scope, contains_template
from sparkprov.verify.expect import (
    Expectation,
    ExpectationError,
    JsonSubset,
    not_measured,
    parse_expectation,
    parse_json_subset,
    show,
)


class StepStatus(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class MetricVerdict:
    """One metric held against its expectation."""

    expected: str  # the expectation as text: ">= 40", "== NVIDIA GB10"
    measured: Any
    ok: bool
    text: str  # the verdict in words: "42 >= 40", "not measured (expected >= 40)"
    flag: str = ""  # held but not judged as written: "impossible", "no baseline" (see expect.Verdict)

    def as_dict(self) -> dict[str, Any]:
        found = {"expected": self.expected, "measured": self.measured, "ok": self.ok, "text": self.text}
        return {**found, "flag": self.flag} if self.flag else found

    @property
    def measured_text(self) -> str:
        return "nothing" if self.measured is None else show(self.measured)

    def summary(self, metric: str) -> str:
        """`metric: expected X, measured Y` — the line reports print for this metric."""
        line = f"{metric}: expected {self.expected}, measured {self.measured_text}"
        return f"{line} — {self.text}" if self.flag else line


@dataclass
class StepResult:
    status: StepStatus
    measured: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, MetricVerdict] = field(default_factory=dict)
    reason: str = ""  # why it was skipped or failed, in words
    details: dict[str, Any] = field(default_factory=dict)  # step-specific extras (per-GPU facts...)

    @classmethod
    def skip(cls, reason: str, **details: Any) -> StepResult:
        return cls(StepStatus.SKIP, reason=reason, details=details)

    @classmethod
    def fail(cls, reason: str, *, measured: dict[str, Any] | None = None, **details: Any) -> StepResult:
        return cls(StepStatus.FAIL, measured=dict(measured or {}), reason=reason, details=details)

    def failed_verdicts(self) -> list[str]:
        return [v.summary(name) for name, v in self.verdicts.items() if not v.ok]

    def summary(self) -> str:
        """Expected vs measured of every metric, else the reason (skipped, failed to measure)."""
        if self.verdicts:
            return "; ".join(v.summary(name) for name, v in self.verdicts.items())
        return self.reason


class StepFailure(Exception):
    """The step could not measure on this host; the message says why (and what to do)."""


@dataclass
class StepContext:
    """What a step may use on one host: the connection, privilege, the host's variables."""

    conn: Connection
    become: Become | None
    scope: Scope
    timeout: float | None = None
    environment: dict[str, str] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep

    @property
    def host(self) -> str:
        return self.conn.host_name


def judge(
    expectations: dict[str, Expectation],
    measured: dict[str, Any],
    *,
    shown: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> StepResult:
    """Pass when every expectation holds for its measurement. `shown` replaces what the report shows
    as measured for a metric (a stdout excerpt instead of all of it, the part of a JSON body looked at)."""
    display = {**measured, **(shown or {})}
    verdicts: dict[str, MetricVerdict] = {}
    for name, expectation in expectations.items():
        found = measured.get(name)
        verdict = not_measured(expectation) if found is None else expectation.evaluate(found)
        if isinstance(expectation, JsonSubset) and name in measured:
            display[name] = expectation.project(measured[name])
        verdicts[name] = MetricVerdict(
            expectation.text, display.get(name), verdict.ok, verdict.text, verdict.flag
        )
    result = StepResult(
        StepStatus.PASS,
        measured=display,
        expected={name: e.text for name, e in expectations.items()},
        verdicts=verdicts,
        details=dict(details or {}),
    )
    failed = result.failed_verdicts()
    if failed:
        result.status, result.reason = StepStatus.FAIL, "; ".join(failed)
    return result


class Step(abc.ABC):
    name: ClassVar[str]
    # The argument a free-form string fills (`command: nvidia-smi -L`); None: a mapping is required.
    free_form: ClassVar[str | None] = None
    # Expectations that hold unless `expect:` says otherwise (`rc: 0`, `status: 200`).
    default_expect: ClassVar[dict[str, Any]] = {}
    # `expect:` keys whose value is a JSON subset (a mapping) rather than a single expectation.
    json_expect_keys: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def run(self, args: dict[str, Any], ctx: StepContext) -> StepResult:
        """Measure on the host and judge against the expectations (see `judge`)."""

    def default_expectations(self, args: dict[str, Any]) -> dict[str, Any]:
        """The defaults for these arguments (a step may vary them, e.g. by its command)."""
        return dict(self.default_expect)

    def expectations(self, args: dict[str, Any]) -> dict[str, Expectation]:
        """`expect:` merged over the defaults and parsed; ExpectationError names the bad key."""
        written = {**self.default_expectations(args), **(args.get("expect") or {})}
        return {key: self.parse(key, value) for key, value in written.items()}

    def parse(self, key: str, value: Any) -> Expectation:
        try:
            if key in self.json_expect_keys:
                return parse_json_subset(value)
            return parse_expectation(value)
        except ExpectationError as exc:
            raise ExpectationError(f"expect.{key}: {exc}") from None

    def expectation_problems(self, args: dict[str, Any]) -> list[tuple[list[str], str]]:
        """Every `expect:` value that cannot be read, as (path below the args, message); values that
        are still templates are judged once rendered. Done before any host is touched."""
        problems = []
        for key, value in (args.get("expect") or {}).items():
            if contains_template(value):
                continue
            try:
                self.parse(str(key), value)
            except ExpectationError as exc:
                problems.append((["expect", str(key)], str(exc)))
        return problems
