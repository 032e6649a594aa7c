"""Every file in tests/flow/broken/ is a flow an admin could write, with the problem the
loader must report named on its first line:

    # expect: LINE[:COL]: message fragment

A second line `# xfail: why` marks a known loader weakness (strict, so a fix is noticed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.core.errors import FlowError
from appliance.flow.loader import load_file

BROKEN = Path(__file__).parent / "broken"
EXPECT = re.compile(r"^# expect: (\d+)(?::(\d+))?:\s?(.*)$")


def _cases() -> list:
    cases = []
    for path in sorted(BROKEN.glob("*.yaml")):
        head = path.read_bytes().decode("latin-1").splitlines()
        match = EXPECT.match(head[0]) if head else None
        assert match, f"{path.name}: first line must be '# expect: LINE[:COL]: fragment'"
        line, col, fragment = int(match[1]), match[2] and int(match[2]), match[3].strip()
        marks = []
        if len(head) > 1 and head[1].startswith("# xfail:"):
            marks.append(pytest.mark.xfail(reason=head[1][len("# xfail:"):].strip(), strict=True))
        cases.append(pytest.param(path, line, col, fragment, id=path.stem, marks=marks))
    return cases


def test_the_corpus_is_not_empty():
    assert len(list(BROKEN.glob("*.yaml"))) >= 20


@pytest.mark.parametrize("path, line, col, fragment", _cases())
def test_broken_flow_is_reported_where_it_is_broken(path: Path, line: int, col: int | None, fragment: str):
    with pytest.raises(FlowError) as caught:
        load_file(path)
    problems = caught.value.problems
    assert problems, "a FlowError must carry at least one problem"
    assert all(p.file == str(path) for p in problems)
    found = [p for p in problems if p.line == line and fragment in p.message and (col is None or p.col == col)]
    assert found, f"expected line {line}{f':{col}' if col else ''} '{fragment}', got:\n{caught.value}"
    # The message an admin sees names the file and the position, editor-style.
    assert f"{path}:{found[0].line}:{found[0].col}: " in str(caught.value)
