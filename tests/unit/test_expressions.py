"""Placement expressions: a linear parser for ECS's memberOf subset, bounded in length.

A backtracking regex used to freeze the event loop for tens of seconds on a
long expression; these tests pin the grammar, the bounds and the time.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth.errors import InvalidArgument
from controlplane.scheduler.expressions import (
    MAX_CLAUSES,
    MAX_EXPRESSION_LENGTH,
    AttributeClause,
    attribute_field,
    parse_expression,
)

# An adversarial expression for the old regex: whitespace runs around an
# operator and a line break late in the value made it backtrack in
# polynomial time of high degree (500 characters took seconds, 1000 a minute).
ADVERSARIAL = [
    "attribute:a" + " " * 250 + "in" + " " * 250 + "x\ny",
    ("attribute:a" + " " * 995 + "in" + " " * 995 + "x\ny")[:MAX_EXPRESSION_LENGTH],
    ("attribute:a" + " " * 660 + "in" + " " * 1320 + "x\ny")[:MAX_EXPRESSION_LENGTH],
    "attribute:a " + " " * 1980 + "in",
    "x" + " \t" * 995 + "an",
    ("attribute:a == b and " * 200)[:MAX_EXPRESSION_LENGTH],
    "attribute:a in [" + "b," * 990 + "c]",
]


@pytest.mark.parametrize(
    ("expression", "clauses"),
    [
        ("attribute:zone == a", [AttributeClause("zone", "==", ("a",))]),
        ("attribute:zone==a", [AttributeClause("zone", "==", ("a",))]),
        ("attribute:zone != a", [AttributeClause("zone", "!=", ("a",))]),
        ("attribute:zone in [a, b]", [AttributeClause("zone", "in", ("a", "b"))]),
        ("attribute:zone not_in [a,b]", [AttributeClause("zone", "not_in", ("a", "b"))]),
        (
            "  attribute:zone in [a, b] and attribute:ecs.disk-type == ssd ",
            [AttributeClause("zone", "in", ("a", "b")), AttributeClause("ecs.disk-type", "==", ("ssd",))],
        ),
    ],
)
def test_the_supported_subset_parses(expression: str, clauses: list[AttributeClause]) -> None:
    assert list(parse_expression(expression)) == clauses


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty"),
        ("zone == a", "expected attribute:NAME"),
        ("attribute:zone = a", "unexpected character '='"),
        ("attribute:zone == a\n", "unexpected character '\\n'"),
        ("attribute:zone == a\nattribute:x == y", "unexpected character"),
        ("attribute:zone in a, b", "go in [ ]"),
        ("attribute:zone in []", "expected a value"),
        ("attribute:zone in [a, ]", "expected a value"),
        ("attribute:zone in [a b]", "expected ',' or ']'"),
        ("attribute:zone == a or attribute:x == b", "expected 'and' or the end"),
        ("attribute:zone ==", "ends too early"),
        ("attribute:zone == a and", "ends too early"),
        ("attribute: == a", "expected attribute:NAME"),
        ("attribute:zone == " + "a" * 129, "longer than 128"),
        (" and ".join(["attribute:a == b"] * (MAX_CLAUSES + 1)), f"at most {MAX_CLAUSES} clauses"),
        ("attribute:a in [" + ",".join(["b"] * 51) + "]", "at most 50 values"),
        ("attribute:a == " + "b" * MAX_EXPRESSION_LENGTH, "the limit is 2000"),
    ],
)
def test_bad_expressions_are_refused_in_one_line(expression: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_expression(expression)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert len(str(refused.value)) < 400


@pytest.mark.parametrize("expression", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_an_adversarial_expression_is_answered_in_well_under_a_tenth_of_a_second(expression: str) -> None:
    started = time.perf_counter()
    try:
        parse_expression(expression)
    except InvalidArgument:
        pass
    assert time.perf_counter() - started < 0.02


def test_a_40_kb_expression_is_refused_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidArgument, match="the limit is 2000"):
        parse_expression("attribute:a" + " " * 20_000 + "in" + " " * 20_000 + "x\ny")
    # Refused by its length before any parsing: a regex backtracking over 40 KB would take
    # minutes; a generous bound keeps this test about that, not about a busy machine.
    assert time.perf_counter() - started < 1.0


def test_strategy_fields_name_an_attribute_or_nothing() -> None:
    assert attribute_field("attribute:zone") == "zone"
    assert attribute_field("attribute:") is None
    assert attribute_field("attribute:zone\n") is None
    assert attribute_field("attribute:" + "a" * 129) is None
    assert attribute_field("instanceId") is None


# Characters that matter to the grammar, plus anything at all.
_GRAMMAR = st.sampled_from(
    ["attribute:", "zone", "a", "==", "!=", " in ", " not_in ", "[", "]", ",", " and ", " ", "\t", "\n", "="]
)
_NEAR_MISSES = st.lists(st.one_of(_GRAMMAR, st.text(max_size=3)), max_size=80).map("".join)
_ANY_TEXT = st.text(max_size=MAX_EXPRESSION_LENGTH + 20)
# Long runs of whitespace around operators, then something that fails late:
# the shapes that made the old regex backtrack.
_WHITESPACE = st.integers(min_value=0, max_value=400).flatmap(
    lambda n: st.sampled_from([" " * n, "\t" * n, " \t" * (n // 2)])
)
_RUNS = st.lists(
    st.one_of(
        _WHITESPACE, st.sampled_from(["attribute:a", "in", "not_in", "==", "and", "x", "\n", "[", "]"])
    ),
    min_size=1,
    max_size=8,
).map(lambda parts: "".join(parts)[:MAX_EXPRESSION_LENGTH])


_SHAPED = st.builds(
    lambda before, operator, after, tail: f"attribute:a{before}{operator}{after}x{tail}",
    _WHITESPACE,
    st.sampled_from(["in", "not_in", "==", "!=", ""]),
    _WHITESPACE,
    st.sampled_from(["", "\ny", "\n", "]", " and"]),
)


@settings(max_examples=600, deadline=None)
@given(st.one_of(_NEAR_MISSES, _ANY_TEXT, _RUNS, _SHAPED))
def test_any_text_parses_or_is_refused_in_one_line_quickly(expression: str) -> None:
    started = time.perf_counter()
    try:
        clauses = parse_expression(expression)
    except InvalidArgument as error:
        assert "\n" not in str(error)
    else:
        assert 1 <= len(clauses) <= MAX_CLAUSES
        assert len(expression) <= MAX_EXPRESSION_LENGTH
    assert time.perf_counter() - started < 0.05


_NAME = st.from_regex(r"[A-Za-z0-9_.\-/]{1,20}", fullmatch=True)
_VALUE = st.from_regex(r"[A-Za-z0-9_.\-/@:]{1,20}", fullmatch=True).filter(
    lambda v: v not in ("and", "in", "not_in")
)
_CLAUSE = st.one_of(
    st.builds(lambda n, o, v: AttributeClause(n, o, (v,)), _NAME, st.sampled_from(["==", "!="]), _VALUE),
    st.builds(
        lambda n, o, vs: AttributeClause(n, o, tuple(vs)),
        _NAME,
        st.sampled_from(["in", "not_in"]),
        st.lists(_VALUE, min_size=1, max_size=5),
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_CLAUSE, min_size=1, max_size=MAX_CLAUSES))
def test_accepted_expressions_round_trip_to_the_same_clauses(clauses: list[AttributeClause]) -> None:
    text = " and ".join(str(c) for c in clauses)
    parsed = parse_expression(text)
    assert list(parsed) == clauses
    assert parse_expression(" and ".join(str(c) for c in parsed)) == parsed
