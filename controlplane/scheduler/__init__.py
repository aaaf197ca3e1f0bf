"""Task placement: filter, then score, over an in-memory snapshot (pure, no I/O).

`planner.place` takes node states and placement requests and returns a
plan; `controlplane.controllers.scheduling` turns the plan into etcd
transactions. Filters and scorers are small named units.

Imports run one way (a test keeps it so):

    model          node states, requests, plans, the Filter and Scorer protocols
    expressions    ECS placement syntax parsed into plain data
    filters        feasibility filters       (model, expressions)
    scorers        ranking strategies        (model)
    policies       ECS strategies and constraints -> scorers and filters
                                             (model, expressions, filters, scorers)
    planner        place()                   (model, filters, scorers)
"""
