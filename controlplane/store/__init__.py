"""Durable cluster state in etcd: the only door to it.

`Store` (typed, transactional access), `keys` (the key layout), `retry`
(the one retry policy for optimistic transactions) and `embedded` (the
private etcd child of the embedded default). Nothing outside this package
talks to etcd or imports its client library.
"""

from controlplane.store.etcd import (
    Condition,
    Delete,
    Entry,
    KeepAliveStream,
    Put,
    Store,
    Versioned,
    Write,
)
from controlplane.store.retry import RETRY, Retry, optimistic

__all__ = [
    "RETRY",
    "Condition",
    "Delete",
    "Entry",
    "KeepAliveStream",
    "Put",
    "Retry",
    "Store",
    "Versioned",
    "Write",
    "optimistic",
]
