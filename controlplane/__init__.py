"""Berth control plane: API, scheduler and controllers over etcd."""
