"""Berth: shared code of the operator CLI, control plane and agent."""
