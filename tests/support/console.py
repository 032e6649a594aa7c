"""The console's side of integration tests: accounts made with the real CLI, logins over the
appliance's real HTTPS (its own certificate pinned), and operators as aiortc clients.
"""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.appliance import ROOT, ApplianceProcess
from tests.support.operator_client import OperatorClient

PASSWORD = "correct horse battery"  # every test account's; 8+ characters as the CLI demands


def add_user(app: ApplianceProcess, name: str, role: str = "operator", queues: str = "",
             password: str = PASSWORD) -> None:
    args = [sys.executable, "-m", "appliance.cli", "--config", str(app.config_path), "users", "add", name,
            "--role", role, "--password-env", "TEST_PASSWORD"]
    if queues:
        args += ["--queues", queues]
    subprocess.run(args, check=True, cwd=ROOT, capture_output=True,
                   env=dict(app.env, TEST_PASSWORD=password))


def tls(app: ApplianceProcess) -> ssl.SSLContext:
    """Trusts exactly the certificate this appliance generated, as an operator who checked its fingerprint."""
    context = ssl.create_default_context(cafile=str(app.data_dir / "console.crt"))
    context.check_hostname = False  # the certificate names the host's name; tests reach it as 127.0.0.1
    return context


def console_url(app: ApplianceProcess) -> str:
    return f"https://127.0.0.1:{app.https_port}"


async def request(app: ApplianceProcess, method: str, path: str, token: str | None = None,
                  headers: dict[str, str] | None = None, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    headers = dict(headers or {}) | ({"Authorization": f"Bearer {token}"} if token else {})
    async with aiohttp.ClientSession() as session:
        async with session.request(method, console_url(app) + path, ssl=tls(app), headers=headers,
                                   **kwargs) as response:
            body: Any = await response.read()
            if response.content_type == "application/json":
                body = await response.json()
            return response.status, body, dict(response.headers)


async def login(app: ApplianceProcess, name: str, password: str = PASSWORD) -> dict[str, Any]:
    status, body, _ = await request(app, "POST", "/api/login", json={"username": name, "password": password})
    assert status == 200, body
    return body


async def operator(app: ApplianceProcess, name: str, wav: Path | None = None, available: bool = True,
                   password: str = PASSWORD, client: OperatorClient | None = None) -> tuple[OperatorClient, str]:
    """`name` signed in (with the token), connected over WebRTC through the console's API, and
    (by default) available; `client` instead of a new one playing `wav`."""
    me = await login(app, name, password)
    client = client or OperatorClient(wav)

    async def signal(sdp: str) -> str:
        status, body, _ = await request(app, "POST", "/api/rtc/offer", me["token"], json={"type": "offer", "sdp": sdp})
        assert status == 200, body
        return body["sdp"]

    await client.connect(signal)
    await client.recv("welcome", timeout=10)
    if available:
        client.send({"type": "state", "state": "available"})
        while (await client.recv("state", timeout=5))["state"] != "available":
            pass  # signed in (away) first
    return client, me["token"]



def epoch(iso: str) -> float:
    """An ISO 8601 time of the appliance's (events, call records) as seconds since the epoch."""
    return dt.datetime.fromisoformat(iso).timestamp()


def call_events(app: ApplianceProcess, call_id: str, kind: str) -> list[dict[str, Any]]:
    """The data of a call's events of one kind, in order (through the admin API)."""
    return [e["data"] for e in app.call(call_id)["events"] if e["kind"] == kind]


async def await_state(client: OperatorClient, state: str, timeout: float = 5) -> dict[str, Any]:
    """The next `state` message saying `state`; the ones before it are passed over."""
    while True:
        message = await client.recv("state", timeout)
        if message["state"] == state:
            return message
