"""Validation at the control plane's boundary: pure checks of what comes in.

`agent_reports` checks everything an agent sends (its registration and
every message on its stream); `images` checks task definitions' images
against the cluster's registry allow-list. Each check either returns or
raises `InvalidArgument` with one line saying what to fix, and never
anything else, so code behind the boundary may assume valid data.
"""
