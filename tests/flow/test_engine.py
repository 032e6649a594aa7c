"""The flow engine as a caller meets it: events in (prompt finished, key pressed, timer fired), actions out."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from appliance.flow.engine import (
    MAX_STEPS_PER_EVENT,
    Digit,
    EnterStep,
    FlowEngine,
    Hangup,
    PlaybackDone,
    Say,
    SetVariable,
    StartTimer,
    StopSpeaking,
    TimerFired,
    Transfer,
    TransferDone,
)
from appliance.flow.loader import load_file, parse
from appliance.flow.schema import Flow

DEFAULT_FLOW = Path(__file__).resolve().parents[2] / "flows" / "default.yaml"

GREETING = "Welcome to Switchboard."
MENU = "For sales, press 1. For support, press 2."
INVALID = "Sorry, that is not an option."
SALES = "Routing you to sales. Goodbye."
SUPPORT = "Routing you to support. Goodbye."
GOODBYE = "We did not get your choice. Goodbye."


def _unchecked_flow(text: str) -> Flow:
    """A flow that passes the schema but not the checker: the engine must still cope."""
    import yaml

    return Flow.model_validate(yaml.safe_load(dedent(text)))


def _flow(text: str) -> Flow:
    flow, problems = parse(dedent(text), "test.yaml")
    assert problems == [], [str(p) for p in problems]
    assert flow is not None
    return flow


@pytest.fixture
def engine() -> FlowEngine:
    return FlowEngine(load_file(DEFAULT_FLOW).flow)


def _at_menu(engine: FlowEngine) -> int:
    """Play the greeting and the menu prompt out; returns the id of the menu's timer."""
    engine.start()
    engine.handle(PlaybackDone())
    (timer,) = engine.handle(PlaybackDone())
    assert isinstance(timer, StartTimer)
    return timer.timer


def test_greeting_then_menu_then_sales_then_hangup(engine: FlowEngine):
    assert engine.start() == [EnterStep("welcome", "say"), Say(GREETING, interruptible=False)]
    assert engine.handle(PlaybackDone()) == [EnterStep("main_menu", "menu"), Say(MENU, interruptible=True)]
    assert engine.handle(PlaybackDone()) == [StartTimer(1, 5.0)]
    assert engine.handle(Digit("1")) == [EnterStep("sales", "say"), Say(SALES)]
    assert engine.handle(PlaybackDone()) == [EnterStep("done", "hangup"), Hangup("flow-hangup")]
    assert engine.finished
    # A finished call ignores everything that still arrives.
    assert engine.handle(Digit("2")) == []
    assert engine.handle(PlaybackDone()) == []
    assert engine.handle(TimerFired(1)) == []


def test_digit_during_greeting_is_ignored(engine: FlowEngine):
    engine.start()
    assert engine.handle(Digit("1")) == []
    assert engine.step_id == "welcome"


def test_digit_during_menu_prompt_stops_speaking_first(engine: FlowEngine):
    engine.start()
    engine.handle(PlaybackDone())
    actions = engine.handle(Digit("2"))
    assert actions == [StopSpeaking(), EnterStep("support", "say"), Say(SUPPORT)]
    assert engine.step_id == "support"


def test_wrong_digit_replays_invalid_prompt_then_no_match(engine: FlowEngine):
    timer = _at_menu(engine)
    for _attempt in range(2):  # retries: 2
        assert engine.handle(Digit("9")) == [Say(f"{INVALID} {MENU}", interruptible=True)]
        (restart,) = engine.handle(PlaybackDone())
        assert isinstance(restart, StartTimer) and restart.timer != timer
        timer = restart.timer
    assert engine.handle(Digit("9")) == [EnterStep("goodbye", "say"), Say(GOODBYE)]
    assert engine.handle(PlaybackDone()) == [EnterStep("done", "hangup"), Hangup("flow-hangup")]


def test_wrong_digit_during_invalid_prompt_stops_it(engine: FlowEngine):
    _at_menu(engine)
    engine.handle(Digit("7"))
    assert engine.handle(Digit("1")) == [StopSpeaking(), EnterStep("sales", "say"), Say(SALES)]


def test_timeouts_replay_the_prompt_then_no_input(engine: FlowEngine):
    timer = _at_menu(engine)
    for _ in range(2):
        assert engine.handle(TimerFired(timer)) == [Say(MENU, interruptible=True)]
        (restart,) = engine.handle(PlaybackDone())
        assert restart.seconds == 5.0
        timer = restart.timer
    assert engine.handle(TimerFired(timer)) == [EnterStep("goodbye", "say"), Say(GOODBYE)]


def test_stale_timer_is_ignored(engine: FlowEngine):
    first = _at_menu(engine)
    engine.handle(TimerFired(first))
    (second,) = engine.handle(PlaybackDone())
    assert engine.handle(TimerFired(first)) == []
    assert engine.handle(TimerFired(second.timer + 100)) == []
    assert engine.handle(TimerFired(second.timer)) == [Say(MENU, interruptible=True)]


def test_timer_is_disarmed_by_a_key(engine: FlowEngine):
    timer = _at_menu(engine)
    engine.handle(Digit("9"))  # wrong key: invalid prompt plays
    assert engine.handle(TimerFired(timer)) == []


def test_menu_without_no_match_ends_the_flow():
    flow = _flow(
        """\
        name: m
        entry: menu
        steps:
          menu:
            menu:
              prompt: Press 1.
              options: {"1": bye}
              retries: 0
          bye:
            hangup:
        """
    )
    engine = FlowEngine(flow)
    engine.start()
    engine.handle(PlaybackDone())
    assert engine.handle(Digit("5")) == [Hangup("flow-end")]
    assert engine.finished


GATHER = """\
    name: g
    entry: ask
    steps:
      ask:
        gather:
          prompt: Enter your PIN, then press hash.
          into: pin
          max_digits: 4
          timeout: 3
          no_input: silent
        next: confirm
      confirm:
        say: You entered {pin}.
        next: bye
      silent:
        say: We heard nothing.
        next: bye
      bye:
        hangup:
    """


@pytest.fixture
def gather() -> FlowEngine:
    engine = FlowEngine(_flow(GATHER))
    assert engine.start() == [EnterStep("ask", "gather"), Say("Enter your PIN, then press hash.", interruptible=True)]
    return engine


def test_gather_stops_at_max_digits(gather: FlowEngine):
    assert gather.handle(PlaybackDone()) == [StartTimer(1, 3.0)]
    for digit, timer in zip("123", (2, 3, 4), strict=True):
        assert gather.handle(Digit(digit)) == [StartTimer(timer, 3.0)]
    assert gather.handle(Digit("4")) == [
        SetVariable("pin", "1234"),
        EnterStep("confirm", "say"),
        Say("You entered 1234."),
    ]
    assert gather.variables["pin"] == "1234"


def test_gather_digits_overtake_the_prompt(gather: FlowEngine):
    assert gather.handle(Digit("7")) == [StopSpeaking(), StartTimer(1, 3.0)]


def test_gather_terminator_ends_early(gather: FlowEngine):
    gather.handle(PlaybackDone())
    gather.handle(Digit("4"))
    gather.handle(Digit("2"))
    actions = gather.handle(Digit("#"))
    assert actions[0] == SetVariable("pin", "42")
    assert Say("You entered 42.") in actions


def test_gather_timeout_with_partial_digits_keeps_them(gather: FlowEngine):
    gather.handle(PlaybackDone())
    (timer,) = gather.handle(Digit("9"))
    assert gather.handle(TimerFired(timer.timer - 1)) == []  # the timer armed before the key
    actions = gather.handle(TimerFired(timer.timer))
    assert actions[0] == SetVariable("pin", "9")
    assert actions[-1] == Say("You entered 9.")


def test_gather_timeout_without_digits_goes_to_no_input(gather: FlowEngine):
    (timer,) = gather.handle(PlaybackDone())
    assert gather.handle(TimerFired(timer.timer)) == [EnterStep("silent", "say"), Say("We heard nothing.")]
    assert "pin" not in gather.variables


def test_gather_without_prompt_arms_its_timer_at_once():
    flow = _flow(
        """\
        name: g
        entry: ask
        steps:
          ask:
            gather: {into: code, max_digits: 2, terminator: null}
            next: bye
          bye:
            hangup: {reason: done}
        """
    )
    engine = FlowEngine(flow)
    assert engine.start() == [EnterStep("ask", "gather"), StartTimer(1, 5.0)]
    engine.handle(Digit("#"))  # no terminator: '#' is a digit like any other
    assert engine.handle(Digit("5")) == [SetVariable("code", "#5"), EnterStep("bye", "hangup"), Hangup("done")]


def test_goto_loop_hangs_up_with_flow_loop():
    flow = _flow(
        """\
        name: loop
        entry: a
        steps:
          a:
            goto: b
          b:
            goto: a
        """
    )
    actions = FlowEngine(flow).start()
    assert actions[-1] == Hangup("flow-loop")
    entered = [a for a in actions if isinstance(a, EnterStep)]
    assert len(entered) == MAX_STEPS_PER_EVENT
    assert entered[:3] == [EnterStep("a", "goto"), EnterStep("b", "goto"), EnterStep("a", "goto")]


def test_goto_chain_reaches_its_step():
    flow = _flow(
        """\
        name: chain
        entry: a
        steps:
          a: {goto: b}
          b: {goto: c}
          c: {say: Here.}
        """
    )
    engine = FlowEngine(flow)
    assert engine.start() == [EnterStep("a", "goto"), EnterStep("b", "goto"), EnterStep("c", "say"), Say("Here.")]
    assert engine.handle(PlaybackDone()) == [Hangup("flow-end")]


def test_variables_render_in_say_and_unknown_names_stay_visible():
    flow = _unchecked_flow(
        """\
        name: v
        entry: hi
        variables: {company: Acme, hours: 9}
        steps:
          hi:
            say: Welcome to {company}, open from {hours}. Hello {caller}, your {agent_name} is busy.
        """
    )
    engine = FlowEngine(flow, variables={"caller": "Ada"})
    (_, say) = engine.start()
    assert say == Say("Welcome to Acme, open from 9. Hello Ada, your {agent_name} is busy.")


def test_call_variables_override_flow_variables():
    flow = _flow(
        """\
        name: v
        entry: hi
        variables: {company: Acme}
        steps:
          hi: {say: "{company}"}
        """
    )
    (_, say) = FlowEngine(flow, variables={"company": "Globex"}).start()
    assert say.text == "Globex"


@pytest.mark.parametrize("text", ["Odd {brace", "Positional {0}", "Attr {who.name}", "}{"])
def test_say_text_that_is_not_a_template_is_spoken_as_written(text: str):
    flow = _unchecked_flow(
        f"""\
        name: v
        entry: hi
        steps:
          hi: {{say: "{text}"}}
        """
    )
    (_, say) = FlowEngine(flow).start()
    assert say.text == text


BRIDGE_FLOW = """\
name: desk
entry: to_desk
steps:
  to_desk:
    transfer: {to: "sip:desk@pbx.example.com", mode: bridge, timeout: 12, on_error: sorry}
  sorry:
    say: "Busy: {transfer_error}"
    next: bye
  bye:
    hangup:
"""


def test_answered_bridge_ends_the_flow_but_not_the_call():
    engine = FlowEngine(_unchecked_flow(BRIDGE_FLOW))
    assert engine.start() == [EnterStep("to_desk", "transfer"), Transfer("sip:desk@pbx.example.com", "bridge", 12.0)]
    assert engine.handle(Digit("1")) == []  # keys while it rings change nothing
    # No Hangup: the caller stays on the line with the destination.
    assert engine.handle(TransferDone(True)) == []
    assert engine.finished and engine.outcome == "transferred:sip:desk@pbx.example.com"


def test_failed_bridge_takes_on_error_with_the_reason():
    engine = FlowEngine(_unchecked_flow(BRIDGE_FLOW))
    engine.start()
    actions = engine.handle(TransferDone(False, "408 no answer in 12 s"))
    assert actions[:3] == [SetVariable("transfer_error", "408 no answer in 12 s"), EnterStep("sorry", "say"),
                           Say("Busy: 408 no answer in 12 s")]
    assert not engine.finished


def test_refer_that_works_hangs_up_the_flow_side():
    engine = FlowEngine(_unchecked_flow(BRIDGE_FLOW.replace("mode: bridge", "mode: refer")))
    engine.start()
    assert engine.handle(TransferDone(True)) == [Hangup("transferred")]


def test_a_queues_max_wait_caps_the_escalate_steps() -> None:
    flow = Flow.model_validate({"name": "q", "entry": "wait", "steps": {
        "wait": {"escalate": {"queue": "billing", "announcement": None, "max_wait": 60, "overflow": "bye"}},
        "bye": {"hangup": {}}}})
    capped = FlowEngine(flow, queue_max_wait={"billing": 20.0}).start()
    assert [a for a in capped if isinstance(a, StartTimer)] == [StartTimer(1, 20.0)]
    uncapped = FlowEngine(flow, queue_max_wait={"technical": 5.0}).start()
    assert [a for a in uncapped if isinstance(a, StartTimer)] == [StartTimer(1, 60.0)]
