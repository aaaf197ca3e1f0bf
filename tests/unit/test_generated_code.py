"""The generated protobuf code in berth/v1 matches proto/ (CI fails when stale)."""

from __future__ import annotations

import subprocess
import sys

from berth.testing.daemons import REPO


def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "genproto.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
