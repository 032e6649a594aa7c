"""The console's HTTPS API refuses what it must: no token, a forged, expired or worker token,
the wrong role, a disabled account, too many failed logins, malformed bodies and offers.
Every refusal is a 4xx with a reason; the appliance keeps serving."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from appliance.rooms.tokens import TokenAuthority, worker_identity
from tests.support.appliance import ROOT
from tests.support.console import login, operator, request

pytestmark = pytest.mark.sip

OFFER = "/api/rtc/offer"


async def test_signalling_needs_a_valid_console_token_of_a_live_account(desk) -> None:
    good = TokenAuthority("switchboard", desk.secret)
    forged = TokenAuthority("switchboard", "not the appliance's secret").mint("alice", "operator")
    expired = good.mint("alice", "operator", ttl=dt.timedelta(minutes=-5))
    worker = good.mint(worker_identity("rtc", "r1"), "rtc")  # valid, but for the hub's socket only
    body = {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}
    for token in (None, forged, expired, worker, "not.a.jwt"):
        status, reply, _ = await request(desk, "POST", OFFER, token, json=body)
        assert status == 401, (token, reply)
    # A person unknown to the accounts (a token minted by `appliance token`): no session.
    status, reply, _ = await request(desk, "POST", OFFER, good.mint("mallory", "operator"), json=body)
    assert status == 403 and "disabled or gone" in reply["error"]
    me = await login(desk, "alice")
    status, reply, _ = await request(desk, "GET", "/metrics", me["token"])
    assert status == 403  # an operator token is not a supervisor's
    subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(desk.config_path), "users", "disable",
                    "alice"], check=True, cwd=ROOT, env=desk.env, capture_output=True)
    status, reply, _ = await request(desk, "POST", OFFER, me["token"], json=body)
    assert status == 403, reply  # her token outlives the account; the account decides
    status, reply, _ = await request(desk, "POST", "/api/login", json={"username": "alice",
                                                                       "password": "correct horse battery"})
    assert status == 401


async def test_bad_offers_get_400_and_the_next_good_one_connects(desk) -> None:
    token = (await login(desk, "bob"))["token"]
    cases = [
        ({"type": "offer"}, "sdp"),
        ({"type": "offer", "sdp": "v=0\r\n"}, "audio"),
        ({"type": "answer", "sdp": "v=0\r\nm=audio 9 RTP/AVP 0\r\n"}, "audio"),
        ({"type": "offer", "sdp": "m=audio garbage\r\n" * 5}, "offer refused"),
        ({"type": "offer", "sdp": "x" * 70_000}, "sdp"),
        ({"type": "offer", "sdp": "v=0", "extra": 1}, "extra"),
    ]
    for body, why in cases:
        status, reply, _ = await request(desk, "POST", OFFER, token, json=body)
        assert status == 400 and why in reply["error"], (body, status, reply)
    status, reply, _ = await request(desk, "POST", OFFER, token, data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert status == 400, reply
    status, reply, _ = await request(desk, "POST", OFFER, token, data=b"x" * 300_000)
    assert status == 413, reply
    client, _ = await operator(desk, "bob")  # the WebRTC gateway still serves
    await client.close()
    assert desk.get("/healthz", auth=False)["rtc_up"] == 1


async def test_failed_logins_are_limited_per_user_and_per_address(desk) -> None:
    # Unknown users are answered exactly as wrong passwords are (and count the same).
    status, reply, _ = await request(desk, "POST", "/api/login", json={"username": "nobody", "password": "x"})
    assert (status, reply) == (401, {"error": "wrong username or password"})
    for body in ({"username": "carol"}, {"username": "", "password": "x"}, {"user": "carol", "password": "x"}):
        status, reply, _ = await request(desk, "POST", "/api/login", json=body)
        assert status == 400, (body, reply)
    for _ in range(4):
        status, reply, _ = await request(desk, "POST", "/api/login", json={"username": "carol", "password": "guess"})
        assert status == 401 and reply == {"error": "wrong username or password"}
    # The fifth failure from this address: now even carol's right password waits.
    status, reply, headers = await request(desk, "POST", "/api/login",
                                           json={"username": "carol", "password": "correct horse battery"})
    assert status == 429 and int(headers["Retry-After"]) > 0, (status, reply)
    status, reply, headers = await request(desk, "POST", "/api/login",
                                           json={"username": "alice", "password": "correct horse battery"})
    assert status == 429, reply


async def test_the_console_page_is_served_with_a_strict_policy_and_nothing_from_elsewhere(desk) -> None:
    status, page, headers = await request(desk, "GET", "/")
    assert status == 200 and b"<title>Switchboard console</title>" in page
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for path in ("/console.js", "/console.css"):
        status, body, _ = await request(desk, "GET", path)
        assert status == 200 and b"http://" not in body and b"https://" not in body, path
    status, _, _ = await request(desk, "GET", "/../appliance.yaml")
    assert status == 404
