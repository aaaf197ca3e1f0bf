"""Which etcd member the store talks to, and when it leaves one for the next.

The store keeps one connection per member and a current member. A call that
fails with UNAVAILABLE (the member is dead, unreachable, or has no leader:
etcd answers "no leader" and "request timed out" with UNAVAILABLE) or
DEADLINE_EXCEEDED (it did not answer in time) leaves that member for the next
one and is retried there, each member at most once per call; when every
member failed the call raises `berth.errors.Unavailable`. Any other code is
the request's own fault and is never retried on another member.

Retrying a write on another member is safe because of how Berth writes:

- a conditional transaction compares each key's `mod_revision`. If the
  attempt that timed out was in fact applied, the retry's compare fails and
  the caller sees "a condition failed" and re-reads, exactly as after losing
  a race (the retry policy in `retry` already handles that). The one visible
  edge: a create-if-absent (`Condition(key, 0)`) whose first attempt applied
  reports the key as existing; the value there is the caller's own.
- an unconditional write puts the same value again: idempotent.
- a lease grant retried may leave an extra lease behind, which expires on
  its own after its TTL.

Leases live in the cluster, not in a member, so a lease survives a member
change. Watches resume on the next member from the last revision they
delivered plus one; keep-alive streams re-send the refreshes that had no
answer yet.

This module is the pure part (the rotation and the codes); `etcd` does the I/O.
"""

from __future__ import annotations

import grpc

# Codes that say "this member cannot serve you now", not "your request is wrong".
FAIL_OVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# etcd's server cancels a watch or a keep-alive stream when its member loses
# the leader if the client asks so with this metadata (what etcd's own Go
# client sends as WithRequireLeader): a member cut off from the others then
# breaks our stream, and we resume on another member, instead of staying
# silent forever.
REQUIRE_LEADER = (("hasleader", "true"),)


def fails_over(code: grpc.StatusCode | None) -> bool:
    """Whether an error with this code moves the call to the next member."""
    return code in FAIL_OVER_CODES


class Rotation:
    """The current member among `size`, and the order in which one call tries them.

    Calls run concurrently: several may see the same member fail, and only
    the first moves the current member on (`failed` leaves it alone when it
    has already moved), so a burst of failures skips one member, not several.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("at least one etcd endpoint is needed")
        self.size = size
        self.current = 0

    def order(self) -> list[int]:
        """The members one call tries: the current one first, then each other once."""
        return [(self.current + step) % self.size for step in range(self.size)]

    def failed(self, index: int) -> None:
        """Member `index` failed a call: the next call starts at the member after it."""
        if index == self.current:
            self.current = (index + 1) % self.size

    def succeeded(self, index: int) -> None:
        """Member `index` answered: stay with it."""
        self.current = index
