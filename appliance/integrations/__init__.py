"""What the appliance tells the systems beside it: call events to webhooks (LiveKit's convention)."""
