"""Every Prometheus metric of the appliance, defined once on one registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

calls_active = Gauge("switchboard_calls_active", "Calls in progress", registry=REGISTRY)
calls_total = Counter("switchboard_calls_total", "Calls ended, by outcome", ["outcome"], registry=REGISTRY)
sip_responses = Counter(
    "switchboard_sip_responses_total", "Final responses to INVITEs, by code", ["code"], registry=REGISTRY
)
draining = Gauge("switchboard_draining", "1 while the appliance drains: the SIP edge answers new calls 503",
                 registry=REGISTRY)
# Roles as the hub's tokens name them: sip (pjsua2 workers), agent (persona workers), rtc (WebRTC gateway),
# twilio (the Media Streams gateway).
WORKER_ROLES = ("sip", "agent", "rtc", "twilio")
workers_up = Gauge("switchboard_workers_up", "Worker processes connected to the hub, by role", ["role"],
                   registry=REGISTRY)
worker_restarts = Counter("switchboard_worker_restarts_total",
                          "Worker processes that exited while the appliance ran and were started again, by role",
                          ["role"], registry=REGISTRY)
sip_edge_restarts = Counter("switchboard_sip_edge_restarts_total",
                            "Times the SIP edge (Kamailio) exited while the appliance ran and was started again",
                            registry=REGISTRY)
for _role in WORKER_ROLES:  # every role on /metrics from the start, 0 until it has workers
    workers_up.labels(_role)
    worker_restarts.labels(_role)
recordings_bytes = Counter(
    "switchboard_recordings_bytes_total", "Bytes written to call recordings", registry=REGISTRY
)
recording_errors = Counter(
    "switchboard_recording_errors_total",
    "Writes to call recordings the disk refused (full, over quota, I/O error); the recording is silent there",
    registry=REGISTRY)
recordings_converted = Counter(
    "switchboard_recordings_converted_total",
    "Finished recordings converted from WAV to the configured format, by format", ["format"], registry=REGISTRY)
recording_conversion_failures = Counter(
    "switchboard_recording_conversion_failures_total",
    "Conversions that failed (the WAV is kept and tried again at the next start), by format", ["format"],
    registry=REGISTRY)
recording_conversion_cpu = Counter(
    "switchboard_recording_conversion_cpu_seconds_total",
    "CPU time the converter processes spent encoding and verifying recordings, by format", ["format"],
    registry=REGISTRY)
db_writes_deferred = Counter(
    "switchboard_db_writes_deferred_total",
    "Database writes that found another process holding SQLite's write lock and waited, in order, to be retried",
    registry=REGISTRY)
db_writes_pending = Gauge("switchboard_db_writes_pending",
                          "Database writes waiting for another process to release SQLite's write lock",
                          registry=REGISTRY)
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
persona_turn = Histogram(
    "switchboard_persona_turn_seconds",
    "Time from a caller's final transcript reaching the hub to the first audio of the persona's reply reaching it",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0),
    registry=REGISTRY,
)
rtp_packets = Counter(
    "switchboard_rtp_packets_total",
    "RTP packets of ended SIP legs: received from the far end, lost on the way, discarded by the jitter buffer, sent",
    ["kind"],
    registry=REGISTRY,
)
for _kind in ("received", "lost", "discarded", "sent"):
    rtp_packets.labels(_kind)  # at 0 from the start: a rate over a series that appears late misses its first calls
rtp_jitter = Histogram(
    "switchboard_call_jitter_max_seconds",
    "The worst interarrival jitter of the far end's RTP over each ended SIP leg",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2),
    registry=REGISTRY,
)
hub_tick_lag = Histogram(
    "switchboard_hub_tick_lag_seconds",
    "How late the room hub's 20 ms media tick ran",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
    registry=REGISTRY,
)
hub_ticks_skipped = Counter(
    "switchboard_hub_ticks_skipped_total",
    "Media ticks the room hub skipped after falling over 200 ms behind (recordings keep them as silence)",
    registry=REGISTRY,
)

# --- queues and operators (appliance.operators.desk)
queue_waiting = Gauge("switchboard_queue_callers_waiting", "Callers waiting in a queue", ["queue"], registry=REGISTRY)
queue_longest_wait = Gauge("switchboard_queue_longest_wait_seconds", "How long the longest-waiting caller has waited",
                           ["queue"], registry=REGISTRY)
operators = Gauge("switchboard_operators", "Operators logged in, by state", ["state"], registry=REGISTRY)
operator_offers = Counter("switchboard_operator_offers_total", "Calls offered to operators, by result",
                          ["result"], registry=REGISTRY)
queue_wait = Histogram(
    "switchboard_queue_wait_seconds",
    "Time a caller waited in a queue before an operator answered",
    ["queue"],
    buckets=(1, 5, 10, 20, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
queue_answered_in_service_level = Counter(
    "switchboard_queue_answered_within_service_level_total",
    "Calls an operator answered within the queue's service level", ["queue"], registry=REGISTRY,
)
queue_abandoned = Counter("switchboard_queue_abandoned_total", "Callers who hung up while waiting in a queue",
                          ["queue"], registry=REGISTRY)

# --- event webhooks (appliance.integrations.webhooks)
webhooks_delivered = Counter("switchboard_webhooks_delivered_total", "Event webhooks delivered, by event",
                             ["event"], registry=REGISTRY)
webhook_attempts_failed = Counter("switchboard_webhook_attempts_failed_total",
                                  "Event webhook attempts that failed (each is retried)", registry=REGISTRY)
webhooks_given_up = Counter("switchboard_webhooks_given_up_total",
                            "Event webhooks dropped after events.give_up_after_s without delivery", registry=REGISTRY)
webhook_delay = Histogram(
    "switchboard_webhook_delay_seconds", "Time from an event happening to its webhook being delivered",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0), registry=REGISTRY,
)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
