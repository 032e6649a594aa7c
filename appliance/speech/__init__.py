"""Offline speech: espeak-ng text-to-speech (and, later, pocketsphinx recognition)."""
