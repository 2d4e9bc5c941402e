"""`http`: request a URL and judge the answer's status, body, JSON and latency.

The request is made FROM THE CONTROLLER (the machine running sparkprov), not from the target host:
it checks what a user or client sees over the network. `http://127.0.0.1:...` is therefore the
controller itself; to reach a service on each target use its address, e.g.
`url: "http://{{ ansible_host | default(inventory_hostname) }}:11434/api/version"`.

    - name: Ollama answers
      http:
        url: http://127.0.0.1:11434/api/version
        retries: 10          # not ready yet (refused, 5xx, an expectation not met): try again...
        delay: 2             # ...this many seconds later; at most retries + 1 requests
        expect: {status: 200, json: {version: "~ ^0\\."}, latency_ms: "< 500"}

Measured: `status`, `body` (an excerpt in reports), `json` (the body parsed, when it is JSON; reports
show only the keys the expectation looks at), `latency_ms` (request sent to body received).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from sparkprov.verify.base import Step, StepContext, StepResult, StepStatus, judge
from sparkprov.verify.command import excerpt

DEFAULT_TIMEOUT_S = 10.0


class HttpStep(Step):
    name = "http"
    free_form = "url"
    default_expect = {"status": 200}
    json_expect_keys = frozenset({"json"})

    def run(self, args: dict[str, Any], ctx: StepContext) -> StepResult:
        expectations = self.expectations(args)
        attempts = 1 + int(args.get("retries", 0))
        delay = float(args.get("delay", 1.0))
        result = StepResult(StepStatus.FAIL)
        for attempt in range(1, attempts + 1):
            result = self._attempt(args, ctx, expectations)
            result.details["attempts"] = attempt
            if result.status is StepStatus.PASS or attempt == attempts:
                break
            ctx.sleep(delay)
        return result

    def _attempt(self, args: dict[str, Any], ctx: StepContext, expectations: dict[str, Any]) -> StepResult:
        import requests

        method = str(args.get("method", "GET")).upper()
        url = str(args["url"])
        timeout = float(args.get("timeout") or ctx.timeout or DEFAULT_TIMEOUT_S)
        body = args.get("body")
        started = time.monotonic()
        try:
            response = requests.request(
                method,
                url,
                headers={str(k): str(v) for k, v in (args.get("headers") or {}).items()},
                data=body if isinstance(body, str) else None,
                json=body if isinstance(body, (dict, list)) else None,
                timeout=timeout,
                verify=bool(args.get("validate_certs", True)),
                allow_redirects=bool(args.get("follow_redirects", True)),
            )
            text = response.text
        except requests.RequestException as exc:
            return StepResult.fail(f"{method} {url} from the controller failed: {_reason(exc)}")
        latency_ms = round((time.monotonic() - started) * 1000.0, 1)
        measured: dict[str, Any] = {"status": response.status_code, "body": text, "latency_ms": latency_ms}
        with contextlib.suppress(ValueError):  # not JSON: a `json` expectation reports "not measured"
            measured["json"] = json.loads(text)
        return judge(
            expectations, measured, shown={"body": excerpt(text, 500)}, details={"method": method, "url": url}
        )


def _reason(exc: Exception) -> str:
    """requests' exceptions nest the interesting part (refused, timed out) deep inside."""
    text = str(exc)
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host name"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted (validate_certs: false to skip)"),
    ):
        if marker in text:
            return f"{reason} ({type(exc).__name__})"
    return text
