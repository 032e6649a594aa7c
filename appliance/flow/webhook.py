"""The one outbound HTTP client for webhooks: flow `webhook:` steps, persona webhook tools and
event webhooks.

`post_json` POSTs JSON to a URL already on the allow-list and returns the decoded reply, or
raises WebhookError with a reason fit for `webhook_error`; `post_body` sends bytes already
encoded (an event whose signature covers them exactly) and ignores what the reply says. What it guarantees, whatever the
server does:

- the URL requested is `policy.normalise_url(url)`, the form the allow-list checked;
- no redirect is followed: a 3xx is an error (a 307 would re-POST the caller's number and
  digits to wherever it points, past the allow-list);
- DNS rebinding: the host is resolved once, here; a host *name* answering with a loopback,
  link-local (cloud metadata), multicast, unspecified or reserved address is refused (name
  the IP in webhooks.allowed to reach those; `localhost` may be loopback), the connection is
  made to those answers only (no second lookup for the name to change in between), and the
  socket's peer address must be one of them before the body is sent. Not covered: a name
  that answers with another private (RFC 1918) address, which intranet hosts legitimately do;
- no proxy from the environment; each call has its own connection, never reused;
- the reply is read to at most MAX_REPLY_BYTES plus one 16 KiB chunk (a larger Content-Length
  is refused unread; aiohttp stops reading the socket while its own buffer holds 128 KiB
  unconsumed), is never inflated (Accept-Encoding: identity; a compressed reply is an
  error), and a reply built to break the decoder (deep nesting, NaN, 1e999999, a 100k-digit
  integer, bad UTF-8) is an error, never an exception out of the call;
- the whole exchange, DNS included, ends within the timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from appliance.flow.engine import WebhookDone
from appliance.flow.policy import normalise_url
from appliance.observability.logging import log_extra

__all__ = ["MAX_REPLY_BYTES", "WebhookError", "call_webhook", "pinned_connector", "post_body", "post_json"]

log = logging.getLogger(__name__)
MAX_REPLY_BYTES = 64 * 1024
MAX_REPLY_DEPTH = 32  # a variable nested deeper is no use to a flow; far below the recursion limit
_CHUNK = 16 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookError(Exception):
    """Why a webhook gave no usable reply; the text is what the flow sees in `webhook_error`."""


async def call_webhook(url: str, payload: dict[str, Any], timeout: float, call_id: str | None = None) -> WebhookDone:
    """A flow's webhook step: anything but a JSON object is an error for the step's `on_error`."""
    try:
        data = await post_json(url, payload, timeout, call_id)
    except WebhookError as exc:
        return WebhookDone(ok=False, error=str(exc))
    if not isinstance(data, dict):
        return WebhookDone(ok=False, error=str(_failed(url, "reply is not a JSON object", call_id)))
    return WebhookDone(ok=True, data=data)


async def post_json(url: str, payload: Any, timeout: float, call_id: str | None = None) -> Any:
    """POST `payload` as JSON and return the decoded reply (`{}` for an empty 2xx reply)."""
    body = json.dumps(payload).encode()
    reply = await post_body(url, body, {"Content-Type": "application/json"}, timeout, call_id)
    try:
        return _decode(reply)
    except WebhookError as exc:
        _failed(url, str(exc), call_id)
        raise


async def post_body(url: str, body: bytes, headers: dict[str, str], timeout: float,
                    call_id: str | None = None) -> bytes:
    """POST `body` as it is, with `headers`; the reply's body (any 2xx), else WebhookError."""
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(url, body, headers)
    except WebhookError as exc:
        _failed(url, str(exc), call_id)
        raise
    except TimeoutError:
        raise _failed(url, f"no reply within {timeout:g} s", call_id) from None
    except aiohttp.ClientError as exc:
        raise _failed(url, f"{type(exc).__name__}: {exc}", call_id) from None
    except OSError as exc:  # DNS failures from getaddrinfo
        raise _failed(url, f"{type(exc).__name__}: {exc}", call_id) from None
    except Exception as exc:  # noqa: BLE001 - a server must never crash the call it answers
        log.exception("webhook client failed", extra=log_extra(call_id=call_id, url=url))
        raise _failed(url, f"{type(exc).__name__}", call_id) from None


async def _exchange(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    try:
        url = normalise_url(url)
    except ValueError as exc:
        raise WebhookError(f"URL refused: {exc}") from None
    target = URL(url, encoded=True)  # as normalised: yarl must not re-read the path its own way
    if target.scheme not in ("http", "https"):
        raise WebhookError("URL refused: a webhook is http or https")
    connector = await pinned_connector(target)
    # read_bufsize: aiohttp pauses the socket at twice this unconsumed (its default is 256 KiB).
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                     read_bufsize=MAX_REPLY_BYTES) as session:
        async with session.post(target, data=body, allow_redirects=False,
                                headers={**headers, "User-Agent": "Switchboard",
                                         "Accept-Encoding": "identity"}) as response:
            if 300 <= response.status < 400:
                raise WebhookError(f"HTTP {response.status} (redirects are not followed)")
            if response.status // 100 != 2:
                raise WebhookError(f"HTTP {response.status}")
            encoding = response.headers.get("Content-Encoding", "").strip().lower() or "identity"
            if encoding != "identity":
                raise WebhookError(f"reply is compressed (Content-Encoding: {encoding})")
            if (response.content_length or 0) > MAX_REPLY_BYTES:
                raise WebhookError("reply too large")
            reply = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                reply += chunk
                if len(reply) > MAX_REPLY_BYTES:
                    raise WebhookError("reply too large")  # leaving closes the connection unread
    return bytes(reply)


async def pinned_connector(target: URL) -> aiohttp.TCPConnector:
    """A connector for one request to `target` (an allow-listed, normalised URL): its host looked
    up once and each answer checked, the socket's peer checked before anything is sent."""
    assert target.host is not None and target.port is not None  # normalise_url guarantees both
    return _PinnedConnector(target.host, await _resolve(target.host, target.port))


async def _resolve(host: str, port: int) -> list[ResolveResult]:
    """The addresses the connection may go to: one lookup, each answer checked."""
    literal = host.strip("[]")
    try:
        address: IPAddress | None = ipaddress.ip_address(literal)
    except ValueError:
        address = None
    if address is not None:  # the allow-list named this address itself
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        return [ResolveResult(hostname=literal, host=literal, port=port, family=family, proto=0, flags=0)]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    results: list[ResolveResult] = []
    for family, _, proto, _, sockaddr in infos:
        answer = _plain(ipaddress.ip_address(sockaddr[0]))
        why = _refused(host, answer)
        if why:
            raise WebhookError(f"{host} resolves to {answer}, {why}; name the address in webhooks.allowed to call it")
        results.append(ResolveResult(hostname=host, host=str(answer), port=port, family=family,
                                     proto=proto, flags=socket.AI_NUMERICHOST))
    if not results:
        raise WebhookError(f"{host} has no address")
    return results


def _refused(host: str, address: IPAddress) -> str | None:
    if address.is_loopback:
        # RFC 6761: localhost is loopback by definition, so naming it is naming loopback.
        return None if host == "localhost" or host.endswith(".localhost") else "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a host address"
    return None


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class _PinnedResolver(AbstractResolver):
    """Answers for the request's one host with the addresses `_resolve` already checked."""

    def __init__(self, host: str, addresses: list[ResolveResult]):
        self.host = host
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        if host != self.host:
            raise OSError(f"{host} is not the webhook's host")  # no redirects, so never another
        return [a for a in self.addresses if family in (socket.AF_UNSPEC, a["family"])]

    async def close(self) -> None:
        pass


class _PinnedConnector(aiohttp.TCPConnector):
    """Connects to the checked addresses only, and checks the socket's peer before the request is sent."""

    def __init__(self, host: str, addresses: list[ResolveResult]):
        super().__init__(resolver=_PinnedResolver(host, addresses), use_dns_cache=False, force_close=True, limit=1)
        self.allowed = {_plain(ipaddress.ip_address(a["host"])) for a in addresses}

    async def connect(self, req: aiohttp.ClientRequest, traces: list[Any], timeout: aiohttp.ClientTimeout
                      ) -> aiohttp.connector.Connection:
        connection = await super().connect(req, traces, timeout)
        peer = connection.transport.get_extra_info("peername") if connection.transport else None
        if not peer or _plain(ipaddress.ip_address(peer[0])) not in self.allowed:
            connection.close()
            raise WebhookError(f"connected to {peer[0] if peer else 'nothing'}, not an address of {req.url.host}")
        return connection


def _decode(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        data = json.loads(body, parse_constant=_not_a_number, parse_float=_finite)
    except Exception:  # noqa: BLE001 - ValueError, RecursionError, MemoryError, UnicodeDecodeError alike
        raise WebhookError("reply is not JSON") from None
    if _depth(data) > MAX_REPLY_DEPTH:
        raise WebhookError("reply is nested too deeply")
    return data


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    # 1e999999 decodes to inf, which json.dumps would send on as the non-JSON `Infinity`.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _depth(data: Any) -> int:
    """How deeply `data` nests, counted without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        value, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth > MAX_REPLY_DEPTH:
            break
        if isinstance(value, dict):
            todo += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            todo += [(v, depth + 1) for v in value]
    return deepest


def _failed(url: str, error: str, call_id: str | None) -> WebhookError:
    log.warning("webhook failed", extra=log_extra(call_id=call_id, url=url, error=error))
    return WebhookError(error)
