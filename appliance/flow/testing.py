"""Flow tests: scripted callers and expectations kept beside the flows (`flows/tests/*.yaml`).

Each case runs the flow in the simulator (the engine real calls run) and compares what the
caller heard, the steps visited, the variables, the webhook calls and the outcome.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.core.clock import utcnow
from appliance.core.errors import FlowError, Problem
from appliance.flow.engine import WebhookDone
from appliance.flow.loader import LoadedFlow
from appliance.flow.simulate import PersonaFactory, Simulation


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookReply(_Model):
    """What a webhook answers in a test: the CRM a flow test cannot reach."""

    status: int = 200
    json_body: dict[str, Any] | None = Field(None, alias="json")
    timeout: bool = False

    def as_result(self) -> WebhookDone:
        if self.timeout:
            return WebhookDone(ok=False, error="no reply within the timeout")
        if self.status // 100 != 2:
            return WebhookDone(ok=False, error=f"HTTP {self.status}")
        if self.json_body is None:
            return WebhookDone(ok=False, error="reply is not JSON")
        return WebhookDone(ok=True, data=self.json_body)


class ExpectedWebhook(_Model):
    url: str
    payload: dict[str, Any] = Field(default_factory=dict, description="keys that must be posted, with values")


class Expect(_Model):
    heard: list[str] = Field(default_factory=list, description="in order; a /regex/ or a substring")
    not_heard: list[str] = Field(default_factory=list)
    steps: list[str] = Field(default_factory=list, description="visited in this order (others may come between)")
    variables: dict[str, Any] = Field(default_factory=dict)
    webhooks: list[ExpectedWebhook] | None = None
    outcome: str | None = None


class Case(_Model):
    name: str
    now: dt.datetime | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    webhooks: dict[str, WebhookReply] = Field(default_factory=dict)
    transfer_fails: bool = False
    caller: list[str | int | float] = Field(default_factory=list)
    expect: Expect


class TestFile(_Model):
    flow: str
    cases: list[Case]


@dataclass
class CaseResult:
    file: str
    case: str
    failures: list[str] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    outcome: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


def load_tests(path: Path) -> TestFile:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError([Problem(str(path), 1, 1, f"cannot read: {exc}")]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise FlowError([Problem(str(path), mark.line + 1 if mark else 1, mark.column + 1 if mark else 1,
                                 f"YAML syntax: {getattr(exc, 'problem', exc)}")]) from exc
    try:
        return TestFile.model_validate(raw)
    except ValidationError as exc:
        raise FlowError([Problem(str(path), 1, 1, f"{'.'.join(map(str, e['loc']))}: {e['msg']}")
                         for e in exc.errors()]) from exc


def _matches(pattern: str, text: str) -> bool:
    if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
        return re.search(pattern[1:-1], text, re.IGNORECASE) is not None
    return pattern.lower() in text.lower()


def _in_order(wanted: list[str], seen: list[str], match: Any) -> str | None:
    """The first wanted item not found after the previous one, or None."""
    position = 0
    for item in wanted:
        while position < len(seen) and not match(item, seen[position]):
            position += 1
        if position == len(seen):
            return item
        position += 1
    return None


async def run_case(case: Case, loaded: LoadedFlow, file: str, personas: PersonaFactory | None = None) -> CaseResult:
    async def webhook(url: str, payload: dict[str, Any], timeout: float) -> WebhookDone:
        reply = case.webhooks.get(url)
        if reply is None:
            return WebhookDone(ok=False, error=f"no reply given for {url} in this test")
        return reply.as_result()

    sim = Simulation(loaded, variables=case.variables, webhook=webhook, transfer_ok=not case.transfer_fails,
                     now=case.now or utcnow(), personas=personas)
    await sim.start()
    for line in case.caller:
        if sim.finished:
            break
        await sim.line(str(line))
    if not sim.finished:
        await sim.hangup()
    result = CaseResult(file, case.name, heard=sim.heard, steps=sim.steps, outcome=sim.outcome)
    expect = case.expect
    missing = _in_order(expect.heard, sim.heard, _matches)
    if missing is not None:
        result.failures.append(f"heard: expected {missing!r} (in order); the caller heard:\n"
                               + "\n".join(f"      | {h}" for h in sim.heard))
    for pattern in expect.not_heard:
        if any(_matches(pattern, h) for h in sim.heard):
            result.failures.append(f"not_heard: {pattern!r} was heard")
    missing = _in_order(expect.steps, sim.steps, lambda a, b: a == b)
    if missing is not None:
        result.failures.append(f"steps: expected {missing!r} (in order); visited {' → '.join(sim.steps)}")
    for name, value in expect.variables.items():
        actual = sim.engine.variables.get(name)
        if actual != value and str(actual) != str(value):
            result.failures.append(f"variables.{name}: expected {value!r}, got {actual!r}")
    if expect.webhooks is not None:
        calls = sim.webhook_calls
        if len(calls) != len(expect.webhooks):
            result.failures.append(f"webhooks: expected {len(expect.webhooks)} calls, got {len(calls)}: "
                                   + ", ".join(c.url for c in calls))
        # Counts may differ (reported above): compare the calls both lists have.
        for wanted, call in zip(expect.webhooks, calls, strict=False):
            if wanted.url != call.url:
                result.failures.append(f"webhooks: expected a call to {wanted.url}, got {call.url}")
            for key, value in wanted.payload.items():
                if call.payload.get(key) != value:
                    result.failures.append(f"webhooks: {call.url} payload.{key}: expected {value!r}, "
                                           f"got {call.payload.get(key)!r}")
    if expect.outcome is not None and expect.outcome != sim.outcome:
        result.failures.append(f"outcome: expected {expect.outcome}, got {sim.outcome}")
    return result


async def run_file(path: Path, flows: dict[str, LoadedFlow],
                   personas: PersonaFactory | None = None) -> list[CaseResult]:
    tests = load_tests(path)
    loaded = flows.get(tests.flow)
    if loaded is None:
        return [CaseResult(str(path), "(file)", [f"flow '{tests.flow}' is not loaded"])]
    return [await run_case(case, loaded, str(path), personas) for case in tests.cases]
