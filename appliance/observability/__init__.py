"""Metrics and logs: every metric defined once, the call id on every log line."""
