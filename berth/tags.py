"""Resource tags as ECS has them: the rules a tag list keeps, and how tag lists change.

Pure functions over `pb.Tag` lists; every front door (the operator API, the
ECS API) and every operation that stores tags goes through `check_tags`, so a
stored list always holds:

- at most 50 tags, keys unique (case-sensitive, as in ECS);
- keys of 1-128 characters, values of 0-256;
- only Unicode letters, digits and separators (spaces), and `_ . : / = + - @`
  (ECS's pattern `[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*`);
- no key starting with `aws:` in any case: that prefix is reserved for AWS.

Errors are `InvalidArgument`, one line, the offending text quoted shortened.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

from berth.errors import InvalidArgument
from berth.names import shown
from berth.v1 import resources_pb2 as pb

MAX_TAGS = 50
MAX_KEY = 128
MAX_VALUE = 256
RESERVED_PREFIX = "aws:"
_PUNCTUATION = frozenset("_.:/=+-@")
# Unicode categories allowed: letters (L*), numbers (N*) and separators (Z*: spaces).
_CATEGORIES = ("L", "N", "Z")
_RULE = "letters, digits, spaces and _ . : / = + - @"


def _allowed(character: str) -> bool:
    return character in _PUNCTUATION or unicodedata.category(character).startswith(_CATEGORIES)


def check_key(key: str) -> str:
    """A tag key, or InvalidArgument saying what is wrong with it."""
    if not 1 <= len(key) <= MAX_KEY:
        raise InvalidArgument(f"tag key {shown(key)} has {len(key)} characters: use 1 to {MAX_KEY}")
    if not all(_allowed(c) for c in key):
        raise InvalidArgument(f"tag key {shown(key)} is invalid: use {_RULE}")
    if key[: len(RESERVED_PREFIX)].lower() == RESERVED_PREFIX:
        raise InvalidArgument(f"tag key {shown(key)} is reserved: keys starting with 'aws:' are AWS's")
    return key


def check_value(key: str, value: str) -> str:
    if len(value) > MAX_VALUE:
        raise InvalidArgument(
            f"the value of tag {shown(key)} has {len(value)} characters: the limit is {MAX_VALUE}"
        )
    if not all(_allowed(c) for c in value):
        raise InvalidArgument(f"the value of tag {shown(key)} ({shown(value)}) is invalid: use {_RULE}")
    return value


def _limit(count: int) -> None:
    if count > MAX_TAGS:
        raise InvalidArgument(f"{count} tags: a resource has at most {MAX_TAGS}")


def check_tags(tags: Iterable[pb.Tag]) -> list[pb.Tag]:
    """The tags as new messages, each checked, at most 50, keys unique."""
    checked: list[pb.Tag] = []
    seen: set[str] = set()
    for tag in tags:
        _limit(len(checked) + 1)
        key = check_key(tag.key)
        if key in seen:
            raise InvalidArgument(f"tag key {shown(key)} is given twice: keys are unique")
        seen.add(key)
        checked.append(pb.Tag(key=key, value=check_value(key, tag.value)))
    return checked


def merged(existing: Sequence[pb.Tag], new: Iterable[pb.Tag]) -> list[pb.Tag]:
    """`existing` with `new` applied: a key given again takes its new value, new keys come last."""
    incoming = {tag.key: tag.value for tag in check_tags(new)}
    result = [pb.Tag(key=t.key, value=incoming.pop(t.key, t.value)) for t in existing]
    result.extend(pb.Tag(key=key, value=value) for key, value in incoming.items())
    _limit(len(result))
    return result


def without(existing: Sequence[pb.Tag], keys: Iterable[str]) -> list[pb.Tag]:
    """`existing` less the tags with these keys (a key it does not have is ignored, as in ECS)."""
    removed = set()
    for count, key in enumerate(keys, start=1):
        if count > MAX_TAGS:
            raise InvalidArgument(f"more than {MAX_TAGS} tag keys given: a resource has at most {MAX_TAGS}")
        if not 1 <= len(key) <= MAX_KEY:
            raise InvalidArgument(f"tag key {shown(key)} has {len(key)} characters: use 1 to {MAX_KEY}")
        removed.add(key)
    return [pb.Tag(key=t.key, value=t.value) for t in existing if t.key not in removed]


def from_document(raw: object) -> list[pb.Tag]:
    """The `tags` of an ECS document or request ([{"key": ..., "value": ...}]), checked."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidArgument('tags must be a list of {"key": ..., "value": ...}')
    _limit(len(raw))
    tags = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - {"key", "value"} or not isinstance(item.get("key"), str):
            raise InvalidArgument(f'tags[{index}] must be {{"key": TEXT, "value": TEXT}}')
        value = item.get("value", "")
        if not isinstance(value, str):
            raise InvalidArgument(f"tags[{index}].value must be text")
        tags.append(pb.Tag(key=item["key"], value=value))
    return check_tags(tags)


def to_ecs(tags: Iterable[pb.Tag]) -> list[dict[str, str]]:
    """Tags as ECS writes them: [{"key": ..., "value": ...}], in their order."""
    return [{"key": t.key, "value": t.value} for t in tags]
