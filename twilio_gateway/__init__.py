"""The Twilio gateway: numbers bought on Twilio reach the box over HTTPS, as sip/ brings SIP calls.

Twilio asks `/twilio/voice` for TwiML (checked against Twilio's signature) and streams the call's
audio over the `/twilio/media` WebSocket; each stream joins the hub as a caller's leg over the
participant protocol. The only importer of the `twilio` package.
"""
