"""The supervisors' wallboard: every live call, queue and operator, built from what the hub
holds in memory (calls, the ACD, the desk's sessions), never by polling SQLite.

Rows hold times as instants (a call's start, an operator's state change, the oldest caller's
wait), not durations, so a row changes only when something happens and the desk can send
just the rows that changed (`protocol.diff`); consoles count the seconds themselves. Queue figures
count "today" in the box's local time: the ACD counts since start, and the wallboard
subtracts what it had counted when the day began.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from appliance.calls.manager import CallManager
from appliance.core.clock import iso_now
from appliance.operators.acd import OperatorState
from appliance.operators.desk import Desk
from appliance.operators.protocol import Wallboard

_COUNTED = ("answered", "answered_in_service_level", "abandoned", "overflowed", "enqueued")


@dataclass
class WallboardSource:
    calls: CallManager
    desk: Desk
    _day: dt.date | None = None
    _baseline: dict[str, dict[str, int]] = field(default_factory=dict)
    # Wall-clock seconds at monotonic zero, fixed once: an instant converted twice is the same number.
    _epoch: float = field(default_factory=lambda: time.time() - time.monotonic())

    def _wall(self, monotonic: float) -> float:
        return round(self._epoch + monotonic, 3)

    def __call__(self) -> Wallboard:
        return Wallboard(at=iso_now(), calls=self._calls(), queues=self._queues(), operators=self._operators())

    def _calls(self) -> list[dict[str, Any]]:
        rows = []
        for call in self.calls.calls.values():
            waiting = self.desk.calls.get(call.id)
            job = call.runner.persona.job if call.runner else None
            persona = job.persona if job is not None and job.taken_over_by is None else None
            on_call = [f"persona:{persona}"] if persona else []
            if waiting is not None and waiting.operator:
                on_call.append(waiting.operator)
            supervisors = [s for s in self.desk.sessions.values() if s.joined == call.id]
            on_call += [s.identity for s in supervisors if s.mode == "taken_over"]
            held = any(s.held for s in self.desk.sessions.values() if s.call == call.id)
            rows.append({
                "call": call.id,
                "caller": call.variables.get("caller", ""),
                "called": call.variables.get("called", ""),
                "flow": call.flow.flow.name,
                "step": call.runner.engine.step_id if call.runner else None,
                "on_call": on_call or ["flow"],
                "queue": waiting.queue if waiting is not None and waiting.operator is None else None,
                "supervisors": [{"identity": s.identity, "mode": s.mode} for s in supervisors],
                "on_hold": held or (waiting is not None and waiting.operator is None),
                "started": self._wall(call.started),
            })
        return rows

    def _queues(self) -> list[dict[str, Any]]:
        today = dt.datetime.now().astimezone().date()
        acd = self.desk.acd
        if today != self._day:
            self._day = today
            self._baseline = {q: {k: getattr(s, k) for k in _COUNTED} for q, s in acd.stats.items()}
        rows = []
        for name in sorted(acd.queues):
            stats = acd.stats.get(name)
            base = self._baseline.get(name, {})
            counts = {k: (getattr(stats, k) if stats else 0) - base.get(k, 0) for k in _COUNTED}
            by_state = acd.operators_by_state(name)
            oldest = acd.waiting_since(name)
            rows.append({
                "queue": name,
                "waiting": len(acd.waiting(name)),
                "waiting_since": None if oldest is None else self._wall(oldest),
                "available": len(by_state.get(OperatorState.AVAILABLE, [])),
                "on_call": len(by_state.get(OperatorState.ON_CALL, [])) + len(by_state.get(OperatorState.OFFERED, [])),
                "wrap_up": len(by_state.get(OperatorState.WRAP_UP, [])),
                "away": len(by_state.get(OperatorState.AWAY, [])),
                "answered_today": counts["answered"],
                "in_service_level_today": counts["answered_in_service_level"],
                "abandoned_today": counts["abandoned"],
                "overflowed_today": counts["overflowed"],
            })
        return rows

    def _operators(self) -> list[dict[str, Any]]:
        acd = self.desk.acd
        rows = []
        for names in acd.operators_by_state().values():
            for name in names:
                view = acd.operator(name)
                if view is not None:
                    rows.append({"operator": name, "kind": view.kind, "state": view.state.value,
                                 "reason": view.reason, "since": self._wall(view.since),
                                 "call": view.call, "queues": list(view.queues)})
        return sorted(rows, key=lambda row: row["operator"])

