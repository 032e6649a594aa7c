"""Whatever an admin's editor leaves in a flow file, the loader answers with problems, never a crash."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.core.errors import FlowError
from appliance.flow.loader import load_file, parse

DEFAULT_FLOW = Path(__file__).resolve().parents[2] / "flows" / "default.yaml"
LINES = DEFAULT_FLOW.read_text().splitlines()

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_problems(problems, file: str) -> None:
    for problem in problems:
        assert problem.file == file
        assert problem.line >= 1 and problem.col >= 1, problem
        assert problem.message


@st.composite
def mutated_default(draw) -> str:
    """flows/default.yaml after a few careless edits: lines deleted, duplicated, swapped, re-indented."""
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent", "tab", "truncate"]))
        if edit == "delete":
            del lines[i]
        elif edit == "duplicate":
            lines.insert(i, lines[i])
        elif edit == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif edit == "indent":
            lines[i] = " " * draw(st.integers(1, 8)) + lines[i]
        elif edit == "dedent":
            lines[i] = lines[i].lstrip()
        elif edit == "tab":
            lines[i] = "\t" + lines[i]
        else:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=st.one_of(st.text(max_size=300), mutated_default()))
def test_parse_returns_a_flow_or_positioned_problems(text: str):
    flow, problems = parse(text, "fuzz.yaml")
    assert (flow is None) == bool(problems)
    _check_problems(problems, "fuzz.yaml")


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), mutated_default().map(str.encode)))
def test_load_file_raises_only_flow_error(tmp_path: Path, data: bytes):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        loaded = load_file(path)
    except FlowError as exc:
        assert exc.problems
        _check_problems(exc.problems, str(path))
    else:
        assert loaded.flow.steps
