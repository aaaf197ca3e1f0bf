"""Container runtimes behind one narrow, per-node driver interface (`driver`).

`fake` is the in-memory driver for unit tests and hollow agents. The Docker
driver is three parts: `docker_spec` (what to create, pure), `docker_state`
(Docker's lagging list merged with its events, pure) and `docker_driver`
with `docker_events` (the I/O around them).
"""
