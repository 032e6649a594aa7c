"""What a soak checks once its calls are over, from the appliance's own SQLite file and log:
every call placed has exactly one record, closed with the reason its kind must end with, its
flow went the way the caller steered it, every recording plays and lasts as long as the call
was answered, and the log has no error line.

One definition for bench/soak.py and tests/calls/test_soak.py.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from tests.support.soak.mix import KINDS, PERSONA, Kind

__all__ = ["Record", "Verdict", "check", "error_lines", "read_records", "recording_problem"]

COVER_TOLERANCE_S = 0.5  # a recording's length against answered → ended
_CALL_ID = re.compile(r"soak-(?P<kind>[a-z_]+)-(?P<n>\d+)@")
# Lines in the log that are not JSON (pjsua's start-up, a child's crash, a C assert) but still an error.
_RAW_ERROR = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback|Fatal Python error|Segmentation fault|Aborted"
                        r"|Assertion .*failed")


@dataclass
class Record:
    """One call's record with the events the checks read."""

    id: str
    flow: str | None
    sip_call_id: str | None
    answered_at: str | None
    ended_at: str | None
    end_reason: str | None
    recording_path: str | None
    steps: list[str] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    transfer_answered: bool = False
    rtp_counted: bool = False  # the caller leg's RTP counts reached the record (its `rtp` event)
    voicemails: list[tuple[str, float]] = field(default_factory=list)  # (path, seconds recorded)

    @property
    def answered_s(self) -> float | None:
        """Seconds from answered to ended."""
        if not self.answered_at or not self.ended_at:
            return None
        return (dt.datetime.fromisoformat(self.ended_at) - dt.datetime.fromisoformat(self.answered_at)).total_seconds()


def read_records(db_path: Path) -> list[Record]:
    """Every call in the appliance's database, with its steps, keys, bridge answer and voicemail."""
    db = sqlite_utils.Database(db_path)
    records = {row["id"]: Record(row["id"], row["flow"], None, row["answered_at"], row["ended_at"], row["end_reason"],
                                 row["recording_path"]) for row in db["calls"].rows}
    wanted = ("offered", "step", "dtmf", "transfer_answered", "rtp")
    for call_id, kind, data in db.execute(
            f"SELECT call_id, kind, data FROM call_events WHERE kind IN ({', '.join('?' * len(wanted))}) ORDER BY id",
            list(wanted)).fetchall():
        record = records.get(call_id)
        if record is None:
            continue
        event = json.loads(data or "{}")
        if kind == "offered":
            record.sip_call_id = event.get("sip_call_id")
        elif kind == "step":
            record.steps.append(event["step"])
        elif kind == "dtmf":
            record.digits.append(event["digit"])
        elif kind == "rtp":
            record.rtp_counted = record.rtp_counted or event.get("leg") == "caller"
        else:
            record.transfer_answered = True
    for row in db["recordings"].rows_where("kind = ?", ["voicemail"]):
        if row["call_id"] in records:
            records[row["call_id"]].voicemails.append((row["path"], row["duration_s"]))
    db.close()
    return list(records.values())


def recording_problem(path: str | None, seconds: float) -> str | None:
    """Why the call recording at `path` does not play for `seconds` (± COVER_TOLERANCE_S), or None."""
    if not path:
        return "answered, but no recording"
    length = _wav_seconds(Path(path))
    if isinstance(length, str):
        return f"recording {length}"
    if abs(length - seconds) > COVER_TOLERANCE_S:
        return f"recording lasts {length:.2f} s, the call was answered for {seconds:.2f} s"
    return None


def _wav_seconds(path: Path) -> float | str:
    """The length of a WAV that plays to its end, or why it does not."""
    if not path.exists():
        return f"{path} missing"
    try:
        with wave.open(str(path)) as w:
            frames, rate, width, channels = w.getnframes(), w.getframerate(), w.getsampwidth(), w.getnchannels()
            data = w.readframes(frames)
    except (wave.Error, EOFError, OSError) as exc:
        return f"{path} does not play: {exc}"
    if len(data) != frames * width * channels:
        return f"{path} ends early: {len(data)} of {frames * width * channels} bytes"
    return frames / rate


@dataclass
class KindOutcome:
    placed: int = 0
    records: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # "caller-hangup" or "caller-hangup, unanswered"
    problems: int = 0


@dataclass
class Verdict:
    kinds: dict[str, KindOutcome]
    problems: list[str]  # one line each: which call, what is wrong
    recordings_checked: int
    voicemails_checked: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        return {"kinds": {name: {"placed": k.placed, "records": k.records, "outcomes": dict(k.outcomes),
                                 "problems": k.problems} for name, k in self.kinds.items()},
                "problems": len(self.problems), "recordings_checked": self.recordings_checked,
                "voicemails_checked": self.voicemails_checked}


def check(records: list[Record], placed: dict[str, int], persona_placed: int,
          kinds: tuple[Kind, ...] = KINDS) -> Verdict:
    """Every sipp call of `placed` (calls per kind, numbered from 1 in their Call-IDs) and every
    persona call has exactly one record, closed as its kind must end; nothing else has one."""
    by_name = {k.name: k for k in kinds}
    verdict = Verdict({name: KindOutcome(placed=n) for name, n in placed.items()}, [], 0, 0)
    verdict.kinds["persona"] = KindOutcome(placed=persona_placed)
    mapped: dict[tuple[str, int], list[Record]] = {}
    for record in records:
        match = _CALL_ID.match(record.sip_call_id or "")
        if match and match["kind"] in by_name:
            mapped.setdefault((match["kind"], int(match["n"])), []).append(record)
        elif record.flow == PERSONA["flow"]:
            _check_persona(record, verdict)
        else:
            verdict.problems.append(f"record {record.id} ({record.sip_call_id}) belongs to no call placed")
    for name, count in placed.items():
        for n in range(1, count + 1):
            found = mapped.pop((name, n), [])
            where = f"{name} #{n}"
            if len(found) != 1:
                verdict.problems.append(f"{where}: {len(found)} records {[r.id for r in found]}")
                verdict.kinds[name].problems += 1
            for record in found:
                _check_call(by_name[name], record, verdict, where)
    for (name, n), extra in mapped.items():
        verdict.problems.append(f"{name} #{n}: records {[r.id for r in extra]} of a call never placed")
    persona = verdict.kinds["persona"]
    if persona.records != persona_placed:
        verdict.problems.append(f"persona: {persona.records} records of {persona_placed} calls")
        persona.problems += 1
    return verdict


def _check_call(kind: Kind, record: Record, verdict: Verdict, where: str) -> None:
    outcome = verdict.kinds[kind.name]
    outcome.records += 1
    answered = record.answered_at is not None
    outcome.outcomes[f"{record.end_reason}{'' if answered else ', unanswered'}"] += 1
    problems = []
    if record.ended_at is None:
        problems.append("never closed")
    if record.end_reason != kind.reason:
        problems.append(f"ended {record.end_reason!r}, not {kind.reason!r}")
    if kind.answered is not None and answered != kind.answered:
        problems.append("answered" if answered else "never answered")
    if record.flow != kind.flow:
        problems.append(f"ran flow {record.flow!r}, not {kind.flow!r}")
    if answered and not record.rtp_counted:
        problems.append("no RTP counts for its caller leg")
    missing = [s for s in kind.steps if s not in record.steps]
    if missing:
        problems.append(f"never entered steps {missing} (entered {record.steps})")
    if record.digits != list(kind.digits):
        problems.append(f"heard keys {record.digits}, not {list(kind.digits)}")
    if kind.transferred and not record.transfer_answered:
        problems.append("the bridge transfer was never answered")
    problems += _check_audio(kind.voicemail, record, verdict)
    if problems:
        outcome.problems += 1
        verdict.problems.append(f"{where} (record {record.id}, {record.sip_call_id}): {'; '.join(problems)}")


def _check_persona(record: Record, verdict: Verdict) -> None:
    outcome = verdict.kinds["persona"]
    outcome.records += 1
    outcome.outcomes[str(record.end_reason)] += 1
    problems = []
    if record.ended_at is None:
        problems.append("never closed")
    if record.end_reason != "caller-hangup":
        problems.append(f"ended {record.end_reason!r}, not 'caller-hangup'")
    if "assistant" not in record.steps:
        problems.append(f"never reached the persona (steps {record.steps})")
    problems += _check_audio(False, record, verdict)
    if problems:
        outcome.problems += 1
        verdict.problems.append(f"persona call (record {record.id}): {'; '.join(problems)}")


def _check_audio(voicemail: bool, record: Record, verdict: Verdict) -> list[str]:
    """The call's recording covers the answered call; a voicemail plays and fits inside it."""
    problems = []
    seconds = record.answered_s
    if seconds is not None:
        verdict.recordings_checked += 1
        problem = recording_problem(record.recording_path, seconds)
        if problem:
            problems.append(problem)
    elif record.recording_path:
        problems.append("a recording of a call never answered")
    if voicemail and len(record.voicemails) != 1:
        problems.append(f"{len(record.voicemails)} voicemail messages, not 1")
    if not voicemail and record.voicemails:
        problems.append("left voicemail it should not have")
    for path, stored_s in record.voicemails:
        verdict.voicemails_checked += 1
        length = _wav_seconds(Path(path))
        if isinstance(length, str):
            problems.append(f"voicemail {length}")
        elif not 0 < length <= (seconds or 0) or abs(length - stored_s) > COVER_TOLERANCE_S:
            problems.append(f"voicemail lasts {length:.2f} s (stored {stored_s} s) in a call of {seconds} s")
    return problems


def error_lines(log_path: Path) -> list[str]:
    """Every line of the appliance's log at level error or critical, and raw lines that say error."""
    lines = []
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return [f"the log {log_path} cannot be read"]
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            if str(entry.get("level", "")).lower() in ("error", "critical"):
                lines.append(line)
        elif _RAW_ERROR.search(line):
            lines.append(line)
    return lines
