"""sipp (Debian's sip-tester) for tests and benchmarks.

`scenarios`: the templates in tests/calls/scenarios (callers, DTMF, cues, transfers);
`proxy_scenarios`: XML written inline for the SIP edge's tests (calls through a record-routing
proxy); `process`: running sipp and reading what it did.
"""
