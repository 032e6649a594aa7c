"""A real call walks an example flow exactly as its text simulation does.

Each case is one call through the edge: keys from sipp (Debian's RFC 4733 captures), speech
from baresip (espeak-ng over G.722), silence, wrong keys. The caller acts on cue, when the
call's events show the flow waiting for it, so a slow machine changes the timing and not
the path. The same caller is then fed to the simulator and the two walks must agree: the
steps, what the box said, the webhooks, queues and variables, the voicemail and the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import shutil
import threading
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import yaml
from aiohttp import web

from appliance.flow.engine import WebhookDone
from appliance.flow.loader import LoadedFlow, load_dir
from appliance.flow.schema import EscalateStep, HangupStep
from appliance.flow.simulate import Simulation
from tests.support import baresip
from tests.support.appliance import ROOT, ApplianceProcess
from tests.support.http_server import LoopbackServer
from tests.support.ports import free_port_block
from tests.support.sipp.process import run_sipp, send_cue
from tests.support.sipp.scenarios import (
    G711A_SPEECH,
    Cue,
    cued_caller_scenario,
    cued_hangup_scenario,
    keys,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip

NUMBERS = {"100": "default", "200": "support", "201": "support_closed"}
# Shorter waits than the shipped flows so that each call lasts well under a minute.
MENU_TIMEOUT_S = 3
QUEUE_MAX_WAIT_S = 3
MESSAGE_MAX_S = 3  # the open line's voicemail ends by itself
CLOSED_MESSAGE_MAX_S = 15  # after hours the caller ends the message with # long before this
ACCOUNT = {"customer_name": "Ada", "balance": 42}  # what the CRM answers for any account
BEEP = "recording_started"  # a cue on the voicemail beep rather than on a step
CALL_LIMIT_S = 90


# --- the line: the example flows (edited copies), a CRM, the appliance


class AccountsServer:
    """The CRM the support flow looks accounts up in: a real HTTP server on loopback."""

    def __init__(self) -> None:
        self.http = LoopbackServer({"/accounts/lookup": self._lookup})
        self.requests: list[dict[str, Any]] = []

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        return f"{self.http.url}/accounts/lookup"

    async def _lookup(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        self.requests.append({
            "path": request.path,
            "content_type": request.content_type,
            "json": await request.json(),
        })
        return web.json_response(ACCOUNT)

    def serving(self) -> contextlib.AbstractContextManager[LoopbackServer]:
        """Serve from a thread of its own until the block ends."""
        return self.http.in_thread()

    async def simulated(self, url: str, payload: dict[str, Any], timeout: float) -> WebhookDone:
        """The same answer, for the simulation."""
        return WebhookDone(ok=True, data=dict(ACCOUNT)) if url == self.url else WebhookDone(ok=False, error="HTTP 404")


def _edit(source: Path, target: Path, edit: Any) -> None:
    flow = yaml.safe_load(source.read_text())
    edit(flow["steps"], flow)
    target.write_text(yaml.safe_dump(flow, sort_keys=False))


def copy_flows(directory: Path, lookup_url: str) -> Path:
    """The shipped flows with short waits, the CRM's address, and business hours made certain."""
    directory.mkdir()
    shutil.copy(ROOT / "flows" / "queues.yaml", directory)

    def default(steps: dict, _: dict) -> None:
        steps["main_menu"]["menu"]["timeout"] = MENU_TIMEOUT_S

    def support(steps: dict, flow: dict, closed: bool = False) -> None:
        steps["main_menu"]["menu"]["timeout"] = MENU_TIMEOUT_S
        steps["ask_account"]["gather"]["timeout"] = MENU_TIMEOUT_S
        steps["lookup"]["webhook"]["url"] = lookup_url
        for queue in ("billing_queue", "technical_queue"):
            steps[queue]["escalate"]["max_wait"] = QUEUE_MAX_WAIT_S
        steps["take_message"]["voicemail"]["max_length"] = CLOSED_MESSAGE_MAX_S if closed else MESSAGE_MAX_S
        hours = steps["check_hours"]["hours"]
        if closed:
            # A holiday today (and on either side, for a test running at midnight in New York).
            today = dt.datetime.now(ZoneInfo(hours["timezone"])).date()
            hours["holidays"] = [str(today + dt.timedelta(days=d)) for d in (-1, 0, 1)]
            flow["name"], flow["numbers"] = "support_closed", ["201"]
        else:
            hours["weekly"], hours["holidays"] = {"mon-sun": ["00:00-24:00"]}, []

    _edit(ROOT / "flows" / "default.yaml", directory / "default.yaml", default)
    _edit(ROOT / "flows" / "support.yaml", directory / "support.yaml", support)
    _edit(ROOT / "flows" / "support.yaml", directory / "support_closed.yaml",
          lambda steps, flow: support(steps, flow, closed=True))
    return directory


@dataclass
class Line:
    app: ApplianceProcess
    accounts: AccountsServer
    flows: dict[str, LoadedFlow]
    workdir: Path


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    # One appliance for the module: every case is a separate call, and starting the
    # appliance (workers, edge) costs more than most of these calls.
    root = tmp_path_factory.mktemp("line")
    accounts = AccountsServer()
    with accounts.serving():
        allowed = {"allowed": [f"http://127.0.0.1:{accounts.port}/"]}
        flows_dir = copy_flows(root / "flows", accounts.url)
        app = ApplianceProcess(root, numbers=NUMBERS, flows_dir=flows_dir, extra={"webhooks": allowed})
        try:
            app.start()
            yield Line(app, accounts, load_dir(flows_dir, webhooks_allowed=allowed["allowed"]), root)
        finally:
            app.stop()


# --- the caller, in both worlds


@dataclass(frozen=True)
class Press:
    """When `when` happens (a step is entered, or the voicemail BEEP), press `keys`.

    With `message_s`, first speak for that long (sipp's speech capture), as into a voicemail.
    """

    when: str
    keys: str
    message_s: float = 0

    def cue(self) -> Cue:
        speech = [(0, G711A_SPEECH)] if self.message_s else []
        return speech + keys(self.keys, start_ms=round(self.message_s * 1000))

    def lines(self) -> list[str]:
        return ([f"silence {self.message_s}"] if self.message_s else []) + ([f"#{self.keys}"] if self.keys else [])


@dataclass(frozen=True)
class Say:
    """When `when` happens, say `text`."""

    when: str
    text: str

    def lines(self) -> list[str]:
        return [self.text]


def _happened(events: list[dict[str, Any]], when: str) -> bool:
    return any(e["kind"] == when or (e["kind"] == "step" and e["data"]["step"] == when) for e in events)


def _new_call(app: ApplianceProcess, before: set[str], timeout: float = 15) -> dict[str, Any]:
    def answered() -> dict[str, Any] | None:
        new = [c for c in app.calls() if c["id"] not in before]
        return new[0] if new and new[0]["answered_at"] else None

    return wait_until(answered, "a new answered call", timeout, detail=app.log_tail)


def _wait_for(app: ApplianceProcess, call_id: str, when: str, timeout: float = 30) -> None:
    def reached() -> bool:
        detail = app.call(call_id)
        if _happened(detail["events"], when):
            return True
        if detail["ended_at"]:
            raise AssertionError(f"the call never reached {when!r}: {_summary(app.call(call_id)['events'])}")
        return False

    wait_until(reached, f"the call to reach {when!r}", timeout,
               detail=lambda: str(_summary(app.call(call_id)["events"])))


def _closed(app: ApplianceProcess, call_id: str, timeout: float = CALL_LIMIT_S) -> dict[str, Any]:
    def closed() -> dict[str, Any] | None:
        detail = app.call(call_id)
        return detail if detail["ended_at"] else None

    return wait_until(closed, "the call to close", timeout, interval=0.2,
                      detail=lambda: str(_summary(app.call(call_id)["events"])))


def _summary(events: list[dict[str, Any]]) -> list[str]:
    return [f"{e['kind']} {json.dumps(e['data'])}" for e in events]


def call_with_sipp(line: Line, number: str, presses: list[Press], name: str,
                   hangup_after_ms: int | None = None) -> dict[str, Any]:
    """One call from sipp, pressing keys on cue; the call's record once it is closed.

    The box hangs up, or with `hangup_after_ms` the caller does, that long after its last cue.
    """
    workdir = line.workdir / name
    workdir.mkdir()
    cues = [p.cue() for p in presses]
    if hangup_after_ms is None:
        scenario = cued_caller_scenario(workdir, cues, bye_timeout_ms=CALL_LIMIT_S * 1000)
    else:
        scenario = cued_hangup_scenario(workdir, cues, hangup_after_ms)
    before = {c["id"] for c in line.app.calls()}
    sipp_port = free_port_block(1)
    results = []
    caller = threading.Thread(target=lambda: results.append(run_sipp(
        scenario, line.app.sip_port, workdir, service=number, timeout=CALL_LIMIT_S + 10, sip_port=sipp_port)))
    caller.start()
    try:
        call = _new_call(line.app, before)
        offered = next(e for e in line.app.call(call["id"])["events"] if e["kind"] == "offered")
        for sequence, press in enumerate(presses, start=1):
            _wait_for(line.app, call["id"], press.when)
            send_cue(sipp_port, offered["data"]["sip_call_id"], sequence)
        detail = _closed(line.app, call["id"])
    finally:
        caller.join(CALL_LIMIT_S + 20)
    (result,) = results
    assert result.successful == 1, result.output
    return detail


def call_with_baresip(line: Line, number: str, callers: Sequence[Say | Press], name: str) -> dict[str, Any]:
    """One call from baresip, speaking (and pressing keys) on cue; the call's record once it is closed."""
    workdir = line.workdir / name
    workdir.mkdir()
    speech = {c: baresip.speech_wav(workdir / f"say{i}.wav", c.text, seconds=CALL_LIMIT_S + 10)
              for i, c in enumerate(callers) if isinstance(c, Say)}
    before = {c["id"] for c in line.app.calls()}
    with baresip.Softphone(workdir / "baresip", max_seconds=CALL_LIMIT_S) as phone:
        phone.dial(f"sip:{number}@127.0.0.1:{line.app.sip_port}")
        call = _new_call(line.app, before)
        for caller in callers:
            _wait_for(line.app, call["id"], caller.when)
            if isinstance(caller, Say):
                phone.say(speech[caller].path)
            else:
                assert not caller.message_s, "baresip speaks only with Say"
                phone.press(caller.keys)
        detail = _closed(line.app, call["id"])
        assert phone.wait_closed(timeout=10) != "end of file", phone.output  # the box hung up, not baresip
    assert phone.result().codec == "G722", phone.output
    return detail


def call_variables(detail: dict[str, Any], number: str) -> dict[str, Any]:
    """What the appliance sets on every call (appliance.calls.manager)."""
    caller = re.search(r"sips?:([^@;>]+)@", detail["from_uri"])
    assert caller, detail["from_uri"]
    return {"caller": caller.group(1), "called": number, "call_id": detail["id"], "trunk": "test"}


async def simulate(loaded: LoadedFlow, variables: dict[str, Any], lines: list[str],
                   accounts: AccountsServer) -> Simulation:
    sim = Simulation(loaded, variables=variables, webhook=accounts.simulated,
                     queues_staffed=False)  # nobody is at the console in these calls
    await sim.start()
    for text in lines:
        if sim.finished:
            break
        await sim.line(text)
    for _ in range(20):  # then silence until the flow ends the call
        if sim.finished:
            break
        await sim.silence()
    assert sim.finished, f"the simulation did not end: {sim.steps}"
    return sim


# --- the walk: what to compare between a real call and its simulation


@dataclass
class Walk:
    steps: list[str]
    said: list[str]
    webhooks: list[str]
    escalated: list[str]
    variables: dict[str, Any]  # set during the call and different from where they started
    voicemail: bool
    ended: str
    speech_heard: list[str] = field(default_factory=list, compare=False)  # for the failure message


# Recorded seconds differ by nature: real audio against the simulator's virtual clock.
NOT_COMPARED = {"voicemail_seconds"}


def real_walk(detail: dict[str, Any], initial: dict[str, Any]) -> Walk:
    events = detail["events"]

    def data(kind: str, key: str) -> list[Any]:
        return [e["data"][key] for e in events if e["kind"] == kind]

    variables: dict[str, Any] = {}
    for e in events:
        if e["kind"] == "variable":
            variables[e["data"]["name"]] = e["data"]["value"]
    return Walk(
        steps=data("step", "step"),
        said=data("say", "text"),
        webhooks=data("webhook", "url"),
        escalated=data("escalated", "queue"),
        variables={k: v for k, v in variables.items() if k not in NOT_COMPARED and initial.get(k, object()) != v},
        voicemail=any(r["kind"] == "voicemail" for r in detail["recordings"]),
        ended=detail["end_reason"],
        speech_heard=data("speech", "text"),
    )


def simulated_walk(sim: Simulation, initial: dict[str, Any]) -> Walk:
    steps = sim.loaded.flow.steps
    last = steps[sim.steps[-1]]
    return Walk(
        steps=list(sim.steps),
        said=[h for h in sim.heard if not h.startswith("[")],  # [hold music], [beep]: not speech
        webhooks=[c.url for c in sim.webhook_calls],
        escalated=[step.escalate.queue for step in (steps[s] for s in sim.steps) if isinstance(step, EscalateStep)],
        variables={k: v for k, v in sim.engine.variables.items()
                   if k not in NOT_COMPARED and initial.get(k, object()) != v},
        voicemail=sim.outcome == "voicemail",
        ended=last.hangup.reason if isinstance(last, HangupStep) else "flow-end",
    )


def assert_same_walk(line: Line, detail: dict[str, Any], number: str, callers: Sequence[Say | Press]) -> Simulation:
    loaded = line.flows[NUMBERS[number]]
    variables = call_variables(detail, number)
    sim = asyncio.run(simulate(loaded, variables, [text for c in callers for text in c.lines()], line.accounts))
    initial = {**loaded.flow.variables, **variables}
    real, simulated = real_walk(detail, initial), simulated_walk(sim, initial)
    assert real == simulated, f"the box heard {real.speech_heard}; events:\n" + "\n".join(_summary(detail["events"]))
    return sim


def assert_voicemail(detail: dict[str, Any], max_s: float, caller_spoke: bool) -> None:
    """A voicemail recording the API lists, a WAV that plays, as long as the message."""
    (recording,) = [r for r in detail["recordings"] if r["kind"] == "voicemail"]
    (left,) = [e["data"] for e in detail["events"] if e["kind"] == "voicemail"]
    assert left["path"] == recording["path"]
    with wave.open(recording["path"]) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, 16000, 2)
        seconds = w.getnframes() / w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    assert abs(seconds - recording["duration_s"]) < 0.1, (seconds, recording)
    assert 1 < seconds <= max_s + 1, seconds
    rms = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
    assert (rms > 300) if caller_spoke else (rms < 100), rms


# --- the default flow: a DTMF menu


def test_default_key_2_reaches_support(line: Line) -> None:
    presses = [Press("main_menu", "2")]
    detail = call_with_sipp(line, "100", presses, "default_key")
    sim = assert_same_walk(line, detail, "100", presses)
    assert sim.steps == ["welcome", "main_menu", "support", "done"]
    assert [e["data"] for e in detail["events"] if e["kind"] == "dtmf"] == [{"digit": "2", "method": "rfc4733"}]


def test_default_wrong_keys_exhaust_the_menu(line: Line) -> None:
    # Three wrong keys: the first two are retries (each restarts the prompt), the third is one too many.
    presses = [Press("main_menu", "79*")]
    detail = call_with_sipp(line, "100", presses, "default_wrong")
    sim = assert_same_walk(line, detail, "100", presses)
    assert sim.steps == ["welcome", "main_menu", "goodbye", "done"]
    retry = "Sorry, that is not an option. For sales, press 1. For support, press 2."
    assert [h for h in sim.heard if h.startswith("Sorry")] == [retry, retry]


def test_default_silence_takes_every_retry_then_goodbye(line: Line) -> None:
    detail = call_with_sipp(line, "100", [], "default_silent")
    sim = assert_same_walk(line, detail, "100", [])
    assert sim.steps == ["welcome", "main_menu", "goodbye", "done"]
    assert sim.heard.count("For sales, press 1. For support, press 2.") == 3


def test_default_menu_takes_keys_only_so_speech_is_no_answer(line: Line) -> None:
    says = [Say("main_menu", "sales please")]
    detail = call_with_baresip(line, "100", says, "default_speech")
    sim = assert_same_walk(line, detail, "100", says)
    assert sim.steps == ["welcome", "main_menu", "goodbye", "done"]
    assert not [e for e in detail["events"] if e["kind"] == "speech"]  # nothing listened


# --- the support flow: hours, speech or keys, a webhook, queues, voicemail


def test_support_keys_billing_account_lookup_queue_then_voicemail(line: Line) -> None:
    line.accounts.requests.clear()
    presses = [Press("main_menu", "1"), Press("ask_account", "5678#")]
    detail = call_with_sipp(line, "200", presses, "support_keys")
    sim = assert_same_walk(line, detail, "200", presses)
    assert sim.steps == ["check_hours", "welcome", "main_menu", "ask_account", "lookup", "route_account",
                         "balance_due", "billing_queue", "all_busy", "take_message", "message_thanks", "bye"]
    assert "Hello Ada. Your balance is 42 dollars." in sim.heard
    caller = call_variables(detail, "200")["caller"]
    assert line.accounts.requests == [{
        "path": "/accounts/lookup", "content_type": "application/json",
        "json": {"account": "5678", "caller": caller},
    }]
    assert [c.payload for c in sim.webhook_calls] == [line.accounts.requests[0]["json"]]
    assert [e["data"]["ok"] for e in detail["events"] if e["kind"] == "webhook_result"] == [True]
    assert_voicemail(detail, MESSAGE_MAX_S, caller_spoke=False)


def test_support_speech_technical_support_queue_then_voicemail(line: Line) -> None:
    says = [Say("main_menu", "technical support please")]
    detail = call_with_baresip(line, "200", says, "support_speech")
    sim = assert_same_walk(line, detail, "200", says)
    assert sim.steps == ["check_hours", "welcome", "main_menu", "technical_queue", "all_busy",
                         "take_message", "message_thanks", "bye"]
    assert_voicemail(detail, MESSAGE_MAX_S, caller_spoke=False)


def test_support_speech_billing_then_account_by_keys(line: Line) -> None:
    # Not the prompt's own "billing": pocketsphinx takes espeak's lone "billing" for "me me" or
    # "i leave" as often as not; nor a spoken account: it adds or swaps digits in espeak's
    # "one two three four". Both are recognition problems of their own, not this test's subject.
    line.accounts.requests.clear()
    callers: list[Say | Press] = [Say("main_menu", "I want to pay my bill"), Press("ask_account", "4321#")]
    detail = call_with_baresip(line, "200", callers, "support_speech_billing")
    sim = assert_same_walk(line, detail, "200", callers)
    assert sim.steps == ["check_hours", "welcome", "main_menu", "ask_account", "lookup", "route_account",
                         "balance_due", "billing_queue", "all_busy", "take_message", "message_thanks", "bye"]
    assert [r["json"] for r in line.accounts.requests] == [{"account": "4321", "caller": "caller"}]
    assert [e["data"]["method"] for e in detail["events"] if e["kind"] == "dtmf"] == ["rfc4733"] * 5


def test_support_silence_takes_a_message(line: Line) -> None:
    detail = call_with_sipp(line, "200", [], "support_silent")
    sim = assert_same_walk(line, detail, "200", [])
    assert sim.steps == ["check_hours", "welcome", "main_menu", "take_message", "message_thanks", "bye"]
    assert_voicemail(detail, MESSAGE_MAX_S, caller_spoke=False)


def test_support_wrong_keys_go_to_technical_support(line: Line) -> None:
    presses = [Press("main_menu", "59")]
    detail = call_with_sipp(line, "200", presses, "support_wrong")
    sim = assert_same_walk(line, detail, "200", presses)
    assert sim.steps == ["check_hours", "welcome", "main_menu", "technical_queue", "all_busy",
                         "take_message", "message_thanks", "bye"]


def test_support_closed_message_ended_with_pound(line: Line) -> None:
    presses = [Press(BEEP, "#", message_s=4)]
    detail = call_with_sipp(line, "201", presses, "closed_message")
    sim = assert_same_walk(line, detail, "201", presses)
    assert sim.steps == ["check_hours", "after_hours", "take_message", "message_thanks", "bye"]
    assert {"name": "open", "value": False} in [e["data"] for e in detail["events"] if e["kind"] == "variable"]
    # The message is the caller's speech, ended by # well before the 15 s limit.
    assert_voicemail(detail, 4 + 2, caller_spoke=True)


def test_support_closed_caller_hangs_up_mid_message(line: Line) -> None:
    presses = [Press(BEEP, "", message_s=3)]
    detail = call_with_sipp(line, "201", presses, "closed_hangup", hangup_after_ms=3000)
    loaded = line.flows["support_closed"]
    variables = call_variables(detail, "201")
    sim = asyncio.run(simulate(loaded, variables, presses[0].lines() + ["hangup"], line.accounts))
    initial = {**loaded.flow.variables, **variables}
    real, simulated = real_walk(detail, initial), simulated_walk(sim, initial)
    # Both stop where the caller left, keeping the message.
    assert real.steps == ["check_hours", "after_hours", "take_message"]
    assert real.steps == simulated.steps  # the flow stops where the caller hung up, in both
    assert real.said == simulated.said
    assert real.voicemail and simulated.voicemail  # a message left by hanging up is kept
    assert detail["end_reason"] == "caller-hangup"
    assert_voicemail(detail, 3 + 2, caller_spoke=True)
