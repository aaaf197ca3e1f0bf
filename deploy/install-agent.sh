#!/usr/bin/env bash
# Turns a fresh Debian or Ubuntu VM into a Berth host, as root:
#
#   deploy/install-agent.sh --server 10.0.0.10:7400 \
#       --join-token 1a2b3c4d.0123...  --ca-hash sha256:9f86...  [--attribute zone=eu-west-1a]
#
# (or BERTH_SERVER, BERTH_JOIN_TOKEN, BERTH_CA_HASH in the environment, as the
# cloud-init example sets them). `berth join-token create` prints the token and
# the CA hash. It installs Docker and the packages the agent drives
# (nftables, iptables, conntrack, iproute2), installs Berth into /opt/berth/venv at
# exactly the versions of requirements.lock (hash-checked), writes
# /etc/berth/agent.env (0600) and the berth-agent systemd unit, enables and
# starts it, and waits for the node certificate: the agent joins on its first
# start with the same flags every agent uses (--join-token, --ca-hash), and
# later starts use the certificate in /var/lib/berth/agent and ignore the token.
#
# Where the code comes from (BERTH_SOURCE or --source):
#   - unset: the checkout this script is in (copy or clone the repository to
#     the VM, then run it from there);
#   - a git URL: cloned into /opt/berth/src at BERTH_REF (--ref, default main);
#   - a .tar.gz (path or https URL, e.g. `git archive` of a release): unpacked
#     into /opt/berth/src.
#
# Idempotent: a re-run installs what is missing, rewrites the env file and the
# unit, and restarts the agent, which keeps its node identity and adopts its
# running containers. --dry-run checks the values and prints the env file
# without touching the machine.
set -euo pipefail

PREFIX=/opt/berth
ENV_FILE=/etc/berth/agent.env
UNIT=/etc/systemd/system/berth-agent.service
DATA_DIR=/var/lib/berth/agent
PACKAGES=(docker.io nftables iptables conntrack iproute2 python3-venv git ca-certificates curl)

fail() {
  echo "error: $*" >&2
  exit 2
}
log() { printf '==> %s\n' "$*"; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --server HOST:PORT       the control plane's API (BERTH_SERVER)
  --join-token TOKEN       from `berth join-token create` (BERTH_JOIN_TOKEN)
  --ca-hash sha256:HEX     the cluster CA's hash, printed with the token (BERTH_CA_HASH)
  --join-server HOST:PORT  the join listener; default: --server's host, next port (BERTH_JOIN_SERVER)
  --name NAME              node name; default: the hostname (BERTH_NODE_NAME)
  --address IP             address other hosts reach this one at; default: the default route's (BERTH_ADDRESS)
  --attribute KEY=VALUE    repeatable (BERTH_ATTRIBUTES: KEY=VALUE,KEY=VALUE)
  --source GIT_URL|TARBALL where Berth's code comes from (BERTH_SOURCE); default: this checkout
  --ref REF                git branch or tag with a git --source (BERTH_REF, default main)
  --dry-run                check the values and print the env file; change nothing
EOF
}

SERVER=${BERTH_SERVER:-}
TOKEN=${BERTH_JOIN_TOKEN:-}
CA_HASH=${BERTH_CA_HASH:-}
JOIN_SERVER=${BERTH_JOIN_SERVER:-}
NAME=${BERTH_NODE_NAME:-}
ADDRESS=${BERTH_ADDRESS:-}
SOURCE=${BERTH_SOURCE:-}
REF=${BERTH_REF:-main}
DRY_RUN=0
ATTRIBUTES=()
if [ -n "${BERTH_ATTRIBUTES:-}" ]; then
  IFS=, read -r -a ATTRIBUTES <<<"$BERTH_ATTRIBUTES"
fi

while [ $# -gt 0 ]; do
  option=$1
  case $option in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift; continue ;;
  esac
  { [ $# -ge 2 ] && [[ $2 != --* ]]; } || fail "$option needs a value; see --help"
  case $option in
    --server) SERVER=$2 ;;
    --join-token) TOKEN=$2 ;;
    --ca-hash) CA_HASH=$2 ;;
    --join-server) JOIN_SERVER=$2 ;;
    --name) NAME=$2 ;;
    --address) ADDRESS=$2 ;;
    --attribute) ATTRIBUTES+=("$2") ;;
    --source) SOURCE=$2 ;;
    --ref) REF=$2 ;;
    *) fail "unknown option $option; see --help" ;;
  esac
  shift 2
done

# The three values first, in one line, before anything touches the machine.
missing=()
[ -n "$SERVER" ] || missing+=("--server (BERTH_SERVER)")
[ -n "$TOKEN" ] || missing+=("--join-token (BERTH_JOIN_TOKEN)")
[ -n "$CA_HASH" ] || missing+=("--ca-hash (BERTH_CA_HASH)")
if [ ${#missing[@]} -gt 0 ]; then
  joined=$(printf '%s, ' "${missing[@]}")
  fail "missing ${joined%, }: \`berth join-token create\` on the control plane prints the token and the CA hash"
fi

# Everything below ends up in a systemd EnvironmentFile: only plain characters get there.
HOST_PORT='^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$'
[[ $SERVER =~ $HOST_PORT ]] || fail "--server must be HOST:PORT, not '$SERVER'"
[ -z "$JOIN_SERVER" ] || [[ $JOIN_SERVER =~ $HOST_PORT ]] || fail "--join-server must be HOST:PORT, not '$JOIN_SERVER'"
[[ $TOKEN =~ ^[0-9a-f]{8}\.[0-9a-f]{32}$ ]] || fail "--join-token must be ID.SECRET as \`berth join-token create\` prints it"
CA_HASH=${CA_HASH,,}
[[ $CA_HASH =~ ^sha256:[0-9a-f]{64}$ ]] || fail "--ca-hash must be sha256: and 64 hex digits, as \`berth join-token create\` prints it"
[ -z "$NAME" ] || [[ $NAME =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || fail "--name must be a DNS label, not '$NAME'"
[ -z "$ADDRESS" ] || [[ $ADDRESS =~ ^[0-9A-Fa-f:.]+$ ]] || fail "--address must be an IP address, not '$ADDRESS'"
for attribute in "${ATTRIBUTES[@]}"; do
  [[ $attribute =~ ^[A-Za-z0-9_.-]+=[A-Za-z0-9_.:/-]*$ ]] || fail "--attribute must be KEY=VALUE of letters, digits and _.:/-, not '$attribute'"
done

flags="--join-token $TOKEN --ca-hash $CA_HASH"
[ -z "$JOIN_SERVER" ] || flags+=" --join-server $JOIN_SERVER"
[ -z "$NAME" ] || flags+=" --name $NAME"
[ -z "$ADDRESS" ] || flags+=" --address $ADDRESS"
for attribute in "${ATTRIBUTES[@]}"; do flags+=" --attribute $attribute"; done
ENV_CONTENT="# Written by deploy/install-agent.sh; re-run it to change these.
# The token is used only at the first start (the join); later starts use the node certificate.
BERTH_SERVER=$SERVER
BERTH_AGENT_FLAGS=\"$flags\"
"

if [ "$DRY_RUN" = 1 ]; then
  printf '%s' "$ENV_CONTENT"
  exit 0
fi

[ "$(id -u)" = 0 ] || fail "run as root: it installs packages, writes $ENV_FILE and starts berth-agent"
[ -d /run/systemd/system ] || fail "systemd is not running here; start the agent by hand: berth-agent --server $SERVER --data-dir $DATA_DIR $flags"

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
systemctl enable --now docker >/dev/null

# The code: this checkout, a git clone, or a tarball.
if [ -z "$SOURCE" ]; then
  SRC=$(cd "$(dirname "$0")/.." && pwd)
elif [ -d "$SOURCE" ]; then
  SRC=$(cd "$SOURCE" && pwd)
elif [[ $SOURCE == *.tar.gz || $SOURCE == *.tgz ]]; then
  SRC=$PREFIX/src
  log "unpacking $SOURCE into $SRC"
  rm -rf "$SRC.new" && mkdir -p "$SRC.new"
  if [[ $SOURCE == https://* ]]; then
    curl -fsSL "$SOURCE" | tar -xz -C "$SRC.new"
  else
    tar -xzf "$SOURCE" -C "$SRC.new"
  fi
  # A tarball with one top directory (GitHub's archives) or the tree itself.
  entries=("$SRC.new"/*)
  if [ ${#entries[@]} = 1 ] && [ -d "${entries[0]}" ] && [ ! -f "$SRC.new/pyproject.toml" ]; then
    mv "${entries[0]}" "$SRC.new.top" && rm -rf "$SRC.new" && mv "$SRC.new.top" "$SRC.new"
  fi
  rm -rf "$SRC" && mv "$SRC.new" "$SRC"
else
  SRC=$PREFIX/src
  if [ -d "$SRC/.git" ]; then
    log "updating $SRC to $REF"
    git -C "$SRC" fetch -q --depth 1 origin "$REF"
    git -C "$SRC" checkout -q --force FETCH_HEAD
  else
    log "cloning $SOURCE ($REF) into $SRC"
    rm -rf "$SRC"
    git clone -q --depth 1 --branch "$REF" "$SOURCE" "$SRC"
  fi
fi
[ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/requirements.lock" ] || fail "$SRC is not a Berth checkout (no pyproject.toml or requirements.lock)"

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "Berth needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)"
[ -x "$PREFIX/venv/bin/python" ] || { log "creating $PREFIX/venv"; python3 -m venv "$PREFIX/venv"; }
log "installing Berth from $SRC (requirements.lock, hash-checked) into $PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install -q --require-hashes --no-deps -r "$SRC/requirements.lock"
"$PREFIX/venv/bin/python" -m pip install -q --no-deps --no-build-isolation --force-reinstall "$SRC"

log "writing $ENV_FILE and $UNIT"
install -d -m 0755 /etc/berth
umask 077
printf '%s' "$ENV_CONTENT" >"$ENV_FILE.tmp"
chmod 0600 "$ENV_FILE.tmp" && mv "$ENV_FILE.tmp" "$ENV_FILE"
install -m 0644 "$SRC/deploy/systemd/berth-agent.service" "$UNIT"
systemctl daemon-reload
systemctl enable berth-agent >/dev/null
systemctl restart berth-agent

log "waiting for the node certificate (the join)"
for _ in $(seq 1 60); do
  if [ -s "$DATA_DIR/node.crt" ]; then
    log "joined: berth-agent is running (journalctl -u berth-agent; on the control plane: berth node list)"
    exit 0
  fi
  systemctl is-failed -q berth-agent && break
  sleep 1
done
echo "error: the agent has not joined within 60 s; see: journalctl -u berth-agent -n 50" >&2
exit 1
