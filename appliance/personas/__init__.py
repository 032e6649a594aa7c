"""AI voice personas: livekit-agents sessions that answer calls, with offline plugins."""
