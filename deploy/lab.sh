#!/usr/bin/env bash
# A local multi-host lab on this machine (root): N hosts, each a network
# namespace with its own dockerd and berth-agent, plus a control plane.
#   bash deploy/lab.sh up 3     # prints the BERTH_SERVER to use
#   bash deploy/lab.sh down     # removes everything the lab made
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash deploy/install.sh
exec .venv/bin/python -m berth.testing.lab "$@"
