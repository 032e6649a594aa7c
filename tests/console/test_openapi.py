"""The HTTP API under a fuzzer. The appliance serves an OpenAPI document that is valid, names every
route it answers (it refuses to start otherwise) and no route it does not; schemathesis, run against
a live appliance (SIP, a console, the Twilio gateway, one real call with its recording), finds no
5xx, no answer the document does not describe, and no 4xx without a JSON error body, whoever asks:
an admin, a supervisor, an operator, or nobody.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import checks

from appliance.console import drain, egress, http, openapi, operator_api, recording_api
from appliance.console.http import CALL_ID
from tests.support.appliance import ApplianceProcess
from tests.support.console import PASSWORD, add_user
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario
from twilio_gateway import webhooks

pytestmark = pytest.mark.sip

# Every route's Operation, as the appliance registers them (Twilio's with twilio.enabled).
OPERATIONS = [*http.OPERATIONS.values(), drain.GET, drain.POST, *operator_api.PAGES_OPERATIONS.values(),
              operator_api.LOGIN, operator_api.ME, operator_api.OFFER, recording_api.PAUSE, recording_api.RESUME,
              egress.AUDIO, *webhooks.OPERATIONS, http.OPENAPI]

# Who logs in for each role (accounts made with the real CLI): /api/me and the WebRTC offer look
# the account up, so a token minted for nobody would only ever see their 403.
PEOPLE = {"admin": "ada", "supervisor": "sam", "operator": "olive"}
# The fuzzing phase's cases per operation (its coverage phase adds its own): the module takes
# about a minute on two cores.
MAX_EXAMPLES = 30
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
NOWHERE = "http://127.0.0.1:9"  # Twilio's REST API for this box: the discard port, nothing listens


@dataclass
class Box:
    app: ApplianceProcess
    tokens: dict[str, str]  # role → a token from POST /api/login
    call_id: str  # a real call, ended, with its recording

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app.http_port}"

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One appliance for the module: fuzzing it takes minutes, starting it seconds. Nothing it is
    configured with can call out: one SIP trunk (loopback callers), no transfers, no webhooks, and
    Twilio's REST API at a port where nothing listens."""
    root = tmp_path_factory.mktemp("openapi")
    app = ApplianceProcess(root, workers=1, rtc_workers=1, environment={"TWILIO_AUTH_TOKEN": secrets.token_hex(16)},
                           extra={"personas": {"workers": 0},
                                  "twilio": {"enabled": True, "public_url": "https://switchboard.example.com",
                                             "account_sid": ACCOUNT_SID, "api_base_url": NOWHERE}})
    try:
        app.start()
        tokens = {}
        for role, name in PEOPLE.items():
            add_user(app, name, role=role, queues="billing" if role == "operator" else "")
            answer = requests.post(f"http://127.0.0.1:{app.http_port}/api/login", timeout=10,
                                   json={"username": name, "password": PASSWORD})
            assert answer.status_code == 200, answer.text
            tokens[role] = answer.json()["token"]
        result = run_sipp(caller_scenario(root, "1"), app.sip_port, root)
        assert result.successful == 1, result.output
        (call,) = app.wait_calls_closed(1)
        assert call["recording_path"], call
        yield Box(app, tokens, call["id"])
    finally:
        app.stop()


def _document(box: Box) -> dict[str, Any]:
    answer = requests.get(box.url + "/api/openapi.json", headers=box.headers("operator"), timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    return answer.json()


def test_the_document_is_valid_openapi_for_people_with_a_token(box: Box) -> None:
    answer = requests.get(box.url + "/api/openapi.json", timeout=10)
    assert (answer.status_code, answer.json()) == (401, {"error": "missing or invalid bearer token"})
    document = _document(box)
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "a console token; the roles each route lets in are listed in its requirement"}
    operations = {(method.upper(), path): operation for path, item in document["paths"].items()
                  for method, operation in item.items()}
    # The roles written are the roles enforced (both come from one Operation).
    assert operations[("GET", "/metrics")]["security"] == [{"bearer": ["admin", "supervisor"]}]
    assert operations[("POST", "/api/drain")]["security"] == [{"bearer": ["admin"]}]
    assert operations[("GET", "/healthz")]["security"] == []
    assert operations[("POST", "/twilio/voice")]["security"] == [{"X-Twilio-Signature": []}]
    assert "application/x-www-form-urlencoded" in operations[("POST", "/twilio/voice")]["requestBody"]["content"]
    recording = operations[("GET", "/api/calls/{call_id}/recording")]
    assert {"200", "206", "416"} <= set(recording["responses"])
    assert [p["name"] for p in recording["parameters"] if p["in"] == "header"] == ["Range"]
    assert {path for (_, path), o in operations.items() if o.get("x-websocket")} == {
        "/api/calls/{call_id}/audio", "/twilio/media"}
    # Every 4xx of every operation is the one error body.
    for operation in operations.values():
        for status, answer_ in operation["responses"].items():
            if status.startswith("4"):
                assert answer_["content"] == {"application/json": {"schema": {
                    "$ref": "#/components/schemas/ErrorBody"}}}, (operation["operationId"], status)


def test_every_documented_operation_is_a_route_the_appliance_answers(box: Box) -> None:
    """The other half of HttpApi's own check (no route without an Operation): no Operation without a route."""
    for path, item in _document(box)["paths"].items():
        for method in item:
            url = box.url + path.replace("{call_id}", "CA00000000")
            answer = requests.request(method, url, headers=box.headers("admin"), timeout=10)
            assert answer.status_code != 405, (method, path)
            assert not (answer.status_code == 404 and answer.json() == {"error": "Not Found"}), (method, path)


# --- the fuzzer


def json_error_body(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx says why in JSON, whatever the route (the document promises an ErrorBody)."""
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), f"{response.status_code} with {content_type!r}"
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body


# Not negative_data_rejection: the API ignores query parameters it does not know (as a browser's
# cache-buster expects), and each case goes out with the tokens here whatever Authorization the
# fuzzer left out. Negative cases still have to get no 5xx and only answers the document describes.
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance, checks.missing_required_header,
          checks.unsupported_method, checks.allow_header_conformance, checks.ignored_auth, json_error_body]
# Schemathesis makes its tests when pytest collects them, before any appliance runs: from the
# document as the code writes it, which test_the_fuzzed_document_is_the_one_served holds to the one
# served. WebSockets (live audio) are no request and answer; their refusals are tested where they live.
FUZZED = schemathesis.openapi.from_dict(openapi.document(OPERATIONS)).exclude(tag="websocket")
AUDIO_SECTION = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


@FUZZED.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
    """An offer without an audio section is refused before the WebRTC worker sees it; give most an
    audio section, so that the worker's SDP parsing is fuzzed too."""
    if isinstance(body, dict) and isinstance(body.get("sdp"), str):
        return st.sampled_from([body, body | {"sdp": AUDIO_SECTION + body["sdp"]},
                                body | {"sdp": body["sdp"] + "\r\nm=audio " + body["sdp"]}])
    return st.just(body)


def test_the_fuzzed_document_is_the_one_served(box: Box) -> None:
    assert _document(box) == openapi.document(OPERATIONS)


@FUZZED.parametrize()
# derandomize: the same cases on every run (Hypothesis seeds from the test), so CI is reproducible.
# No deadline or health checks: every example is four requests to a live server (eight about a
# call), slower than Hypothesis expects of a function.
@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_the_fuzzer_finds_nothing_whoever_asks(case: schemathesis.Case, box: Box) -> None:
    _as_everyone(case, box)
    call_id = (case.path_parameters or {}).get("call_id")
    if isinstance(call_id, str) and CALL_ID.fullmatch(call_id):
        # Call ids the fuzzer makes up are never stored: the same request about the real call too
        # (its record, its recording under each Range, pausing it after it ended).
        case.path_parameters = {**(case.path_parameters or {}), "call_id": box.call_id}
        _as_everyone(case, box)


def _as_everyone(case: schemathesis.Case, box: Box) -> None:
    for role in PEOPLE:
        case.call_and_validate(base_url=box.url, headers=box.headers(role), checks=CHECKS)
    # And nobody: without whatever Authorization the fuzzer made up for the case.
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.call_and_validate(base_url=box.url, checks=CHECKS)
