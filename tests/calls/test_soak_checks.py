"""The soak's checks catch what they are there to catch: each kind of wrong record, recording and
log line below is one the soak must fail on (tests/support/soak/checks.py, no SIP needed)."""

from __future__ import annotations

import json
import wave
from dataclasses import replace
from pathlib import Path

from tests.support.soak.checks import Record, check, error_lines
from tests.support.soak.mix import KINDS
from tests.support.soak.sampler import fit_slope

MENU = next(k for k in KINDS if k.name == "menu")
ANSWERED, ENDED = "2026-12-01T10:00:00.000+00:00", "2026-12-01T10:00:03.000+00:00"


def _wav(path: Path, seconds: float) -> str:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0\0\0" * int(16000 * seconds))
    return str(path)


def _menu_call(n: int, tmp_path: Path, seconds: float = 3.0) -> Record:
    return Record(f"CA{n}", "soak_menu", f"soak-menu-{n}@127.0.0.1", ANSWERED, ENDED, "flow-hangup",
                  _wav(tmp_path / f"{n}.wav", seconds), steps=["menu", "sales", "done"], digits=["1"],
                  rtp_counted=True)


def test_two_menu_calls_as_they_should_be_pass(tmp_path: Path) -> None:
    verdict = check([_menu_call(1, tmp_path), _menu_call(2, tmp_path)], {"menu": 2}, 0, (MENU,))
    assert verdict.problems == []
    assert verdict.kinds["menu"].outcomes == {"flow-hangup": 2} and verdict.recordings_checked == 2


def test_each_wrong_record_is_a_problem(tmp_path: Path) -> None:
    good = _menu_call(1, tmp_path)
    records = [
        replace(good, end_reason="no-choice", steps=["menu", "no_choice"], digits=[]),  # #1: the key was lost
        _menu_call(2, tmp_path, seconds=2.2),  # #2: the recording is short
        replace(_menu_call(3, tmp_path), ended_at=None),  # #3: never closed
        _menu_call(3, tmp_path),  # #3 again: two records of one call
        # #4: none at all
        replace(_menu_call(5, tmp_path), sip_call_id="stranger@127.0.0.1"),  # a record of no call placed
        replace(_menu_call(6, tmp_path), rtp_counted=False),  # #6: its worker never counted its RTP
    ]
    problems = check(records, {"menu": 6}, 0, (MENU,)).problems
    assert any(p.startswith("menu #1 ") and "ended 'no-choice'" in p and "heard keys []" in p for p in problems)
    assert any(p.startswith("menu #2 ") and "recording lasts 2.20 s" in p for p in problems)
    assert any(p.startswith("menu #3: 2 records") for p in problems)
    assert any(p.startswith("menu #3 ") and "never closed" in p for p in problems)
    assert any(p.startswith("menu #4: 0 records") for p in problems)
    assert any("stranger@127.0.0.1" in p and "belongs to no call placed" in p for p in problems)
    assert any(p.startswith("menu #6 ") and "no RTP counts" in p for p in problems)


def test_a_recording_cut_short_on_disk_does_not_pass(tmp_path: Path) -> None:
    call = _menu_call(1, tmp_path)
    path = Path(call.recording_path or "")
    path.write_bytes(path.read_bytes()[:-4000])  # the header says more frames than the file holds
    (problem,) = check([call], {"menu": 1}, 0, (MENU,)).problems
    assert "ends early" in problem


def test_error_lines_are_found(tmp_path: Path) -> None:
    log = tmp_path / "appliance.log"
    bind = {"level": "error", "msg": "RTP socket bind() at 0.0.0.0:21198 error: Address already in use"}
    log.write_text("\n".join([json.dumps({"level": "info", "msg": "call ended"}), json.dumps(bind),
                              "python: ../src/pj/ioqueue_common_abs.c:987: pj_ioqueue_sendto: Assertion failed.",
                              "Fatal Python error: Aborted", "08:36:26.613 os_core_unix.c !pjlib 2.15.1 initialized"]))
    lines = error_lines(log)
    assert len(lines) == 3 and "Address already in use" in lines[0]
    assert "pj_ioqueue_sendto" in lines[1] and lines[2] == "Fatal Python error: Aborted"


def test_a_slope_is_the_least_squares_one() -> None:
    assert fit_slope([0, 1000, 2000, 3000], [100, 110, 120, 130]) == 0.01
    assert fit_slope([5, 5], [1, 2]) is None
