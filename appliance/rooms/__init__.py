"""The room hub: LiveKit's model (rooms, participants, audio tracks, data, signed grants) on one box."""
