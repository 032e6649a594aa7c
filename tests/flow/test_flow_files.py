"""Audio a flow plays stays inside flows/: the checker reports a path that leaves it, and the
player's path function (the same one) refuses it at play time. Real files and symlinks."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from appliance.core.errors import FlowError
from appliance.flow.loader import load_dir
from appliance.flow.policy import flow_file

FLOW = """\
name: t
entry: hello
steps:
  hello:
    say:
      audio: {audio}
    next: bye
  bye:
    hangup:
"""


def write_wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return path


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """An appliance's directories: flows/ with a greeting, recordings/ with another call's voicemail."""
    write_wav(tmp_path / "flows" / "audio" / "greeting.wav")
    write_wav(tmp_path / "recordings" / "2026" / "11" / "24" / "call-1-voicemail.wav")
    return tmp_path


@pytest.mark.parametrize(
    "audio",
    [
        "/etc/passwd",
        "{recording}",  # absolute, to a file that exists
        "../recordings/2026/11/24/call-1-voicemail.wav",
        "audio/../../recordings/2026/11/24/call-1-voicemail.wav",
        "audio/leak.wav",  # a symlink inside flows/ to another call's voicemail
        "linked/2026/11/24/call-1-voicemail.wav",  # a symlinked directory inside flows/
    ],
)
def test_the_checker_reports_audio_outside_the_flows_directory(box: Path, audio: str):
    flows = box / "flows"
    recording = box / "recordings" / "2026" / "11" / "24" / "call-1-voicemail.wav"
    (flows / "audio" / "leak.wav").symlink_to(recording)
    (flows / "linked").symlink_to(box / "recordings", target_is_directory=True)
    audio = audio.format(recording=recording)
    (flows / "t.yaml").write_text(FLOW.format(audio=audio))

    with pytest.raises(FlowError) as caught:
        load_dir(flows)

    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.col) == (str(flows / "t.yaml"), 6, 14)  # the value after `audio:`
    assert problem.message == f"audio file {audio} is outside the flows directory {flows}"


def test_audio_inside_the_flows_directory_passes(box: Path):
    flows = box / "flows"
    (flows / "audio" / "hello.wav").symlink_to(flows / "audio" / "greeting.wav")  # a link that stays inside
    (flows / "t.yaml").write_text(FLOW.format(audio="audio/hello.wav"))
    assert set(load_dir(flows)) == {"t"}


# --- the player's path function: what FlowRunner opens for `say.audio` and `hold_audio`

def test_the_player_opens_files_inside_the_flows_directory(box: Path):
    flows = box / "flows"
    assert flow_file(flows, "audio/greeting.wav") == (flows / "audio" / "greeting.wav").resolve()
    assert flow_file(flows, "./audio/greeting.wav") == (flows / "audio" / "greeting.wav").resolve()


@pytest.mark.parametrize(
    "audio",
    ["/etc/passwd", "../recordings/2026/11/24/call-1-voicemail.wav", "audio/../../flows/audio/greeting.wav",
     "audio\\..\\..\\etc\\passwd", "", "audio/leak.wav"],
)
def test_the_player_refuses_a_path_that_leaves_the_flows_directory(box: Path, audio: str):
    flows = box / "flows"
    (flows / "audio" / "leak.wav").symlink_to(box / "recordings" / "2026" / "11" / "24" / "call-1-voicemail.wav")
    with pytest.raises(ValueError):
        flow_file(flows, audio)


def test_a_link_retargeted_after_the_check_is_refused_at_play_time(box: Path):
    """The checker passed the flow; then the link was pointed at another call's recording."""
    flows = box / "flows"
    link = flows / "audio" / "hello.wav"
    link.symlink_to(flows / "audio" / "greeting.wav")
    (flows / "t.yaml").write_text(FLOW.format(audio="audio/hello.wav"))
    load_dir(flows)
    link.unlink()
    link.symlink_to(box / "recordings" / "2026" / "11" / "24" / "call-1-voicemail.wav")
    with pytest.raises(ValueError, match="outside the flows directory"):
        flow_file(flows, "audio/hello.wav")
