#!/usr/bin/env bash
# Installs what Berth and its tests need on a Debian or Ubuntu machine, as
# root, and starts the Docker engine if it is not running. Idempotent.
#   - Debian packages: docker.io, etcd-server, etcd-client, nftables, iptables,
#     busybox-static, conntrack, iproute2, python3-venv, gcc and libc6-dev
#     (to build the test image's static UDP echo server), systemd (its
#     systemd-analyze checks the units in deploy/systemd)
#   - the Python package with its test extras, in .venv/ of this checkout, at
#     exactly the versions in requirements.lock (hash-checked), so a fresh
#     machine runs what was tested; regenerate the lock with scripts/lock.py
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "error: run as root (it installs packages and starts dockerd)" >&2
  exit 1
fi

PACKAGES=(docker.io etcd-server etcd-client nftables iptables busybox-static conntrack iproute2 python3-venv gcc libc6-dev systemd)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting the Docker engine"
  if [ -d /run/systemd/system ]; then
    systemctl start docker
  else
    nohup dockerd >/var/log/berth-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "error: dockerd did not start; see /var/log/berth-dockerd.log" >&2; exit 1; }
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Berth needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PYTHON" -m venv .venv
fi
LOCK=requirements.lock
pins=$(grep -E '^[A-Za-z0-9_.-]+==' "$LOCK" | grep -v "sys_platform == 'win32'" | sed -e 's/ *\\$//' -e 's/ ;.*//' | tr '\n' ' ')
log "installing $LOCK (sha256 $(sha256sum "$LOCK" | cut -c1-16), $(wc -w <<<"$pins") pins) into .venv"
echo "    $pins"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# Exactly the lock: every file hash-checked, nothing resolved beyond it
# (--no-deps), then the package itself without its dependencies, built with the
# locked setuptools (--no-build-isolation) instead of whatever is newest.
.venv/bin/python -m pip install -q --require-hashes --no-deps -r "$LOCK"
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
# The lock is complete and consistent: every installed package's requirements are met.
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; exit 1; }

bash deploy/build-image.sh
