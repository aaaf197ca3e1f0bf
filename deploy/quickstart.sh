#!/usr/bin/env bash
# Berth's main job on the embedded default, on one machine:
# installs what is missing, starts a control plane (with its own etcd) and
# an agent, registers examples/web.json, runs a service of 2 tasks with a
# virtual IP and DNS name, kills one container with `docker kill` and shows
# Berth replacing it.
#
#   bash deploy/quickstart.sh        # run the demo; daemons keep running
#   bash deploy/quickstart.sh down   # remove the demo service, stop the daemons,
#                                    # take Berth's rules off this host and list
#                                    # what else still runs
#
# Environment: BERTH_HOME (state, logs and pid files; default /var/lib/berth),
# BERTH_SERVER (the control plane's address; default 127.0.0.1:7400),
# BERTH_CONFIG (where the control plane writes the administrator's credentials
# and the CLI finds them; default ~/.config/berth/config),
# BERTH_SKIP_INSTALL=1 (everything is installed already: skip deploy/install.sh),
# BERTH_AWS_PROFILE_DIR (where the first start writes the AWS profile `berth` for
# the ECS-compatible API; default ~/.aws, and only with the default BERTH_CONFIG).
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH_HOME=${BERTH_HOME:-/var/lib/berth}
export BERTH_SERVER=${BERTH_SERVER:-127.0.0.1:7400}
export BERTH_CONFIG=${BERTH_CONFIG:-$HOME/.config/berth/config}
SERVICE_CIDR=10.96.0.0/16
BERTH=.venv/bin/berth

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stop_daemon() {
  local pidfile="$BERTH_HOME/$1.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"
    for _ in $(seq 1 100); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
}

# Every service and every task not yet STOPPED, in every cluster: what the
# quick start did not make and `down` leaves running.
leftovers() {
  .venv/bin/python - "$BERTH" <<'PY'
import json, subprocess, sys

def read(*args):
    command = [sys.argv[1], *args, "-o", "json"]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)

for cluster in read("cluster", "list")["clusters"]:
    name = cluster["clusterName"]
    for service in read("service", "list", "--cluster", name)["services"]:
        print(f"  service {service['serviceName']} in cluster {name} (desired count {service['desiredCount']})")
    for task in read("task", "list", "--cluster", name)["tasks"]:
        if task["lastStatus"] != "STOPPED":
            what = task["berth"].get("service") or "one-off"
            task_id = task["taskArn"].rsplit("/", 1)[1]
            print(f"  task {task_id[:12]} in cluster {name} ({what}, {task['lastStatus']})")
PY
}

if [ "${1:-}" = "down" ]; then
  if [ -x "$BERTH" ] && "$BERTH" cluster list >/dev/null 2>&1; then
    if "$BERTH" service describe web >/dev/null 2>&1; then
      "$BERTH" service delete web
      for _ in $(seq 1 150); do "$BERTH" service describe web >/dev/null 2>&1 || break; sleep 0.2; done
      # ... and until the agent has removed its containers (before it stops).
      for _ in $(seq 1 150); do
        [ -z "$(docker ps -aq --filter label=berth.service=web --filter label=berth.cluster=default)" ] && break
        sleep 0.2
      done
    fi
    left=$(leftovers || true)
    if [ -n "$left" ]; then
      echo "still running (not made by the quick start; their containers keep running after Berth stops):"
      echo "$left"
      echo "stop them first with berth service delete NAME --cluster CLUSTER / berth task stop ID --cluster CLUSTER"
    fi
  fi
  stop_daemon agent
  stop_daemon controlplane
  # A stopped agent leaves its service rules in place (static stability);
  # the demo is over, so take them and the service CIDR's route off this host.
  .venv/bin/berth-agent remove-rules "$SERVICE_CIDR"
  echo "stopped; state is kept in $BERTH_HOME"
  exit 0
fi

[ "${BERTH_SKIP_INSTALL:-}" = 1 ] || bash deploy/install.sh
mkdir -p "$BERTH_HOME"

start_daemon() {
  local name=$1; shift
  local pidfile="$BERTH_HOME/$name.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$pidfile"))"
    return
  fi
  nohup "$@" >>"$BERTH_HOME/$name.log" 2>&1 &
  echo $! >"$pidfile"
  echo "$name started (pid $!, log $BERTH_HOME/$name.log)"
}

step "starting the control plane (embedded etcd in $BERTH_HOME/controlplane) and an agent"
# It creates the cluster CA at first start and writes the administrator's
# credentials to $BERTH_CONFIG, where the CLI finds them by itself.
# With them, an access key for admin as the AWS profile `berth` (aws CLI, boto3).
aws_flags=()
if [ -n "${BERTH_AWS_PROFILE_DIR:-}" ]; then aws_flags=(--aws-profile-dir "$BERTH_AWS_PROFILE_DIR"); fi
start_daemon controlplane .venv/bin/berth-controlplane --listen "$BERTH_SERVER" \
  --data-dir "$BERTH_HOME/controlplane" --admin-config "$BERTH_CONFIG" "${aws_flags[@]}"
for _ in $(seq 1 100); do "$BERTH" cluster list >/dev/null 2>&1 && break; sleep 0.2; done
# No --address: the agent takes this host's own address (the interface of the
# default route), which containers reach, so service VIPs and DNS work from them.
# The agent joins as any host does: with a join token and the CA hash it pins
# (once; after that the certificate in its data directory is its identity).
join_flags=()
if [ ! -f "$BERTH_HOME/agent/node.crt" ]; then
  read -r token ca_hash join_address < <("$BERTH" join-token create --ttl 10m --uses 1 \
    --description quickstart -o json | .venv/bin/python -c \
    'import json,sys; t=json.load(sys.stdin); print(t["token"], t["caHash"], t.get("joinAddress", ""))')
  join_flags=(--join-token "$token" --ca-hash "$ca_hash")
  if [ -n "$join_address" ]; then join_flags+=(--join-server "$join_address"); fi
fi
start_daemon agent .venv/bin/berth-agent --server "$BERTH_SERVER" --data-dir "$BERTH_HOME/agent" "${join_flags[@]}"
for _ in $(seq 1 100); do "$BERTH" node list | grep -q READY && break; sleep 0.2; done
"$BERTH" node list

step "registering the ECS task definition in examples/web.json"
"$BERTH" taskdef register --family web --container-definitions file://examples/web.json

step "creating service web with 2 tasks"
if ! "$BERTH" service describe web >/dev/null 2>&1; then
  "$BERTH" service create --name web --task-definition web --desired-count 2 --port 80:http
fi
running() { "$BERTH" task list --service web -o json | .venv/bin/python -c \
  'import json,sys; print(" ".join(t["taskArn"].rsplit("/",1)[1] for t in json.load(sys.stdin)["tasks"] if t["lastStatus"]=="RUNNING"))'; }
for _ in $(seq 1 100); do [ "$(running | wc -w)" -ge 2 ] && break; sleep 0.2; done
"$BERTH" task list --service web
port=$("$BERTH" task list --service web -o json | .venv/bin/python -c \
  'import json,sys; print([b for t in json.load(sys.stdin)["tasks"] if t["lastStatus"]=="RUNNING" for c in t["containers"] for b in c["networkBindings"]][0]["hostPort"])')
echo "GET http://127.0.0.1:$port/ -> $(wget -qO- "http://127.0.0.1:$port/" 2>/dev/null || curl -s "http://127.0.0.1:$port/")"

step "killing one container with docker kill"
victim=$(running | cut -d' ' -f1)
container=$(docker ps -q --filter "label=berth.task-id=$victim")
docker kill "$container" >/dev/null
echo "killed container $container of task ${victim:0:12}"
for _ in $(seq 1 100); do
  now=$(running)
  if [ "$(echo "$now" | wc -w)" -ge 2 ] && ! echo "$now" | grep -q "$victim"; then break; fi
  sleep 0.1
done

step "Berth replaced it: the killed task is STOPPED with its exit code, a new one RUNNING"
"$BERTH" task list --service web
"$BERTH" service describe web

# The ECS-compatible API, as the aws CLI and boto3 reach it: through the profile the
# first start wrote (a later start keeps the credentials it finds and writes none).
aws_dir=${BERTH_AWS_PROFILE_DIR:-$HOME/.aws}
if grep -qs '^\[profile berth\]' "$aws_dir/config"; then
  aws_env=""
  if [ "$aws_dir" != "$HOME/.aws" ]; then
    aws_env="AWS_CONFIG_FILE=$aws_dir/config AWS_SHARED_CREDENTIALS_FILE=$aws_dir/credentials "
  fi
  aws_hint="${aws_env}aws --profile berth ecs list-clusters   # the ECS API, as the aws CLI and boto3 see it"
  step "The same service through the ECS-compatible API, with the real aws CLI (profile berth)"
  if [ -n "${AWS_CA_BUNDLE:-}" ]; then
    # The environment's bundle would override the profile's (the cluster CA) for every call.
    echo "note: AWS_CA_BUNDLE is set and overrides the profile's ca_bundle; unset it for Berth's API"
  fi
  env -u AWS_CA_BUNDLE ${aws_env} .venv/bin/aws --profile berth ecs describe-services --cluster default --services web \
    --query 'services[0].{service:serviceName,status:status,desired:desiredCount,running:runningCount}' \
    --output table
else
  aws_hint="berth access-key create --user admin   # keys for the ECS API (aws CLI, boto3)"
fi

cat <<DONE

The cluster keeps running. Try:
  export PATH=$PWD/.venv/bin:\$PATH   # credentials: $BERTH_CONFIG
  berth service update web --desired-count 5
  berth node list
  $aws_hint
Stop everything with: bash deploy/quickstart.sh down
DONE
