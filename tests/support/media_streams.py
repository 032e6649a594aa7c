"""A caller as Twilio brings one: the signed voice webhook, then a bidirectional Media Streams socket.

Speaks Twilio's documented protocol (connected, start, media, dtmf, mark, stop; it hears media,
mark and clear), signs webhooks with the `twilio` package as Twilio does, and sends real audio:
espeak-ng speech at 8 kHz μ-law, 20 ms a message, at real time. What it is sent is kept: the audio
(decoded), every `clear`, and every mark it said back (a mark's audio "played" when it arrived).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from twilio.request_validator import RequestValidator

from appliance.core.audio import SAMPLE_RATE
from appliance.core.g711 import mulaw_decode, mulaw_encode
from appliance.speech.resample import resample
from appliance.speech.tts import EspeakTTS

WIRE_RATE = 8000
CHUNK = 160  # 20 ms of μ-law
SILENCE = bytes([0xFF]) * CHUNK  # μ-law zero
# What the caller's side holds before it plays, as Twilio's media path does: a mark is said back
# once the audio before it has played, this long after it came (at once when a clear drops it).
PLAYOUT_S = 0.1


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def speech(text: str) -> bytes:
    """espeak-ng saying `text`, as μ-law at 8 kHz (what a phone sends through Twilio)."""
    pcm = np.frombuffer(EspeakTTS().synthesize(text), dtype=np.int16)
    return mulaw_encode(resample(pcm, SAMPLE_RATE, WIRE_RATE))


def signed_post_headers(auth_token: str, url: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(auth_token).compute_signature(url, form)}


@dataclass
class TwiML:
    """The voice webhook's answer, read as Twilio reads it."""

    text: str
    stream_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    dial_sip: str | None = None
    rejected: bool = False
    hung_up: bool = False

    @classmethod
    def parse(cls, text: str) -> TwiML:
        root = ET.fromstring(text)
        twiml = cls(text)
        stream = root.find("./Connect/Stream")
        if stream is not None:
            twiml.stream_url = stream.get("url")
            twiml.parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        sip = root.find("./Dial/Sip")
        twiml.dial_sip = sip.text if sip is not None else None
        twiml.rejected = root.find("./Reject") is not None
        twiml.hung_up = root.find("./Hangup") is not None
        return twiml


@dataclass
class Twilio:
    """What Twilio knows: the account, its auth token, and the public URL the box is reached at."""

    account_sid: str
    auth_token: str
    public_url: str  # https://… as configured on the number
    box_url: str  # http://127.0.0.1:PORT, where the box really listens (behind the "proxy")

    async def post(self, session: aiohttp.ClientSession, path: str, form: dict[str, str],
                   sign_url: str | None = None, signature: str | None = None) -> tuple[int, str]:
        """POST `form` to the box at `path`, signed for `sign_url` (default: the public URL of `path`)."""
        headers = signed_post_headers(self.auth_token, sign_url or self.public_url + path, form)
        if signature is not None:
            headers = {"X-Twilio-Signature": signature} if signature else {}
        async with session.post(self.box_url + path, data=form, headers=headers) as response:
            return response.status, await response.text()

    async def voice(self, session: aiohttp.ClientSession, caller: str, called: str,
                    call_sid: str | None = None) -> tuple[str, TwiML]:
        call_sid = call_sid or new_sid("CA")
        form = {"AccountSid": self.account_sid, "CallSid": call_sid, "From": caller, "To": called,
                "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
        status, text = await self.post(session, "/twilio/voice", form)
        assert status == 200, (status, text)
        return call_sid, TwiML.parse(text)


class MediaStreamCall:
    """One stream, as Twilio's media servers run it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, call_sid: str, account_sid: str):
        self.ws = ws
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = new_sid("MZ")
        self.heard = bytearray()  # μ-law the box sent
        self.heard_at: list[float] = []  # the loop's time as each media message came (gaps, for bench/)
        self.clears: list[int] = []  # len(heard) at each clear
        self.marks: list[str] = []
        self.closed = asyncio.get_running_loop().create_future()  # the close code
        self._to_send: asyncio.Queue[bytes] = asyncio.Queue()
        self._sequence = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._marks_due: dict[str, asyncio.TimerHandle] = {}

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, box_url: str, call_sid: str, account_sid: str,
                   **kwargs: Any) -> MediaStreamCall:
        ws = await session.ws_connect(box_url.replace("http", "ws", 1) + "/twilio/media", **kwargs)
        return cls(ws, call_sid, account_sid)

    async def send(self, event: str, body: dict[str, Any] | None = None) -> None:
        self._sequence += 1
        message: dict[str, Any] = {"event": event, "sequenceNumber": str(self._sequence)}
        if event != "connected":
            message["streamSid"] = self.stream_sid
        await self.ws.send_str(json.dumps(message | (body or {})))

    async def start(self, parameters: dict[str, str], encoding: str = "audio/x-mulaw") -> None:
        """connected, start, then 20 ms of audio every 20 ms (silence unless `say` queued speech)."""
        await self.ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await self.send("start", {"start": {
            "accountSid": self.account_sid, "streamSid": self.stream_sid, "callSid": self.call_sid,
            "tracks": ["inbound"], "customParameters": parameters,
            "mediaFormat": {"encoding": encoding, "sampleRate": 8000, "channels": 1}}})
        self._tasks = [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._talk())]

    def say(self, mulaw: bytes) -> None:
        for i in range(0, len(mulaw), CHUNK):
            self._to_send.put_nowait(mulaw[i:i + CHUNK].ljust(CHUNK, b"\xff"))

    @property
    def speaking(self) -> bool:
        """Speech queued by `say` is still being sent."""
        return not self._to_send.empty()

    @property
    def queued_s(self) -> float:
        """Seconds of speech queued by `say` and not yet sent."""
        return self._to_send.qsize() * 0.02

    async def dtmf(self, digit: str) -> None:
        await self.send("dtmf", {"dtmf": {"track": "inbound_track", "digit": digit}})

    async def stop(self) -> None:
        await self.send("stop", {"stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})

    async def close_code(self, timeout: float = 20) -> int | None:
        """The code the box closed the stream with (reading to the end if nothing listens yet)."""
        if not self._tasks:
            async for _ in self.ws:
                pass
            return self.ws.close_code
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    def heard_pcm16k(self) -> bytes:
        return resample(mulaw_decode(bytes(self.heard)), WIRE_RATE, SAMPLE_RATE).tobytes()

    async def close(self) -> None:
        for handle in self._marks_due.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()

    async def _played(self, name: str) -> None:
        self._marks_due.pop(name, None)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send("mark", {"mark": {"name": name}})

    async def _talk(self) -> None:
        loop = asyncio.get_running_loop()
        next_at, chunk = loop.time(), 0
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self.ws.closed:
                audio = SILENCE if self._to_send.empty() else self._to_send.get_nowait()
                chunk += 1
                await self.send("media", {"media": {"track": "inbound", "chunk": str(chunk),
                                                    "timestamp": str(chunk * 20),
                                                    "payload": base64.b64encode(audio).decode()}})
                next_at += 0.02
                await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _listen(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(frame.data)
            assert message["streamSid"] == self.stream_sid, message
            if message["event"] == "media":
                self.heard += base64.b64decode(message["media"]["payload"])
                self.heard_at.append(asyncio.get_running_loop().time())
            elif message["event"] == "clear":
                self.clears.append(len(self.heard))
                for name in list(self._marks_due):
                    self._marks_due.pop(name).cancel()
                    await self._played(name)
            elif message["event"] == "mark":
                name = message["mark"]["name"]
                self.marks.append(name)
                self._marks_due[name] = asyncio.get_running_loop().call_later(
                    PLAYOUT_S, lambda name=name: self._tasks.append(asyncio.ensure_future(self._played(name))))
        if not self.closed.done():
            self.closed.set_result(self.ws.close_code)


class StalledClient:
    """A Media Streams client that opens its stream and then reads nothing, not even a close.

    A raw socket with a small receive buffer: any real WebSocket client library keeps reading
    into a queue of its own, which would hide the stall for many seconds.
    """

    def __init__(self, port: int):
        import socket

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        self.sock.sendall((f"GET /twilio/media HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(1)  # byte by byte: leave the first frames unread in the socket
        assert response.startswith(b"HTTP/1.1 101"), response

    def send_text(self, text: str) -> None:
        """One masked text frame, as RFC 6455 requires of a client."""
        payload = text.encode()
        mask = secrets.token_bytes(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self) -> None:
        self.sock.close()
