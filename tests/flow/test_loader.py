"""The flow checker: what an admin sees when a flow file is wrong, each problem at file:line:col."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from textwrap import dedent

import pytest

from appliance.core.errors import FlowError, Problem
from appliance.flow.loader import load_dir, load_file, parse

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLOW = ROOT / "flows" / "default.yaml"

GOOD = dedent(
    """\
    name: good
    entry: hello
    steps:
      hello:
        say: Hello.
        next: bye
      bye:
        hangup:
    """
)


def _problems(text: str) -> list[Problem]:
    flow, problems = parse(text, "f.yaml")
    assert flow is None, "a flow with problems must not be returned"
    return problems


def _at(problems: list[Problem], line: int, fragment: str) -> Problem:
    found = [p for p in problems if p.line == line and fragment in p.message]
    assert found, f"no problem at line {line} with '{fragment}' in {[str(p) for p in problems]}"
    return found[0]


def test_default_flow_loads_with_a_content_version():
    loaded = load_file(DEFAULT_FLOW)
    assert loaded.flow.name == "default"
    assert loaded.flow.entry == "welcome"
    assert loaded.file == str(DEFAULT_FLOW)
    assert loaded.version == hashlib.sha256(DEFAULT_FLOW.read_bytes()).hexdigest()[:12]


def test_good_text_parses_without_problems_and_bare_hangup_uses_default_reason():
    flow, problems = parse(GOOD, "good.yaml")
    assert problems == []
    assert flow is not None
    assert flow.steps["bye"].hangup is not None
    assert flow.steps["bye"].hangup.reason == "flow-hangup"


def test_yaml_syntax_error_points_at_the_line():
    text = GOOD.replace("    say: Hello.\n", "    say: [Hello.\n")
    problem = _problems(text)[0]
    assert problem.message.startswith("YAML syntax:")
    assert problem.line >= 5


def test_yaml_tab_indentation_is_a_syntax_error_on_its_line():
    text = GOOD.replace("    next: bye", "\tnext: bye")
    (problem,) = _problems(text)
    assert (problem.line, problem.col) == (6, 1)
    assert "YAML syntax" in problem.message


def test_unknown_step_field_is_reported_at_the_field():
    text = GOOD.replace("    next: bye", "    nxet: bye")
    p = _at(_problems(text), 6, "unknown field 'nxet'")
    assert p.col == 5


def test_missing_required_field_is_reported_at_the_owner():
    text = dedent(
        """\
        name: m
        entry: a
        steps:
          a:
            gather:
              max_digits: 3
            next: b
          b:
            hangup:
        """
    )
    p = _at(_problems(text), 5, "missing required field 'into'")
    assert p.col == 5


def test_missing_top_level_fields_are_all_reported():
    problems = _problems("description: only this\n")
    messages = {p.message for p in problems}
    assert {"missing required field 'name'", "missing required field 'entry'",
            "missing required field 'steps'"} <= messages


def test_duplicate_key_points_at_the_second_occurrence():
    text = GOOD + "  hello:\n    say: Again.\n"
    p = _at(_problems(text), 9, "duplicate key 'hello'")
    assert p.col == 3


def test_step_with_two_actions():
    text = GOOD.replace("    next: bye", "    goto: bye")
    p = _at(_problems(text), 4, "exactly one of")
    assert "found: say, goto" in p.message


@pytest.mark.parametrize(
    "old, new, line, missing",
    [
        ("    next: bye", "    next: byebye", 6, "byebye"),
        ("entry: hello", "entry: start", 2, None),
    ],
)
def test_missing_targets(old: str, new: str, line: int, missing: str | None):
    problems = _problems(GOOD.replace(old, new))
    if missing:
        _at(problems, line, f"step '{missing}' does not exist")
    else:
        _at(problems, line, "entry step 'start' does not exist")


def test_missing_menu_option_and_no_input_targets_each_on_their_own_line():
    text = dedent(
        """\
        name: m
        entry: menu
        steps:
          menu:
            menu:
              prompt: Press 1 or 2.
              options:
                "1": sales
                "2": nobody
              no_input: silence
              no_match: sales
          sales:
            hangup:
        """
    )
    problems = _problems(text)
    _at(problems, 9, "step 'nobody' does not exist")
    _at(problems, 10, "step 'silence' does not exist")
    assert len(problems) == 2


def test_unreachable_step():
    text = GOOD + "  lost:\n    say: Nobody hears this.\n    next: bye\n"
    (problem,) = _problems(text)
    assert (problem.line, problem.col) == (9, 3)
    assert problem.message == "step 'lost' is unreachable from 'hello'"


def test_every_problem_is_reported_at_once_and_in_line_order():
    text = dedent(
        """\
        name: many
        entry: a
        steps:
          a:
            say: One.
            nxt: b
          b:
            say: Two.
            say: Three.
            next: b
          c:
            hangup:
        """
    )
    problems = _problems(text)
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    _at(problems, 6, "unknown field 'nxt'")
    _at(problems, 9, "duplicate key 'say'")


@pytest.mark.parametrize(
    "text",
    ["- a\n- b\n", "just words\n", "42\n", '"quoted"\n'],
    ids=["list", "words", "number", "string"],
)
def test_file_that_is_not_a_mapping(text: str):
    (problem,) = _problems(text)
    assert (problem.line, problem.col) == (1, 1)
    assert "must be a mapping" in problem.message


@pytest.mark.parametrize("content", [b"", b"\n\n", b"# only a comment\n", b"   \n"])
def test_empty_file(tmp_path: Path, content: bytes):
    path = tmp_path / "empty.yaml"
    path.write_bytes(content)
    with pytest.raises(FlowError) as caught:
        load_file(path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.col) == (str(path), 1, 1)
    assert problem.message == "empty flow file"


def test_non_utf8_bytes(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("Hello.", "Gr\xfc\xdf Gott.").encode("latin-1"))
    with pytest.raises(FlowError) as caught:
        load_file(path)
    (problem,) = caught.value.problems
    # The line of the first bad byte.
    assert (problem.line, problem.col) == (5, 1)
    assert problem.message.startswith("not UTF-8 text")


def test_unreadable_file_is_a_flow_error(tmp_path: Path):
    with pytest.raises(FlowError) as caught:
        load_file(tmp_path / "absent.yaml")
    assert "cannot read" in caught.value.problems[0].message


@pytest.mark.parametrize("key", ["12", "a", "x", "**"])
def test_bad_menu_key(key: str):
    text = dedent(
        f"""\
        name: m
        entry: menu
        steps:
          menu:
            menu:
              prompt: Choose.
              options:
                "{key}": done
          done:
            hangup:
        """
    )
    p = _at(_problems(text), 5, f"menu option '{key}' is not a single DTMF key")
    assert p.col == 5


def test_menu_keys_may_be_unquoted_digits_star_and_hash():
    text = dedent(
        """\
        name: m
        entry: menu
        steps:
          menu:
            menu:
              prompt: Choose.
              options:
                1: done
                "*": done
                "#": done
          done:
            hangup:
        """
    )
    flow, problems = parse(text, "m.yaml")
    assert problems == []
    assert set(flow.steps["menu"].menu.options) == {"1", "*", "#"}


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_load_dir_loads_every_flow_by_name(tmp_path: Path):
    shutil.copy(DEFAULT_FLOW, tmp_path / "default.yaml")
    _write(tmp_path, "good.yaml", GOOD)
    _write(tmp_path, "notes.txt", "not a flow")
    flows = load_dir(tmp_path)
    assert set(flows) == {"default", "good"}
    assert flows["good"].file == str(tmp_path / "good.yaml")


def test_load_dir_is_all_or_nothing(tmp_path: Path):
    shutil.copy(DEFAULT_FLOW, tmp_path / "default.yaml")
    broken = _write(tmp_path, "broken.yaml", GOOD.replace("next: bye", "next: nowhere"))
    with pytest.raises(FlowError) as caught:
        load_dir(tmp_path)
    problems = caught.value.problems
    assert {p.file for p in problems} == {str(broken)}
    _at(problems, 6, "step 'nowhere' does not exist")


def test_load_dir_reports_problems_of_every_broken_file(tmp_path: Path):
    a = _write(tmp_path, "a.yaml", "")
    b = _write(tmp_path, "b.yaml", GOOD.replace("entry: hello", "entry: nope"))
    with pytest.raises(FlowError) as caught:
        load_dir(tmp_path)
    assert {p.file for p in caught.value.problems} == {str(a), str(b)}


def test_load_dir_reports_duplicate_flow_names(tmp_path: Path):
    first = _write(tmp_path, "a_first.yaml", GOOD)
    second = _write(tmp_path, "b_second.yaml", GOOD)
    with pytest.raises(FlowError) as caught:
        load_dir(tmp_path)
    (problem,) = caught.value.problems
    assert problem.file == str(second)
    assert problem.message == f"flow name 'good' is also used by {first}"


def test_load_dir_of_an_empty_directory_is_empty(tmp_path: Path):
    assert load_dir(tmp_path) == {}


# Known loader bugs: an explicit YAML tag whose value does not construct, or a self-referencing
# alias, escapes parse() as a Python exception instead of becoming a Problem.
@pytest.mark.parametrize("value", ["!!int five", "!!float x", "!!bool maybe", "!!timestamp soon"])
def test_explicit_tag_that_does_not_construct_is_a_problem(value: str):
    text = GOOD.replace("say: Hello.", f"say: {value}")
    problems = _problems(text)
    _at(problems, 5, "")


def test_recursive_alias_is_a_problem():
    problems = _problems("name: r\nentry: a\nsteps: &s\n  a: *s\n")
    assert problems


@pytest.mark.parametrize("record", ["{}", "{pause: true, resume: true}", "{pause: false}"])
def test_a_record_step_pauses_or_resumes_never_both_nor_neither(record: str) -> None:
    problems = _problems(GOOD.replace("    say: Hello.\n", f"    record: {record}\n"))
    _at(problems, 5, "steps.hello.record: give exactly one of pause: true or resume: true")


def test_a_record_step_pauses_the_recording_then_the_flow_goes_on() -> None:
    from appliance.flow.engine import FlowEngine, PauseRecording

    flow, problems = parse(GOOD.replace("    say: Hello.\n", "    record: {pause: true}\n"), "pay.yaml")
    assert problems == [] and flow is not None
    actions = FlowEngine(flow, variables={}).start()
    assert PauseRecording(paused=True) in actions
    assert actions.index(PauseRecording(paused=True)) < len(actions) - 1  # and the flow went on to `bye`
