"""Size per recorded minute and CPU seconds to convert a minute, for each recording format.

    python scripts/recording_sizes.py RECORDING.wav [--opus-bitrate 24000]

Converts copies of a call's WAV (as the recorder wrote it) with the appliance's own converter
code; the numbers in README.md's "Recordings" section come from this.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.config import RecordingFormat  # noqa: E402
from appliance.recording.formats import convert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("wav", type=Path)
    parser.add_argument("--opus-bitrate", type=int, default=24000)
    args = parser.parse_args()
    with wave.open(str(args.wav)) as w:
        minutes = w.getnframes() / w.getframerate() / 60
    print(f"{args.wav.name}: {minutes * 60:.1f} s")
    print(f"{'format':10} {'KB/min':>8} {'CPU s/min':>10}")
    print(f"{'wav':10} {args.wav.stat().st_size / 1000 / minutes:8.0f} {0:10.3f}")
    for target in (RecordingFormat.FLAC, RecordingFormat.OGG_OPUS):
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / args.wav.name
            shutil.copyfile(args.wav, copy)
            done = convert(copy, target, args.opus_bitrate)
            print(f"{target.value:10} {done.size / 1000 / minutes:8.0f} {done.cpu_s / minutes:10.3f}")


if __name__ == "__main__":
    main()
