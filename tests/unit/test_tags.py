"""berth.tags: ECS's tag rules, and merging and removing tags, by example and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth import tags
from berth.errors import InvalidArgument
from berth.names import check_started_by
from berth.v1 import resources_pb2 as pb

# What ECS allows: letters, digits and separators of any script, and _ . : / = + - @.
_ALLOWED = st.characters(categories=("L", "N", "Zs"), include_characters="_.:/=+-@")
keys = st.text(_ALLOWED, min_size=1, max_size=tags.MAX_KEY).filter(lambda k: not k.lower().startswith("aws:"))
values = st.text(_ALLOWED, max_size=tags.MAX_VALUE)
tag_lists = st.dictionaries(keys, values, max_size=tags.MAX_TAGS).map(
    lambda d: [pb.Tag(key=k, value=v) for k, v in d.items()]
)


def pairs(tag_list: list[pb.Tag]) -> list[tuple[str, str]]:
    return [(t.key, t.value) for t in tag_list]


def test_examples_ecs_accepts_are_accepted() -> None:
    given_tags = [
        pb.Tag(key="team", value="payments"),
        pb.Tag(key="cost-center:id", value="42/a=b+c@d"),
        pb.Tag(key="Équipe 名前", value=""),
        pb.Tag(key="k" * 128, value="v" * 256),
    ]
    assert pairs(tags.check_tags(given_tags)) == pairs(given_tags)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("", "x", "has 0 characters: use 1 to 128"),
        ("k" * 129, "x", "has 129 characters: use 1 to 128"),
        ("ok", "v" * 257, "has 257 characters: the limit is 256"),
        ("semi;colon", "x", "is invalid: use letters, digits, spaces and _ . : / = + - @"),
        ("ok", "new\nline", "is invalid"),
        ("ok", "tab\tbed", "is invalid"),
        ("aws:name", "x", "is reserved"),
        ("AwS:name", "x", "is reserved"),
    ],
)
def test_what_ecs_refuses_is_refused_in_one_line(key: str, value: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        tags.check_tags([pb.Tag(key=key, value=value)])
    assert message in str(refused.value)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300


def test_keys_are_unique_and_a_resource_has_at_most_50() -> None:
    with pytest.raises(InvalidArgument, match="tag key 'a' is given twice"):
        tags.check_tags([pb.Tag(key="a", value="1"), pb.Tag(key="a", value="2")])
    fifty = [pb.Tag(key=f"k{i}", value="") for i in range(50)]
    assert len(tags.check_tags(fifty)) == 50
    with pytest.raises(InvalidArgument, match="51 tags: a resource has at most 50"):
        tags.check_tags([*fifty, pb.Tag(key="one-more")])
    with pytest.raises(InvalidArgument, match="51 tags: a resource has at most 50"):
        tags.merged(fifty, [pb.Tag(key="one-more")])
    assert len(tags.merged(fifty, [pb.Tag(key="k0", value="changed")])) == 50


def test_merging_changes_values_in_place_and_appends_new_keys() -> None:
    existing = [pb.Tag(key="a", value="1"), pb.Tag(key="b", value="2")]
    merged = tags.merged(existing, [pb.Tag(key="c", value="3"), pb.Tag(key="a", value="9")])
    assert pairs(merged) == [("a", "9"), ("b", "2"), ("c", "3")]
    assert pairs(tags.without(merged, ["b", "nosuch"])) == [("a", "9"), ("c", "3")]
    with pytest.raises(InvalidArgument, match="has 0 characters"):
        tags.without(merged, [""])


@given(tag_lists)
def test_every_list_within_the_rules_is_accepted_as_is(tag_list: list[pb.Tag]) -> None:
    assert pairs(tags.check_tags(tag_list)) == pairs(tag_list)


@given(tag_lists, tag_lists)
def test_merging_keeps_keys_unique_and_new_values_win(existing: list[pb.Tag], new: list[pb.Tag]) -> None:
    try:
        merged = tags.merged(existing, new)
    except InvalidArgument:
        assert len({t.key for t in existing} | {t.key for t in new}) > tags.MAX_TAGS
        return
    as_dict = dict(pairs(merged))
    assert len(as_dict) == len(merged) <= tags.MAX_TAGS
    assert as_dict == {**dict(pairs(existing)), **dict(pairs(new))}
    assert pairs(tags.check_tags(merged)) == pairs(merged)


@given(tag_lists, st.lists(keys, max_size=tags.MAX_TAGS))
def test_without_removes_exactly_the_keys_given(existing: list[pb.Tag], removed: list[str]) -> None:
    left = tags.without(existing, removed)
    assert pairs(left) == [(t.key, t.value) for t in existing if t.key not in set(removed)]


@given(st.text(max_size=300))
def test_any_text_is_accepted_or_refused_in_one_line(text: str) -> None:
    for tag in (pb.Tag(key=text, value="v"), pb.Tag(key="k", value=text)):
        try:
            tags.check_tags([tag])
        except InvalidArgument as error:
            assert "\n" not in str(error) and len(str(error)) < 400


@pytest.mark.parametrize("started_by", ["", "ci", "deploy-bot_2", "x" * 128])
def test_started_by_as_ecs_allows_it(started_by: str) -> None:
    assert check_started_by(started_by) == started_by


@pytest.mark.parametrize("started_by", ["x" * 129, "has space", "slash/ed", "ünï"])
def test_started_by_refuses_the_rest(started_by: str) -> None:
    with pytest.raises(InvalidArgument, match=r"startedBy .* is invalid: use up to 128 letters"):
        check_started_by(started_by)
