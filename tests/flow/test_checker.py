"""The checker as an admin meets it: each reference or permission problem named at its file:line:col."""

from __future__ import annotations

import shutil
from pathlib import Path
from textwrap import dedent, indent

import pytest

from appliance.core.errors import FlowError, Problem
from appliance.flow.checker import FlowContext
from appliance.flow.loader import load_dir, parse
from appliance.flow.policy import destination_allowed, url_allowed

ROOT = Path(__file__).resolve().parents[2]
LOOKUP = "http://127.0.0.1:8765/accounts/lookup"


def problems_of(text: str, context: FlowContext | None = None) -> list[Problem]:
    flow, problems = parse(dedent(text), "f.yaml", context)
    assert (flow is None) == bool(problems)
    return problems


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of `fragment` in the flow text (so the tests read without line counting)."""
    lines = dedent(text).splitlines()
    found = [i + 1 for i, line in enumerate(lines) if fragment in line]
    assert len(found) == 1, f"{fragment!r} is on lines {found}"
    return found[0]


def col_of(text: str, fragment: str) -> int:
    line = dedent(text).splitlines()[line_of(text, fragment) - 1]
    return line.index(fragment) + 1


def only(problems: list[Problem], line: int, fragment: str) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    (problem,) = problems
    assert problem.file == "f.yaml"
    assert (problem.line, fragment in problem.message) == (line, True), str(problem)
    return problem


def flow_with(steps: str, variables: str = "{}") -> str:
    """A valid flow whose entry step is `first`, with `steps` (indented under steps:) added."""
    return (
        "name: t\n"
        f"variables: {variables}\n"
        "entry: first\n"
        "steps:\n"
        + indent(dedent(steps), "  ")
        + "  bye:\n    hangup:\n"
    )


# --- variables

def test_undefined_variable_in_say_text():
    text = flow_with("""\
        first:
          say: Hello {costumer_name}, welcome.
          next: bye
        """, variables="{customer_name: ''}")
    only(problems_of(text), line_of(text, "Hello {costumer_name}"),
         "variable 'costumer_name' is not defined (declare it under 'variables')")


def test_defined_system_gathered_and_set_variables_are_known():
    text = flow_with("""\
        first:
          gather: {prompt: "Hi {caller}, your code?", into: code}
          next: remember
        remember:
          set: {greeting: "Code {code} from {called} on {trunk}"}
          next: speak
        speak:
          say: "{greeting} {account} {call_id} {open}"
          next: bye
        """, variables="{account: ''}")
    assert problems_of(text) == []


def test_undefined_variable_in_a_branch_condition():
    text = flow_with("""\
        first:
          branch:
            cases:
              - when: balance > 100 and tier == 'gold'
                goto: bye
            otherwise: bye
        """, variables="{balance: 0}")
    problem = only(problems_of(text), line_of(text, "when:"), "variable 'tier' is not defined")
    assert problem.col == col_of(text, "balance > 100")


def test_undefined_variable_in_webhook_send():
    text = flow_with(f"""\
        first:
          webhook:
            url: {LOOKUP}
            send: [account, acount]
            on_error: bye
          next: bye
        """, variables="{account: ''}")
    problems = problems_of(text, FlowContext(webhooks_allowed=["http://127.0.0.1:8765/"]))
    only(problems, line_of(text, "send:"), "variable 'acount' is not defined")


def test_bad_condition_names_the_refused_part():
    text = flow_with("""\
        first:
          branch:
            cases:
              - when: balance > 1
                goto: bye
              - when: len(account) == 4
                goto: bye
            otherwise: bye
        """, variables="{balance: 0, account: ''}")
    problem = only(problems_of(text), line_of(text, "len(account)"), "bad condition: 'len(account)' is not allowed")
    assert problem.col == col_of(text, "len(account)")


def test_condition_that_does_not_parse():
    text = flow_with("""\
        first:
          branch:
            cases:
              - when: "balance >"
                goto: bye
            otherwise: bye
        """, variables="{balance: 0}")
    only(problems_of(text), line_of(text, "when:"), "bad condition: cannot parse 'balance >'")


# --- webhooks and transfers: only where the admin allowed

WEBHOOK = """\
    first:
      webhook:
        url: {url}
        on_error: bye
      next: bye
    """


@pytest.mark.parametrize(
    "url, patterns",
    [
        (LOOKUP, ["http://127.0.0.1:8765/"]),  # a prefix ending in /
        ("https://crm.example.com/accounts/lookup", ["https://crm.example.com/accounts/*"]),  # fnmatch
        ("https://eu.crm.example.com/x", ["http://127.0.0.1:8765/", "https://*.crm.example.com/*"]),
    ],
)
def test_allowed_webhook_urls_pass(url: str, patterns: list[str]):
    assert problems_of(flow_with(WEBHOOK.format(url=url)), FlowContext(webhooks_allowed=patterns)) == []


@pytest.mark.parametrize(
    "url, patterns",
    [
        (LOOKUP, []),  # nothing allowed: nothing can be called
        ("http://127.0.0.1:9999/accounts/lookup", ["http://127.0.0.1:8765/"]),
        ("http://127.0.0.1:87650/accounts", ["http://127.0.0.1:8765/"]),  # the prefix's / guards the port
        ("https://crm.example.com/admin/delete", ["https://crm.example.com/accounts/*"]),
    ],
)
def test_webhook_urls_outside_the_allow_list_are_refused(url: str, patterns: list[str]):
    text = flow_with(WEBHOOK.format(url=url))
    problem = only(problems_of(text, FlowContext(webhooks_allowed=patterns)), line_of(text, "url:"),
                   f"webhook URL {url} is not allowed (webhooks.allowed in appliance.yaml)")
    assert problem.col == col_of(text, url)


@pytest.mark.parametrize(
    "value, pattern",
    [
        ("https://attacker.example.net/.crm.example.com/x", "https://*.crm.example.com/"),
        ("https://crm.example.com.evil.net/x", "https://crm.example.com/"),
        ("https://user@crm.example.com/x", "https://crm.example.com/"),
        ("http://crm.example.com/x", "https://crm.example.com/"),
        ("https://crm.example.com:8443/x", "https://crm.example.com/"),
        ("https://crm.example.com/admin", "https://crm.example.com/api/"),
    ],
)
def test_a_url_pattern_admits_its_host_and_path_only(value: str, pattern: str):
    assert not url_allowed(value, [pattern])


@pytest.mark.parametrize(
    "value, pattern",
    [
        ("sip:19005550100@evil.example.net;x=@pbx.example.com", "sip:*@pbx.example.com"),
        ("sip:1900@pbx.example.com.evil.net", "sip:*@pbx.example.com"),
        ("sip:a@b@pbx.example.com", "sip:*@pbx.example.com"),
        ("+19005550100", "+1555*"),
        ("sip:+15551234@evil.net", "+1555*"),
    ],
)
def test_a_destination_pattern_admits_its_host_and_numbers_only(value: str, pattern: str):
    assert not destination_allowed(value, [pattern])


@pytest.mark.parametrize(
    "value, pattern",
    [
        ("sip:100@pbx.example.com", "sip:*@pbx.example.com"),
        ("+15551234", "+1555*"),
        ("sip:operator@127.0.0.1:5070", "sip:operator@127.0.0.1:5070"),
    ],
)
def test_a_destination_pattern_admits_what_it_names(value: str, pattern: str):
    assert destination_allowed(value, [pattern])


TRANSFER = """\
    first:
      transfer:
        to: {to}
        announcement: Transferring you.
        on_error: bye
    """


def test_transfer_destination_not_allowed():
    text = flow_with(TRANSFER.format(to="sip:+19005550100@carrier.example.com"))
    context = FlowContext(transfers_allowed=["sip:*@pbx.example.com", "+1555*"])
    problem = only(problems_of(text, context), line_of(text, "to: sip:"),
                   "transfer destination sip:+19005550100@carrier.example.com is not allowed "
                   "(transfers.allowed in appliance.yaml)")
    assert problem.col == col_of(text, "sip:+1900")


@pytest.mark.parametrize("to", ["sip:reception@pbx.example.com", "'+15550100'"])
def test_transfer_destination_allowed(to: str):
    context = FlowContext(transfers_allowed=["sip:*@pbx.example.com", "+1555*"])
    assert problems_of(flow_with(TRANSFER.format(to=to)), context) == []


def test_no_transfer_is_allowed_by_default():
    text = flow_with(TRANSFER.format(to="sip:reception@pbx.example.com"))
    only(problems_of(text), line_of(text, "to:"), "is not allowed")


# --- queues, personas, audio

def test_queue_not_in_queues_yaml():
    text = flow_with("""\
        first:
          escalate:
            queue: sales
            overflow: bye
        """)
    problem = only(problems_of(text, FlowContext(queues={"billing", "technical"})), line_of(text, "queue:"),
                   "queue 'sales' is not defined in queues.yaml")
    assert problem.col == col_of(text, "sales")
    assert problems_of(text, FlowContext(queues={"sales"})) == []


PERSONA = """\
    first:
      persona: {name: helpdesk, resolved: bye, human: bye, failed: bye}
    """


def test_an_undefined_persona_is_reported():
    text = flow_with(PERSONA)
    only(problems_of(text, FlowContext(personas={"sales"})), line_of(text, "persona:"),
         "persona 'helpdesk' is not defined (personas/helpdesk.yaml)")


def test_a_defined_persona_passes():
    assert problems_of(flow_with(PERSONA), FlowContext(personas={"helpdesk"})) == []


def test_audio_files_must_exist_in_the_flows_directory(tmp_path: Path):
    text = flow_with("""\
        first:
          say: {audio: sounds/jingle.wav}
          next: queue
        queue:
          escalate:
            queue: billing
            hold_audio: sounds/hold.wav
            overflow: bye
        """)
    context = FlowContext(directory=tmp_path, queues={"billing"})
    problems = problems_of(text, context)
    assert [(p.line, p.message) for p in problems] == [
        (line_of(text, "jingle"), f"audio file sounds/jingle.wav not found in {tmp_path}"),
        (line_of(text, "hold_audio"), f"audio file sounds/hold.wav not found in {tmp_path}"),
    ]
    (tmp_path / "sounds").mkdir()
    (tmp_path / "sounds" / "jingle.wav").write_bytes(b"RIFF")
    (tmp_path / "sounds" / "hold.wav").write_bytes(b"RIFF")
    assert problems_of(text, context) == []


# --- across files

def _numbered(name: str, numbers: str) -> str:
    return f"name: {name}\nnumbers: {numbers}\nentry: bye\nsteps:\n  bye:\n    hangup:\n"


def test_a_number_answered_by_two_flows_is_reported(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(_numbered("a", '["200", "201"]'))
    (tmp_path / "b.yaml").write_text(_numbered("b", '["300", "200"]'))
    with pytest.raises(FlowError) as caught:
        load_dir(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'b.yaml'}:1:1: number 200 is also answered by flow 'a'"
    ]


def test_different_numbers_load(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(_numbered("a", '["200"]'))
    (tmp_path / "b.yaml").write_text(_numbered("b", '["300"]'))
    assert sorted(load_dir(tmp_path)) == ["a", "b"]


@pytest.mark.parametrize(
    "queues, line, col, fragment",
    [
        ("queues:\n  billing:\n    descripton: Billing\n", 3, 5, "unknown field 'descripton'"),
        ("queues:\n  billing:\n    description: [\n", 4, 1, "YAML syntax"),
        ("queues:\n  billing: {}\n  billing: {}\n", 3, 3, "duplicate key 'billing'"),
        ("queues:\n  billing:\n    max_wait: soon\n", 3, 5, "queues.billing.max_wait: Input should be a valid number"),
        ("- billing\n", 1, 1, "valid dictionary"),
    ],
)
def test_a_broken_queues_yaml_is_reported_with_file_and_line(tmp_path: Path, queues: str, line: int, col: int,
                                                            fragment: str):
    shutil.copy(ROOT / "flows" / "default.yaml", tmp_path)
    (tmp_path / "queues.yaml").write_text(queues)
    with pytest.raises(FlowError) as caught:
        load_dir(tmp_path)
    found = [p for p in caught.value.problems
             if p.file == str(tmp_path / "queues.yaml") and fragment in p.message]
    assert found, str(caught.value)
    assert (found[0].line, found[0].col) == (line, col), str(found[0])


def test_shipped_flows_pass_the_checker_with_the_default_allow_list():
    from appliance.config import Config

    flows = load_dir(ROOT / "flows", Config().webhooks.allowed, Config().transfers.allowed)
    assert {"default", "support"} <= set(flows)
