"""Where a bridge transfer dials and from which worker: numbers need the carrier's
termination, the caller's own worker is preferred while it has room."""

from __future__ import annotations

import asyncio
import socket

import pytest

from appliance.calls.bridge import NoRoute, dial_uri, pick_worker
from appliance.rooms.server import WorkerConnection


def test_sip_uris_are_dialled_as_written():
    assert dial_uri("sip:desk@pbx.example.com:5070", None) == "sip:desk@pbx.example.com:5070"


def test_numbers_go_to_the_outbound_proxy_host():
    assert dial_uri("+15550199", "sip:example.pstn.twilio.com") == "sip:+15550199@example.pstn.twilio.com"
    assert dial_uri("2001", "sips:10.0.0.5:5061") == "sips:2001@10.0.0.5:5061"


def test_a_number_without_an_outbound_proxy_has_no_route():
    with pytest.raises(NoRoute, match="transfers.outbound_proxy"):
        dial_uri("+15550199", None)


def test_anything_else_has_no_route():
    with pytest.raises(NoRoute):
        dial_uri("tel:+15550199", "sip:example.pstn.twilio.com")


async def _workers(*legs: int, role: str = "sip") -> list[WorkerConnection]:
    """Connections over a real socket pair, with `legs[i]` calls each on capacity 2."""
    workers = []
    for i, count in enumerate(legs):
        ours, _theirs = socket.socketpair()
        _, writer = await asyncio.open_connection(sock=ours)
        worker = WorkerConnection(f"w{i + 1}", role, 2, writer)
        worker.legs.update({n: None for n in range(count)})  # type: ignore[misc]
        workers.append(worker)
    return workers


async def test_the_callers_worker_is_preferred_while_it_has_room():
    w1, w2 = await _workers(1, 0)
    assert pick_worker(w1, [w1, w2]) is w1


async def test_a_full_callers_worker_hands_over_to_the_emptiest():
    w1, w2, w3 = await _workers(2, 1, 0)
    assert pick_worker(w1, [w1, w2, w3]) is w3


async def test_a_twilio_callers_bridge_is_dialled_from_a_sip_worker():
    (gateway,) = await _workers(0, role="twilio")
    w1, w2 = await _workers(1, 0)
    assert pick_worker(gateway, [w1, w2]) is w2


async def test_no_worker_with_room_is_no_route():
    w1, w2 = await _workers(2, 2)
    with pytest.raises(NoRoute, match="no SIP worker"):
        pick_worker(w1, [w1, w2])
