"""Durable cluster state in etcd: the only door to it.

`StoreAPI` (the protocol everything above the store is written against,
with its value types, in `api`), `Store` (the real one, on etcd),
`MemoryStore` (in `memory`: the fake for unit tests), `keys` (the key layout), `retry`
(the one retry policy for optimistic transactions), `embedded` (the
private etcd child of the embedded default) and `tls` (the client's TLS
files and the embedded etcd's own CA). Nothing outside this package
talks to etcd or imports its client library.
"""

from controlplane.store.api import (
    Condition,
    Delete,
    Entry,
    KeepAlive,
    Put,
    StoreAPI,
    Versioned,
    Write,
    decode,
)
from controlplane.store.etcd import KeepAliveStream, Store
from controlplane.store.retry import RETRY, Retry, optimistic
from controlplane.store.tls import EtcdTLS

__all__ = [
    "RETRY",
    "Condition",
    "Delete",
    "Entry",
    "EtcdTLS",
    "KeepAlive",
    "KeepAliveStream",
    "Put",
    "Retry",
    "Store",
    "StoreAPI",
    "Versioned",
    "Write",
    "decode",
    "optimistic",
]
