"""The webhook URL allow-list compares normalised URLs, so no spelling of a path reaches past its prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from appliance.flow.policy import normalise_url, url_allowed
from appliance.flow.webhook import call_webhook
from tests.support.http_server import LoopbackServer

HOOKS = "http://127.0.0.1:8765/hooks/"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8765/hooks/../admin",
        "http://127.0.0.1:8765/hooks/a/../../admin",
        "http://127.0.0.1:8765/hooks/%2e%2e/admin",
        "http://127.0.0.1:8765/hooks/%2E%2e/admin",
        "http://127.0.0.1:8765/hooks/.%2e/admin",
        "http://127.0.0.1:8765/hooks/%2e./admin",
        "http://127.0.0.1:8765/hooks/..%2fadmin",  # a server that decodes %2f sees ../admin
        "http://127.0.0.1:8765/hooks/%2F..%2Fadmin",
        "http://127.0.0.1:8765/hooks\\..\\admin",  # a server that reads \ as / sees ../admin
        "http://127.0.0.1:8765/hooks/..\\admin",
        "http://127.0.0.1:8765/hooks/%5c..%5cadmin",
        "http://127.0.0.1:8765/hooks//../admin",  # a server that merges slashes sees /hooks/../admin
        "http://127.0.0.1:8765/hooks/..;/admin",  # Tomcat reads '..;' as '..'
        "http://127.0.0.1:8765/hooks/..%3b/admin",
        "http://127.0.0.1:8765/hooks/a/.;x/../../admin",
        "http://127.0.0.1:8765/hooks/%252e%252e/admin",  # a server that decodes twice
        "http://127.0.0.1:8765/hooks/\t../admin",  # urlsplit drops tabs silently
        "http://127.0.0.1:8765/hooks/%zz",  # not an escape at all
        "http://127.0.0.1:8765/hooks/caf\u00e9",
        "http://127.0.0.1:8765/hooks/a b",
    ],
)
def test_a_path_that_leaves_the_prefix_or_cannot_be_read_one_way_is_refused(url: str):
    assert not url_allowed(url, [HOOKS])


@pytest.mark.parametrize(
    "url, pattern",
    [
        ("http://127.0.0.1:8765/hooksevil", "http://127.0.0.1:8765/hooks"),
        ("http://127.0.0.1:8765/hooks.evil/x", "http://127.0.0.1:8765/hooks"),
        ("http://127.0.0.1:8765/hooks-admin", "http://127.0.0.1:8765/hooks/"),
        ("http://127.0.0.1:8765/hook", "http://127.0.0.1:8765/hooks/"),
        ("http://0x7f.0.0.1:8765/hooks/x", HOOKS),  # other spellings of an address resolve elsewhere
        ("http://2130706433:8765/hooks/x", HOOKS),
        ("http://127.1:8765/hooks/x", HOOKS),
        ("http://%31%32%37.0.0.1:8765/hooks/x", HOOKS),
        ("http://127.0.0.1:8765:80/hooks/x", HOOKS),
        ("http://crm.example.com:80/x", "http://crm.example.com:8080/"),
    ],
)
def test_a_prefix_matches_on_a_segment_boundary_and_the_host_exactly(url: str, pattern: str):
    assert not url_allowed(url, [pattern])


@pytest.mark.parametrize(
    "url, pattern",
    [
        ("http://127.0.0.1:8765/hooks", "http://127.0.0.1:8765/hooks"),
        ("http://127.0.0.1:8765/hooks/x", "http://127.0.0.1:8765/hooks"),  # no trailing /: the path or below
        ("http://127.0.0.1:8765/hooks/a/../b", HOOKS),  # dot segments that stay inside
        ("http://127.0.0.1:8765/hooks/./b", HOOKS),
        ("http://127.0.0.1:8765/hooks/%7Euser", "http://127.0.0.1:8765/hooks/~user"),
        ("http://CRM.Example.COM./hooks/x", "http://crm.example.com/hooks/"),  # case and the root's dot
        ("http://crm.example.com:80/hooks/x", "http://crm.example.com/hooks/"),  # default ports
        ("https://crm.example.com/hooks/x", "https://crm.example.com:443/hooks/"),
        ("https://eu.crm.example.com/x", "https://*.crm.example.com/"),
        ("http://[::1]:8765/hooks/x", "http://[0:0::1]:8765/hooks/"),
        ("http://127.0.0.1:8765/hooks/x?account=1&b=%2F", HOOKS),  # the query is not part of the path
    ],
)
def test_equivalent_spellings_are_allowed(url: str, pattern: str):
    assert url_allowed(url, [pattern])


@pytest.mark.parametrize(
    "url, normal",
    [
        ("HTTP://Crm.Example.COM.:80/a/./b/../c?x=1#part", "http://crm.example.com/a/c?x=1"),
        ("https://crm.example.com:443", "https://crm.example.com/"),
        ("http://127.0.0.1:8765/hooks/%7e%41%2e/x", "http://127.0.0.1:8765/hooks/~A./x"),
        ("http://127.0.0.1:8765/hooks/%c3%a9", "http://127.0.0.1:8765/hooks/%C3%A9"),
        ("http://127.0.0.1:8765/hooks//a///b", "http://127.0.0.1:8765/hooks/a/b"),
        ("http://[0:0::1]:8765/", "http://[::1]:8765/"),
    ],
)
def test_the_normal_form(url: str, normal: str):
    assert normalise_url(url) == normal


# --- the URL requested is the one that was checked

@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback server answering every POST with {} and keeping the raw path it received."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({})

    async with LoopbackServer(default=handle) as server:
        yield server.url, seen


@pytest.mark.parametrize(
    "path, requested",
    [
        ("/hooks//../admin", "/admin"),  # checked as /admin (refused by /hooks/), so never sent as /hooks/admin
        ("/hooks/a/./b/%7Ec", "/hooks/a/b/~c"),
    ],
)
async def test_the_webhook_requests_the_normalised_url(echo: tuple[str, list[str]], path: str, requested: str):
    base, seen = echo
    done = await call_webhook(base + path, {}, timeout=2)
    assert done.ok, done.error
    assert seen == [requested]


async def test_a_url_that_cannot_be_normalised_is_not_requested(echo: tuple[str, list[str]]):
    base, seen = echo
    done = await call_webhook(base + "/hooks/..%2fadmin", {}, timeout=2)
    assert not done.ok and "URL" in (done.error or "")
    assert seen == []


def test_the_shipped_flows_url_is_already_normal():
    assert normalise_url("http://127.0.0.1:8765/accounts/lookup") == "http://127.0.0.1:8765/accounts/lookup"
