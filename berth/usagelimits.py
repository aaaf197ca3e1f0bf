"""Bounds of task usage reports, shared by the agent (which sends) and the control plane (which checks)."""

from __future__ import annotations

# Tasks in one UsageReport and containers in one task (the agent leaves the rest out).
MAX_TASKS = 1000
MAX_CONTAINERS = 10
# Seconds between samples (--usage-interval).
MIN_INTERVAL = 1.0
MAX_INTERVAL = 60.0
DEFAULT_INTERVAL = 5.0
# A container's memory, and its CPU in units (1024 = one core): at most 4,096 cores, 64 TiB.
MAX_CPU_UNITS = 4096 * 1024
MAX_MEMORY_BYTES = 64 << 40
