"""Warnings the control plane sends beside an answer, in its trailing metadata.

Things an operator must not miss while they look at the answer, but that are no
part of the answer itself: today, a suspected mass failure beside `ListNodes`
(the leader's node monitor holds back judging nodes; see
controlplane/controllers/nodes.py), which `berth node list` prints on stderr.
The value is printable ASCII, at most a few hundred characters.
"""

from __future__ import annotations

from collections.abc import Iterable

WARNING_METADATA = "berth-warning"


def warnings_in(metadata: Iterable[tuple[str, str | bytes]] | None) -> list[str]:
    """The warnings among an answer's trailing metadata."""
    found = []
    for key, value in metadata or ():
        if key == WARNING_METADATA:
            found.append(value.decode("ascii", errors="replace") if isinstance(value, bytes) else value)
    return found
