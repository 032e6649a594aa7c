"""Loading and checking flow files: every problem at once, each with file:line:col.

YAML is composed into nodes first so every value keeps its position; pydantic's error
locations and the checker's reference paths are then mapped back to those positions.
YAML anchors and aliases are refused (see `_Loader`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from appliance.core.errors import FlowError, Problem
from appliance.flow.checker import FlowContext, check
from appliance.flow.persona import Persona
from appliance.flow.policy import destination_allowed, url_allowed
from appliance.flow.schema import STEP_TAGS, Flow, Queues

Path_ = tuple[Any, ...]
QUEUES_FILE = "queues.yaml"
PERSONAS_DIR = "personas"
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class LoadedFlow:
    flow: Flow
    file: str
    version: str  # content hash: a call's record names exactly what it ran


class _Positions:
    def __init__(self, file: str):
        self.file = file
        self.marks: dict[Path_, tuple[int, int]] = {}  # where a key (or the document) starts
        self.values: dict[Path_, tuple[int, int]] = {}  # where the value under a key starts

    def at(self, path: Path_, message: str, value: bool = False) -> Problem:
        path = tuple(path)
        if value and path in self.values:
            return Problem(self.file, *self.values[path], message)
        while path and path not in self.marks:
            path = path[:-1]
        line, col = self.marks.get(path, (1, 1))
        return Problem(self.file, line, col, message)


_constructor = yaml.constructor.SafeConstructor()


class _AliasRefused(yaml.composer.ComposerError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases.

    Composing an alias is cheap (it is the anchor's node again), but `_build` walks every
    path to keep its position, so each alias is expanded: a "billion laughs" of 439 bytes
    (7 levels of 9 aliases) took 20.8 s and 1.9 GB there, on the event loop that drives the
    20 ms audio clock. A flow has no need for them, so they are refused where they appear.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _AliasRefused(None, None, f"YAML aliases are not allowed (*{event.anchor}); write the value out",
                                event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _AliasRefused(None, None, f"YAML aliases are not allowed (anchor &{event.anchor}); "
                                "write the value out", event.start_mark)
        return super().compose_node(parent, index)


def _compose(text: str, file: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except _AliasRefused as exc:
        mark = exc.problem_mark
        assert mark is not None and exc.problem is not None  # _Loader always gives both
        raise FlowError([Problem(file, mark.line + 1, mark.column + 1, exc.problem)]) from None
    except yaml.YAMLError as exc:
        raise FlowError([_yaml_problem(file, exc)]) from None
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the composer's stack
        raise FlowError([Problem(file, 1, 1, f"YAML syntax: {exc}")]) from None


def _build(node: yaml.Node, path: Path_, pos: _Positions, problems: list[Problem]) -> Any:
    # Without aliases (`_Loader`) the nodes form a tree: each is visited once, none contains itself.
    mark = (node.start_mark.line + 1, node.start_mark.column + 1)
    pos.marks.setdefault(path, mark)
    pos.values[path] = mark
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, pos, problems) if isinstance(key_node, yaml.ScalarNode) else None
            key_mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key, (str, int, float, bool)):
                problems.append(Problem(pos.file, *key_mark, "mapping keys must be plain scalars"))
                continue
            key = str(key)
            if key in out:
                problems.append(Problem(pos.file, *key_mark, f"duplicate key '{key}'"))
                continue
            pos.marks[path + (key,)] = key_mark
            out[key] = _build(value_node, path + (key,), pos, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), pos, problems) for i, item in enumerate(node.value)]
    return _scalar(node, pos, problems)


def _scalar(node: yaml.Node, pos: _Positions, problems: list[Problem]) -> Any:
    try:
        return _constructor.construct_object(node)
    except (yaml.YAMLError, ValueError, KeyError, AttributeError, TypeError) as exc:
        # A tag whose value does not fit it (`!!int abc`): PyYAML raises plain errors here.
        mark = (node.start_mark.line + 1, node.start_mark.column + 1)
        problems.append(Problem(pos.file, *mark, f"value {node.value!r} does not fit its tag {node.tag}: {exc}"))
        return None


def _yaml_problem(file: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = getattr(exc, "problem", None) or str(exc)
    return Problem(file, line, col, f"YAML syntax: {what}")


def _location(error: ErrorDetails) -> Path_:
    """Where a pydantic error is, as a path in the file: the names pydantic adds are left out,
    validator wrappers (`function-...`) and the tag of the step union after a step id."""
    loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
    if len(loc) > 2 and loc[0] == "steps" and loc[2] in STEP_TAGS:
        loc = loc[:2] + loc[3:]
    return loc


def _pydantic_message(error: ErrorDetails) -> str:
    loc = _location(error)
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown field '{loc[-1]}'"
    if kind == "missing":
        return f"missing required field '{loc[-1]}'"
    message = re.sub(r"^Value error, ", "", error["msg"])
    return f"{'.'.join(str(p) for p in loc)}: {message}" if loc else message


def parse(text: str, file: str, context: FlowContext | None = None) -> tuple[Flow | None, list[Problem]]:
    pos = _Positions(file)
    problems: list[Problem] = []
    try:
        node = _compose(text, file)
    except FlowError as exc:
        return None, exc.problems
    if node is None:
        return None, [Problem(file, 1, 1, "empty flow file")]
    try:
        raw = _build(node, (), pos, problems)
    except yaml.YAMLError as exc:
        return None, problems + [_yaml_problem(file, exc)]
    if not isinstance(raw, dict):
        return None, problems + [Problem(file, 1, 1, "a flow file must be a mapping (name, entry, steps)")]
    try:
        flow = Flow.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            problems.append(pos.at(_location(error), _pydantic_message(error)))
        return None, _sorted(problems)
    problems += check(flow, pos.at, context or FlowContext())
    return (flow if not problems else None), _sorted(problems)


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(set(problems), key=lambda p: (p.file, p.line, p.col, p.message))


def _read(path: Path) -> tuple[bytes, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FlowError([Problem(str(path), 1, 1, f"cannot read: {exc.strerror}")]) from exc
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FlowError([Problem(str(path), line, 1, f"not UTF-8 text: {exc.reason}")]) from exc


def load_file(path: Path, context: FlowContext | None = None) -> LoadedFlow:
    data, text = _read(path)
    if context is None:
        context = context_for(path.parent)
    flow, problems = parse(text, str(path), context)
    if problems or flow is None:
        raise FlowError(problems)
    return LoadedFlow(flow=flow, file=str(path), version=hashlib.sha256(data).hexdigest()[:12])


def _load_model(path: Path, model: type[M]) -> M:
    """A YAML file validated by a pydantic model, with problems at file:line:col."""
    _, text = _read(path)
    pos = _Positions(str(path))
    problems: list[Problem] = []
    node = _compose(text, str(path))
    raw = _build(node, (), pos, problems) if node is not None else {}
    try:
        result = model.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            problems.append(pos.at(_location(error), _pydantic_message(error)))
        raise FlowError(_sorted(problems)) from exc
    if problems:
        raise FlowError(_sorted(problems))
    return result


def load_queues(path: Path) -> Queues:
    """flows/queues.yaml: the queues escalations may name (an absent file means none)."""
    return _load_model(path, Queues) if path.exists() else Queues(queues={})


def load_personas(directory: Path, webhooks_allowed: list[str] | None = None) -> dict[str, Persona]:
    """flows/personas/*.yaml, each named as its file; all problems at once. With `webhooks_allowed`,
    a tool whose URL it does not allow is a problem too (persona workers re-read these files per call)."""
    personas: dict[str, Persona] = {}
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        try:
            persona = _load_model(path, Persona)
        except FlowError as exc:
            problems += exc.problems
            continue
        if persona.name != path.stem:
            problems.append(Problem(str(path), 1, 1,
                                    f"persona '{persona.name}' must be in personas/{persona.name}.yaml"))
            continue
        personas[persona.name] = persona
    for name, persona in personas.items():
        for target in persona.handoffs:
            if target not in personas:
                problems.append(Problem(str(directory / f"{name}.yaml"), 1, 1,
                                        f"hand-off to unknown persona '{target}'"))
        for tool in persona.tools:
            if webhooks_allowed is not None and not url_allowed(tool.url, webhooks_allowed):
                problems.append(Problem(str(directory / f"{name}.yaml"), 1, 1,
                                        f"tool '{tool.name}' URL {tool.url} is not allowed "
                                        "(webhooks.allowed in appliance.yaml)"))
    if problems:
        raise FlowError(_sorted(problems))
    return personas


def _policy(directory: Path, webhooks_allowed: list[str] | None,
            transfers_allowed: list[str] | None) -> FlowContext:
    """The allow-lists given, else the appliance's defaults (FlowContext's)."""
    context = FlowContext(directory=directory)
    if webhooks_allowed is not None:
        context.webhooks_allowed = list(webhooks_allowed)
    if transfers_allowed is not None:
        context.transfers_allowed = list(transfers_allowed)
    return context


def context_for(directory: Path, webhooks_allowed: list[str] | None = None,
                transfers_allowed: list[str] | None = None) -> FlowContext:
    problems: list[Problem] = []
    queues: set[str] = set()
    personas: dict[str, Persona] = {}
    policy = _policy(directory, webhooks_allowed, transfers_allowed)
    try:
        loaded = load_queues(directory / QUEUES_FILE).queues
        queues = set(loaded)
        for name, queue in loaded.items():
            # The box dials these itself: the same allow-list as any transfer (toll fraud).
            problems += [Problem(str(directory / QUEUES_FILE), 1, 1, f"queue '{name}': SIP member {uri} is not "
                                 "allowed (transfers.allowed in appliance.yaml)")
                         for uri in queue.sip_members if not destination_allowed(uri, policy.transfers_allowed)]
    except FlowError as exc:
        problems += exc.problems
    try:
        personas = load_personas(directory / PERSONAS_DIR, policy.webhooks_allowed)
    except FlowError as exc:
        problems += exc.problems
    if problems:
        raise FlowError(_sorted(problems))
    policy.queues = queues
    policy.personas = set(personas)
    return policy


def flow_files(directory: Path) -> list[Path]:
    return [p for p in sorted(directory.glob("*.yaml")) if p.name != QUEUES_FILE]


def load_dir(directory: Path, webhooks_allowed: list[str] | None = None,
             transfers_allowed: list[str] | None = None) -> dict[str, LoadedFlow]:
    """Every flow in `directory`, all or nothing: one broken file fails the whole load."""
    flows: dict[str, LoadedFlow] = {}
    problems: list[Problem] = []
    try:
        context = context_for(directory, webhooks_allowed, transfers_allowed)
    except FlowError as exc:
        problems += exc.problems
        context = _policy(directory, webhooks_allowed, transfers_allowed)
    numbers: dict[str, str] = {}
    for path in flow_files(directory):
        try:
            loaded = load_file(path, context)
        except FlowError as exc:
            problems += exc.problems
            continue
        if loaded.flow.name in flows:
            problems.append(Problem(str(path), 1, 1,
                                    f"flow name '{loaded.flow.name}' is also used by {flows[loaded.flow.name].file}"))
            continue
        for number in loaded.flow.numbers:
            if number in numbers:
                problems.append(Problem(str(path), 1, 1,
                                        f"number {number} is also answered by flow '{numbers[number]}'"))
            numbers[number] = loaded.flow.name
        flows[loaded.flow.name] = loaded
    if problems:
        raise FlowError(_sorted(problems))
    return flows
