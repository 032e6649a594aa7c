"""Vocabulary shared by every layer: audio format, ids, errors, the clock."""
