"""Durable cluster state in etcd: key layout, typed access, the embedded etcd."""

from controlplane.store.etcd import Condition, Delete, Put, Store, Versioned, Write

__all__ = ["Condition", "Delete", "Put", "Store", "Versioned", "Write"]
