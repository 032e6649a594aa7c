"""The participant protocol between SIP workers and the hub: frames, control messages, audio batches."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.core.audio import FRAME_BYTES
from appliance.core.errors import ProtocolError
from appliance.rooms.protocol import (
    KIND_AUDIO,
    KIND_CONTROL,
    MAX_FRAME,
    MAX_INSTRUCTION,
    Answered,
    ClearPlayback,
    Dial,
    DialResult,
    Dtmf,
    Ended,
    Hangup,
    Hello,
    Instruct,
    Offer,
    OfferReply,
    Playout,
    Welcome,
    decode_audio,
    decode_control,
    encode_audio,
    encode_control,
    read_frame,
)

MESSAGES = [
    Hello(token="tok.en.x", worker="w1", capacity=64),
    Welcome(),
    Offer(leg=1, sip_call_id="abc@host", from_uri="sip:+15551234@trunk", to_uri="sip:100@box", to_user="100"),
    Offer(leg=2, sip_call_id="x", from_uri="f", to_uri="t", to_user="u", trunk="main", source="10.0.0.1:5060"),
    OfferReply(leg=1, code=200, call_id="CA0123456789ab"),
    OfferReply(leg=3, code=486, reason="Busy Here"),
    Answered(leg=1, codec="PCMU/8000"),
    Answered(leg=1),
    Dtmf(leg=4, digit="#", method="info"),
    Dtmf(leg=4, digit="7"),
    Ended(leg=5, reason="caller-bye"),
    Hangup(leg=6),
    Hangup(leg=6, reason="operator"),
    Dial(leg=(1 << 31) + 1, call_id="CA0123456789ab", to="sip:+15550199@example.pstn.twilio.com"),
    Dial(leg=(1 << 31) + 1, call_id="CA0123456789ab", to="sip:desk@pbx", caller_id="+15551234"),
    DialResult(leg=(1 << 31) + 1, ok=True, code=200, reason="OK", codec="G722"),
    DialResult(leg=(1 << 31) + 2, ok=False, code=486, reason="Busy Here"),
    Instruct(leg=7, text="Offer the caller a ten percent discount.", by="sup-anna"),
    Instruct(leg=7, text="x" * MAX_INSTRUCTION, by="sup-anna"),
    ClearPlayback(leg=8),
    Playout(leg=8, behind_ms=120),
]


@pytest.mark.parametrize("to", ["+15550199", "tel:+15550199", "sip:a b@host", "<sip:a@host>", ""])
def test_dial_takes_only_a_sip_uri(to: str):
    # The hub resolves numbers to URIs; a worker must never be handed anything else to dial.
    with pytest.raises(ProtocolError):
        decode_control(f'{{"type": "dial", "leg": 1, "call_id": "CA1", "to": "{to}"}}'.encode())


@pytest.mark.parametrize("caller_id", ["", "a b", "<sip:x@y>", "x@evil", "1" * 65])
def test_dial_caller_id_is_only_a_sip_user(caller_id: str):
    # It becomes the From user of the outbound INVITE: nothing that could add a header or a host.
    with pytest.raises(ProtocolError):
        decode_control(
            f'{{"type": "dial", "leg": 1, "call_id": "CA1", "to": "sip:a@host", "caller_id": "{caller_id}"}}'.encode())


@pytest.mark.parametrize("text", ["", "x" * (MAX_INSTRUCTION + 1)])
def test_an_instruction_is_some_text_and_not_an_essay(text: str):
    with pytest.raises(ProtocolError):
        decode_control(f'{{"type": "instruct", "leg": 1, "text": "{text}", "by": "sup-anna"}}'.encode())


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.type)
async def test_control_message_round_trip(message):
    kind, body = await read_frame(_reader(encode_control(message)))
    assert kind == KIND_CONTROL
    decoded = decode_control(body)
    assert type(decoded) is type(message)
    assert decoded == message


async def test_audio_batch_round_trip():
    batch = [(1, bytes(range(256)) * 2 + bytes(128)), (70000, b""), (2**32 - 1, b"\x01\x02"), (3, bytes(FRAME_BYTES))]
    kind, body = await read_frame(_reader(encode_audio(batch)))
    assert kind == KIND_AUDIO
    assert decode_audio(body) == batch
    assert decode_audio(b"") == []


async def test_frames_in_sequence_over_a_real_socket():
    """A worker writes a mixed stream over loopback TCP; the hub side reads it back frame by frame."""
    received: list[tuple[int, bytes]] = []
    done = asyncio.Event()

    async def hub_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                received.append(await read_frame(reader))
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(hub_side, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        audio = [(7, bytes([i]) * FRAME_BYTES) for i in range(3)]
        writer.write(encode_control(MESSAGES[0]) + encode_audio(audio) + encode_control(MESSAGES[-1]))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(done.wait(), timeout=5)
    finally:
        server.close()
        await server.wait_closed()
    assert [k for k, _ in received] == [KIND_CONTROL, KIND_AUDIO, KIND_CONTROL]
    assert decode_control(received[0][1]) == MESSAGES[0]
    assert decode_audio(received[1][1]) == audio
    assert decode_control(received[2][1]) == MESSAGES[-1]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b"42",
        b'"hello"',
        b"{}",
        b'{"type": "nope"}',
        b'{"type": "hello"}',
        b'{"type": "dtmf", "leg": 1, "digit": "x"}',
        b'{"type": "dtmf", "leg": 1, "digit": "12"}',
        b'{"type": "offer_reply", "leg": "one", "code": 200}',
        b'{"type": "hangup", "leg": 1, "reason": "x", "type": 5}',
        encode_control(Welcome())[:-3],
    ],
)
def test_garbage_control_body_is_a_protocol_error(body: bytes):
    with pytest.raises(ProtocolError):
        decode_control(body)


def test_deeply_nested_control_body_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        decode_control(b"[" * 100_000)


def test_truncated_leg_header_is_a_protocol_error():
    body = encode_audio([(1, bytes(FRAME_BYTES))])[5:]
    with pytest.raises(ProtocolError, match="truncated"):
        decode_audio(body + b"\x00\x00\x00")


def test_truncated_pcm_is_a_protocol_error():
    body = encode_audio([(1, bytes(FRAME_BYTES))])[5:]
    with pytest.raises(ProtocolError):
        decode_audio(body[:-10])


@settings(max_examples=150, deadline=None, database=None)
@given(body=st.binary(max_size=200))
def test_random_bodies_raise_nothing_but_protocol_error(body: bytes):
    for decode in (decode_control, decode_audio):
        try:
            decode(body)
        except ProtocolError:
            pass


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1, 2**32 - 1])
async def test_read_frame_rejects_absurd_lengths(length: int):
    with pytest.raises(ProtocolError, match="out of range"):
        await read_frame(_reader(struct.pack(">IB", length, KIND_AUDIO) + b"x" * 16))


async def test_read_frame_accepts_the_largest_frame():
    body = b"\x00" * (MAX_FRAME - 1)
    kind, got = await read_frame(_reader(struct.pack(">IB", MAX_FRAME, KIND_AUDIO) + body))
    assert kind == KIND_AUDIO and len(got) == MAX_FRAME - 1


@pytest.mark.parametrize("data", [b"", b"\x00\x00", encode_control(Welcome())[:-1]])
async def test_read_frame_at_a_cut_stream_raises_incomplete_read(data: bytes):
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(_reader(data))
