"""Call events to a webhook receiver, signed as LiveKit signs its webhooks: a real appliance, real
sipp calls, a loopback HTTP receiver, and livekit-api's own `WebhookReceiver` checking each one."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from livekit import api

from tests.support.http_server import LoopbackServer, Recorded
from tests.support.ports import free_port_block
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip


async def _ok(request: web.Request) -> web.Response:
    return web.Response(status=204)


def _receiver(port: int = 0) -> LoopbackServer:
    return LoopbackServer({"/hooks": _ok}, port=port)


def _config(port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    return {"webhooks": {"allowed": [f"{base}/hooks", "http://127.0.0.1:8765/"]},  # 8765: the shipped flows
            "events": {"webhooks": [{"url": f"{base}/hooks"}], "retry_max_s": 2}}


def _verified(app: Any, request: Recorded, secret: str | None = None) -> Any:
    receiver = api.WebhookReceiver(api.TokenVerifier("switchboard", secret or app.secret))
    return receiver.receive(request.body.decode(), request.headers["Authorization"])


def _names(events: list[Any], call_id: str) -> list[str]:
    return [e.event for e in events if e.room.name == call_id]


def test_a_calls_events_arrive_in_order_signed_as_livekit_webhooks(appliance_factory, tmp_path: Path) -> None:
    receiver = _receiver()
    with receiver.in_thread():
        app = appliance_factory(extra=_config(receiver.port))
        result = run_sipp(caller_scenario(tmp_path, "1"), app.sip_port, tmp_path)
        assert result.successful == 1, result.output
        (call,) = app.wait_calls_closed(1)
        wait_until(lambda: "recording_ready" in [r.json()["event"] for r in receiver.requests],
                   "the recording_ready event", 15, interval=0.2)

    events = [_verified(app, r) for r in receiver.requests]
    assert _names(events, call["id"])[:3] == ["call_started", "call_answered", "call_ended"]
    assert _names(events, call["id"]).index("recording_ready") > 2
    started, ended = events[0], next(e for e in events if e.event == "call_ended")
    assert started.id and started.created_at >= int(time.time()) - 120
    body = {e["event"]: e for e in (r.json() for r in receiver.requests)}
    assert body["call_started"]["call"]["to_uri"] == call["to_uri"] and "sip:100@" in call["to_uri"]
    assert body["call_ended"]["call"]["reason"] == "flow-hangup" and body["call_ended"]["call"]["duration_s"] > 0
    ready = body["recording_ready"]["call"]
    assert ready["path"] == call["recording_path"] and ready["size"] == os.path.getsize(call["recording_path"])
    assert ready["format"] == "wav" and ready["url"].endswith(f"/api/calls/{call['id']}/recording")
    assert ended.room.sid == call["id"]
    assert {r.headers["Content-Type"] for r in receiver.requests} == {"application/webhook+json"}

    # A receiver with another secret, or a body changed on the way, refuses the event.
    with pytest.raises(Exception, match="Signature|signature"):
        _verified(app, receiver.requests[0], secret="another-secret-that-is-long-enough-for-hs256")
    tampered = receiver.requests[0]
    tampered = Recorded(tampered.method, tampered.path, tampered.raw_path, tampered.headers,
                        tampered.body.replace(b"call_started", b"call_startex"))
    with pytest.raises(Exception, match="hash mismatch"):
        _verified(app, tampered)


def test_a_converted_recording_is_announced_once_as_its_converted_file(appliance_factory, tmp_path: Path) -> None:
    receiver = _receiver()
    with receiver.in_thread():
        app = appliance_factory(extra=_config(receiver.port) | {"recording": {"format": "ogg_opus"}})
        result = run_sipp(caller_scenario(tmp_path, "1"), app.sip_port, tmp_path)
        assert result.successful == 1, result.output
        (call,) = app.wait_calls_closed(1)
        wait_until(lambda: "recording_ready" in [r.json()["event"] for r in receiver.requests],
                   "the recording_ready event", 30, interval=0.2)

    # Events keep their order: one announcing the WAV at call_ended would have arrived before this one.
    names = _names([_verified(app, r) for r in receiver.requests], call["id"])
    assert names.count("recording_ready") == 1 and names.index("recording_ready") > names.index("call_ended")
    (ready,) = [r.json()["call"] for r in receiver.requests if r.json()["event"] == "recording_ready"]
    record = app.call(call["id"])
    assert ready["path"] == record["recording_path"] and ready["path"].endswith(".ogg")
    assert ready["format"] == "ogg_opus" and ready["size"] == os.path.getsize(ready["path"])


def test_events_wait_out_a_dead_receiver_and_a_crash_and_arrive_in_order(appliance_factory, tmp_path: Path) -> None:
    port = free_port_block(1)  # nobody listens there yet: the receiver is down
    app = appliance_factory(extra=_config(port))
    down_since = time.monotonic()
    result = run_sipp(caller_scenario(tmp_path, "1"), app.sip_port, tmp_path)
    assert result.successful == 1, result.output
    (first,) = app.wait_calls_closed(1)

    # Killed with the events queued (none could be delivered), then started again.
    os.kill(app.process.pid, signal.SIGKILL)
    app.process.wait()
    wait_until(lambda: not app.child_pids(), "the workers and the edge to exit", 10, interval=0.2)
    app.start()
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    result = run_sipp(caller_scenario(second_dir, "1"), app.sip_port, second_dir)
    assert result.successful == 1, result.output
    calls = app.wait_calls_closed(2)
    second = next(c for c in calls if c["id"] != first["id"])

    time.sleep(max(0.0, 30 - (time.monotonic() - down_since)))  # down for 30 s in all
    receiver = _receiver(port)
    with receiver.in_thread():
        wait_until(lambda: sum(r.json()["event"] == "recording_ready" for r in receiver.requests) >= 2,
                   "both calls' events after the receiver came back", 30, interval=0.2)
    events = [_verified(app, r) for r in receiver.requests]
    for call in (first, second):
        names = _names(events, call["id"])
        assert names[:3] == ["call_started", "call_answered", "call_ended"], names
        assert "recording_ready" in names
    # Oldest first: every event of the first call before any of the second's.
    rooms = [e.room.name for e in events]
    assert rooms.index(second["id"]) > max(i for i, room in enumerate(rooms) if room == first["id"])
    assert len({e.id for e in events}) == len(events)  # none sent twice
    metrics = app.get("/metrics").decode()
    failed = [line for line in metrics.splitlines() if line.startswith("switchboard_webhook_attempts_failed_total ")]
    assert failed and float(failed[0].split()[1]) >= 1  # the restarted appliance retried, too


def test_a_receiver_outside_the_allow_list_is_refused_at_start(tmp_path: Path) -> None:
    from appliance.config import EventsConfig
    from appliance.core.errors import ConfigError
    from appliance.integrations.webhooks import EventWebhooks
    from appliance.storage import Storage

    storage = Storage(tmp_path / "db.sqlite")
    config = EventsConfig.model_validate({"webhooks": [{"url": "http://127.0.0.1:9/ok"},
                                                       {"url": "http://203.0.113.5/steal"}]})
    with pytest.raises(ConfigError, match=r"events\.webhooks\.1\.url: http://203.0.113.5/steal is not under"):
        EventWebhooks(storage, config, ["http://127.0.0.1:9/"], "switchboard", "secret", "http://127.0.0.1:8080")
    storage.close()
