"""An HTTP API operation described once, as data: its method and path, who may call it, and the
pydantic models of what it takes and answers. The console registers its routes from these and
writes the OpenAPI document from the same ones (appliance/console/openapi.py), so the document
cannot promise what the code does not do; the Twilio gateway describes its webhooks the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

__all__ = ["Answer", "ErrorBody", "Operation"]


class ErrorBody(BaseModel):
    """The body of every refusal (4xx) and of the rare 5xx: what went wrong, in words."""

    model_config = ConfigDict(extra="forbid")
    error: str


@dataclass(frozen=True)
class Answer:
    """One kind of success: a JSON body (`model`, or `media` application/json for a free-form one),
    a body of other media types (`media`), or none."""

    description: str
    model: type[BaseModel] | None = None
    media: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # header → what it says


@dataclass(frozen=True)
class Operation:
    method: str  # GET or POST (a GET also answers HEAD, as aiohttp registers it)
    path: str  # as both aiohttp and OpenAPI write it: /api/calls/{call_id}
    summary: str
    tag: str  # the part of the API it belongs to: calls, console, operations, twilio
    # None: open to anyone. Otherwise a console bearer token of one of these roles (401 without
    # a valid one, 403 with another role): `needs` enforces exactly the roles written here.
    roles: tuple[str, ...] | None = None
    answers: Mapping[int, Answer] = field(default_factory=dict)
    errors: Mapping[int, str] = field(default_factory=dict)  # status → when; each body an ErrorBody
    body: type[BaseModel] | None = None  # an application/json request body
    form: type[BaseModel] | None = None  # an application/x-www-form-urlencoded request body
    query: type[BaseModel] | None = None  # one query parameter per field
    path_params: type[BaseModel] | None = None  # one path parameter per field
    headers: type[BaseModel] | None = None  # one request header per field, named by its alias
    signature_header: str | None = None  # signed by its caller in this header instead of a token (Twilio)
    websocket: bool = False  # the GET upgrades to a WebSocket (101); the messages are in `summary`
