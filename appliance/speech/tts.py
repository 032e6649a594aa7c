"""espeak-ng text-to-speech, in-process through the library that `espeakng-loader` ships.

espeak-ng is not thread-safe and keeps global state, so one process-wide synthesizer
renders under a lock; renders are cached per (text, voice) because flows repeat prompts.
"""

from __future__ import annotations

import ctypes
import threading
from functools import lru_cache

import espeakng_loader
import numpy as np

from appliance.core.audio import SAMPLE_RATE
from appliance.speech.resample import resample

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakTTS:
    """One per process, whatever the number of callers: espeak-ng's state and its sample
    callback are global, so a second instance would silence the first."""

    _instance: EspeakTTS | None = None
    _created = threading.Lock()

    def __new__(cls, voice: str = "en-us", rate_wpm: int = 160) -> EspeakTTS:  # noqa: PYI034 (the one instance, not a new Self)
        with cls._created:
            if cls._instance is None:
                instance = super().__new__(cls)
                instance._init(voice, rate_wpm)
                cls._instance = instance
            return cls._instance

    def __init__(self, voice: str = "en-us", rate_wpm: int = 160):
        pass  # the shared instance was set up once, in __new__

    def _init(self, voice: str, rate_wpm: int) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        data = espeakng_loader.get_data_path().encode()
        self.native_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.native_rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self._chunks: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._on_samples)  # kept referenced: C holds it
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()
        self._voice: str | None = None
        self._rate_wpm = rate_wpm
        self.default_voice = voice

    def _on_samples(self, samples: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        if count > 0:
            self._chunks.append(ctypes.string_at(samples, count * 2))
        return 0

    def synthesize(self, text: str, voice: str | None = None) -> bytes:
        """PCM in the box's format (16 kHz s16le mono)."""
        return self._cached(text, voice or self.default_voice)

    # On a method the cache holds `self`: harmless, the one instance lives as long as the process.
    @lru_cache(maxsize=512)  # noqa: B019
    def _cached(self, text: str, voice: str) -> bytes:
        with self._lock:
            if voice != self._voice:
                if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(f"espeak-ng has no voice {voice!r}")
                self._lib.espeak_SetParameter(1, self._rate_wpm, 0)  # espeakRATE
                self._voice = voice
            self._chunks = []
            encoded = text.encode() + b"\0"
            self._lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            native = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
        return resample(native, self.native_rate, SAMPLE_RATE).tobytes()
