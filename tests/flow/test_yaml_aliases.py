"""A few hundred bytes of YAML aliases ("billion laughs") must not stall the box: aliases are refused
with file:line:col in flows, queues.yaml and personas, and a reload runs off the event loop
that drives the 20 ms audio clock."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config
from appliance.core.errors import FlowError
from appliance.flow.library import FlowLibrary
from appliance.flow.loader import load_dir, load_personas, load_queues

ROOT = Path(__file__).resolve().parents[2]


def bomb(levels: int = 6) -> str:
    """9**levels scalars once expanded (531441 from 6 lines); a few hundred bytes as written."""
    lines = ["  l0: &l0 [ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    lines += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_in_a_flow_is_refused_at_its_first_anchor(tmp_path: Path):
    flows = tmp_path / "flows"
    flows.mkdir()
    text = "name: t\nentry: bye\nvariables:\n" + bomb() + "steps:\n  bye:\n    hangup:\n"
    assert len(text) < 600
    (flows / "t.yaml").write_text(text)
    with pytest.raises(FlowError) as caught:
        load_dir(flows)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.col) == (str(flows / "t.yaml"), 4, 7)  # `&l0`
    assert problem.message == "YAML aliases are not allowed (anchor &l0); write the value out"


def test_a_single_alias_is_refused_where_it_is_used(tmp_path: Path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "t.yaml").write_text("name: t\nentry: bye\nsteps:\n  bye:\n    hangup:\n      reason: *r\n")
    with pytest.raises(FlowError) as caught:
        load_dir(flows)
    [problem] = caught.value.problems
    assert (problem.line, problem.col) == (6, 15)
    assert problem.message == "YAML aliases are not allowed (*r); write the value out"


def test_an_alias_bomb_in_queues_yaml_is_refused(tmp_path: Path):
    path = tmp_path / "queues.yaml"
    path.write_text("queues:\n  billing:\n    description: x\nextra:\n" + bomb())
    with pytest.raises(FlowError) as caught:
        load_queues(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (str(path), 5)
    assert "YAML aliases are not allowed" in problem.message


def test_an_alias_bomb_in_a_persona_is_refused(tmp_path: Path):
    personas = tmp_path / "personas"
    personas.mkdir()
    path = personas / "billing.yaml"
    path.write_text("name: billing\ninstructions: help\nscripted:\n  intents: {}\nx:\n" + bomb())
    with pytest.raises(FlowError) as caught:
        load_personas(personas)
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (str(path), 6)
    assert "YAML aliases are not allowed" in problem.message


# --- the reload does not run on the event loop

class Library(FlowLibrary):
    """The real library, noting which thread each load after start-up runs on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.threads: list[int] = []
        super().__init__(*args, **kwargs)
        self.threads.clear()  # start-up loads before the loop serves calls

    def _load(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.get_ident())
        return super()._load(*args, **kwargs)


async def test_the_watcher_loads_off_the_event_loop_and_swaps_on_it(tmp_path: Path):
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    library = Library(flows, webhooks_allowed=Config().webhooks.allowed)
    version = library.get("default").version
    library.start_watching(0.05)
    try:
        path = flows / "default.yaml"
        path.write_text(path.read_text().replace("Welcome to Switchboard.", "Welcome back."))
        for _ in range(100):
            if library.get("default").version != version:
                break
            await asyncio.sleep(0.05)
        assert library.get("default").version != version
        assert library.threads and threading.get_ident() not in library.threads
    finally:
        await library.stop_watching()
