"""Berth agent: runs one host's tasks as containers and reports on them."""
