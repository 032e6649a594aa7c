"""Pausing a live call's recording over the API (PCI DSS: while a card number is read).

`POST /api/calls/{id}/recording/pause` and `.../resume`, for admins, supervisors and the
operator on the call (to any other operator the call does not exist, as elsewhere in the API).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from aiohttp import web
from pydantic import BaseModel

from appliance.console.http import CALL_ID, GRANT, CallPath, error, serve
from appliance.core.api import Answer, Operation
from appliance.rooms.tokens import PERSON_ROLES

__all__ = ["RecordingPaused", "RecordingRoutes"]


class RecordingPaused(BaseModel):
    call: str
    paused: bool


def _operation(verb: str, summary: str) -> Operation:
    return Operation("POST", f"/api/calls/{{call_id}}/recording/{verb}", summary, "calls", roles=PERSON_ROLES,
                     path_params=CallPath, answers={200: Answer("the recording's state now", RecordingPaused)},
                     errors={400: "the call id is not CA and 8 to 40 hex digits",
                             404: "no such live call (or, to an operator, not one they are on)",
                             409: "the call is not answered yet, or its recording is paused (or running) already"})


PAUSE = _operation("pause", "Pause a live call's recording (PCI DSS: while a card number is read)")
RESUME = _operation("resume", "Resume a live call's paused recording")


class RecordingRoutes:
    def __init__(self, pause: Callable[[str, bool, str], str | None], handled_by: Callable[[str, str], bool]):
        self.pause = pause  # (call id, paused, by) → why not, or None; KeyError: not a live call
        self.handled_by = handled_by  # (call id, operator) → whether they are on the call now

    def register(self, app: web.Application) -> Sequence[Operation]:
        return serve(app, (PAUSE, partial(self.post, paused=True)), (RESUME, partial(self.post, paused=False)))

    async def post(self, request: web.Request, paused: bool) -> web.Response:
        call_id = request.match_info["call_id"]
        if not CALL_ID.fullmatch(call_id):
            return error(400, "not a call id")
        grant = request[GRANT]
        if grant.allows("operator") and not self.handled_by(call_id, grant.identity):
            return error(404, "no such live call")
        try:
            why = self.pause(call_id, paused, grant.identity)
        except KeyError:
            return error(404, "no such live call")
        if why is not None:
            return error(409, why)
        return web.json_response(RecordingPaused(call=call_id, paused=paused).model_dump())
