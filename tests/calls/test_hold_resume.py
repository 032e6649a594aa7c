"""A caller who puts the box on hold and comes back is heard again.

A re-INVITE that changes the media direction (a=sendonly, then a=sendrecv) makes pjsua stop the
call's stream and start a new one, in a new conference bridge slot (pjsua_media.c,
is_media_changed). The caller here holds, resumes, then speaks (sipp's g711a.pcap) and presses 1.
"""

from __future__ import annotations

import wave
from pathlib import Path
from string import Template

import numpy as np
import pytest

from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import SCENARIOS

pytestmark = pytest.mark.sip

HOLD_AFTER_MS = 500
HELD_MS = 1000
SPEAKS_MS = 3000


def test_the_caller_is_heard_after_holding_and_resuming(appliance, tmp_path: Path) -> None:
    scenario = tmp_path / "reinvite_hold.xml"
    scenario.write_text(Template((SCENARIOS / "reinvite_hold.xml").read_text()).substitute(
        HOLD_AFTER_MS=HOLD_AFTER_MS, HELD_MS=HELD_MS, KEY_AFTER_MS=SPEAKS_MS, BYE_TIMEOUT_MS=20000))
    result = run_sipp(scenario, appliance.sip_port, tmp_path)
    assert result.successful == 1, result.output

    (call,) = appliance.wait_calls_closed(1)
    assert call["end_reason"] == "flow-hangup", call
    with wave.open(call["recording_path"]) as w:
        caller = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)[:, 0]
        rate = w.getframerate()
    # The caller's channel while it speaks, after the resume (a second's margin for the re-INVITEs).
    start = (HOLD_AFTER_MS + HELD_MS + 1000) * rate // 1000
    speech = caller[start: start + 2 * rate].astype(np.float64)
    assert len(speech) and float(np.sqrt(np.mean(speech ** 2))) > 200, "the caller is silent after the resume"
