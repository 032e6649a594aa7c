"""Pausing a live call's recording over the API (PCI DSS: while a card number is read).

`POST /api/calls/{id}/recording/pause` and `.../resume`, for admins, supervisors and the
operator on the call (to any other operator the call does not exist, as elsewhere in the API).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from appliance.console.http import CALL_ID, GRANT, error, needs

__all__ = ["RecordingRoutes"]

PATH = "/api/calls/{call_id}/recording/{verb:pause|resume}"


class RecordingRoutes:
    def __init__(self, pause: Callable[[str, bool, str], str | None], handled_by: Callable[[str, str], bool]):
        self.pause = pause  # (call id, paused, by) → why not, or None; KeyError: not a live call
        self.handled_by = handled_by  # (call id, operator) → whether they are on the call now

    def register(self, app: web.Application) -> None:
        app.router.add_post(PATH, needs("operator", "supervisor", "admin")(self.post))

    async def post(self, request: web.Request) -> web.Response:
        call_id, verb = request.match_info["call_id"], request.match_info["verb"]
        if not CALL_ID.fullmatch(call_id):
            return error(400, "not a call id")
        grant = request[GRANT]
        if grant.allows("operator") and not self.handled_by(call_id, grant.identity):
            return error(404, "no such live call")
        paused = verb == "pause"
        try:
            why = self.pause(call_id, paused, grant.identity)
        except KeyError:
            return error(404, "no such live call")
        if why is not None:
            return error(409, why)
        return web.json_response({"call": call_id, "paused": paused})
