"""Every Prometheus metric of the appliance, defined once on one registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

calls_active = Gauge("switchboard_calls_active", "Calls in progress", registry=REGISTRY)
calls_total = Counter("switchboard_calls_total", "Calls ended, by outcome", ["outcome"], registry=REGISTRY)
sip_responses = Counter(
    "switchboard_sip_responses_total", "Final responses to INVITEs, by code", ["code"], registry=REGISTRY
)
workers_up = Gauge("switchboard_sip_workers_up", "SIP workers connected to the hub", registry=REGISTRY)
recordings_bytes = Counter(
    "switchboard_recordings_bytes_total", "Bytes written to call recordings", registry=REGISTRY
)
flow_steps = Counter("switchboard_flow_steps_total", "Flow steps entered", ["flow"], registry=REGISTRY)
flow_reload_errors = Counter(
    "switchboard_flow_reload_errors_total", "Flow edits rejected by the checker", registry=REGISTRY
)
answer_latency = Histogram(
    "switchboard_call_offer_seconds",
    "Time from a worker offering a call to the hub's answer",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
hub_tick_lag = Histogram(
    "switchboard_hub_tick_lag_seconds",
    "How late the room hub's 20 ms media tick ran",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
    registry=REGISTRY,
)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
