"""`nextToken` / `maxResults` pagination of ECS's List* operations.

Every listing is a sorted list of ARNs (or family names); a page is the next
`maxResults` of them after the token's position. The token is the last item's
sort key, base64url encoded: opaque to clients as ECS's are, stateless for the
replica (any replica continues any listing), and still correct when items are
added or removed between pages (nothing is repeated; items added before the
token are not seen, as with ECS).
"""

from __future__ import annotations

import base64
import binascii
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

from controlplane.ecs.protocol import invalid

MAX_TOKEN = 4096


def _token(item: str) -> str:
    return base64.urlsafe_b64encode(item.encode()).decode()


def _after(token: str) -> str:
    if len(token) > MAX_TOKEN:
        raise invalid(f"nextToken is longer than {MAX_TOKEN} characters")
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (UnicodeError, ValueError, binascii.Error):
        raise invalid("nextToken is not a token this API returned") from None


def page(
    params: dict[str, Any],
    items: Sequence[str],
    key: str,
    default_size: int = 100,
    max_size: int = 100,
    sort_key: Callable[[str], str] = lambda item: item,
    reverse: bool = False,
) -> dict[str, Any]:
    """`{key: [...], "nextToken": ...}` for the request's page of `items`, in the order of
    `sort_key` (descending with `reverse`); the token is the last item's sort key."""
    size = params.get("maxResults", default_size)
    if not 1 <= size <= max_size:
        raise invalid(f"maxResults must be between 1 and {max_size}")
    ordered = sorted(items, key=sort_key, reverse=reverse)
    start = 0
    if params.get("nextToken"):
        after = _after(params["nextToken"])
        positions = [sort_key(item) for item in ordered]
        start = (
            sum(1 for position in positions if position >= after)
            if reverse
            else bisect_right(positions, after)
        )
    chunk = ordered[start : start + size]
    answer: dict[str, Any] = {key: chunk}
    if start + size < len(ordered):
        answer["nextToken"] = _token(sort_key(chunk[-1]))
    return answer
