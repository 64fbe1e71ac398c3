# Shared helpers for the benchmark scripts (sourced).
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=${RESULTS:-$BENCH_ROOT/bench/results}
mkdir -p "$RESULTS"

# `bench/X.sh --smoke [ARGS]`: the bench at its smallest size, to show it still runs and
# prints its figures (bench/smoke.sh checks them; scripts/test runs it after the suites).
# A smoke run measures nothing worth keeping, so it builds nothing in release: it drives
# the debug runner the test suites use and the services whose environment is loaded.
# Sourced without arguments, this reads and shifts the bench's own.
BENCH_SMOKE=""
if [ "${1:-}" = --smoke ]; then BENCH_SMOKE=1; shift; fi

# smoke_or SMOKE FULL: SMOKE in a smoke run, else FULL (a bench's default sizes).
smoke_or() { if [ -n "$BENCH_SMOKE" ]; then echo "$1"; else echo "$2"; fi; }

target_dir() { cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'; }

# debug_builds: the directory of the test suites' debug build (the runner, the webapp and
# its examples): RUNNER_BIN's (scripts/test's), else built here with `cargo test --no-run`,
# which builds them with the suites' features where `cargo build` would compile much of
# the dependency set again.
debug_builds() {
  if [ -n "${RUNNER_BIN:-}" ]; then dirname "$RUNNER_BIN"; return; fi
  cargo test --workspace --locked --no-run >&2
  echo "$(target_dir)/debug"
}

# runner_binary PROFILE: the runner a bench drives, built with PROFILE; in a smoke run,
# the debug build.
runner_binary() {
  if [ -n "$BENCH_SMOKE" ]; then
    echo "$(debug_builds)/runner"
  else
    cargo build --profile "$1" --locked -p runner >&2
    echo "$(target_dir)/$1/runner"
  fi
}

apt_need() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# free_ports N: the first of N consecutive free loopback ports.
free_ports() { python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
while True:
    first = random.randint(20000, 60000 - n)
    try:
        held = []
        for port in range(first, first + n):
            s = socket.socket(); s.bind(("127.0.0.1", port)); held.append(s)
        print(first)
        break
    except OSError:
        continue
PY
}

wait_http() { # url [tries]
  for _ in $(seq 1 "${2:-300}"); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "not answering: $1" >&2; return 1
}

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# wrk_summary FILE -> "rps p50_ms p99_ms non2xx requests"
wrk_summary() {
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)) else 0
requests = int(re.search(r"(\d+) requests in", text).group(1))
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {non2xx} {requests}")
PY
}

# own_services: scripts/services.sh on a services directory of this bench's own, its
# environment loaded; own_services_dir names it, for own_services_stop.
own_services_dir=""
own_services() {
  own_services_dir=$(mktemp -d)
  # PostgreSQL runs as its own user, which has to enter this directory.
  chmod 755 "$own_services_dir"
  SERVICES_DIR=$own_services_dir scripts/services.sh install >/dev/null
  SERVICES_DIR=$own_services_dir scripts/services.sh start
  eval "$(SERVICES_DIR=$own_services_dir scripts/services.sh env)"
}
own_services_stop() {
  if [ -n "$own_services_dir" ]; then
    SERVICES_DIR=$own_services_dir scripts/services.sh stop
    rm -rf "$own_services_dir"
  fi
}

# pipeline_setup: the real parts a pipeline bench needs: sets registry (the test
# registry), RUNNER (the release binary; in a smoke run, the debug one) and webapp_bin (the
# static webapp). The services run on a directory of the bench's own, which the caller's
# cleanup stops; a smoke run uses those whose environment is loaded (scripts/test's) when
# there are.
pipeline_setup() {
  if [ -n "$BENCH_SMOKE" ] && [ -n "${RUNNER_TEST_REGISTRY:-}" ] && [ -n "${RUNNER_TEST_CADDY_ADMIN:-}" ] \
    && [ -n "${TERRAFORM_BIN:-}" ]; then
    echo "using the running services (registry $RUNNER_TEST_REGISTRY)" >&2
  else
    own_services
  fi
  registry=$RUNNER_TEST_REGISTRY
  RUNNER=$(runner_binary release)
  if [ -n "$BENCH_SMOKE" ] && [ -n "${WEBAPP_STATIC_BIN:-}" ]; then
    webapp_bin=$WEBAPP_STATIC_BIN
  else
    webapp_bin=$(scripts/build-webapp-static)
  fi
}

# pipeline_workspace PREFIX: a work directory (work) and a name unique to this run
# (unique) for the images and containers a pipeline bench makes. On exit the runner whose
# PID is in pid is stopped, the environment's containers, those listed in
# cleanup_containers and every image named after the run are removed, and the services
# stopped.
pipeline_workspace() {
  work=$(mktemp -d)
  unique="$1$$"
  pid=""
  cleanup_containers=()
  trap pipeline_cleanup EXIT
}

pipeline_cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true
  docker rm -f "runner-$unique-production-a" "runner-$unique-production-b" "${cleanup_containers[@]}" >/dev/null 2>&1 || true
  docker images -q --filter "reference=*$unique*" --filter "reference=$registry/*$unique*" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  # A Caddy that outlives the bench keeps no listener of its environment.
  curl -fsS -o /dev/null -X DELETE "${RUNNER_TEST_CADDY_ADMIN:-}/config/apps/http/servers/runner-$unique-production" 2>/dev/null || true
  own_services_stop; rm -rf "$work"
}

# webapp_repo DIR BINARY: a git repository holding the static webapp as a scratch build context.
webapp_repo() {
  mkdir -p "$1"
  git -C "$1" init -q --initial-branch=master
  cp "$2" "$1/webapp"
  printf 'FROM scratch\nARG APP_COMMIT=unknown\nCOPY webapp /webapp\nENV PORT=5001 APP_COMMIT=${APP_COMMIT}\nEXPOSE 5001\nENTRYPOINT ["/webapp"]\n' >"$1/Dockerfile"
  git -C "$1" add -A && git -C "$1" -c user.name=b -c user.email=b@x commit -qm initial
}

# webapp_project_toml PORT DATABASE NAME REPO REGISTRY APP_PORT: a runner config deploying
# the webapp repository NAME through every step to the local engine, served by the
# services' Caddy on APP_PORT (slot ports: BENCH_SLOTS="A, B", else two free ones).
webapp_project_toml() {
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
database_url = "sqlite://$2"
[dashboard]
read_access = "public"
[engine]
# A pull request's smoke test asks its app through a container of this image: the one
# scripts/services.sh start makes, where nothing can be pulled.
probe_image = "local/busybox:1"
[proxy]
admin_url = "$RUNNER_TEST_CADDY_ADMIN"
[[projects]]
name = "$3"
repository = "Codertocat/Hello-World"
deploy_branches = ["master"]
webhook_secret_env = "BENCH_SECRET"
clone_url = "$4"
[projects.build]
image = "$3"
build_args = { APP_COMMIT = "{{sha}}" }
builder = "${BENCH_BUILDER:-auto}"
[projects.smoke]
container_port = 5001
expect_body = "healthy"
[projects.registry]
url = "$5"
[projects.rollout]
target = "local"
host_port = $6
slot_ports = [${BENCH_SLOTS:-$(free_port), $(free_port)}]
TOML
}
