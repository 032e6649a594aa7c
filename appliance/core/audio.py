"""The one audio format inside the box: 16 kHz, 16-bit signed little-endian mono, 20 ms frames.

Every track in a room, every prompt and every recording channel uses it; the SIP workers
convert from and to the wire codec (PCMU/PCMA at 8 kHz are resampled by pjmedia).
"""

from __future__ import annotations

SAMPLE_RATE = 16_000
FRAME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000
BYTES_PER_SAMPLE = 2
FRAME_BYTES = SAMPLES_PER_FRAME * BYTES_PER_SAMPLE
SILENCE = bytes(FRAME_BYTES)


def frames_of(pcm: bytes) -> list[bytes]:
    """Split PCM into whole frames, padding the last with silence."""
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] = frames[-1] + bytes(FRAME_BYTES - len(frames[-1]))
    return frames


def duration_s(pcm: bytes) -> float:
    return len(pcm) / (SAMPLE_RATE * BYTES_PER_SAMPLE)
