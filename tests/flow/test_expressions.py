"""Branch conditions as a flow author writes them: what they mean, and what is refused at check time."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from appliance.flow.expressions import Expression, ExpressionError


def holds(source: str, **variables) -> bool:
    return Expression(source).evaluate(variables)


@pytest.mark.parametrize(
    "source, variables, expected",
    [
        ("tier == 'gold'", {"tier": "gold"}, True),
        ("tier == 'gold'", {"tier": "silver"}, False),
        ("tier != 'gold'", {"tier": "silver"}, True),
        ("balance > 100 and tier == 'gold'", {"balance": 150, "tier": "gold"}, True),
        ("balance > 100 and tier == 'gold'", {"balance": 150, "tier": "silver"}, False),
        ("balance > 100 or tier == 'gold'", {"balance": 5, "tier": "gold"}, True),
        ("balance > 100 or tier == 'gold'", {"balance": 5, "tier": "silver"}, False),
        ("not vip", {"vip": False}, True),
        ("not vip", {"vip": True}, False),
        ("not (a and b) or c", {"a": True, "b": True, "c": False}, False),
        ("a and b or c", {"a": False, "b": True, "c": True}, True),  # and binds tighter than or
        ("balance <= 100", {"balance": 100}, True),
        ("balance < 100", {"balance": 100}, False),
        ("balance >= 100", {"balance": 100}, True),
        ("balance > -5", {"balance": 0}, True),
        ("balance > 1.5", {"balance": 2}, True),
        ("tier in ['gold', 'platinum']", {"tier": "platinum"}, True),
        ("tier in ['gold', 'platinum']", {"tier": "bronze"}, False),
        ("tier not in ['gold', 'platinum']", {"tier": "bronze"}, True),
        ("tier in ('gold', 'platinum')", {"tier": "gold"}, True),
        ("'vip' in tags", {"tags": ["new", "vip"]}, True),
        ("open == true", {"open": True}, False),  # `true` is a variable name, not the literal
        ("open == True", {"open": True}, True),
    ],
)
def test_allowed_forms_evaluate_as_written(source: str, variables: dict, expected: bool):
    assert holds(source, **variables) is expected


@pytest.mark.parametrize(
    "source, x, expected",
    [
        ("0 < x < 10", 5, True),
        ("0 < x < 10", 10, False),
        ("0 < x < 10", 0, False),
        ("1 <= x <= 3 != 4", 3, True),
        ("10 > x > 5", "7", True),  # digits from keys, chained
        ("10 > x > 5", "11", False),
    ],
)
def test_chained_comparisons_hold_only_when_every_link_holds(source: str, x, expected: bool):
    assert holds(source, x=x) is expected


@pytest.mark.parametrize(
    "source, expected",
    [
        ("balance > 100", True),
        ("balance >= 150", True),
        ("balance < 100", False),
        ("balance == 150", True),
        ("balance != 150", False),
        ("balance == 150.0", True),
        ("100 < balance", True),
    ],
)
def test_digits_from_keys_compare_as_numbers_against_numbers(source: str, expected: bool):
    # A gather stores DTMF as a string: '150' must be more than 100, not compared as text.
    assert holds(source, balance="150") is expected


def test_digits_still_compare_as_text_against_text():
    assert holds("account == '0042'", account="0042")
    assert not holds("account == '42'", account="0042")


def test_digits_from_keys_are_found_in_lists_of_numbers():
    assert holds("choice in [1, 2]", choice="1")


@pytest.mark.parametrize(
    "source, expected",
    [
        ("missing > 100", False),
        ("missing < 100", False),
        ("missing == 100", False),
        ("missing != 100", True),
        ("missing == None", True),
        ("missing != None", False),
        ("missing == ''", False),
        ("not missing", True),
        ("missing", False),
        ("missing in ['a']", False),
        ("missing not in ['a']", True),
        ("'a' in missing", False),  # `in None` is impossible: false, not a crash
        ("'a' not in missing", True),
        ("missing > other", False),
    ],
)
def test_missing_and_none_variables_never_crash(source: str, expected: bool):
    assert holds(source) is expected
    assert holds(source, missing=None, other=None) is expected


@pytest.mark.parametrize(
    "source, variables, expected",
    [
        ("balance > 100", {"balance": "lots"}, False),  # text that is not a number
        ("balance == 100", {"balance": "lots"}, False),
        ("balance != 100", {"balance": "lots"}, True),
        ("balance > 'a'", {"balance": 5}, False),
        ("tier > 5", {"tier": ["gold"]}, False),
        ("balance > 100", {"balance": 10**400}, True),  # a webhook's huge JSON integer
        ("balance < 100", {"balance": -(10**400)}, True),
        ("-balance < 0", {"balance": "3"}, True),
    ],
)
def test_impossible_or_odd_comparisons_are_answered_not_raised(source: str, variables: dict, expected: bool):
    assert holds(source, **variables) is expected


def test_names_are_every_variable_the_condition_reads():
    expression = Expression("balance > 100 and tier in [level, 'gold'] or not vip")
    assert expression.names == {"balance", "tier", "level", "vip"}
    assert Expression("1 < 2").names == set()


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("len(tier) > 2", "len(tier)"),
        ("tier.upper() == 'GOLD'", "tier.upper()"),
        ("caller.__class__", "caller.__class__"),
        ("tags[0] == 'vip'", "tags[0]"),
        ("(lambda: 1)()", "lambda"),
        ("[x for x in tags]", "for x in tags"),
        ("any(t == 'vip' for t in tags)", "any("),
        ("f'{tier}' == 'gold'", "f'{tier}'"),
        ("1 + 1 == 2", "1 + 1"),
        ("balance * 2 > 10", "balance * 2"),
        ("balance - 1 > 10", "balance - 1"),
        ("__import__('os').system('true')", "__import__"),
        ("(x := 5) > 1", "x := 5"),
        ("tier if vip else 'none'", "if vip else"),
        ("{'a': 1}", "{'a': 1}"),
        ("{1, 2}", "{1, 2}"),
        ("~balance", "~balance"),
        ("+balance > 1", "+balance"),
        ("b'abc' == x", "b'abc'"),
        ("x == ...", "Ellipsis"),
        ("x is None", "only == != < <= > >= in and not in"),
        ("x is not None", "only == != < <= > >= in and not in"),
        ("balance > ", "cannot parse"),
        ("", "cannot parse"),
        ("x = 1", "cannot parse"),
        ("import os", "cannot parse"),
        ("a\x00b", "cannot parse"),
    ],
)
def test_refused_forms_raise_at_parse_naming_the_part(source: str, fragment: str):
    with pytest.raises(ExpressionError) as caught:
        Expression(source)
    assert fragment in str(caught.value)


def test_refused_form_inside_an_allowed_one_is_still_refused():
    with pytest.raises(ExpressionError, match="len"):
        Expression("vip and (tier == 'gold' or len(tags) > 2)")
    with pytest.raises(ExpressionError, match="open"):
        Expression("x in [1, open('/etc/passwd')]")


def test_a_deeply_nested_condition_is_refused_with_a_message():
    with pytest.raises(ExpressionError):
        Expression("not " * 2000 + "x")


# --- property tests: random input never crashes the parser or the evaluator

TOKENS = [
    "x", "y", "tier", "balance", "None", "True", "False", "1", "0", "-", "150", "1.5", "1e400", "9" * 400,
    "'gold'", "'150'", '"x"', "(", ")", "[", "]", ",", "and", "or", "not", "in", "not in", "is",
    "==", "!=", "<", "<=", ">", ">=", "+", "*", "/", "%", "**", ".", ":", ":=", "=", "lambda",
    "if", "else", "for", "f'{x}'", "{", "}", "__import__", "import", "\\", "#", "\n", "@", "~", "...",
]

expressions = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join),
    st.text(max_size=40),
)

values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
        st.sampled_from(["150", "0042", "", "nan", "inf", "-1", "1e999", "gold"]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
variables = st.dictionaries(st.sampled_from(["x", "y", "tier", "balance", "other"]), values, max_size=5)


@settings(max_examples=200, deadline=None)
@given(source=expressions)
@example(source="x > 1 > (")
@example(source="x :: y")
def test_random_text_is_accepted_or_refused_with_expression_error(source: str):
    try:
        expression = Expression(source)
    except ExpressionError as exc:
        assert str(exc)
        return
    assert all(name.isidentifier() for name in expression.names)


@settings(max_examples=200, deadline=None)
@given(source=st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join), env=variables)
@example(source="balance > 100", env={"balance": 10**400})
@example(source="x < 9e999", env={"x": math.nan})
@example(source="'a' in x", env={"x": 5})
@example(source="x in y", env={"x": [1], "y": {"a": 1}})
@example(source="x in y", env={"x": {}, "y": [1]})
@example(source="-x", env={"x": [1]})
def test_evaluate_never_raises_on_any_variables(source: str, env: dict):
    try:
        expression = Expression(source)
    except ExpressionError:
        return
    assert expression.evaluate(env) in (True, False)
