"""The SIP gateway: Kamailio edge + pjsua2 worker processes; the only pjsua2 importer.

It reaches rooms only through the participant protocol (appliance.rooms.protocol), as a
LiveKit SIP service reaches a LiveKit server, so it could run on another box.
"""
