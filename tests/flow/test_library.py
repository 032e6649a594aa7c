"""Hot reload on a copy of flows/: a good edit swaps in a new version, a broken one changes nothing."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.flow.engine import FlowEngine, PlaybackDone, Say
from appliance.flow.library import FlowLibrary
from appliance.observability.metrics import REGISTRY
from tests.support.wait import wait_until_async

ROOT = Path(__file__).resolve().parents[2]
OLD_GREETING = "Welcome to Switchboard."
NEW_GREETING = "Welcome back to Switchboard, the new version."


def reload_errors() -> float:
    return REGISTRY.get_sample_value("switchboard_flow_reload_errors_total") or 0.0


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", directory)
    return directory


@pytest.fixture
def library(flows_dir: Path) -> FlowLibrary:
    return FlowLibrary(flows_dir, webhooks_allowed=Config().webhooks.allowed)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def greeting(library: FlowLibrary) -> str:
    loaded = library.get("default")
    assert loaded is not None
    return loaded.flow.steps["welcome"].say.text  # type: ignore[union-attr]


def test_the_library_serves_every_flow_and_the_numbers_they_declare(library: FlowLibrary, flows_dir: Path):
    assert {p.stem for p in flows_dir.glob("*.yaml")} - {"queues"} == set(library.flows)
    assert library.numbers()["200"] == "support"
    assert library.get("nope") is None


def test_reload_after_an_edit_gives_a_new_version_for_the_changed_flow_only(library: FlowLibrary, flows_dir: Path):
    before = dict(library.flows)
    edit(flows_dir / "default.yaml", OLD_GREETING, NEW_GREETING)
    assert library.reload() is True
    assert library.get("default").version != before["default"].version
    assert library.get("support").version == before["support"].version
    assert greeting(library) == NEW_GREETING


def test_reload_without_an_edit_keeps_every_version(library: FlowLibrary):
    before = {name: loaded.version for name, loaded in library.flows.items()}
    assert library.reload() is True
    assert {name: loaded.version for name, loaded in library.flows.items()} == before


def test_a_new_flow_file_is_served_after_reload(library: FlowLibrary, flows_dir: Path):
    (flows_dir / "sales.yaml").write_text("name: sales\nnumbers: ['3999']\nentry: bye\nsteps:\n  bye:\n    hangup:\n")
    assert library.reload() is True
    assert library.get("sales") is not None and library.numbers()["3999"] == "sales"


def test_a_broken_edit_is_refused_counted_and_logged_and_the_last_good_flows_keep_serving(
        library: FlowLibrary, flows_dir: Path, caplog: pytest.LogCaptureFixture):
    before = dict(library.flows)
    errors = reload_errors()
    edit(flows_dir / "default.yaml", "next: main_menu", "next: main_mneu")
    edit(flows_dir / "support.yaml", "queue: billing", "queue: bililng")
    with caplog.at_level(logging.ERROR, logger="appliance.flow.library"):
        assert library.reload() is False
    assert reload_errors() == errors + 1
    assert all(library.flows[name] is before[name] for name in before)  # the very same objects
    assert len(library.flows) == len(before)
    problems = [r.fields["problem"] for r in caplog.records if r.getMessage() == "flow edit rejected"]
    default, support = flows_dir / "default.yaml", flows_dir / "support.yaml"
    assert any(p.startswith(f"{default}:8:11: step 'main_mneu' does not exist") for p in problems), problems
    assert any(p.startswith(f"{support}:") and "queue 'bililng' is not defined" in p for p in problems), problems


def test_a_broken_queues_yaml_is_refused_too(library: FlowLibrary, flows_dir: Path):
    errors = reload_errors()
    (flows_dir / "queues.yaml").write_text("queues:\n  billing: [\n")
    assert library.reload() is False
    assert reload_errors() == errors + 1
    assert library.get("support") is not None


def test_fixing_the_edit_is_picked_up_by_the_next_reload(library: FlowLibrary, flows_dir: Path):
    edit(flows_dir / "default.yaml", "next: main_menu", "next: main_mneu")
    assert library.reload() is False
    edit(flows_dir / "default.yaml", "next: main_mneu", "next: main_menu")
    edit(flows_dir / "default.yaml", OLD_GREETING, NEW_GREETING)
    assert library.reload() is True and greeting(library) == NEW_GREETING


def test_a_call_in_progress_keeps_the_version_it_started_with(library: FlowLibrary, flows_dir: Path):
    held = library.get("default")
    engine = FlowEngine(held.flow)
    assert engine.start()[-1] == Say(OLD_GREETING)
    edit(flows_dir / "default.yaml", OLD_GREETING, NEW_GREETING)
    edit(flows_dir / "default.yaml", "For sales, press 1.", "For sales, press 7.")
    assert library.reload() is True
    # the held LoadedFlow did not change under the call
    assert held.flow.steps["welcome"].say.text == OLD_GREETING
    assert engine.handle(PlaybackDone())[-1] == Say("For sales, press 1. For support, press 2.", interruptible=True)
    # a new call gets the new version
    assert FlowEngine(library.get("default").flow).start()[-1] == Say(NEW_GREETING)


async def test_watching_picks_an_edit_up_by_itself(library: FlowLibrary, flows_dir: Path):
    version = library.get("default").version
    library.start_watching(0.1)
    try:
        edit(flows_dir / "default.yaml", OLD_GREETING, NEW_GREETING)
        assert await wait_until_async(lambda: library.get("default").version != version, "the edit picked up",
                                     timeout=5.0, interval=0.05)
        assert greeting(library) == NEW_GREETING
        # a broken edit while watching: counted, and the good version keeps serving
        errors = reload_errors()
        edit(flows_dir / "default.yaml", "next: main_menu", "next: nowhere")
        assert await wait_until_async(lambda: reload_errors() == errors + 1, "the broken edit counted",
                                     timeout=5.0, interval=0.05)
        assert greeting(library) == NEW_GREETING
    finally:
        await library.stop_watching()


async def test_watching_with_interval_zero_does_nothing(library: FlowLibrary, flows_dir: Path):
    library.start_watching(0)
    edit(flows_dir / "default.yaml", OLD_GREETING, NEW_GREETING)
    await asyncio.sleep(0.3)
    assert greeting(library) == OLD_GREETING
    await library.stop_watching()


def test_an_edit_that_nests_a_condition_too_deeply_is_refused_like_any_broken_edit(library: FlowLibrary,
                                                                                  flows_dir: Path):
    edit(flows_dir / "support.yaml", "when: balance > 0", "when: " + "not " * 1500 + "balance")
    assert library.reload() is False
