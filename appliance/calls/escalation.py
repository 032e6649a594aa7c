"""A live call as the operator desk sees it (`operators.desk.QueuedCall`): escalated callers,
and any call a supervisor joins.

The desk decides who talks to the caller; what that means for the call's flow (hold audio,
max_wait, overflow, a persona leaving) stays with the flow runner, reached through this adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appliance.calls.runner import FlowRunner
from appliance.flow import engine as fe
from appliance.rooms.room import Room


class CallHandle:
    def __init__(self, call_id: str, room: Room, runner: FlowRunner, hangup: Callable[[str], None],
                 ring: Callable[[str, float, Callable[[bool], None]], None], stop_ringing: Callable[[], None]):
        self.id = call_id
        self.room = room
        self._runner = runner
        self._hangup = hangup
        self._ring = ring
        self._stop_ringing = stop_ringing

    def variables(self) -> dict[str, Any]:
        return dict(self._runner.engine.variables)

    def connected(self, operator: str) -> None:
        self._runner.queue_event(fe.OperatorConnected(operator))

    def returned(self) -> None:
        self._runner.queue_event(fe.OperatorReturned())

    def overflow(self, reason: str) -> None:
        self._runner.queue_event(fe.QueueOverflow(reason))

    def announce(self, text: str) -> None:
        self._runner.announce(text)

    def hold(self, on: bool) -> None:
        self._runner.hold(on)

    def hangup(self, reason: str) -> None:
        self._hangup(reason)

    def ring_member(self, uri: str, timeout: float, answered: Callable[[bool], None]) -> None:
        """Dial a queue's desk phone; `answered(True)` once it picks up, `answered(False)` if it cannot."""
        self._ring(uri, timeout, answered)

    def stop_ringing_member(self) -> None:
        self._stop_ringing()

    def transfer(self, to: str, done: Callable[[bool, str | None], None]) -> bool:
        """Bridge the caller to `to` (checked against transfers.allowed); False, nothing dialled, if not allowed."""
        return self._runner.operator_transfer(to, done)

    def step(self) -> str | None:
        return self._runner.engine.step_id

    def flow(self) -> str:
        return self._runner.engine.flow.name

    def persona(self) -> str | None:
        """The persona talking to the caller now, if one is (not one a supervisor took the call from)."""
        job = self._runner.persona.job
        return job.persona if job is not None and job.taken_over_by is None else None

    def instruct_persona(self, text: str, by: str) -> bool:
        """A supervisor's typed instruction into the persona's context; False with no persona on the call."""
        return self._runner.persona.job is not None and self._runner.services.personas.instruct(self.id, text, by)

    def take_over_persona(self, by: str) -> str | None:
        """Supervisor `by` talks to the caller instead of the persona, which is switched off but
        stays on the call; the persona's name, or None with no persona talking."""
        return self._runner.services.personas.take_over(self.id, by)

    def hand_back_persona(self, by: str) -> str | None:
        """The persona a supervisor took the call from listens and talks again; its name, or None."""
        return self._runner.services.personas.hand_back(self.id, by)
