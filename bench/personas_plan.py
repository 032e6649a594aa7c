"""What bench/personas.py asks of the order desk persona, and the latency goals it reports against."""

from __future__ import annotations

NUMBER = "300"  # flows/orders.yaml → the order desk persona
SAYS = ("I would like to check my order.", "one two three four")
FIRST_AT_S = 5.0  # after the greeting (3.4 s) has played
PERIOD_S = 8.0  # one utterance every 8 s: the longest reply (4.4 s) ends well before the next
# baresip's jitter buffer at its smallest: the reply is timed as it leaves that buffer, so it
# still counts 1-2 frames (20-40 ms) that are not on the wire. Loopback has no jitter to absorb.
JITTER_FRAMES = (1, 2)
GOAL_P50_S, GOAL_P95_S, CAPACITY_P95_S = 0.5, 0.8, 1.0

RATE = 16000
FRAME_S = 0.01  # 10 ms energy frames
LOUD_RMS = 200.0  # about -44 dBFS: espeak-ng speech is far above, decoded silence far below
SPEECH_GAP_S = 0.3  # quiet shorter than this is inside one utterance (between words)

PHASES = ("inbound_s", "vad_s", "stt_s", "commit_s", "reply_s", "outbound_s")
