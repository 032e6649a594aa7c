"""Flow tests (flows/tests/*.yaml): the shipped ones pass, and a wrong expectation reads as what was
expected next to what happened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config
from appliance.core.errors import FlowError
from appliance.flow.loader import LoadedFlow, load_dir
from appliance.flow.testing import Case, CaseResult, load_tests, run_case, run_file

ROOT = Path(__file__).resolve().parents[2]
LOOKUP = "http://127.0.0.1:8765/accounts/lookup"
OPEN = "2026-11-24T15:00:00+00:00"


@pytest.fixture(scope="module")
def flows() -> dict[str, LoadedFlow]:
    return load_dir(ROOT / "flows", Config().webhooks.allowed)


async def run(flows: dict[str, LoadedFlow], case: dict[str, Any], flow: str = "support") -> CaseResult:
    return await run_case(Case.model_validate({"name": "a case", "now": OPEN} | case), flows[flow], "t.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "flows" / "tests").glob("*.yaml")), ids=lambda p: p.stem)
async def test_shipped_flow_tests_pass(flows: dict[str, LoadedFlow], path: Path):
    from appliance.personas.text import TextPersona

    results = await run_file(path, flows, lambda name, variables: TextPersona(name, variables, ROOT / "flows"))
    assert len(results) == len(load_tests(path).cases) >= 2
    failed = {r.case: r.failures for r in results if not r.passed}
    assert failed == {}


async def test_a_case_that_holds_has_no_failures_and_keeps_what_happened(flows: dict[str, LoadedFlow]):
    result = await run(flows, {"caller": ["#3", "hello", "#"], "expect": {
        "heard": ["Welcome", "/leave your .* message/", "[beep]"],
        "not_heard": ["closed"],
        "steps": ["main_menu", "take_message", "bye"],
        "variables": {"voicemail_seconds": 0.4, "open": True},
        "webhooks": [],
        "outcome": "voicemail",
    }})
    assert result.passed and result.failures == []
    assert (result.file, result.case, result.outcome) == ("t.yaml", "a case", "voicemail")
    assert result.steps[-1] == "bye" and result.heard[-1].startswith("Thank you")


async def test_wrong_heard_names_the_missing_prompt_and_lists_what_was_heard(flows: dict[str, LoadedFlow]):
    result = await run(flows, {"caller": ["#2"], "expect": {"heard": ["Welcome", "press 1", "Goodbye forever"]}})
    assert result.failures == [(
        "heard: expected 'Goodbye forever' (in order); the caller heard:\n"
        "      | Welcome to Acme support.\n"
        "      | For billing, press 1 or say billing. For technical support, press 2 or say technical support. "
        "To leave a message, press 3.\n"
        "      | Please hold for technical support.\n"
        "      | [hold music]"
    )]


async def test_heard_is_checked_in_order(flows: dict[str, LoadedFlow]):
    result = await run(flows, {"caller": ["#2"], "expect": {"heard": ["hold for technical", "Welcome"]}})
    assert result.failures[0].startswith("heard: expected 'Welcome' (in order)")


async def test_not_heard_names_what_was_heard(flows: dict[str, LoadedFlow]):
    result = await run(flows, {"caller": ["#2"], "expect": {"not_heard": ["/hold (for|on)/"]}})
    assert result.failures == ["not_heard: '/hold (for|on)/' was heard"]


async def test_wrong_steps_show_the_path_taken(flows: dict[str, LoadedFlow]):
    result = await run(flows, {"caller": ["#2"], "expect": {"steps": ["main_menu", "billing_queue"]}})
    assert result.failures == [("steps: expected 'billing_queue' (in order); "
                                "visited check_hours → welcome → main_menu → technical_queue")]


async def test_wrong_variables_outcome_and_webhooks_each_say_expected_and_got(flows: dict[str, LoadedFlow]):
    result = await run(flows, {
        "variables": {"caller": "+15550100"},
        "webhooks": {LOOKUP: {"json": {"customer_name": "Ada", "balance": 42}}},
        "caller": ["#1", "#1234#"],
        "expect": {
            "variables": {"account": "4321", "balance": 42, "customer_name": "Ada"},
            "webhooks": [{"url": LOOKUP, "payload": {"account": "4321", "caller": "+15550100"}}],
            "outcome": "voicemail",
        },
    })
    assert result.failures == [
        "variables.account: expected '4321', got '1234'",
        f"webhooks: {LOOKUP} payload.account: expected '4321', got '1234'",
        "outcome: expected voicemail, got escalated:billing",
    ]


async def test_a_missing_or_extra_webhook_call_is_counted(flows: dict[str, LoadedFlow]):
    result = await run(flows, {"caller": ["#2"], "expect": {"webhooks": [{"url": LOOKUP}]}})
    assert result.failures == ["webhooks: expected 1 calls, got 0: "]
    result = await run(flows, {
        "webhooks": {LOOKUP: {"json": {}}}, "caller": ["#1", "#1234#"],
        "expect": {"webhooks": [{"url": "http://127.0.0.1:8765/other"}]},
    })
    assert result.failures == [f"webhooks: expected a call to http://127.0.0.1:8765/other, got {LOOKUP}"]


@pytest.mark.parametrize(
    "reply, error",
    [
        ({"status": 503}, "HTTP 503"),
        ({"timeout": True}, "no reply within the timeout"),
        ({"status": 200}, "reply is not JSON"),
        (None, f"no reply given for {LOOKUP} in this test"),
    ],
)
async def test_webhook_replies_a_test_gives_become_the_flows_errors(flows: dict[str, LoadedFlow], reply, error: str):
    result = await run(flows, {
        "webhooks": {LOOKUP: reply} if reply is not None else {},
        "caller": ["#1", "#1234#"],
        "expect": {"steps": ["lookup", "lookup_failed", "billing_queue"], "variables": {"webhook_error": error}},
    })
    assert result.passed, result.failures


async def test_transfer_fails_in_a_test(tmp_path: Path):
    (tmp_path / "r.yaml").write_text(
        "name: r\nentry: t\nsteps:\n"
        "  t:\n    transfer: {to: 'sip:desk@pbx.example.com', on_error: busy}\n"
        "  busy:\n    say: Busy.\n    next: bye\n"
        "  bye:\n    hangup:\n"
    )
    flows = load_dir(tmp_path, transfers_allowed=["sip:*@pbx.example.com"])
    ok = await run(flows, {"expect": {"outcome": "transferred:sip:desk@pbx.example.com"}}, flow="r")
    failing = await run(flows, {"transfer_fails": True, "expect": {
        "heard": ["Busy."], "variables": {"transfer_error": "503 Busy"}, "outcome": "hangup"}}, flow="r")
    assert ok.passed and failing.passed, (ok.failures, failing.failures)


async def test_a_test_file_for_a_flow_that_is_not_loaded(tmp_path: Path, flows: dict[str, LoadedFlow]):
    path = tmp_path / "t.yaml"
    path.write_text("flow: sales\ncases:\n  - name: x\n    expect: {}\n")
    (result,) = await run_file(path, flows)
    assert (result.case, result.failures) == ("(file)", ["flow 'sales' is not loaded"])


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("flow: support\ncases:\n  - name: x\n    caller: [#1\n", 5, "YAML syntax"),
        ("flow: support\ncases:\n  - name: x\n    expect: {heard: [a]}\n    expcet: {}\n", 1, "cases.0.expcet"),
        ("flow: support\ncases:\n  - name: x\n", 1, "cases.0.expect: Field required"),
    ],
)
def test_a_broken_test_file_is_a_flow_error_with_where(tmp_path: Path, text: str, line: int, fragment: str):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(FlowError) as caught:
        load_tests(path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(path), line) and fragment in problem.message, str(problem)
