"""Audio helpers for tests that recognise what was said."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np

from appliance.core.audio import SAMPLE_RATE
from appliance.speech.tts import EspeakTTS

FRAME = SAMPLE_RATE // 50  # 20 ms


def spoken(pcm: bytes, floor: float = 300.0, margin_s: float = 0.3) -> bytes:
    """The part of 16 kHz s16le `pcm` from its first loud 20 ms to its last, with a margin.

    pocketsphinx normalises each utterance by its mean cepstrum: seconds of a recording's
    silence around two seconds of speech pull that mean towards silence and the words apart
    (measured: "thank you for calling" padded to 3 s was heard as "you for bill you").
    """
    x = np.frombuffer(pcm, dtype=np.int16)
    n = len(x) // FRAME
    rms = np.sqrt(np.mean(x[: n * FRAME].astype(np.float64).reshape(n, FRAME) ** 2, axis=1))
    loud = np.flatnonzero(rms > floor)
    if not len(loud):
        return b""
    margin = int(margin_s * SAMPLE_RATE)
    return x[max(0, loud[0] * FRAME - margin): min(len(x), (loud[-1] + 1) * FRAME + margin)].tobytes()


def utterances(pcm: bytes, floor: float = 300.0, gap_s: float = 0.3, margin_s: float = 0.2) -> list[bytes]:
    """The stretches of speech in `pcm`, split where it is quiet for `gap_s` or more (see `spoken`)."""
    x = np.frombuffer(pcm, dtype=np.int16)
    n = len(x) // FRAME
    rms = np.sqrt(np.mean(x[: n * FRAME].astype(np.float64).reshape(n, FRAME) ** 2, axis=1))
    loud = np.flatnonzero(rms > floor)
    if not len(loud):
        return []
    gap = int(gap_s * 50)
    runs, start = [], loud[0]
    for before, after in zip(loud, loud[1:], strict=False):
        if after - before > gap:
            runs.append((start, before))
            start = after
    runs.append((start, loud[-1]))
    margin = int(margin_s * SAMPLE_RATE)
    return [x[max(0, a * FRAME - margin): min(len(x), (b + 1) * FRAME + margin)].tobytes() for a, b in runs]


CALLER_LINES = ("I would like to check the balance of my account please.",
                "My number is four one one one, two two two two.",
                "Yes, that is right. Thank you very much, goodbye.")
PROMPT_LINES = ("Welcome to Switchboard support. Please say what you are calling about.",
                "Thank you. Please hold while I look that up.",
                "Your balance is one hundred and twelve dollars.")


def call_recording(path: Path, seconds: float) -> np.ndarray:
    """A stereo WAV as the recorder writes one: espeak-ng caller speech on the left, prompts on the
    right, taking turns with pauses between; returns its samples (frames × 2)."""
    tts = EspeakTTS()
    frames = int(seconds * SAMPLE_RATE)

    def turns(lines: tuple[str, ...], offset_s: float) -> np.ndarray:
        channel = np.zeros(frames, dtype=np.int16)
        speech = np.frombuffer(b"".join(tts.synthesize(line) for line in lines), dtype=np.int16)
        at = int(offset_s * SAMPLE_RATE)
        while at < frames:
            n = min(len(speech), frames - at)
            channel[at:at + n] = speech[:n]
            at += n + 2 * SAMPLE_RATE
        return channel

    stereo = np.stack([turns(CALLER_LINES, 4.0), turns(PROMPT_LINES, 0.0)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(stereo.tobytes())
    return stereo


def decoded(path: Path) -> tuple[int, int, np.ndarray]:
    """Decode any recording with PyAV: (channels, sample rate, samples as float frames × channels)."""
    import av

    chunks, rate, channels = [], 0, 0
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            rate, channels = frame.sample_rate, len(frame.layout.channels)
            array = frame.to_ndarray()
            if frame.format.is_planar:
                array = array.T
            else:
                array = array.reshape(-1, channels)
            if array.dtype == np.int16:
                chunks.append(array.astype(np.float64) / 32768.0)
            elif array.dtype.kind == "f":
                chunks.append(array.astype(np.float64))
            else:
                raise AssertionError(f"unexpected sample type {array.dtype} in {path}")
    return channels, rate, np.concatenate(chunks) if chunks else np.zeros((0, channels))


def counting_speech(path: Path, seconds: float) -> Path:
    """espeak-ng counting to ten, again and again, for `seconds` as 16 kHz mono: a caller who is
    never silent for long (a baresip microphone)."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), "one two three four five six seven eight nine ten " * 4], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path), "repeat", "8",
                    "trim", "0", str(seconds)], check=True)
    return path


def caller_heard(path: Path, start_s: float, end_s: float) -> float:
    """The share of 20 ms frames from `start_s` to `end_s` of a call recording in which the caller's
    channel (left) has sound: the recorder writes exact zeros for a tick with no caller frame, and
    G.711 never decodes to an all-zero frame, so a silent frame is RTP that did not arrive."""
    with wave.open(str(path)) as w:
        first, last = int(start_s * w.getframerate()), int(end_s * w.getframerate())
        w.setpos(min(first, w.getnframes()))
        data = np.frombuffer(w.readframes(max(0, last - first)), dtype=np.int16).reshape(-1, w.getnchannels())
    frames = len(data) // FRAME
    if frames == 0:
        return 0.0
    left = data[: frames * FRAME, 0].reshape(frames, FRAME)
    return float(np.mean(left.any(axis=1)))
