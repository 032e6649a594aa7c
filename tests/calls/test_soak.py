"""The soak in the suite: 300 calls of every kind through the edge (DTMF menus, voicemail ended by
pound and by hanging up, hang-ups mid-prompt, CANCEL while ringing, re-INVITE hold and resume,
the flow hanging up, bridge transfers to a sipp desk, persona calls over baresip), then what each
left behind: exactly one record, closed with its kind's reason, a recording that plays and covers
the call, and no error line in the log. bench/soak.py runs the same over 10,000 calls.

Memory and open files are sampled and their growth printed; 300 calls are too few for a slope
worth asserting.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.soak.run import SoakPlan, run_soak

pytestmark = [pytest.mark.sip, pytest.mark.soak]

CALLS = 300
RATE = 5.0  # calls a second: a minute of calls, about 20 up at once
PERSONA_CALLS = 3


def test_every_call_of_the_mix_leaves_its_record_and_recording(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = run_soak(SoakPlan(CALLS, RATE, persona_calls=PERSONA_CALLS), tmp_path, say=lambda line: None)

    with capsys.disabled():
        growth = run.growth()
        for metric in ("rss_kb", "private_kb", "fds"):
            shown = [s for s in growth[metric] if s.process == "main" or
                     (s.process.endswith("(all)") and not s.process.startswith("main"))]
            print(f"\nsoak {metric} slope after warm-up (reported, not asserted): " + "; ".join(
                f"{s.process} {s.growth:+,.0f} {s.unit} per {s.per}" for s in shown))
    assert not run.failures(), "\n".join(run.failures()[:40])
    # And it was the whole mix: every call placed went as its caller's scenario says.
    assert {kind: result.successful for kind, result in run.sipp.items()} == run.placed
    assert sum(run.placed.values()) == CALLS and len(run.persona) == PERSONA_CALLS
