#!/usr/bin/env bash
# Zero-downtime local deploys: wrk at 64 connections against the environment (through
# Caddy) while 10 deploys and 5 rollbacks run back to back. Prints failed requests
# (non-2xx plus socket errors), p99 during the swaps against p99 with no deploy running,
# and requests per second through Caddy against straight to the live container, all from
# the same run.
# Meanwhile a pull request's preview is created and removed again and again (its own seat,
# route and slots), which must cost the environment nothing either.
#   bench/proxy.sh [--smoke] [SECONDS]      (length of each baseline wrk run, default 10;
#                                          --smoke: 1, and 2 deploys and 1 rollback)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
SECS=${1:-$(smoke_or 1 10)}
DEPLOYS=$(smoke_or 2 10)
ROLLBACKS=$(smoke_or 1 5)
apt_need curl git wrk

pipeline_setup

pipeline_workspace zd

repo="$work/repo"
webapp_repo "$repo" "$webapp_bin"
port=$(free_port); app_port=$(free_port); slot_a=$(free_port); slot_b=$(free_port)
secret="bench-$RANDOM$RANDOM"; token="bench-admin-token-$RANDOM$RANDOM"
BENCH_SLOTS="$slot_a, $slot_b" webapp_project_toml "$port" "$work/runner.db" "$unique" "$repo" "$registry" "$app_port" >"$work/runner.toml"
preview_port=$(free_ports 1); preview_slots=$(free_ports 2)
cat >>"$work/runner.toml" <<TOML
[projects.previews]
host_ports = [$preview_port, $preview_port]
slot_ports = [$preview_slots, $((preview_slots + 1))]
max_previews = 1
TOML
BENCH_SECRET=$secret RUNNER_ADMIN_TOKEN=$token RUST_LOG=warn "$RUNNER" serve --config "$work/runner.toml" >"$RESULTS/proxy-runner.log" 2>&1 &
pid=$!
wait_http "http://127.0.0.1:$port/healthz"
base="http://127.0.0.1:$port"
fixture=runner/tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json

# The first version goes live (its push-to-live time through the proxy is measured by
# bench/pipeline.sh, whose app port is the same kind of route).
python3 bench/proxy.py "$base" "$secret" "$token" "$repo" "$fixture" "$app_port" 1 0 >/dev/null
live_slot=$(docker port "runner-$unique-production-a" 5001/tcp 2>/dev/null | head -1 | sed 's/.*://')

wrk -t2 -c64 -d"${SECS}s" --latency "http://127.0.0.1:$app_port/version" >"$work/idle.txt"
wrk -t2 -c64 -d"${SECS}s" --latency "http://127.0.0.1:$live_slot/version" >"$work/direct.txt"

# Under load: the deploys then the rollbacks, back to back; wrk runs until they are done.
wrk -t2 -c64 -d600s --latency "http://127.0.0.1:$app_port/version" >"$work/swaps.txt" &
wrk_pid=$!
sleep 1
python3 bench/proxy.py "$base" "$secret" "$token" "$repo" "$fixture" "$app_port" "$DEPLOYS" "$ROLLBACKS" "$preview_port" | tee "$RESULTS/proxy-swaps.log"
sleep 1
kill -INT "$wrk_pid"; wait "$wrk_pid" || true

read -r idle_rps _ idle_p99 idle_non2xx _ <<<"$(wrk_summary "$work/idle.txt")"
read -r direct_rps _ direct_p99 _ _ <<<"$(wrk_summary "$work/direct.txt")"
read -r swap_rps _ swap_p99 swap_non2xx swap_requests <<<"$(wrk_summary "$work/swaps.txt")"
socket_errors=$(python3 -c '
import re,sys
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", open(sys.argv[1]).read())
print(sum(map(int, m.groups())) if m else 0)' "$work/swaps.txt")
echo
echo "== zero-downtime local deploys (wrk -t2 -c64)"
previews=$(grep -c '^preview ' "$RESULTS/proxy-swaps.log" || true)
echo "during $DEPLOYS deploys + $ROLLBACKS rollbacks, with $previews previews created and removed meanwhile: $swap_requests requests, failed $((swap_non2xx + socket_errors)) (non-2xx $swap_non2xx, socket errors $socket_errors) (target 0)"
python3 - "$swap_p99" "$idle_p99" "$idle_rps" "$direct_rps" "$swap_rps" <<'PY'
import sys
swap_p99, idle_p99, idle_rps, direct_rps, swap_rps = map(float, sys.argv[1:])
print(f"p99 during swaps {swap_p99:.1f} ms vs with no deploy {idle_p99:.1f} ms (ratio {swap_p99/idle_p99:.2f})")
print(f"requests/s through Caddy {idle_rps:.0f} vs straight to the container {direct_rps:.0f} (ratio {idle_rps/direct_rps:.2f}); during swaps {swap_rps:.0f}")
PY
