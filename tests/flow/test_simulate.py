"""Text calls through flows/support.yaml on a virtual clock: keys, speech, silences, voicemail, queues, transfers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config
from appliance.flow.engine import WebhookDone
from appliance.flow.loader import LoadedFlow, context_for, load_dir, load_file
from appliance.flow.simulate import Simulation

ROOT = Path(__file__).resolve().parents[2]
OPEN = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)  # a Tuesday, 10:00 in New York
CLOSED = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)  # 22:00 the evening before

MENU = ("For billing, press 1 or say billing. For technical support, press 2 or say technical support. "
        "To leave a message, press 3.")
VOICEMAIL_PROMPT = "Please leave your name, number and a short message after the tone. Press pound when you are done."
THANKS = "Thank you. We will call you back. Goodbye."


@pytest.fixture(scope="module")
def support() -> LoadedFlow:
    return load_dir(ROOT / "flows", Config().webhooks.allowed)["support"]


async def call(loaded: LoadedFlow, *lines: str, now: dt.datetime = OPEN, **options: Any) -> Simulation:
    sim = Simulation(loaded, now=now, **options)
    await sim.start()
    for line in lines:
        assert not sim.finished, f"the call ended before {line!r}"
        await sim.line(line)
    return sim


def crm(reply: dict[str, Any]):
    """The account system the support flow asks, answering every lookup the same way."""
    async def webhook(url: str, payload: dict[str, Any], timeout: float) -> WebhookDone:
        return WebhookDone(ok=True, data=reply)
    return webhook


async def test_dtmf_path_to_an_account_with_a_balance(support: LoadedFlow):
    sim = await call(support, "#1", "#12345", "#", webhook=crm({"customer_name": "Ada", "balance": 42}),
                     variables={"caller": "+15550100"})
    assert sim.steps == ["check_hours", "welcome", "main_menu", "ask_account", "lookup", "route_account",
                         "balance_due", "billing_queue"]
    assert sim.heard == ["Welcome to Acme support.", MENU, "Please enter or say your account number, then press pound.",
                         "Hello Ada. Your balance is 42 dollars.", "Please hold for a billing specialist.",
                         "[hold music]"]
    assert sim.webhook_calls[0].payload == {"account": "12345", "caller": "+15550100"}
    assert sim.outcome == "escalated:billing" and not sim.finished  # waiting in the queue


async def test_max_digits_end_the_gather_without_pound(support: LoadedFlow):
    sim = await call(support, "#1", "#123456789", webhook=crm({"customer_name": "Bob", "balance": 0}))
    assert sim.engine.variables["account"] == "123456"
    assert sim.heard[-1] == "Hello Bob. You have nothing to pay. Goodbye."
    assert sim.finished and sim.outcome == "hangup"


async def test_speech_picks_the_menu_choice_and_spoken_digits_fill_the_gather(support: LoadedFlow):
    sim = await call(support, "I need to pay my bill", "it is four four two one",
                     webhook=crm({"customer_name": "", "balance": 0}))
    assert sim.step == "ask_account"  # a number read out may go on after a pause
    await sim.line("silence")
    assert sim.engine.variables["account"] == "4421"
    assert sim.steps[-3:] == ["route_account", "unknown_account", "billing_queue"]
    # speaking takes virtual time, 0.4 s a word, then the gather's digit pause
    assert sim.elapsed == pytest.approx(0.4 * 6 + 0.4 * 6 + 2.0)


async def test_silence_replays_the_menu_then_takes_a_message(support: LoadedFlow):
    sim = await call(support, "silence")
    assert sim.elapsed == 5.0 and sim.heard.count(MENU) == 2  # one retry
    await sim.line("silence")
    assert sim.elapsed == 10.0
    assert sim.step == "take_message" and sim.heard[-2:] == [VOICEMAIL_PROMPT, "[beep]"]


async def test_a_short_silence_fires_no_timer(support: LoadedFlow):
    sim = await call(support, "silence 4.9")
    assert sim.step == "main_menu" and sim.heard.count(MENU) == 1
    await sim.line("silence 0.1")
    assert sim.heard.count(MENU) == 2


async def test_a_wrong_choice_twice_goes_to_technical_support(support: LoadedFlow):
    sim = await call(support, "bananas", "#9")
    assert sim.heard.count("Sorry, that is not an option. " + MENU) == 1
    assert sim.step == "technical_queue"


async def test_too_few_digits_then_silence_retry_then_the_billing_queue(support: LoadedFlow):
    sim = await call(support, "#1", "#12#")  # four digits at least: a wrong entry, asked again
    assert sim.heard.count("Please enter or say your account number, then press pound.") == 2
    await sim.line("silence 6")
    assert sim.step == "billing_queue" and sim.webhook_calls == []
    assert sim.engine.variables["account"] == ""


async def test_voicemail_ended_by_pound(support: LoadedFlow):
    sim = await call(support, "#3", "this is Ada calling", "#")
    assert sim.finished and sim.outcome == "voicemail"
    assert sim.engine.variables["voicemail_seconds"] == pytest.approx(1.6)  # four words
    assert sim.heard[-3:] == [VOICEMAIL_PROMPT, "[beep]", THANKS]
    assert sim.steps[-3:] == ["take_message", "message_thanks", "bye"]


async def test_voicemail_ended_by_its_maximum_length(support: LoadedFlow):
    sim = await call(support, "#3", "silence 75")
    assert sim.finished and sim.outcome == "voicemail"
    assert sim.engine.variables["voicemail_seconds"] == 60.0
    assert sim.elapsed == 75.0 and sim.heard[-1] == THANKS


async def test_voicemail_ended_by_hanging_up_is_kept(support: LoadedFlow):
    sim = await call(support, "#3", "hello there", "hangup")
    assert sim.caller_hung_up and sim.finished
    assert sim.outcome == "voicemail"
    assert sim.engine.variables["voicemail_seconds"] == pytest.approx(0.8)


@pytest.mark.parametrize("lines, step, elapsed", [
    (("#3", "silence"), "bye", 60.0),  # the voicemail's max length
    (("technical support", "silence"), "take_message", 90.8),  # the queue's max_wait
])
async def test_a_bare_silence_waits_for_what_the_flow_waits_for(support: LoadedFlow, lines, step, elapsed):
    sim = await call(support, *lines)
    assert (sim.step, sim.elapsed) == (step, pytest.approx(elapsed))


async def test_escalation_overflows_after_max_wait_virtual_seconds(support: LoadedFlow):
    sim = await call(support, "technical support")
    assert sim.elapsed == pytest.approx(0.8)
    assert sim.heard[-2:] == ["Please hold for technical support.", "[hold music]"]
    await sim.line("silence 89")
    assert sim.step == "technical_queue"
    await sim.line("silence 1")
    assert sim.step == "take_message" and sim.elapsed == pytest.approx(90.8)
    assert sim.heard[-3:] == ["All our agents are busy.", VOICEMAIL_PROMPT, "[beep]"]
    await sim.line("#")  # nothing said: an empty message
    assert sim.outcome == "voicemail" and sim.engine.variables["voicemail_seconds"] == 0.0


async def test_after_hours_and_holidays_go_to_voicemail(support: LoadedFlow):
    for now in (CLOSED, dt.datetime(2026, 12, 25, 15, 0, tzinfo=dt.UTC)):
        sim = await call(support, now=now)
        assert sim.steps[:3] == ["check_hours", "after_hours", "take_message"]
        assert sim.engine.variables["open"] is False


async def test_the_clock_moves_with_the_call(support: LoadedFlow):
    # 17:59:50 in New York: open when the call starts; a late call still gets the menu
    sim = await call(support, "silence 30", now=dt.datetime(2026, 11, 24, 22, 59, 50, tzinfo=dt.UTC))
    assert sim.steps[:2] == ["check_hours", "welcome"]
    assert sim.engine.clock() == dt.datetime(2026, 11, 24, 23, 0, 20, tzinfo=dt.UTC)


TRANSFER_FLOW = """\
name: reception
entry: ask
steps:
  ask:
    menu:
      prompt: Press 0 for reception.
      options: {"0": to_reception}
  to_reception:
    transfer:
      to: sip:reception@pbx.example.com
      announcement: Transferring you to reception.
      on_error: busy
  busy:
    say: "Reception is busy ({transfer_error}). Goodbye."
    next: bye
  bye:
    hangup:
"""


@pytest.fixture
def reception(tmp_path: Path) -> LoadedFlow:
    (tmp_path / "reception.yaml").write_text(TRANSFER_FLOW)
    return load_file(tmp_path / "reception.yaml", context_for(tmp_path, transfers_allowed=["sip:*@pbx.example.com"]))


async def test_transfer_that_works_ends_the_flow_transferred(reception: LoadedFlow):
    sim = await call(reception, "#0")
    assert sim.heard == ["Press 0 for reception.", "Transferring you to reception."]
    assert sim.finished and sim.outcome == "transferred:sip:reception@pbx.example.com"


async def test_transfer_that_fails_takes_on_error(reception: LoadedFlow):
    sim = await call(reception, "#0", transfer_ok=False)
    assert sim.heard[-1] == "Reception is busy (503 Busy). Goodbye."
    assert sim.steps[-2:] == ["busy", "bye"] and sim.outcome == "hangup"


async def test_bridge_transfer_rings_then_the_flow_is_over_without_hanging_up(tmp_path: Path):
    (tmp_path / "reception.yaml").write_text(
        TRANSFER_FLOW.replace("      on_error: busy", "      mode: bridge\n      on_error: busy"))
    loaded = load_file(tmp_path / "reception.yaml", context_for(tmp_path, transfers_allowed=["sip:*@pbx.example.com"]))
    sim = await call(loaded, "#0")
    assert sim.heard == ["Press 0 for reception.", "Transferring you to reception.", "[ringback]"]
    assert sim.finished and sim.outcome == "transferred:sip:reception@pbx.example.com"

    busy = await call(loaded, "#0", transfer_ok=False)
    assert busy.heard[-2:] == ["[ringback]", "Reception is busy (486 Busy Here). Goodbye."]
    assert busy.outcome == "hangup"
