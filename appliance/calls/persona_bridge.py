"""A flow's persona step on a live call: dispatches a persona worker into the room, carries
out what the persona asks of the call, and hands the caller back to the flow with its exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from appliance.calls.playback import Playback
from appliance.calls.transfers import Transfers
from appliance.flow import engine as fe
from appliance.observability.logging import log_extra
from appliance.personas.dispatcher import PersonaAssignment, PersonaDispatcher
from appliance.rooms.room import Room
from appliance.storage import Storage

log = logging.getLogger(__name__)


class PersonaBridge:
    def __init__(self, call_id: str, room: Room, personas: PersonaDispatcher, storage: Storage,
                 playback: Playback, transfers: Transfers, send_dtmf: Callable[[str], None],
                 fallback: Callable[[str], str], done: Callable[[fe.PersonaDone], None],
                 pause_recording: Callable[[bool, str], str | None]):
        self.call_id = call_id
        self.room = room
        self.personas = personas
        self.storage = storage
        self.playback = playback
        self.transfers = transfers
        self.send_dtmf = send_dtmf
        self.fallback = fallback  # persona name → what to say when it fails
        self.done = done
        self.pause_recording = pause_recording
        self.job: PersonaAssignment | None = None
        self.transferring = False  # the persona asked for a transfer that has not answered yet
        self._variables: dict[str, Any] = {}
        # What a persona may ask of the call, by action name (the participant protocol's CallAction).
        self._actions: dict[str, Callable[[dict[str, Any]], None]] = {
            "set_variable": self._set_variable,
            "send_dtmf": self._send_dtmf,
            "transfer": self._transfer,
            "record": self._record,
        }

    def start(self, action: fe.StartPersona) -> None:
        self._variables = {}
        job = self.personas.start(self.call_id, self.room, action.name, action.variables,
                                  on_exit=self._exit, on_action=self._on_action)
        if job is None:
            self._exit("failed", {"persona_error": "no persona worker available"}, action.name)
            return
        self.job = job

    def release(self) -> None:
        """The call ended or the caller leaves the persona: it leaves the room."""
        if self.job is not None:
            self.personas.release(self.job)
            self.job = None

    def transfer_done(self, ok: bool, error: str | None) -> None:
        """The transfer the persona asked for answered: success ends the call, failure is the persona's failure."""
        self.transferring = False
        if not ok:
            self.done(fe.PersonaDone("failed", {"transfer_error": error or "failed"}))

    def _exit(self, exit_: str, variables: dict[str, Any], name: str | None = None) -> None:
        persona = name or (self.job.persona if self.job else "")
        self.job = None
        variables = {**self._variables, **variables}
        if exit_ != "failed":
            self.done(fe.PersonaDone(exit_, variables))
            return
        # Never leave the caller in silence: say something now, then take the failed branch.
        text = self.fallback(persona)
        self.storage.add_event(self.call_id, "say", {"text": text})
        task = asyncio.get_running_loop().create_task(
            self.playback.say(text, on_done=lambda: self.done(fe.PersonaDone(exit_, variables))))
        task.add_done_callback(self._spoken)

    def _spoken(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("persona fallback could not be spoken", exc_info=task.exception(),
                      extra=log_extra(call_id=self.call_id))

    def _on_action(self, action: str, arguments: dict[str, Any]) -> None:
        self.storage.add_event(self.call_id, "persona_action", {"action": action, "arguments": arguments})
        handler = self._actions.get(action)
        # The persona worker is a peer, not our code: an action it should not send is
        # recorded above and ignored, so a confused model cannot break the call.
        if handler is not None:
            handler(arguments)

    def _set_variable(self, arguments: dict[str, Any]) -> None:
        if isinstance(arguments.get("name"), str):
            self._variables[arguments["name"]] = arguments.get("value")

    def _send_dtmf(self, arguments: dict[str, Any]) -> None:
        self.send_dtmf(str(arguments.get("digits", "")))

    def _record(self, arguments: dict[str, Any]) -> None:
        persona = self.job.persona if self.job else "persona"
        self.pause_recording(arguments.get("pause") is True, f"persona:{persona}")

    def _transfer(self, arguments: dict[str, Any]) -> None:
        # Set first: a refer's answer must find the bridge expecting it.
        self.transferring = True
        if not self.transfers.request(str(arguments.get("to", ""))):
            self.transferring = False
            return
        self.release()
