"""A flow's transfer step in bridge mode: the box dials the destination and joins it to the call.

Real peers on both sides: baresip calls in, and the destination is a second baresip the test
picks up by hand (so the caller hears the ringback first), or sipp answering busy or never
answering. Both baresips speak espeak-ng sentences; what each one heard is recognised.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.speech.stt import phrases_grammar, transcribe
from tests.support import baresip
from tests.support.appliance import ApplianceProcess
from tests.support.sipp.process import Destination, run_sipp
from tests.support.sipp.scenarios import caller_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip

NUMBER = "400"
ANNOUNCEMENT = "Connecting you to the billing desk."
UNAVAILABLE = "Sorry, the billing desk cannot take your call."
DESK_SAYS = "Hello, this is the billing desk. How can I help you?"
CALLER_SAYS = "I would like to pay my bill."
RING_S = 2.5  # how long the test lets the destination ring before it picks up
CALL_LIMIT_S = 60

FLOW = """\
name: billing_line
entry: to_desk
steps:
  to_desk:
    transfer:
      to: "{to}"
      mode: bridge
      announcement: {announcement}
      timeout: {timeout}
      on_error: desk_unavailable
  desk_unavailable:
    say: {unavailable}
    next: goodbye
  goodbye:
    hangup:
"""


def _flows(directory: Path, to: str, timeout: float = 20) -> Path:
    directory.mkdir()
    (directory / "billing_line.yaml").write_text(
        FLOW.format(to=to, announcement=ANNOUNCEMENT, timeout=timeout, unavailable=UNAVAILABLE))
    return directory


def _events(detail: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in detail["events"] if e["kind"] == kind]


def _wait_event(app: ApplianceProcess, kind: str, timeout: float = 20) -> dict[str, Any]:
    def happened() -> dict[str, Any] | None:
        calls = app.calls()
        detail = app.call(calls[0]["id"]) if calls else None
        return detail if detail and _events(detail, kind) else None

    return wait_until(happened, f"a {kind} event", timeout, detail=app.log_tail)


def _closed(app: ApplianceProcess, timeout: float = 20) -> dict[str, Any]:
    (call,) = app.wait_calls_closed(1, timeout=timeout)
    return app.call(call["id"])


def _words(pcm: bytes) -> set[str]:
    grammar = phrases_grammar([ANNOUNCEMENT, UNAVAILABLE, DESK_SAYS, CALLER_SAYS])
    return set(transcribe(pcm, grammar).split())


def _only(text: str, *others: str) -> set[str]:
    """Words of `text` no other sentence has: hearing them means hearing `text`."""
    def words(t: str) -> set[str]:
        return set(re.findall(r"[a-z']+", t.lower()))

    return words(text) - set().union(*map(words, others))


DESK_ONLY = _only(DESK_SAYS, CALLER_SAYS, ANNOUNCEMENT, UNAVAILABLE)  # hello this is how help…


def _envelope(pcm: bytes) -> np.ndarray:
    """Loudness every 10 ms: survives codecs and resampling, unlike the waveform."""
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    n = len(x) // 160
    return np.sqrt((x[: n * 160].reshape(n, 160) ** 2).mean(axis=1))


def _found(spoken: baresip.Microphone, heard: Path) -> float:
    """How well the spoken sentence's loudness contour matches anywhere in what was heard (1 = exactly)."""
    said = _envelope(baresip.pcm16k(spoken.path)[: int(spoken.speech_s * 16000) * 2])
    said -= said.mean()
    got = _envelope(baresip.pcm16k(heard))
    best = 0.0
    for lag in range(len(got) - len(said)):
        window = got[lag:lag + len(said)] - got[lag:lag + len(said)].mean()
        norm = float(np.linalg.norm(said) * np.linalg.norm(window))
        if norm:
            best = max(best, float(said @ window) / norm)
    return best


def _band_rms(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(np.sqrt(np.mean(spectrum[(freqs >= low) & (freqs <= high)] ** 2)))


@dataclass
class Bridged:
    app: ApplianceProcess
    caller: baresip.Softphone
    desk: baresip.Softphone
    workdir: Path


@contextmanager
def bridged_call(appliance_factory, tmp_path: Path, calls_per_worker: int = 4) -> Iterator[Bridged]:
    """A caller talking to the billing desk through the box, after it rang RING_S seconds."""
    with baresip.Softphone(tmp_path / "desk", max_seconds=CALL_LIMIT_S, user="desk") as desk, \
            baresip.Softphone(tmp_path / "caller", max_seconds=CALL_LIMIT_S) as caller:
        to = f"sip:desk@127.0.0.1:{desk.sip_port}"
        app = appliance_factory(numbers={NUMBER: "billing_line"}, flows_dir=_flows(tmp_path / "flows", to),
                                extra={"transfers": {"allowed": [to]}}, calls_per_worker=calls_per_worker)
        caller.dial(f"sip:{NUMBER}@127.0.0.1:{app.sip_port}")
        desk.wait_incoming(timeout=20)
        time.sleep(RING_S)
        desk.accept()
        _wait_event(app, "transfer_answered")
        yield Bridged(app, caller, desk, tmp_path)


@pytest.fixture
def bridged(appliance_factory, tmp_path: Path) -> Iterator[Bridged]:
    with bridged_call(appliance_factory, tmp_path) as call:
        yield call


def _talk(bridged: Bridged) -> tuple[baresip.Microphone, baresip.Microphone]:
    """The desk speaks, then the caller answers; each hears the other through the room."""
    desk_speech = baresip.speech_wav(bridged.workdir / "desk.wav", DESK_SAYS, seconds=CALL_LIMIT_S + 10)
    caller_speech = baresip.speech_wav(bridged.workdir / "caller.wav", CALLER_SAYS, seconds=CALL_LIMIT_S + 10)
    bridged.desk.say(desk_speech.path)
    time.sleep(desk_speech.speech_s + 1)
    bridged.caller.say(caller_speech.path)
    time.sleep(caller_speech.speech_s + 1.5)
    return desk_speech, caller_speech


def test_bridged_caller_and_desk_hear_each_other_until_the_desk_hangs_up(bridged: Bridged) -> None:
    desk_speech, caller_speech = _talk(bridged)
    bridged.desk.hangup()
    # The box hangs the caller up when the desk does.
    assert bridged.caller.wait_closed(timeout=15) != "end of file", bridged.caller.output
    detail = _closed(bridged.app)

    assert detail["end_reason"] == "transferred", detail
    to = f"sip:desk@127.0.0.1:{bridged.desk.sip_port}"
    assert _events(detail, "transfer") == [{"to": to, "mode": "bridge"}]
    (answered,) = _events(detail, "transfer_answered")
    assert answered["code"] == 200 and answered["codec"] == "G722", answered
    assert _events(detail, "transfer_ended") == [{"by": "destination", "reason": "destination-hangup"}]
    assert [s["step"] for s in _events(detail, "step")] == ["to_desk"]
    assert UNAVAILABLE not in [s["text"] for s in _events(detail, "say")]

    desk_heard = bridged.desk.result().heard
    caller_heard = bridged.caller.result().heard
    assert desk_heard is not None and caller_heard is not None
    # Each heard the other's sentence, and not its own (the room does not echo a participant).
    assert _found(caller_speech, desk_heard) > 0.85 > 0.7 > _found(desk_speech, desk_heard), \
        (_found(caller_speech, desk_heard), _found(desk_speech, desk_heard))
    assert _found(desk_speech, caller_heard) > 0.85 > 0.7 > _found(caller_speech, caller_heard), \
        (_found(desk_speech, caller_heard), _found(caller_speech, caller_heard))
    # And in words: the announcement, then the desk (pocketsphinx over G.722 misses some).
    caller_words = _words(baresip.pcm16k(caller_heard))
    assert "connecting" in caller_words and len(caller_words & DESK_ONLY) >= 3, caller_words

    # The recording: caller left, what the caller heard right (the ringback, then the desk).
    with wave.open(detail["recording_path"]) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 16000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    assert len(stereo) / 16000 > RING_S + 5, len(stereo) / 16000
    right = stereo[:, 1]
    windows = [right[i:i + 8000] for i in range(0, len(right) - 8000, 8000)]
    ringback = [w for w in windows if _band_rms(w, 430, 490) > 20 * _band_rms(w, 600, 4000) > 0]
    assert ringback, "no ringback tone in what the caller heard"
    assert float(np.abs(stereo[:, 0]).max()) > 3000  # the caller's sentence


def test_caller_hanging_up_hangs_up_the_desk(bridged: Bridged) -> None:
    time.sleep(1)
    bridged.caller.hangup()
    assert bridged.desk.wait_closed(timeout=15) != "end of file", bridged.desk.output
    detail = _closed(bridged.app)
    assert detail["end_reason"] == "transferred", detail
    assert _events(detail, "transfer_ended") == [{"by": "caller", "reason": "caller-hangup"}]


def test_stopping_the_appliance_hangs_up_both_legs(bridged: Bridged) -> None:
    call_id = bridged.app.calls()[0]["id"]
    bridged.app.stop()  # SIGTERM: the orderly stop an admin's systemctl stop sends
    # Both phones get a BYE from the box, not a timeout of their own.
    assert bridged.desk.wait_closed(timeout=15) != "end of file", bridged.desk.output
    assert bridged.caller.wait_closed(timeout=15) != "end of file", bridged.caller.output
    with sqlite3.connect(bridged.app.data_dir / "switchboard.db") as db:  # the API stopped with the box
        (end_reason,) = db.execute("select end_reason from calls where id = ?", (call_id,)).fetchone()
    assert end_reason == "appliance-stop"


@pytest.mark.parametrize("lost", ["caller's", "desk's"])
def test_a_lost_worker_leaves_no_leg_behind(appliance_factory, tmp_path: Path, lost: str) -> None:
    # One call per worker, so the desk is dialled from the other worker than the caller's:
    # whichever worker dies, the box hangs up the leg on the one that lives.
    with bridged_call(appliance_factory, tmp_path, calls_per_worker=1) as bridged:
        detail = bridged.app.call(bridged.app.calls()[0]["id"])
        callers_worker = detail["worker"]
        (dialling,) = _events(detail, "transfer_dialling")
        assert dialling["worker"] != callers_worker, dialling
        victim, survivor = ((callers_worker, bridged.desk) if lost == "caller's"
                            else (dialling["worker"], bridged.caller))
        os.kill(bridged.app.worker_pid(victim), signal.SIGKILL)
        # The survivor's phone gets a BYE from the box, not a timeout of its own.
        assert survivor.wait_closed(timeout=15) != "end of file", survivor.output
        detail = _closed(bridged.app)
    assert detail["end_reason"] == "worker-lost", detail
    assert _events(detail, "transfer_ended") == [{"by": "worker", "reason": "worker-lost"}]


def _call_sipp(app: ApplianceProcess, workdir: Path) -> None:
    """A sipp caller that stays until the box hangs up."""
    scenario = caller_scenario(workdir, digit=None, wait_ms=0, bye_timeout_ms=40000)
    result = run_sipp(scenario, app.sip_port, workdir, service=NUMBER, timeout=60)
    assert result.successful == 1, result.output


def test_busy_number_takes_the_on_error_branch(appliance_factory, tmp_path: Path) -> None:
    # A number, dialled at the carrier's termination (transfers.outbound_proxy), which is busy;
    # the desk's phone shows the box's number the caller dialled (transfers.caller_id: called, the
    # default), never the caller's unverified From (+155501001 in the caller scenario).
    destination = Destination.busy(tmp_path, ruri_regexp=rf"INVITE sip:\+15550199@127\.0\.0\.1:[0-9]+ SIP/2\.0"
                                                         rf".*From: *<?sip:{NUMBER}@")
    app = appliance_factory(numbers={NUMBER: "billing_line"}, flows_dir=_flows(tmp_path / "flows", "+15550199"),
                            extra={"transfers": {"allowed": ["+1555*"],
                                                 "outbound_proxy": f"sip:{destination.uri_host}"}})
    _call_sipp(app, tmp_path)
    detail = _closed(app)
    uas = destination.wait(10)
    assert uas.successful == 1, uas.output

    (result,) = _events(detail, "transfer_result")
    assert result == {"ok": False, "code": 486, "reason": "Busy Here"}, result
    assert [s["step"] for s in _events(detail, "step")] == ["to_desk", "desk_unavailable", "goodbye"]
    assert [s["text"] for s in _events(detail, "say")] == [ANNOUNCEMENT, UNAVAILABLE]
    variables = {v["name"]: v["value"] for v in _events(detail, "variable")}
    assert variables["transfer_error"] == "486 Busy Here"
    assert detail["end_reason"] == "flow-hangup"


def test_unanswered_destination_is_cancelled_after_the_ring_timeout(appliance_factory, tmp_path: Path) -> None:
    destination = Destination.no_answer(tmp_path)
    to = f"sip:desk@{destination.uri_host}"
    app = appliance_factory(numbers={NUMBER: "billing_line"}, flows_dir=_flows(tmp_path / "flows", to, timeout=3),
                            extra={"transfers": {"allowed": [to]}})
    _call_sipp(app, tmp_path)
    detail = _closed(app)
    uas = destination.wait(10)
    assert uas.successful == 1, uas.output  # it was rung, then CANCELled

    (result,) = _events(detail, "transfer_result")
    assert result == {"ok": False, "code": 408, "reason": "no answer in 3 s"}, result
    assert [s["step"] for s in _events(detail, "step")] == ["to_desk", "desk_unavailable", "goodbye"]
    assert _events(detail, "say")[-1]["text"] == UNAVAILABLE


def test_number_without_an_outbound_route_takes_the_on_error_branch(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(numbers={NUMBER: "billing_line"}, flows_dir=_flows(tmp_path / "flows", "+15550199"),
                            extra={"transfers": {"allowed": ["+1555*"]}})
    _call_sipp(app, tmp_path)
    detail = _closed(app)
    (result,) = _events(detail, "transfer_result")
    assert result["ok"] is False and "transfers.outbound_proxy" in result["reason"], result
    assert not _events(detail, "transfer_dialling")
    assert [s["step"] for s in _events(detail, "step")] == ["to_desk", "desk_unavailable", "goodbye"]
