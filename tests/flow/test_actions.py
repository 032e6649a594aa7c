"""The one action interface: the simulator, like the call runner, refuses an action it has no handler for."""

from __future__ import annotations

import pytest

from appliance.flow import engine as fe
from appliance.flow.actions import ACTION_TYPES, UnknownAction
from appliance.flow.loader import LoadedFlow, parse
from appliance.flow.simulate import Simulation

FLOW = """\
name: hello
entry: hi
steps:
  hi:
    say: Hello.
    next: bye
  bye:
    hangup:
"""


def _loaded() -> LoadedFlow:
    flow, problems = parse(FLOW, "hello.yaml")
    assert flow is not None, problems
    return LoadedFlow(flow, "hello.yaml", "test")


def test_every_engine_action_is_in_the_interface() -> None:
    assert fe.Say in ACTION_TYPES and fe.Hangup in ACTION_TYPES and len(ACTION_TYPES) == 18


async def test_the_simulator_fails_loudly_on_an_unknown_action() -> None:
    sim = Simulation(_loaded())

    class Teleport:  # an action the engine grew without the simulator learning it
        pass

    with pytest.raises(UnknownAction, match="simulator has no handler for Teleport"):
        await sim._run([Teleport()])  # type: ignore[list-item]


async def test_the_engine_tells_the_simulator_which_timer_counts() -> None:
    sim = Simulation(_loaded())
    await sim.start()
    assert sim.heard == ["Hello."] and sim.engine.awaited_timer is None and sim.finished
