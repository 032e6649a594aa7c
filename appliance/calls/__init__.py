"""Calls: admission (trunk, number → flow), and the life of each call in its room."""
