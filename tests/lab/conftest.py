"""The multi-host lab as a fixture: 3 real hosts (netns + dockerd + agent) and a control plane."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from berth.testing.cli import Berth
from berth.testing.lab import Lab

GRACE = 3.0


@pytest.fixture(scope="module")
def lab(test_image: str) -> Iterator[Lab]:
    lab = Lab(3, controlplane_args=("--node-grace", str(GRACE)))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def berth(lab: Lab) -> Berth:
    return Berth(lab.server)
