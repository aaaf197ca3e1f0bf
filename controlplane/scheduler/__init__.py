"""Task placement: filter, then score, over an in-memory snapshot (pure, no I/O).

`planner.place` takes node states and placement requests and returns a
plan; `controlplane.controllers.scheduling` turns the plan into etcd
transactions. Filters and scorers are small named units.
"""
