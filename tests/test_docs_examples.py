"""Every YAML example in README.md and docs/*.md is accepted by the code that reads that kind of file.

Each ```yaml fence names its kind after the language, e.g. ```yaml appliance.yaml (GitHub shows
only the language). The kinds, and what checks them:
- appliance.yaml: `Config.model_validate` (a part of the file is fine: every key has a default);
- flow: a whole flow file, through the flow loader and checker (`loader.parse`);
- steps: steps as they sit under `steps:` in a flow; wrapped in a flow that reaches each of them
  and ends every exit they name that the example does not define, then loaded like a flow;
- queues.yaml, persona, flow-test: flows/queues.yaml, flows/personas/<name>.yaml and
  flows/tests/<name>.yaml, through their pydantic models.
A yaml fence without a kind fails, so a new example cannot go unchecked.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from appliance.config import Config
from appliance.flow import testing as flow_tests
from appliance.flow.checker import FlowContext
from appliance.flow.loader import parse
from appliance.flow.persona import Persona
from appliance.flow.schema import Flow, Queues

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[^\s`]*)[ \t]*(?P<kind>\S*)")

# What the step examples refer to, as the appliance.yaml, queues.yaml and personas/ that go
# with them would define it (FLOWS.md names crm.example.com, analytics.example.com and pbx.example.com).
CONTEXT = FlowContext(
    queues={"billing", "technical"},
    personas={"helpdesk", "orders"},
    webhooks_allowed=["https://crm.example.com/", "wss://analytics.example.com/"],
    transfers_allowed=["sip:*@pbx.example.com", "+1555*"],
)
# Variables the step examples use; a flow declares them under `variables:`.
VARIABLES = {"account": "", "balance": 0, "customer_name": "", "tier": "", "answer": "", "department": ""}


@dataclass(frozen=True)
class Example:
    file: Path
    line: int  # of the opening fence
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def examples(path: Path, text: str | None = None) -> list[Example]:
    """The ```yaml blocks of one markdown file, dedented to their fence."""
    lines = (path.read_text() if text is None else text).splitlines()
    found = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), None)
        assert end is not None, f"{path.relative_to(ROOT)}:{i + 1}: the fence is never closed"
        if fence["lang"] in ("yaml", "yml"):
            body = textwrap.dedent("\n".join(line.removeprefix(fence["indent"]) for line in lines[i + 1:end]))
            found.append(Example(path, i + 1, fence["kind"], body + "\n"))
        i = end + 1
    return found


def _flow_problems(text: str, file: str) -> list[str]:
    _, problems = parse(text, file, CONTEXT)
    return [f"{p.line}:{p.col}: {p.message}" for p in problems]


def _check_appliance_yaml(example: Example) -> list[str]:
    Config.model_validate(yaml.safe_load(example.text) or {})
    return []


def _check_flow(example: Example) -> list[str]:
    return _flow_problems(example.text, str(example))


def _check_steps(example: Example) -> list[str]:
    steps = yaml.safe_load(example.text)
    assert isinstance(steps, dict) and steps, "steps examples are a mapping of step name → step"
    # The schema alone first, to learn which exits lead outside the example.
    shown = Flow.model_validate({"name": "doc", "entry": next(iter(steps)), "steps": steps})
    exits = {target for step in shown.steps.values() for _, target in step.targets()} - set(steps)
    entry = {"branch": {"cases": [{"when": f"caller == '{i}'", "goto": name} for i, name in enumerate(steps)],
                        "otherwise": next(iter(steps))}}
    flow = {
        "name": "doc",
        "entry": "doc_entry",
        "variables": VARIABLES,
        "steps": {"doc_entry": entry, **steps, **{name: {"hangup": None} for name in sorted(exits)}},
    }
    return _flow_problems(yaml.safe_dump(flow, sort_keys=False), str(example))


def _check_queues(example: Example) -> list[str]:
    Queues.model_validate(yaml.safe_load(example.text))
    return []


def _check_persona(example: Example) -> list[str]:
    Persona.model_validate(yaml.safe_load(example.text))
    return []


def _check_flow_test(example: Example) -> list[str]:
    flow_tests.TestFile.model_validate(yaml.safe_load(example.text))
    return []


CHECKS: dict[str, Callable[[Example], list[str]]] = {
    "appliance.yaml": _check_appliance_yaml,
    "flow": _check_flow,
    "steps": _check_steps,
    "queues.yaml": _check_queues,
    "persona": _check_persona,
    "flow-test": _check_flow_test,
}

ALL = [example for path in DOCS for example in examples(path)]


def test_the_docs_have_examples_of_each_kind() -> None:
    assert {e.kind for e in ALL} >= {"appliance.yaml", "flow", "steps", "queues.yaml", "persona", "flow-test"}
    assert any(e.kind == "appliance.yaml" and e.file.name == "README.md" for e in ALL)


@pytest.mark.parametrize("example", ALL, ids=str)
def test_example_is_accepted(example: Example) -> None:
    check = CHECKS.get(example.kind)
    assert check is not None, (f"{example}: name the kind after the language, ```yaml <kind>, "
                               f"one of {', '.join(CHECKS)}")
    assert check(example) == [], f"{example}: the {example.kind} example is refused"


_LINK = re.compile(r"\]\(([^)\s]+)\)")
_PARENT_PATH = re.compile(r"(?<![\w./])\.\./[\w./-]+")


def test_links_and_paths_stay_in_the_repository() -> None:
    # A reader has the clone, not the machine it was written on.
    wrong = []
    for doc in DOCS:
        text = doc.read_text()
        targets = [t for t in _LINK.findall(text) if not re.match(r"^([a-z]+:|#)", t)]
        for target in targets + _PARENT_PATH.findall(text):
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                wrong.append(f"{doc.relative_to(ROOT)}: {target}")
    assert wrong == []
