"""Call recordings: the recorder participant, crash-safe WAV files and their layout on disk."""
