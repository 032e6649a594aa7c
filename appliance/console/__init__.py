"""The HTTP side: health, metrics, the API, and (later) the operator console and WebRTC."""
