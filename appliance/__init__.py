"""Switchboard: a telephony call-center agent appliance."""

__version__ = "0.1.0"
