"""Recording formats: the table of what each stored format is, and the conversion of a finished
call's WAV into it with PyAV, verified by decoding it back before the WAV may go.

Run as `python -m appliance.recording.formats WAV FORMAT BITRATE` by the converter, so that
encoding happens in its own process: neither the hub's 20 ms clock nor the GIL waits on it,
and an encoder that crashes takes only that process with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import av

from appliance.config import RecordingFormat
from appliance.core.errors import RecordingError

__all__ = ["CONTENT_TYPES", "FORMATS", "Converted", "StoredFormat", "convert", "converted_path", "format_of"]

# A converted file may differ from its WAV by an encoder's frame (Opus: 20 ms), never by more.
DURATION_TOLERANCE_S = 0.1


@dataclass(frozen=True)
class StoredFormat:
    suffix: str
    content_type: str
    container: str
    codec: str


FORMATS = {
    RecordingFormat.WAV: StoredFormat(".wav", "audio/wav", "wav", "pcm_s16le"),
    RecordingFormat.OGG_OPUS: StoredFormat(".ogg", "audio/ogg", "ogg", "libopus"),
    RecordingFormat.FLAC: StoredFormat(".flac", "audio/flac", "flac", "flac"),
}
CONTENT_TYPES = {stored.suffix: stored.content_type for stored in FORMATS.values()}


def format_of(path: Path) -> RecordingFormat | None:
    """The format a recording is stored in, from its suffix (None: not one of ours)."""
    return next((name for name, stored in FORMATS.items() if stored.suffix == path.suffix), None)


def converted_path(wav: Path, target: RecordingFormat) -> Path:
    return wav.with_suffix(FORMATS[target].suffix)


@dataclass(frozen=True)
class Converted:
    path: Path
    seconds: float  # as decoded back from the converted file
    size: int
    cpu_s: float  # this process's CPU time for encoding and verifying


def convert(wav: Path, target: RecordingFormat, opus_bitrate: int) -> Converted:
    """Write `wav` as `target` beside it, decode it back to check its length, then rename it into
    place. The WAV is left as it is: removing it is the caller's step, once the record points at
    the new file. A failure leaves no partial file behind and raises RecordingError."""
    if target is RecordingFormat.WAV:
        raise RecordingError("a WAV recording needs no conversion")
    stored = FORMATS[target]
    final = converted_path(wav, target)
    partial = final.with_name(final.name + ".partial")
    start = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with wave.open(str(wav), "rb") as source:
            channels, expected = source.getnchannels(), source.getnframes() / source.getframerate()
        _encode(wav, partial, stored, opus_bitrate)
        decoded_channels, seconds = _decoded(partial)
        if decoded_channels != channels or abs(seconds - expected) > DURATION_TOLERANCE_S:
            raise RecordingError(f"{partial} decodes as {decoded_channels} channels, {seconds:.3f} s; "
                                 f"the WAV has {channels}, {expected:.3f} s")
        with open(partial, "rb") as file:
            os.fsync(file.fileno())  # the data on disk before the name says it is there
        os.replace(partial, final)
        directory = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except (OSError, EOFError, wave.Error, RecordingError, av.FFmpegError) as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"{wav}: cannot convert to {target}: {exc}") from exc
    end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)
    return Converted(final, seconds, final.stat().st_size, cpu)


def _encode(wav: Path, out: Path, stored: StoredFormat, opus_bitrate: int) -> None:
    with av.open(str(wav)) as source, av.open(str(out), "w", format=stored.container) as sink:
        audio = source.streams.audio[0]
        stream = sink.add_stream(stored.codec, rate=audio.rate, layout=audio.layout.name)
        assert isinstance(stream, av.audio.stream.AudioStream)  # an audio codec makes an audio stream
        if stored.codec == "libopus":
            stream.bit_rate = opus_bitrate
            # Speech tuning, and the encoder's complexity 3 of 10: measured on a minute of two-voice
            # speech (bench/recording_formats.py), 35 % less CPU than the default 10 for a file 9 %
            # smaller at the same bit rate; the encoding is most of a converted call's cost.
            stream.options = {"application": "voip", "compression_level": "3"}
        for frame in source.decode(audio):
            frame.pts = None  # the encoder counts samples itself
            sink.mux(stream.encode(frame))
        sink.mux(stream.encode(None))


def _decoded(path: Path) -> tuple[int, float]:
    """Channels and seconds of `path`, by decoding every packet (a damaged file fails here)."""
    samples, rate, channels = 0, 0, 0
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        for frame in container.decode(audio):
            samples += frame.samples
            rate, channels = frame.sample_rate, len(frame.layout.channels)
    return channels, samples / rate if rate else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.recording.formats")
    parser.add_argument("wav", type=Path)
    parser.add_argument("format", type=RecordingFormat)
    parser.add_argument("opus_bitrate", type=int)
    args = parser.parse_args(argv)
    try:
        done = convert(args.wav, args.format, args.opus_bitrate)
    except RecordingError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps({"path": str(done.path), "seconds": done.seconds, "size": done.size, "cpu_s": done.cpu_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
