"""The long chaos run as a command: brings a lab up, runs the chaos, prints the report, takes the
lab down (even on failure). Needs root, Docker and the test image (deploy/build-image.sh), like
every lab; only one lab runs on a machine at a time.

    python -m berth.testing.chaos --rounds 30 [--seed N] [--hosts 3]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from berth.testing.chaos.run import GRACE, Settings, cli_of, lab_of, run
from berth.testing.daemons import REPO


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m berth.testing.chaos",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument(
        "--single", action="store_true", help="one control plane with its embedded etcd, not the HA lab"
    )
    parser.add_argument("--grace", type=float, default=GRACE, help="the control plane's --node-grace")
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: the lab needs root (network namespaces, dockerd)")
    if args.hosts < 2:
        sys.exit("error: --hosts must be at least 2 (one runs the VIP client and is never crashed)")
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    subprocess.run(["bash", str(REPO / "deploy" / "build-image.sh")], check=True)
    lab = lab_of(args.hosts, args.grace, ha=not args.single)
    try:
        lab.up()
        # Kept: the VIP client's log (one line per request) is there.
        directory = Path(tempfile.mkdtemp(prefix=f"berth-chaos-{seed}-"))
        print(f"task definitions and the VIP client's log: {directory}", flush=True)
        report = run(
            lab,
            cli_of(lab),
            Settings(args.rounds, seed, args.grace, settle_timeout=args.settle_timeout),
            directory,
            sys.stdout,
        )
    finally:
        lab.down()
    sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
