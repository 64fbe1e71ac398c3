#!/usr/bin/env bash
# Throughput and latency of the webapp against the original Flask service and a bare
# axum server, measured side by side in one invocation with the same load tool settings.
#   bench/webapp.sh [--smoke] [DURATION_SECS]      (default 10; --smoke: 1, on the debug builds)
# Prints req/s, p50 and p99 on / and /health for each server, the ratios ours/gunicorn-2w
# and ours/bare, RSS under load, start-to-healthy time and the scratch image size.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
DURATION=${1:-$(smoke_or 1 10)}

apt_need wrk curl python3-venv
VENV=${BENCH_VENV:-/tmp/runner-bench-venv}
[ -x "$VENV/bin/gunicorn" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'Flask==3.0.0' 'gunicorn==21.2.0'; }

if [ -n "$BENCH_SMOKE" ]; then
  builds=$(debug_builds)
else
  echo "building release binaries..." >&2
  PROFILE=${BENCH_PROFILE:-release}  # `dist` measures the shipped images' fat-LTO build
  cargo build --profile "$PROFILE" --locked -p webapp --bin webapp --example bare_hello >&2
  builds="$(target_dir)/$PROFILE"
fi
WEBAPP="$builds/webapp"
BARE="$builds/examples/bare_hello"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

declare -A RESULT RSS
run_case() { # name port
  local name=$1 port=$2 path out
  for path in / /health; do
    out="$RESULTS/webapp-$name-${path//\//_}.txt"
    wrk -t2 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$port$path" >"$out" &
    local wrk_pid=$!
    sleep $((DURATION / 2))
    RSS[$name]=$(rss_mb "$3")
    wait "$wrk_pid"
    RESULT[$name$path]=$(wrk_summary "$out")
  done
}

start_server() { # name port cmd...
  local name=$1 port=$2; shift 2
  "$@" >"$RESULTS/webapp-$name.log" 2>&1 &
  local pid=$!
  wait_http "http://127.0.0.1:$port/health"
  echo "$pid"
}

port=$(free_port)
pid=$(cd bench/flask_app && start_server gunicorn-1w "$port" "$VENV/bin/gunicorn" -w 1 -b "127.0.0.1:$port" main:app)
pids+=("$pid"); run_case gunicorn-1w "$port" "$pid"; kill "$pid"

port=$(free_port)
pid=$(cd bench/flask_app && start_server gunicorn-2w "$port" "$VENV/bin/gunicorn" -w 2 -b "127.0.0.1:$port" main:app)
# RSS of gunicorn: the master and its workers.
pids+=("$pid"); run_case gunicorn-2w "$port" "$pid"; kill "$pid"

port=$(free_port)
pid=$(PORT=$port start_server bare "$port" env PORT="$port" "$BARE")
pids+=("$pid"); run_case bare "$port" "$pid"; kill "$pid"

port=$(free_port)
pid=$(start_server ours "$port" env PORT="$port" HOST=127.0.0.1 "$WEBAPP")
pids+=("$pid"); run_case ours "$port" "$pid"; kill "$pid"

# Start to first healthy /health, best of 20 (ms).
startup_ms=$(python3 - "$WEBAPP" <<'PY'
import os, socket, subprocess, sys, time
best = None
for _ in range(20):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.argv[1]], env=env, stderr=subprocess.DEVNULL)
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=1)
            c.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            if b"200" in c.recv(64).split(b"\r\n")[0]:
                break
        except OSError:
            time.sleep(0.0005)
    dt = (time.perf_counter() - t0) * 1000
    p.terminate(); p.wait()
    best = dt if best is None else min(best, dt)
print(f"{best:.1f}")
PY
)

image_mb=unknown
if docker info >/dev/null 2>&1; then
  tag="webapp-bench:$$"
  # A smoke run packs the static binary scripts/test built rather than building one.
  WEBAPP_BIN=$(smoke_or "${WEBAPP_STATIC_BIN:-}" "") scripts/build-webapp-image "$tag" >/dev/null 2>&1 && \
    image_mb=$(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f", $1/1048576}')
  docker rmi -f "$tag" >/dev/null 2>&1 || true
fi

echo
printf "%-13s %-8s %10s %9s %9s %8s\n" server path "req/s" "p50 ms" "p99 ms" "RSS MB"
for name in gunicorn-1w gunicorn-2w bare ours; do
  for path in / /health; do
    read -r rps p50 p99 non2xx _ <<<"${RESULT[$name$path]}"
    printf "%-13s %-8s %10s %9s %9s %8s\n" "$name" "$path" "$rps" "$p50" "$p99" "${RSS[$name]}"
  done
done
echo
for path in / /health; do
  read -r ours_rps _ ours_p99 _ <<<"${RESULT[ours$path]}"
  read -r g2_rps _ _ _ <<<"${RESULT[gunicorn-2w$path]}"
  read -r bare_rps _ bare_p99 _ <<<"${RESULT[bare$path]}"
  python3 -c "print(f'$path: ours/gunicorn-2w = {$ours_rps/$g2_rps:.1f}x (target >= 15x); ours/bare = {$ours_rps/$bare_rps:.2f} (target >= 0.9); p99 ours - bare = {$ours_p99-$bare_p99:+.3f} ms (target <= 1 ms)')"
done
echo "start to healthy: ${startup_ms} ms (target <= 50 ms)"
echo "scratch image: ${image_mb} MB (target <= 5 MB)"
