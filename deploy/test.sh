#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts what the
# tests need, checks generated code, lint and types, then runs pytest
# (unit, integration on real etcd, end-to-end on real Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "==> generated code"
python scripts/genproto.py --check
echo "==> lock (requirements.lock satisfies pyproject.toml)"
python scripts/lock.py --check
echo "==> ruff"
ruff check .
echo "==> mypy"
mypy .
echo "==> pytest"
# pytest exits 5 when it collected no tests; with set -e that fails the run too.
python -m pytest -ra "$@"
