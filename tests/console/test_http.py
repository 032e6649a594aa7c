"""The HTTP API over a real socket: who may see what, and every bad request answered with a 4xx."""

from __future__ import annotations

import os
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import schemathesis
from aiohttp import web

from appliance.config import RecordingFormat
from appliance.console.http import Health, HttpApi, RoleHealth
from appliance.core.api import Operation
from appliance.recording.formats import convert
from appliance.rooms.tokens import TokenAuthority
from appliance.storage import Storage
from tests.support.audio import call_recording, decoded
from tests.support.ports import free_port_block

KEY, SECRET = "APIconsole", "console-secret-console-secret-0123"
CALL = "CA0123456789abcdef"
HEALTH = Health(ok=True, short=[], roles={"sip": RoleHealth(expected=2, up=2)}, edge_running=True, workers_up=2,
                workers=2, personas_up=0, personas=0, rtc_up=0, rtc=0, calls_active=0, draining=False)
OTHER = "CAfedcba9876543210"


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession, storage: Storage, tokens: TokenAuthority,
                 recordings: Path, health: Health):
        self.base = base
        self.health = health
        self.session = session
        self.storage = storage
        self.tokens = tokens
        self.recordings = recordings

    def token(self, role: str) -> str:
        return self.tokens.mint(f"{role}-user", role)

    async def get(self, path: str, role: str | None = None, token: str | None = None,
                  **kw) -> tuple[int, dict | bytes, aiohttp.ClientResponse]:
        headers = dict(kw.pop("headers", {}))
        if role:
            token = self.token(role)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.get(self.base + path, headers=headers, allow_redirects=False, **kw) as resp:
            body = await resp.read()
            if resp.content_type == "application/json":
                return resp.status, await resp.json(), resp
            return resp.status, body, resp


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    storage = Storage(tmp_path / "db" / "switchboard.db")
    tokens = TokenAuthority(KEY, SECRET)
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    health = HEALTH.model_copy()
    http = HttpApi(storage, tokens, recordings, health=lambda: health)
    for attempt in range(5):
        port = free_port_block(1)
        try:
            await http.start("127.0.0.1", port)
            break
        except OSError:
            await http.stop()
            if attempt == 4:
                raise
    session = aiohttp.ClientSession()
    client = Api(f"http://127.0.0.1:{port}", session, storage, tokens, recordings, health)
    try:
        yield client
    finally:
        await session.close()
        await http.stop()
        storage.close()


def _wav(path: Path, frames: int = 1600) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(range(256)) * (frames * 4 // 256))
    return path.read_bytes()


async def test_healthz_is_open(api: Api):
    status, body, _ = await api.get("/healthz")
    assert (status, body) == (200, api.health.model_dump())
    api.health.ok = False
    status, body, _ = await api.get("/healthz")
    assert status == 503 and body["ok"] is False


async def test_healthz_stays_open_with_a_stale_token(api: Api):
    status, _, _ = await api.get("/healthz", token="expired-or-garbage")
    assert status == 200


@pytest.mark.parametrize("path", ["/metrics", "/api/calls", f"/api/calls/{CALL}", f"/api/calls/{CALL}/recording"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Bearer "},
     {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["none", "garbage", "empty", "basic"],
)
async def test_protected_paths_need_a_valid_token(api: Api, path: str, headers: dict):
    status, body, _ = await api.get(path, headers=headers)
    assert status == 401
    assert body == {"error": "missing or invalid bearer token"}


async def test_token_signed_with_another_secret_is_401(api: Api):
    forged = TokenAuthority(KEY, "not-the-console-secret-not-the-xx").mint("mallory", "admin")
    status, _, _ = await api.get("/api/calls", token=forged)
    assert status == 401


async def test_metrics_by_role(api: Api):
    status, body, _ = await api.get("/metrics", role="operator")
    assert status == 403 and "admin" in body["error"]
    for role in ("supervisor", "admin"):
        status, body, resp = await api.get("/metrics", role=role)
        assert status == 200
        assert resp.content_type == "text/plain"
        assert b"switchboard_calls_active" in body


async def test_calls_list_newest_first(api: Api):
    api.storage.open_call(CALL, started_at="2026-01-01T10:00:00.000+00:00", flow="default")
    api.storage.open_call(OTHER, started_at="2026-01-02T10:00:00.000+00:00")
    api.storage.update_call(OTHER, ended_at="2026-01-02T10:00:42.000+00:00", end_reason="caller-hangup")
    for role in ("supervisor", "admin"):
        status, body, _ = await api.get("/api/calls", role=role)
        assert status == 200
        assert [c["id"] for c in body["calls"]] == [OTHER, CALL]
    assert body["calls"][0]["duration_s"] == 42.0
    assert body["calls"][1]["duration_s"] is None
    status, body, _ = await api.get("/api/calls?limit=1", role="supervisor")
    assert status == 200 and [c["id"] for c in body["calls"]] == [OTHER]


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "1001", "", "1.5", "9" * 50])
async def test_calls_list_rejects_a_bad_limit(api: Api, limit: str):
    status, body, _ = await api.get(f"/api/calls?limit={limit}", role="operator")
    assert status == 400
    assert "limit" in body["error"]


async def test_one_call_with_its_events(api: Api):
    api.storage.open_call(CALL, from_uri="sip:alice@example.com")
    api.storage.add_event(CALL, "step", {"step": "welcome", "action": "say"})
    api.storage.close_call(CALL, "flow-hangup")
    status, body, _ = await api.get(f"/api/calls/{CALL}", role="supervisor")
    assert status == 200
    assert body["id"] == CALL and body["end_reason"] == "flow-hangup"
    assert body["from_uri"] == "sip:alice@example.com"
    assert [e["kind"] for e in body["events"]] == ["step"]
    assert body["events"][0]["data"] == {"step": "welcome", "action": "say"}
    assert body["duration_s"] >= 0


@pytest.mark.parametrize(
    "call_id",
    ["nope", "CA123", "CA0123456789ABCDEF", "ca0123456789abcdef", "CA" + "a" * 41, "CA0123456789abcdeg",
     "CA01234567%00"],
)
async def test_bad_call_id_is_400(api: Api, call_id: str):
    for suffix in ("", "/recording"):
        status, body, _ = await api.get(f"/api/calls/{call_id}{suffix}", role="admin")
        assert status == 400, suffix
        assert body == {"error": "not a call id"}


async def test_call_id_with_a_trailing_newline_is_400(api: Api):
    status, _, _ = await api.get(f"/api/calls/{CALL}%0A", role="admin")
    assert status == 400


async def test_unknown_call_is_404(api: Api):
    for suffix in ("", "/recording"):
        status, body, _ = await api.get(f"/api/calls/{CALL}{suffix}", role="admin")
        assert status == 404 and body == {"error": "no such call"}


async def test_recording_downloads_as_wav_for_supervisors_and_the_operator_who_took_the_call(api: Api):
    path = api.recordings / "2026" / "01" / "01" / f"{CALL}.wav"
    content = _wav(path)
    api.storage.open_call(CALL, recording_path=str(path))
    status, body, _ = await api.get(f"/api/calls/{CALL}/recording", role="operator")
    assert status == 404  # not theirs: as if it did not exist
    api.storage.add_event(CALL, "operator_joined", {"identity": "operator-user"})
    for role in ("operator", "supervisor", "admin"):
        status, body, resp = await api.get(f"/api/calls/{CALL}/recording", role=role)
        assert status == 200
        assert resp.headers["Content-Type"] == "audio/wav"
        assert body == content


async def test_recording_outside_the_recordings_dir_is_404(api: Api, tmp_path: Path):
    outside = tmp_path / "elsewhere" / "secret.wav"
    _wav(outside)
    api.storage.open_call(CALL, recording_path=str(outside))
    status, body, _ = await api.get(f"/api/calls/{CALL}/recording", role="admin")
    assert status == 404 and body == {"error": "recording file is missing"}


async def test_recording_path_that_climbs_out_is_404(api: Api, tmp_path: Path):
    _wav(tmp_path / "secret.wav")
    api.storage.open_call(CALL, recording_path=str(api.recordings / ".." / "secret.wav"))
    status, _, _ = await api.get(f"/api/calls/{CALL}/recording", role="admin")
    assert status == 404


async def test_recording_symlink_out_of_the_recordings_dir_is_404(api: Api, tmp_path: Path):
    _wav(tmp_path / "secret.wav")
    link = api.recordings / "link.wav"
    os.symlink(tmp_path / "secret.wav", link)
    api.storage.open_call(CALL, recording_path=str(link))
    status, _, _ = await api.get(f"/api/calls/{CALL}/recording", role="admin")
    assert status == 404


async def test_missing_or_absent_recording_is_404(api: Api):
    api.storage.open_call(CALL)
    status, body, _ = await api.get(f"/api/calls/{CALL}/recording", role="admin")
    assert status == 404 and body == {"error": "this call has no recording"}
    api.storage.open_call(OTHER, recording_path=str(api.recordings / "gone.wav"))
    status, body, _ = await api.get(f"/api/calls/{OTHER}/recording", role="admin")
    assert status == 404 and body == {"error": "recording file is missing"}


async def test_recording_path_that_is_a_directory_is_not_a_500(api: Api):
    (api.recordings / "2026").mkdir()
    api.storage.open_call(CALL, recording_path=str(api.recordings / "2026"))
    status, _, _ = await api.get(f"/api/calls/{CALL}/recording", role="admin")
    assert 400 <= status < 500


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One real call recording (espeak-ng speech), as each format stores it."""
    folder = tmp_path_factory.mktemp("formats")
    call_recording(folder / "call.wav", 4.0)
    files = {".wav": (folder / "call.wav").read_bytes()}
    for target in (RecordingFormat.OGG_OPUS, RecordingFormat.FLAC):
        done = convert(folder / "call.wav", target, opus_bitrate=24000)
        files[done.path.suffix] = done.path.read_bytes()
    return files


def _stored_call(api: Api, stored: dict[str, bytes], suffix: str) -> bytes:
    path = api.recordings / "2026" / "01" / "01" / f"{CALL}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(stored[suffix])
    api.storage.open_call(CALL, recording_path=str(path))
    return stored[suffix]


FORMATS = [(".wav", "audio/wav", "wav"), (".ogg", "audio/ogg", "ogg_opus"), (".flac", "audio/flac", "flac")]


@pytest.mark.parametrize("suffix, content_type, name", FORMATS)
async def test_each_format_downloads_whole_with_its_content_type_and_plays(api: Api, stored, tmp_path: Path,
                                                                          suffix: str, content_type: str, name: str):
    content = _stored_call(api, stored, suffix)
    status, body, resp = await api.get(f"/api/calls/{CALL}/recording", role="supervisor")
    assert status == 200 and resp.headers["Content-Type"] == content_type and body == content
    assert resp.headers["Accept-Ranges"] == "bytes"
    (tmp_path / f"got{suffix}").write_bytes(body)  # type: ignore[arg-type]
    channels, rate, audio = decoded(tmp_path / f"got{suffix}")
    assert channels == 2 and abs(len(audio) / rate - 4.0) <= 0.1
    _, record, _ = await api.get(f"/api/calls/{CALL}", role="admin")
    assert record["recording_format"] == name  # type: ignore[index]


@pytest.mark.parametrize("suffix, content_type, name", FORMATS)
async def test_each_format_answers_range_requests(api: Api, stored, suffix: str, content_type: str, name: str):
    content = _stored_call(api, stored, suffix)
    size = len(content)
    middle = size // 2
    for asked, start, end in [("bytes=0-99", 0, 99), (f"bytes={middle}-{middle + 999}", middle, middle + 999),
                              ("bytes=-500", size - 500, size - 1), (f"bytes={size - 10}-", size - 10, size - 1)]:
        status, body, resp = await api.get(f"/api/calls/{CALL}/recording", role="admin", headers={"Range": asked})
        assert status == 206, asked
        assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert resp.headers["Content-Type"] == content_type
        assert body == content[start:end + 1]
    for beyond in (f"bytes={size}-", f"bytes={size + 100}-{size + 200}"):
        status, body, resp = await api.get(f"/api/calls/{CALL}/recording", role="admin", headers={"Range": beyond})
        assert status == 416, beyond
        assert resp.headers["Content-Range"] == f"bytes */{size}"
        assert "beyond" in body["error"]  # type: ignore[index]


@pytest.mark.parametrize("asked", ["{}", "bytes=9-7", "bytes=0-1,5-9", "items=0-9", "bytes=-", "bytes=x-"])
async def test_a_malformed_range_is_416_with_a_json_body(api: Api, stored, asked: str):
    # Found by the fuzzer (tests/console/test_openapi.py): FileResponse answered these 416 with
    # no body at all, under the recording's Content-Type.
    content = _stored_call(api, stored, ".wav")
    status, body, resp = await api.get(f"/api/calls/{CALL}/recording", role="admin", headers={"Range": asked})
    assert status == 416 and resp.content_type == "application/json"
    assert "one range" in body["error"]  # type: ignore[index]
    assert resp.headers["Content-Range"] == f"bytes */{len(content)}"


async def test_a_range_on_a_recording_changed_since_if_range_is_ignored(api: Api, stored):
    content = _stored_call(api, stored, ".wav")
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    for asked in ("bytes=0-9", "{}"):
        status, body, _ = await api.get(f"/api/calls/{CALL}/recording", role="admin",
                                        headers={"Range": asked, "If-Range": old})
        assert (status, body) == (200, content), asked


async def test_range_requests_are_authorised_as_whole_downloads(api: Api, stored):
    _stored_call(api, stored, ".ogg")
    ranged = {"Range": "bytes=0-99"}
    status, _, _ = await api.get(f"/api/calls/{CALL}/recording", headers=ranged)
    assert status == 401
    status, body, _ = await api.get(f"/api/calls/{CALL}/recording", role="operator", headers=ranged)
    assert status == 404 and body == {"error": "no such call"}  # not theirs
    api.storage.add_event(CALL, "operator_joined", {"identity": "operator-user"})
    status, _, _ = await api.get(f"/api/calls/{CALL}/recording", role="operator", headers=ranged)
    assert status == 206


async def test_a_file_of_no_recording_format_is_not_served(api: Api):
    path = api.recordings / "notes.txt"
    path.write_text("not audio")
    api.storage.open_call(CALL, recording_path=str(path))
    status, body, _ = await api.get(f"/api/calls/{CALL}/recording", role="admin")
    assert status == 404 and body == {"error": "recording file is missing"}


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/nope"), ("POST", "/api/calls"), ("DELETE", f"/api/calls/{CALL}"), ("GET", "/api/calls/"),
     ("GET", "/api")],
)
async def test_unknown_routes_and_methods_are_json_4xx(api: Api, method: str, path: str):
    headers = {"Authorization": f"Bearer {api.token('admin')}"}
    async with api.session.request(method, api.base + path, headers=headers) as resp:
        assert 400 <= resp.status < 500
        assert "error" in await resp.json()


async def test_odd_requests_never_get_a_500(api: Api):
    api.storage.open_call(CALL, recording_path="\x00not a path")
    paths = [
        f"/api/calls/{CALL}/recording",
        "/api/calls?limit=%00",
        "/api/calls?limit=1&limit=2",
        "/api/calls/" + "CA" + "0" * 5000,
        "/api/calls/%E2%98%8E",
        "/metrics?x=" + "y" * 2000,
    ]
    for path in paths:
        status, _, _ = await api.get(path, role="admin")
        assert status != 500 and status < 600, path


def _call_with_secrets(storage: Storage, call_id: str) -> None:
    storage.open_call(call_id, from_uri="sip:+15550100@example.com")
    for digit in "4711#":
        storage.add_event(call_id, "dtmf", {"digit": digit, "method": "rfc4733"})
    storage.add_event(call_id, "variable", {"name": "pin", "value": "4711"})
    storage.add_event(call_id, "tool", {"name": "lookup", "arguments": {"card": "4111 1111 1111 1111", "n": 123456},
                                        "result": {"order": "A-12", "count": 3}})
    storage.add_transcript(call_id, "caller", "caller", "my order is a twelve")


async def test_operators_see_only_the_calls_they_handled(api: Api):
    _call_with_secrets(api.storage, CALL)
    _call_with_secrets(api.storage, OTHER)
    api.storage.add_event(OTHER, "operator_joined", {"identity": "operator-user"})
    status, body, _ = await api.get("/api/calls", role="operator")
    assert status == 200 and [c["id"] for c in body["calls"]] == [OTHER]
    status, body, _ = await api.get(f"/api/calls/{CALL}", role="operator")
    assert status == 404 and body == {"error": "no such call"}
    status, body, _ = await api.get(f"/api/calls/{OTHER}", role="operator")
    assert status == 200 and body["transcript"][0]["text"] == "my order is a twelve"
    # Another operator's token sees nothing of it.
    other = api.tokens.mint("mallory", "operator")
    status, body, _ = await api.get(f"/api/calls/{OTHER}", token=other)
    assert status == 404
    status, body, _ = await api.get("/api/calls", token=other)
    assert status == 200 and body["calls"] == []


@pytest.mark.parametrize("role", ["operator", "supervisor"])
async def test_keys_and_long_digit_runs_are_masked_for_all_but_admins(api: Api, role: str):
    _call_with_secrets(api.storage, CALL)
    api.storage.add_event(CALL, "operator_joined", {"identity": "operator-user"})
    status, body, _ = await api.get(f"/api/calls/{CALL}", role=role)
    assert status == 200
    events = body["events"]
    assert [e["data"]["digit"] for e in events if e["kind"] == "dtmf"] == ["•"] * 5
    assert next(e for e in events if e["kind"] == "variable")["data"] == {"name": "pin", "value": "••••"}
    tool = next(e for e in events if e["kind"] == "tool")["data"]
    assert tool["arguments"] == {"card": "•••• •••• •••• ••••", "n": "••••••"}
    assert tool["result"] == {"order": "A-12", "count": 3}  # short numbers are not secrets
    assert "4711" not in str(body) and "4111" not in str(body)


async def test_admins_see_the_keys_pressed(api: Api):
    _call_with_secrets(api.storage, CALL)
    status, body, _ = await api.get(f"/api/calls/{CALL}", role="admin")
    assert "".join(e["data"]["digit"] for e in body["events"] if e["kind"] == "dtmf") == "4711#"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_case_insensitive(api: Api, scheme: str):
    status, _, _ = await api.get("/api/calls", headers={"Authorization": f"{scheme} {api.token('admin')}"})
    assert status == 200


@pytest.mark.parametrize("role", ["sip", "agent"])
async def test_a_workers_token_does_not_open_the_api(api: Api, role: str):
    # Worker tokens live in worker processes' environments; they are for the hub socket only.
    status, _, _ = await api.get("/api/calls", token=api.tokens.mint(f"{role}-w1", role))
    assert status == 401


async def test_a_pruned_recording_is_410_saying_why(api: Api):
    path = api.recordings / "2026" / "01" / "01" / f"{CALL}.wav"
    _wav(path)
    api.storage.open_call(CALL, recording_path=str(path))
    api.storage.close_call(CALL, "caller-hangup")
    (audio,) = api.storage.audio_of_calls_ended_before("9999")
    path.unlink()
    api.storage.mark_pruned(audio)

    status, body, _ = await api.get(f"/api/calls/{CALL}/recording", role="admin")

    assert status == 410
    assert body["error"].startswith("this call's recording was deleted by retention (appliance recordings prune)")
    status, detail, _ = await api.get(f"/api/calls/{CALL}", role="admin")
    assert status == 200 and detail["recording_pruned_at"] and detail["end_reason"] == "caller-hangup"


async def test_a_method_a_route_does_not_take_is_405_with_allow(api: Api):
    # Found by the fuzzer (tests/console/test_openapi.py): the JSON 405 had lost aiohttp's Allow header.
    for method, path in (("TRACE", "/healthz"), ("POST", "/api/calls"), ("DELETE", f"/api/calls/{CALL}")):
        async with api.session.request(method, api.base + path) as resp:
            assert resp.status == 405
            assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
            assert resp.content_type == "application/json" and "error" in await resp.json()


async def test_a_route_without_an_operation_stops_the_api_from_starting(tmp_path: Path) -> None:
    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="not in the document")

    def register(app: web.Application) -> list[Operation]:
        app.router.add_get("/api/secret", secret)
        return []

    storage = Storage(tmp_path / "other.db")
    try:
        # So a route cannot be left out of /api/openapi.json: the appliance would not start.
        with pytest.raises(RuntimeError, match="HEAD /api/secret, GET /api/secret"):
            HttpApi(storage, TokenAuthority(KEY, SECRET), tmp_path, lambda: HEALTH, routes=(register,))
    finally:
        storage.close()


async def test_the_openapi_document_is_for_people_with_a_token_and_is_valid(api: Api):
    status, body, _ = await api.get("/api/openapi.json")
    assert (status, body) == (401, {"error": "missing or invalid bearer token"})
    for role in ("operator", "supervisor", "admin"):
        status, document, _ = await api.get("/api/openapi.json", role=role)
        assert status == 200
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.1 meta-schema
    assert set(document["paths"]) == {"/healthz", "/metrics", "/api/calls", "/api/calls/{call_id}",  # type: ignore[index]
                                      "/api/calls/{call_id}/recording", "/api/openapi.json"}
