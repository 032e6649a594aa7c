"""Offline speech shared by flows and personas: espeak-ng synthesis (`tts`), pocketsphinx
recognition (`stt`, `recognizer`), tones, WAV files and resampling."""
